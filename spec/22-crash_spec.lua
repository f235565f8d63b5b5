-- A test's signal is the truth: a service that crashes is reported when it
-- crashes (an event at once, UnexpectedExit from the next harness call),
-- cleanup never hides the error that caused the unwind, and errors start
-- with the user's file:line.
local H = require "spec.helpers"
local mk = require "mkharness"

local FX = H.fx
local THIS = "[^\n]*22%-crash_spec%.lua:%d+: "

local function kill9(svc) os.execute("kill -9 " .. svc:pid()) end

describe("crash detection", function()
  H.leakcheck()

  it("a service killed from outside during mk.sleep raises UnexpectedExit at once", function()
    local svc = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "victim" }:start()
    kill9(svc)
    local t0 = mk.now()
    local e = H.expect_error("UnexpectedExit", function() mk.sleep(10) end)
    assert.is_true(mk.now() - t0 < 5, "the sleep was not cut short by the crash")
    assert.equal(-9, e.exit_code)
    assert.equal("victim", e.name)
    assert.is_number(e.since_ready)
    assert.matches("up", e.log_tail, 1, true)
    assert.matches("^" .. THIS .. "UnexpectedExit: %[victim%] killed by signal 9", tostring(e))
    -- reported once: the next call goes on, and stop() cleans up quietly
    mk.sleep(0)
    svc:stop()
  end)

  for _, call in ipairs {
    { "mk.run", function() mk.run { "true" } end },
    { "mk.wait_until", function() mk.wait_until(function() return false end, { timeout = 0.2 }) end },
    { "another service's start()", function()
        local _o <close> = mk.process { FX, "--forever", name = "other" }:start()
      end },
    { "mk.get", function() mk.get("http://127.0.0.1:1/", { timeout = 1 }) end },
  } do
    it("the next harness call raises it: " .. call[1], function()
      local svc = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "crasher" }:start()
      finally(function() svc:kill() end)
      kill9(svc)
      -- wait without a harness call (one would report the crash itself)
      local pid = svc._proc:pid()
      while not (H.slurp("/proc/" .. pid .. "/stat") or ""):match("%) Z") do mk.core.sleep(0.005) end
      local e = H.expect_error("UnexpectedExit", call[2])
      assert.equal(svc.name, e.name)
    end)
  end

  it("is not a crash: an exit 0 of a service without readiness, stop(), kill(), a signal that ends it", function()
    local done = mk.process { FX, "--exit", 0 }:start()
    local a = mk.output { FX, "--print", "up", "--forever", banner = "up" }:start()
    local b = mk.output { FX, "--print", "up", "--forever", banner = "up" }:start()
    local c = mk.output { FX, "--print", "up", "--forever", banner = "up" }:start()
    a:kill()
    b:signal("TERM")
    c:stop()
    mk.sleep(0.2)
    assert.is_false(done:running())
    done:stop()
    b:stop()
  end)

  it("a non-zero exit of a service without readiness is a crash", function()
    local svc = mk.process { FX, "--sleep", "0.05", "--exit", 3, name = "helper" }:start()
    local e = H.expect_error("UnexpectedExit", function() mk.sleep(5) end)
    assert.equal(3, e.exit_code)
    svc:stop()
  end)

  it("on_exit = \"ignore\" records the crash and raises nothing", function()
    local svc = mk.output { FX, "--print", "up", "--forever", banner = "up", on_exit = "ignore" }:start()
    kill9(svc)
    mk.sleep(0.2)
    assert.is_false(svc:running())
    assert.equal(-9, svc:exit_code())
    H.expect_error("ProcessFinishedWithError", function() svc:stop() end)
  end)

  it("on_exit = \"restart\" starts it again, at most max_restarts times", function()
    local svc = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "phoenix",
      on_exit = "restart", max_restarts = 2 }:start()
    local pids = { svc:pid() }
    for i = 1, 2 do
      kill9(svc)
      mk.wait_until(function() return svc:running() and svc:pid() ~= pids[i] end, { timeout = 5 })
      pids[#pids + 1] = svc:pid()
    end
    kill9(svc)
    local e = H.expect_error("UnexpectedExit", function() mk.sleep(5) end)
    assert.equal("phoenix", e.name)
    svc:stop()
  end)

  it("restart() of a crashed service starts it again", function()
    local svc = mk.output { FX, "--print", "up", "--forever", banner = "up" }:start()
    local pid = svc:pid()
    kill9(svc)
    pcall(mk.sleep, 1)
    svc:restart()
    assert.is_true(svc:running())
    assert.is_not.equal(pid, svc:pid())
    svc:stop()
  end)

  it("is an event at once in -v and the report, never worded as a stop, and fails a run that ends after it", function()
    local report = mk.tmpdir() .. "/report.jsonl"
    local r = H.scenario([[
      KEEP = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "victim" }:start()
      local pid = KEEP:pid()
      os.execute("kill -9 " .. pid)
      -- no harness call (mk.core is the engine, not the API): wait until it is gone
      for _ = 1, 2000 do if not mk.core.alive(pid) then break end mk.core.sleep(0.005) end
    ]], { host_args = { "-v", "--report", report }, env = { MKHARNESS_TMPDIR = mk.tmpdir() } })
    assert.equal(1, r.code, r.stderr)
    assert.matches("victim: CRASHED: killed by signal 9", r.stderr, 1, true)
    assert.matches("UnexpectedExit", r.stderr, 1, true)
    assert.not_matches("victim: stopped", r.stderr, 1, true)
    local crashed = false
    for line in io.lines(report) do
      local ev = mk.json.decode(line)
      if ev.event == "crashed" and ev.service == "victim" then crashed = true end
    end
    assert.is_true(crashed, "no crashed event in the report")
  end)
end)

describe("cleanup never hides the real failure", function()
  H.leakcheck()

  it("a <close> service that crashed: the script's own error is the one reported", function()
    local r = H.scenario([[
      local s <close> = mk.process { FX, "--sleep", "0.05", "--exit", 2, on_exit = "ignore" }:start()
      for _ = 1, 2000 do if not s:running() then break end mk.core.sleep(0.005) end
      assert(s:running(), "THE REAL FAILURE")
    ]], { env = { MKHARNESS_TMPDIR = mk.tmpdir() } })
    assert.equal(1, r.code)
    assert.matches("FAILED: [^\n]*THE REAL FAILURE", r.stderr)
    assert.matches("ProcessFinishedWithError", r.stderr, 1, true) -- still told, as a note
  end)

  it("a harness error unwinding through <close> services and groups carries what cleanup found", function()
    local ok, e = pcall(function()
      local a <close> = mk.process { FX, "--exit", 2, on_exit = "ignore", name = "bad-a" }:start()
      local b = mk.process { FX, "--exit", 3, on_exit = "ignore", name = "bad-b" }
      local _g <close> = mk.group { b }:start()
      a:wait_exit { timeout = 5 }
      b:wait_exit { timeout = 5 }
      mk.wait_until(function() return false end, { timeout = 0.1, message = "the real one" })
    end)
    assert.is_false(ok)
    assert.is_true(mk.is_error(e, "TimeoutExpired"))
    assert.matches("the real one", e.message, 1, true)
    assert.equal(2, #e.cleanup)
    assert.matches("then, while cleaning up: [^\n]*ProcessFinishedWithError", tostring(e))
  end)

  it("a stopped() guard left by an error keeps the error", function()
    local svc = mk.output { FX, "--print", "up", "--forever", banner = "up" }:start()
    local ok, e = pcall(function()
      local _ <close> = svc:stopped()
      error("inside the guard")
    end)
    assert.is_false(ok)
    assert.matches("inside the guard", e, 1, true)
    assert.is_true(svc:running())
    svc:stop()
  end)

  it("in busted, the failing assertion is the reported failure", function()
    local dir = mk.tmpdir()
    local f = assert(io.open(dir .. "/real_spec.lua", "w"))
    f:write([[
local mk = require "mkharness"
describe("x", function()
  it("fails for its own reason", function()
    local s <close> = mk.process { ]] .. string.format("%q", FX) .. [[, "--sleep", "0.05", "--exit", 2, on_exit = "ignore" }:start()
    for _ = 1, 2000 do if not s:running() then break end mk.core.sleep(0.005) end
    assert(s:running(), "THE REAL FAILURE")
  end)
end)
]])
    f:close()
    local r = mk.run { H.host, "test", dir .. "/real_spec.lua", env = { MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 60 }
    local out = r.stdout .. r.stderr
    assert.is_not.equal(0, r.code)
    assert.matches("THE REAL FAILURE", out, 1, true)
    assert.matches("real_spec.lua:6", out, 1, true)
  end)
end)

describe("errors say where", function()
  H.leakcheck()

  it("tostring(e) starts with the caller's file:line", function()
    local e = H.expect_error("ConfigError", function() mk.process { FX, bogus = 1 } end)
    assert.matches("^" .. THIS .. "ConfigError: ", tostring(e))
  end)

  it("skips luassert's frames (assert.eventually)", function()
    require "mkharness.busted"
    local ok, e = pcall(function() assert.eventually(function() return false end, { timeout = 0.1 }) end)
    assert.is_false(ok)
    assert.matches("22%-crash_spec%.lua:%d+", tostring(e))
    assert.not_matches("luassert", tostring(e):match("[^\n]+"), 1, true)
  end)
end)
