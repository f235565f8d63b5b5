-- Arguments of the wrong shape, found by an attacker: each must end in a
-- harness error that names the function or option, never a raw Lua error
-- from deep inside (or a crash of the C binding).
local H = require "spec.helpers"
local mk = require "mkharness"
local FX = H.fx

local expect_error = H.expect_error

describe("bad input", function()
  H.leakcheck()

  describe("an options argument that is not a table", function()
    local function refused(ctx, fn)
      local e = expect_error("ConfigError", fn)
      local msg = tostring(e)
      assert(msg:find(ctx .. ": takes a table of options, got number 5", 1, true), msg)
      assert.equal("opts", e.option)
    end

    it("on a started service's methods", function()
      local svc <close> = mk.process { FX, "--print", "hi", "--forever" }:start()
      refused("kill", function() svc:kill(5) end)
      refused("wait_exit", function() svc:wait_exit(5) end)
      refused("wait_output", function() svc:wait_output("hi", 5) end)
      refused("stop", function() svc:stop(5) end)
      assert.is_true(svc:running())
    end)

    it("on module functions and probe constructors", function()
      refused("mk.wait_until", function() mk.wait_until(function() return true end, 5) end)
      refused("mk.get", function() mk.get("http://127.0.0.1:1/", 5) end)
      refused("mk.http_request", function() mk.http_request(5) end)
      refused("mk.run", function() mk.run(5) end)
      refused("mk.process", function() mk.process(5) end)
      refused("mk.proxy", function() mk.proxy(5) end)
      for _, kind in ipairs { "output", "tcp", "unix", "http", "file", "notify", "exec" } do
        refused("mk.probe." .. kind, function() mk.probe[kind](5) end)
      end
    end)

    it("a string is refused too (not iterated)", function()
      local e = expect_error("ConfigError", function() mk.probe.tcp("x") end)
      assert.matches('mk.probe.tcp: takes a table of options, got string "x"', tostring(e), 1, true)
    end)

    it("false is refused, nil means no options", function()
      local svc <close> = mk.process { FX, "--forever" }:start()
      expect_error("ConfigError", function() svc:kill(false) end)
      svc:kill(nil)
      assert.is_false(svc:running())
    end)
  end)

  describe("service names", function()
    it("a name too long for the log files and the sweep token is refused by the constructor", function()
      local e = expect_error("ConfigError", function() mk.process { FX, "--forever", name = ("n"):rep(300) } end)
      assert.equal("name", e.option)
      assert.matches("too long: 300 bytes, at most 80", e.message, 1, true)
      expect_error("ConfigError", function() mk.process { FX, "--forever", name = ("n"):rep(81) } end)
    end)

    it("the longest name starts, twice (the second gets a -2)", function()
      local name = ("m"):rep(80)
      local a <close> = mk.process { FX, "--print", "up", "--forever", name = name }:start()
      local b <close> = mk.process { FX, "--print", "up", "--forever", name = name }:start()
      a:wait_output("up", { timeout = 5 })
      b:wait_output("up", { timeout = 5 })
      assert.equal(name .. "-2", b.name)
    end)

    it("a name derived from a long program name is cut, not refused", function()
      local link = mk.tmpdir() .. "/" .. ("p"):rep(200)
      assert.equal(0, mk.run({ "ln", "-s", (H.fx:sub(1, 1) == "/" and "" or os.getenv("PWD") .. "/") .. H.fx, link }).code)
      local svc <close> = mk.process { link, "--print", "up", "--forever" }:start()
      svc:wait_output("up", { timeout = 5 })
      assert.equal(("p"):rep(80), svc.name)
    end)
  end)

  describe("odd errors", function()
    it("error(42) in a scenario is reported as 42, as lua does", function()
      local r = H.scenario("error(42)")
      assert.equal(1, r.code)
      assert.matches("mkharness: FAILED: 42\n", r.stderr, 1, true)
      r = H.scenario("error(setmetatable({}, {}))")
      assert.matches("mkharness: FAILED: (error object is a table value)", r.stderr, 1, true)
    end)

    -- a service that starts once: the restart of stopped() fails
    local function once()
      local mark = mk.tmpdir() .. "/started"
      return mk.output { shell = "test -e " .. mark .. " && exit 3; touch " .. mark .. "; exec " .. FX ..
        " --print ready --forever", banner = "ready", timeout = 5 }:start()
    end

    it("stopped(fn): fn's harness error is raised, the failed restart is in e.cleanup", function()
      local svc <close> = once()
      local ok, e = pcall(svc.stopped, svc, function(s) s:signal("NOPE") end)
      assert.is_false(ok)
      assert(mk.is_error(e, "ConfigError"), tostring(e))
      assert.equal(1, #e.cleanup)
      assert(mk.is_error(e.cleanup[1], "ProcessExitedWithError"), tostring(e.cleanup[1]))
      assert.matches("while cleaning up: [^\n]*ProcessExitedWithError", tostring(e))
    end)

    it("stopped(fn): fn's string error is raised, the failed restart appended", function()
      local svc <close> = once()
      local ok, e = pcall(svc.stopped, svc, function() error("boom", 0) end)
      assert.is_false(ok)
      assert.equal("string", type(e))
      assert.matches("^boom\n%(while restarting [^:]+: [^\n]*ProcessExitedWithError", e)
    end)
  end)

  describe("mk.core given bad lists and numbers", function()
    local core = mk.core
    local function len_of(n) return setmetatable({}, { __len = function() return n end }) end
    local function refused(pattern, fn, ...)
      local ok, err = pcall(fn, ...)
      assert.is_false(ok, "accepted")
      assert.matches(pattern, tostring(err))
    end

    it("spawn: an empty argv, odd lengths, non-strings are refused, nothing starts", function()
      refused("argv has length 0", core.spawn, { argv = {}, env = {} })
      refused("argv has length %-1", core.spawn, { argv = len_of(-1), env = {} })
      refused("env has length %-1", core.spawn, { argv = { "true" }, env = len_of(-1) })
      refused("argv has length " .. math.maxinteger, core.spawn, { argv = len_of(math.maxinteger), env = {} })
      refused("argv has length 1099511627776", core.spawn, { argv = len_of(1 << 40), env = {} })
      refused("argv%[2%] must be a string, got nil", core.spawn, { argv = setmetatable({ "true" }, { __len = function() return 2 end }), env = {} })
      refused("argv%[1%] must be a string, got number", core.spawn, { argv = { 1 }, env = {} })
      refused("env%[1%] must be a string, got table", core.spawn, { argv = { "true" }, env = { {} } })
      refused("argv%[1%] contains a NUL byte", core.spawn, { argv = { "tr\0ue" }, env = {} })
      refused("argv must be a list of strings, got nil", core.spawn, { env = {} })
      refused("stop_timeout", core.spawn, { argv = { "true" }, env = {}, stop_timeout = 1 / 0, stop_signal = 15, kill_signal = 9,
        stdout = "null", stderr = "null" })
    end)

    it("poll, sleep, wait: odd lengths and NaN or huge timeouts", function()
      refused("fds has length %-1", core.poll, len_of(-1), 0)
      refused("fds has length", core.poll, len_of(math.maxinteger), 0)
      assert.same({}, core.poll({}, 0 / 0))
      assert.same({}, core.poll({}, -0.0))
      core.sleep(0 / 0)
      local proc = assert(core.spawn { argv = { H.fx, "--forever" }, env = {}, stdout = "null", stderr = "null",
        stop_signal = 15, kill_signal = 9, stop_timeout = 1 })
      refused("timeout is NaN", proc.wait, proc, 0 / 0)
      assert.is_nil(proc:wait(-1)) -- negative: no wait at all
      proc:signal(9)
      assert.equal(-9, proc:wait(1e300)) -- far deadline: waits in slices, no overflow
      proc:sweep()
    end)

    it("http_request: odd header lists and timeouts", function()
      local res, err = core.http_request { url = "http://127.0.0.1:1/", timeout = 1, headers = len_of(math.maxinteger) }
      assert.is_nil(res)
      assert.is_string(err)
      refused("timeout", core.http_request, { url = "http://127.0.0.1:1/", timeout = 0 / 0 })
      refused("timeout", core.http_request, { url = "http://127.0.0.1:1/", timeout = 1 / 0 })
    end)

    it("proxy faults: no infinite or negative delays", function()
      local p = assert(core.proxy("127.0.0.1", 0, "127.0.0.1", 1))
      refused("latency", p.faults, p, 1 / 0, 0, 0, false)
      refused("jitter", p.faults, p, 0, 0 / 0, 0, false)
      refused("bandwidth", p.faults, p, 0, 0, -1, false)
      p:faults(0, 0, 0, false)
      local px = mk.proxy { upstream = "127.0.0.1:1" }
      H.expect_error("ConfigError", function() px:latency(1e300) end)
    end)
  end)
end)
