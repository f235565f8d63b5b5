-- mk.group{...}: parallel start, all-or-nothing, parallel stop.
local H = require "spec.helpers"
local mk = require "mkharness"
local core = mk.core
local FX = H.fx

local expect_error = H.expect_error

local function listening(port) return core.tcp_probe("127.0.0.1", port, 1) == true end

-- A tcp service that becomes ready `delay` seconds after spawn.
local function slow_tcp(delay, name)
  local port = mk.free_port()
  return mk.tcp { FX, "--sleep", delay, "--listen", port, "--serve-tcp", port = port, timeout = 20, name = name }
end

describe("mk.group", function()
  H.leakcheck()

  it("starts all members at once: total is about the slowest, not the sum", function()
    local delay = 0.5
    local a, b, c = slow_tcp(delay, "ga"), slow_tcp(delay, "gb"), slow_tcp(delay, "gc")
    local g <close> = mk.group { a, b, c }
    local t0 = mk.now()
    assert.equal(g, g:start())
    local took = mk.now() - t0
    for _, s in ipairs { a, b, c } do
      assert.is_true(s:running())
      assert.is_true(listening(s.port))
    end
    -- sequential would be >= 1.5 s
    assert.is_true(took < 1.2, string.format("group start took %.2f s for 3 x %.1f s", took, delay))
  end)

  it("mixes executor kinds and probes", function()
    local dir = mk.tmpdir()
    local port = mk.free_port()
    local sock, pf = dir .. "/g.sock", dir .. "/g.pid"
    local members = {
      mk.output { FX, "--sleep", 0.2, "--print", "ready", "--forever", banner = "^ready$", timeout = 10 },
      mk.tcp { FX, "--sleep", 0.2, "--listen", port, "--serve-tcp", port = port, timeout = 10 },
      mk.unix { FX, "--sleep", 0.2, "--unix", sock, "--serve-unix", socket = sock, timeout = 10 },
      mk.pidfile { FX, "--sleep", 0.2, "--pidfile", pf, "--forever", file = pf, timeout = 10 },
      mk.notify { FX, "--sleep", 0.2, "--notify", "--forever", timeout = 10 },
      mk.process { FX, "--forever" },
    }
    local _g <close> = mk.group(members):start()
    for _, s in ipairs(members) do assert.is_true(s:running(), s.name) end
    assert.equal("ready", members[1].ready_match.line)
  end)

  it("one failing member: the error names it and the others are stopped", function()
    local a, c = slow_tcp(0.3, "good-a"), slow_tcp(0.3, "good-c")
    local bad = mk.tcp { FX, "--sleep", 0.1, "--eprint", "bad: cannot bind", "--exit", 1,
      port = mk.free_port(), timeout = 20, name = "broken" }
    local g = mk.group { a, bad, c }
    local e = expect_error("ProcessExitedWithError", function() g:start() end)
    assert.equal("broken", e.name)
    assert.matches("broken", tostring(e), 1, true)
    assert.matches("bad: cannot bind", e.log_tail, 1, true)
    assert.equal(1, e.exit_code)
    assert.is_false(a:running())
    assert.is_false(c:running())
    assert.is_false(listening(a.port))
    assert.matches("in a group of 3; other members: good-a killed, good-c killed)", e.message, 1, true)
    g:stop() -- nothing left to stop: no error
  end)

  it("the failure says what happened to each other member: killed, had already exited, not started", function()
    local flag = mk.tmpdir() .. "/quit"
    local quitter = mk.process { FX, "--touch", flag, "--exit", 1, name = "quitter", on_exit = "ignore" }
    local db = slow_tcp(30, "db")
    local bad = mk.tcp { shell = "while [ ! -e " .. flag .. " ]; do sleep 0.01; done; sleep 0.2; exit 3",
      port = mk.free_port(), timeout = 20, name = "flaky" }
    local e = expect_error("ProcessExitedWithError", function() mk.group { quitter, db, bad }:start() end)
    assert.equal("flaky", e.name)
    assert.matches("(in a group of 3; other members: quitter had already exited (exit code 1), db killed)",
      e.message, 1, true)
    assert.not_matches("stopped", e.message, 1, true)
    assert.is_false(db:running())

    local first = slow_tcp(30, "first")
    local missing = mk.process { "/nonexistent/mkharness-prog", name = "missing" }
    local never = slow_tcp(0.1, "never")
    e = expect_error("SpawnError", function() mk.group { first, missing, never }:start() end)
    assert.equal("missing", e.name)
    assert.matches("other members: first killed, never not started)", e.message, 1, true)
    assert.is_false(first:running())
    assert.is_nil(never:pid())
  end)

  it("one member timing out: TimeoutExpired naming it, the others stopped", function()
    local a = slow_tcp(0.1, "fast-one")
    local slow = mk.tcp { FX, "--forever", port = mk.free_port(), timeout = 0.5, name = "never-ready" }
    local g = mk.group { a, slow }
    local e = expect_error("TimeoutExpired", function() g:start() end)
    assert.equal("never-ready", e.name)
    assert.is_false(a:running())
    assert.is_false(slow:running())
  end)

  it(":stop() stops all members", function()
    local members = { slow_tcp(0.05, "s1"), slow_tcp(0.05, "s2"), slow_tcp(0.05, "s3") }
    local g = mk.group(members):start()
    local pids = {}
    for i, s in ipairs(members) do pids[i] = s:pid() end
    assert.equal(g, g:stop())
    for i, s in ipairs(members) do
      assert.is_false(s:running())
      assert.is_false(H.pid_alive(pids[i]))
    end
  end)

  it(":stop() stops members in parallel", function()
    local members = {}
    for i = 1, 3 do
      members[i] = mk.output { FX, "--ignore", "TERM", "--print", "ignoring TERM", "--forever", banner = "ignoring",
        stop_timeout = 0.5, timeout = 10, name = "stubborn" .. i }
    end
    local g = mk.group(members):start()
    local t0 = mk.now()
    g:stop()
    -- sequential escalation would be >= 1.5 s
    assert.is_true(mk.now() - t0 < 1.3, "stop took " .. (mk.now() - t0))
    for _, s in ipairs(members) do assert.equal(-9, s:exit_code()) end
  end)

  it("<close> stops all members", function()
    local members = { slow_tcp(0.05), slow_tcp(0.05) }
    do
      local _g <close> = mk.group(members):start()
      assert.is_true(members[1]:running() and members[2]:running())
    end
    assert.is_false(members[1]:running())
    assert.is_false(members[2]:running())
  end)

  it("<close> stops all members when the block raises", function()
    local members = { slow_tcp(0.05), slow_tcp(0.05) }
    local ok = pcall(function()
      local _g <close> = mk.group(members):start()
      error("boom")
    end)
    assert.is_false(ok)
    assert.is_false(members[1]:running())
    assert.is_false(members[2]:running())
  end)

  it("a member behind a slow HTTP endpoint holds no other: the fast member is ready long before the answer", function()
    local hport, tport = mk.free_port(), mk.free_port()
    local slow = mk.executor { FX, "--listen", hport, "--http-delay", 1.5, "--serve-http", 200, name = "slow-http",
      timeout = 20, ready = mk.probe.http { url = "http://127.0.0.1:" .. hport .. "/", method = "GET" } }
    local fast_at
    local fast = mk.executor { FX, "--sleep", 0.2, "--listen", tport, "--serve-tcp", name = "fast-tcp", timeout = 20,
      ready = function()
        if listening(tport) then fast_at = mk.now() return true end
        return false
      end }
    local t0 = mk.now()
    local _g <close> = mk.group { slow, fast }:start()
    local took = mk.now() - t0
    assert.is_true(slow:running() and fast:running())
    -- the slow member answered only after its 1.5 s delay ...
    assert.is_true(took >= 1.4, string.format("group start took %.2f s", took))
    -- ... while its request was in flight the fast one was seen (a blocking
    -- request would hold the loop until ~1.5 s)
    assert.is_true(fast_at - t0 < 1.0, string.format("fast member ready after %.2f s", fast_at - t0))
  end)

  it("a member failing while another's HTTP request is in flight fails at once, not when the request ends", function()
    local hport = mk.free_port()
    local slow = mk.executor { FX, "--listen", hport, "--http-hang", "--serve-http", 200, name = "hung-http",
      timeout = 20, ready = mk.probe.http { url = "http://127.0.0.1:" .. hport .. "/" } }
    local bad = mk.executor { FX, "--sleep", 0.3, "--exit", 2, name = "quits", timeout = 20,
      ready = mk.probe.file { path = mk.tmpdir() .. "/never" } }
    local t0 = mk.now()
    local e = expect_error("ProcessExitedWithError", function() mk.group { slow, bad }:start() end)
    local took = mk.now() - t0
    assert.equal("quits", e.name)
    -- a blocking request would hold the loop until the probe's own timeout
    assert.is_true(took < 5, string.format("the failure took %.2f s", took))
    assert.is_false(slow:running())
  end)

  it("a non-executor member is a ConfigError", function()
    local svc = mk.process { FX, "--forever" }
    expect_error("ConfigError", function() mk.group { svc, "redis" } end)
    expect_error("ConfigError", function() mk.group { svc, {} } end)
    expect_error("ConfigError", function() mk.group { svc, mk.probe.tcp { port = 80 } } end)
    expect_error("ConfigError", function() mk.group { svc, extra = svc } end)
    expect_error("ConfigError", function() mk.group "svc" end)
    assert.is_nil(svc:pid())
  end)

  describe("with order (after =)", function()
    local function stamp(path)
      return mk.wait_until(function() return tonumber(H.slurp(path) or "") end, { timeout = 5 })
    end
    -- a member that appends its name to LOG when it gets SIGTERM
    local function logger(name, log, extra)
      local t = { shell = "trap 'echo " .. name .. " >> " .. log .. "; exit 0' TERM; echo up; while :; do sleep 0.02; done",
        banner = "up", name = name }
      for k, v in pairs(extra or {}) do t[k] = v end
      return mk.output(t)
    end

    it("a member starts once what it comes after is ready; the others at once; stop() in reverse", function()
      local dir = mk.tmpdir()
      local port = mk.free_port()
      local db = mk.tcp { H.fx, "--sleep", 0.3, "--stamp", dir .. "/db", "--listen", port, "--serve-tcp",
        port = port, name = "db" }
      local api = mk.process { H.fx, "--stamp", dir .. "/api", "--forever", name = "api" }
      local other = mk.process { H.fx, "--stamp", dir .. "/other", "--forever", name = "other" }
      local g = mk.group { api, db, other, after = { [api] = { db } } }:start()
      assert.is_true(stamp(dir .. "/api") > stamp(dir .. "/db"), "api started before db was ready")
      assert.is_true(stamp(dir .. "/other") < stamp(dir .. "/db"), "other waited for db")
      g:stop()
      assert.is_false(db:running() or api:running() or other:running())
    end)

    it("stop() stops each member before what it comes after; stop{ order = } in the order given", function()
      local log = mk.tmpdir() .. "/log"
      local a, b, c = logger("a", log), logger("b", log), logger("c", log)
      local g = mk.group { a, b, c, after = { [b] = { a }, [c] = { b } } }:start()
      g:stop()
      assert.equal("c\nb\na\n", H.slurp(log))
      os.remove(log)
      g:start()
      g:stop { order = { a, c, b } }
      assert.equal("a\nc\nb\n", H.slurp(log))
    end)

    it("bad orders are ConfigErrors: a non-member, a cycle", function()
      local a = mk.process { H.fx, "--forever", name = "ga" }
      local b = mk.process { H.fx, "--forever", name = "gb" }
      local stranger = mk.process { H.fx, "--forever" }
      local e = expect_error("ConfigError", function() mk.group { a, b, after = { [a] = { stranger } } } end)
      assert.matches("not a member", e.message, 1, true)
      e = expect_error("ConfigError", function() mk.group { a, b, after = { [a] = { b }, [b] = { a } } } end)
      assert.matches("cycle", e.message, 1, true)
      expect_error("ConfigError", function() mk.group { a, b, after = 5 } end)
    end)
  end)
end)
