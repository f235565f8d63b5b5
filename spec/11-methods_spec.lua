-- The executor's methods: start, stop, kill, restart, signal, pause and
-- resume, stopped/paused, state queries, output and its waits.
local H = require "spec.helpers"
local mk = require "mkharness"

local FX = H.fx
local raises = H.raises
local is_paused = H.is_paused
local is_resumed = H.is_resumed
local wait_paused = H.wait_paused
local file_exists = H.file_exists
local COUNTER = H.COUNTER
local cg_frozen = H.cg_frozen

describe("mk.process", function()
  H.leakcheck()

  describe("methods", function()
    it("start() returns self and is a no-op when running", function()
      local s <close> = mk.process { FX, "--print", "once", "--forever" }
      assert.equal(s, s:start())
      s:wait_output("once")
      local pid = s:pid()
      assert.equal(s, s:start())
      assert.equal(pid, s:pid())
      assert.equal("once\n", s:output())
    end)

    it("stop() is a no-op when never started and when already stopped", function()
      local s = mk.process { FX, "--forever" }
      assert.equal(s, s:stop())
      assert.is_nil(s:exit_code())
      s:start()
      assert.equal(s, s:stop())
      assert.equal(-15, s:exit_code())
      assert.equal(s, s:stop())
      assert.equal(s, s:kill())
      s:start():kill()
      assert.equal(s, s:stop())
      assert.equal(-9, s:exit_code())
    end)

    it("stop(): a service that exited on its own with 3 is a ProcessFinishedWithError", function()
      local s = mk.process { FX, "--print", "bye", "--exit", 3, on_exit = "ignore" }:start()
      mk.wait_until(function() return not s:running() end, { timeout = 10 })
      local e = raises("ProcessFinishedWithError", s.stop, s)
      assert.equal(3, e.exit_code)
      assert.is_false(s:running())
      assert.equal(s, s:stop()) -- judged once
    end)

    it("stop(): a service killed from outside with SIGKILL is a ProcessFinishedWithError", function()
      local s = mk.process { FX, "--forever", on_exit = "ignore" }:start()
      local pid = s:pid()
      assert.equal(0, mk.run { "kill", "-KILL", pid }.code)
      mk.wait_until(function() return not s:running() end, { timeout = 10 })
      local e = raises("ProcessFinishedWithError", s.stop, s)
      assert.equal(-9, e.exit_code)
    end)

    it("stop{ expected_returncode = } accepts that code", function()
      local s = mk.process { FX, "--exit", 5 }:start()
      s:wait_exit { timeout = 10 }
      s:stop { expected_returncode = 5 }
      assert.equal(5, s:exit_code())
    end)

    it("stop{ signal = } sends that signal", function()
      local s = mk.process { FX, "--on-signal", "USR2", 6, "--print", "ready", "--forever" }:start()
      s:wait_output("ready")
      s:stop { signal = "SIGUSR2", expected_returncode = 6 }
      assert.equal(6, s:exit_code())
    end)

    it("stop{ timeout = } escalates to SIGKILL after it, without raising", function()
      local s = mk.process { FX, "--ignore", "TERM", "--print", "ready", "--forever" }:start()
      s:wait_output("ready")
      s:stop { timeout = 0.2 }
      assert.equal(-9, s:exit_code())
    end)

    it("a service ignoring SIGTERM is killed after stop_timeout; stop() does not raise", function()
      local s = mk.process { FX, "--ignore", "SIGTERM", "--print", "ready", "--forever", stop_timeout = 0.3 }:start()
      s:wait_output("ready")
      local pid = s:pid()
      s:stop()
      assert.equal(-9, s:exit_code())
      assert.is_false(H.pid_alive(pid))
    end)

    it("kill() sends SIGKILL and reaps by default", function()
      local s = mk.process { FX, "--forever" }:start()
      local pid = s:pid()
      assert.equal(s, s:kill())
      assert.is_false(s:running())
      assert.is_false(H.pid_alive(pid))
      assert.equal(-9, s:exit_code())
      s:stop() -- already stopped by kill(): no-op
    end)

    it("kill{ signal = } sends that signal", function()
      local s = mk.process { FX, "--on-signal", "USR1", 4, "--print", "ready", "--forever" }:start()
      s:wait_output("ready")
      s:kill { signal = "USR1" }
      assert.equal(4, s:exit_code())
      assert.is_false(s:running())
      local s2 = mk.process { FX, "--forever" }:start()
      s2:kill { signal = "INT" }
      assert.equal(-2, s2:exit_code())
    end)

    it("kill{ wait = false } does not reap", function()
      local s = mk.process { FX, "--forever" }:start()
      assert.equal(s, s:kill { wait = false })
      assert.equal(-9, s:wait_exit { timeout = 10 })
      assert.is_false(s:running())
      pcall(s.stop, s)
    end)

    it("restart() gives a new pid and output() holds what was written since", function()
      local s <close> = mk.process { shell = "echo pid $$; exec " .. FX .. " --forever" }:start()
      local _, pid1 = s:wait_output("pid (%d+)")
      assert.equal(tostring(s:pid()), pid1)
      assert.equal(s, s:restart())
      local _, pid2 = s:wait_output("pid (%d+)")
      assert.not_equal(pid1, pid2)
      assert.equal(tostring(s:pid()), pid2)
      assert.equal("pid " .. pid2 .. "\n", s:output())
      assert.is_false(H.pid_alive(tonumber(pid1)))
    end)

    it("signal(\"HUP\") reaches the service", function()
      local s = mk.process { FX, "--on-signal", "HUP", 7, "--print", "ready", "--forever" }:start()
      s:wait_output("ready")
      assert.equal(s, s:signal("HUP"))
      assert.equal(7, s:wait_exit { timeout = 10 })
      assert.equal(7, s:exit_code())
      s:stop { expected_returncode = 7 }
      raises("ExecutorError", s.signal, s, "HUP")
    end)

    it("pause()/resume(): a paused service produces no output; it goes on after resume", function()
      local s <close> = mk.process { shell = COUNTER }:start()
      s:wait_output("^3$")
      assert.equal(s, s:pause())
      wait_paused(s:pid())
      mk.sleep(0.05)
      local frozen = s:output()
      mk.sleep(0.3)
      assert.equal(frozen, s:output())
      assert.is_true(s:running())
      assert.equal(s, s:resume())
      local last = tonumber(frozen:match("(%d+)\n$"))
      s:wait_output("^" .. (last + 3) .. "$", { timeout = 10 })
    end)

    it("stop() of a paused service works", function()
      local s = mk.process { shell = COUNTER }:start()
      s:wait_output("^1$")
      s:pause()
      wait_paused(s:pid())
      s:stop()
      assert.is_false(s:running())
      assert.equal(-15, s:exit_code())
    end)

    it("stop() and kill() of a paused service that handles the signal: it sees the signal", function()
      local s = mk.process { shell = "trap 'exit 3' TERM; trap 'exit 4' USR1; echo up; while :; do sleep 0.05; done",
        stop_timeout = 5 }:start()
      s:wait_output("up")
      s:pause()
      s:stop { expected_returncode = 3 }
      assert.equal(3, s:exit_code())
      s:start()
      s:wait_output("up")
      s:pause()
      s:kill { signal = "USR1" }
      assert.equal(4, s:exit_code())
    end)

    it("pause() returns once every process of the service is paused, resume() once all run", function()
      local dir = mk.tmpdir()
      local s <close> = mk.process { FX, "--fork-tree", dir, "--touch", dir .. "/done", "--forever",
        stop_timeout = 0.2 }:start()
      mk.wait_until(function() return file_exists(dir .. "/done") end, { timeout = 20 })
      local cgroup = cg_frozen(s:pid()) ~= nil
      -- with a cgroup every descendant is the service's; without one, its
      -- process group is what SIGSTOP reaches
      local pids = { s:pid() }
      for pid, kind in mk.run { shell = "cat " .. dir .. "/*.pid" }.stdout:gmatch("(%d+) (%S+)") do
        if cgroup or kind == "child" or kind == "middle" then pids[#pids + 1] = tonumber(pid) end
      end
      assert.is_true(#pids >= 3)
      for _ = 1, 3 do
        s:pause()
        for _, pid in ipairs(pids) do assert.is_true(is_paused(pid), "pid " .. pid .. " not paused") end
        s:resume()
        for _, pid in ipairs(pids) do assert.is_true(is_resumed(pid), "pid " .. pid .. " still paused") end
      end
      s:pause()
      s:kill() -- a paused service is killed too
      assert.equal(-9, s:exit_code())
    end)

    it("pause()/resume() without cgroups: SIGSTOP/SIGCONT, checked for every process of the group", function()
      local r = H.scenario([[
        local function state(pid)
          local f = io.open("/proc/" .. pid .. "/stat")
          local st = f and f:read("a"):match("%) (%a)")
          if f then f:close() end
          return st
        end
        local function group(pgid)
          local out = {}
          for line in mk.run { "ps", "-e", "-o", "pid=,pgid=" }.stdout:gmatch("[^\n]+") do
            local pid, pg = line:match("(%d+)%s+(%d+)")
            if tonumber(pg) == pgid then out[#out + 1] = tonumber(pid) end
          end
          return out
        end
        local s = mk.process { shell = "sleep 100 & sleep 100 & echo up; wait", stop_timeout = 2 }:start()
        s:wait_output("up")
        local pids
        mk.wait_until(function() pids = group(s:pid()) return #pids == 3 end, { timeout = 10 })
        for round = 1, 3 do
          s:pause()
          for _, pid in ipairs(pids) do
            local st = state(pid)
            assert(st == "T" or st == "D", "after pause(): pid " .. pid .. " in state " .. tostring(st))
          end
          s:resume()
          for _, pid in ipairs(pids) do
            local st = state(pid)
            assert(st ~= "T", "after resume(): pid " .. pid .. " in state " .. tostring(st))
          end
        end
        s:pause()
        s:stop()
        print("EXIT " .. s:exit_code())
      ]], { env = { MKHARNESS_CGROUP = "0", MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 60 })
      assert.equal(0, r.code, r.stderr)
      assert.matches("EXIT -15", r.stdout, 1, true)
    end)

    it("teardown stops a paused service gracefully (it sees the stop signal)", function()
      local dir = mk.tmpdir()
      local r = H.scenario([[
        local s = mk.process { shell = "trap 'echo bye > " .. arg[1] .. "/bye; exit 0' TERM; echo up; "
          .. "while :; do sleep 0.05; done", stop_timeout = 5 }:start()
        s:wait_output("up")
        s:pause()
        print("PAUSED")
      ]], { args = { dir }, env = { MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 60 })
      assert.equal(0, r.code, r.stderr)
      assert.matches("PAUSED", r.stdout, 1, true)
      assert.equal("bye\n", H.slurp(dir .. "/bye"))
    end)

    it("stopped(fn) stops, calls fn, starts again and returns fn's results", function()
      local s <close> = mk.process { FX, "--print", "up", "--forever" }:start()
      local pid = s:pid()
      local a, b, c = s:stopped(function(svc)
        assert.equal(s, svc)
        assert.is_false(svc:running())
        assert.is_false(H.pid_alive(pid))
        return 1, nil, "three"
      end)
      assert.equal(1, a)
      assert.is_nil(b)
      assert.equal("three", c)
      assert.is_true(s:running())
      assert.not_equal(pid, s:pid())
    end)

    it("stopped(fn) starts again when fn raises, and re-raises", function()
      local s <close> = mk.process { FX, "--forever" }:start()
      local pid = s:pid()
      local boom = { "boom" }
      local ok, e = pcall(s.stopped, s, function() error(boom) end)
      assert.is_false(ok)
      assert.equal(boom, e)
      assert.is_true(s:running())
      assert.not_equal(pid, s:pid())
      ok, e = pcall(s.stopped, s, function() error("plain string", 0) end)
      assert.is_false(ok)
      assert.equal("plain string", e)
      assert.is_true(s:running())
    end)

    it("stopped() of a service that is not running is an ExecutorError", function()
      local s = mk.process { FX, "--forever" }
      raises("ExecutorError", s.stopped, s, function() end)
      s:start():stop()
      local called = false
      local e = raises("ExecutorError", s.stopped, s, function() called = true end)
      assert.is_false(called)
      assert.equal(s.name, e.name)
      assert.is_false(s:running())
    end)

    it("local _ <close> = svc:stopped() guards a block", function()
      local s <close> = mk.process { FX, "--forever" }:start()
      local pid = s:pid()
      do
        local _ <close> = s:stopped()
        assert.is_false(s:running())
      end
      assert.is_true(s:running())
      assert.not_equal(pid, s:pid())
      -- also when the block raises
      pcall(function()
        local _ <close> = s:stopped()
        error("inside")
      end)
      assert.is_true(s:running())
    end)

    it("paused(fn) pauses, calls fn, resumes (also on error) and returns fn's results", function()
      local s <close> = mk.process { FX, "--forever" }:start()
      local pid = s:pid()
      local x, y = s:paused(function(svc)
        assert.is_true(is_paused(pid))
        assert.is_true(svc:running())
        return "x", 2
      end)
      assert.equal("x", x)
      assert.equal(2, y)
      assert.is_true(is_resumed(pid))
      local ok, e = pcall(s.paused, s, function() assert(is_paused(pid)); error("oops", 0) end)
      assert.is_false(ok)
      assert.equal("oops", e)
      assert.is_true(is_resumed(pid))
      do
        local _ <close> = s:paused()
        assert.is_true(is_paused(pid))
      end
      assert.is_true(is_resumed(pid))
      assert.equal(pid, s:pid())
      local n = mk.process { FX }
      raises("ExecutorError", n.paused, n, function() end)
      raises("ExecutorError", n.pause, n)
      raises("ExecutorError", n.resume, n)
    end)

    it("running(), pid(), exit_code()", function()
      local s = mk.process { FX, "--print", "x", "--forever" }
      assert.is_false(s:running())
      assert.is_nil(s:pid())
      assert.is_nil(s:exit_code())
      s:start()
      assert.is_true(s:running())
      local pid = s:pid()
      assert.equal("integer", math.type(pid))
      assert.is_true(H.pid_alive(pid))
      assert.is_nil(s:exit_code())
      s:kill { signal = "INT" }
      assert.equal(-2, s:exit_code())
      assert.is_false(s:running())
      assert.is_nil(s:pid())
      local z = mk.process { FX }:start()
      z:wait_exit { timeout = 10 }
      assert.equal(0, z:exit_code())
      assert.is_false(z:running())
      z:stop()
      assert.equal(0, z:exit_code())
    end)

    it("wait_exit{ timeout = } returns the code, or raises TimeoutExpired", function()
      local s = mk.process { FX, "--sleep", 0.05, "--exit", 9 }:start()
      assert.equal(9, s:wait_exit { timeout = 10 })
      s:stop { expected_returncode = 9 }
      local f <close> = mk.process { FX, "--forever" }:start()
      local e = raises("TimeoutExpired", f.wait_exit, f, { timeout = 0.2 })
      assert.equal(f.name, e.name)
      assert.near(0.2, e.timeout, 1e-6)
      assert.is_true(f:running())
      local n = mk.process { FX }
      raises("ExecutorError", n.wait_exit, n)
    end)

    it("output()/err_output() are the captured streams", function()
      local s <close> = mk.process { FX, "--print", "o1", "--eprint", "e1", "--write", "o2", "--ewrite", "e2" }
      assert.equal("", s:output())
      s:start()
      s:wait_exit { timeout = 10 }
      assert.equal("o1\no2", s:output())
      assert.equal("e1\ne2", s:err_output())
    end)

    it("wait_output returns the line, then the captures", function()
      local s <close> = mk.process { FX, "--print", "hello", "--listen", 0, "--eprint", "err 12 ab",
        "--forever" }:start()
      local line, port = s:wait_output("port (%d+)")
      assert.matches("^port %d+$", line)
      assert.is_true(tonumber(port) >= 1 and tonumber(port) <= 65535)
      local l2, n, w = s:wait_output("err (%d+) (%a+)", { stream = "stderr", timeout = 5 })
      assert.equal("err 12 ab", l2)
      assert.equal("12", n)
      assert.equal("ab", w)
      assert.equal("hello", (s:wait_output("hello", { stream = "stdout" })))
    end)

    it("wait_output: stream, plain and since = \"now\"", function()
      local s <close> = mk.process { FX, "--print", "sum 1+1=2", "--eprint", "only-err", "--forever" }:start()
      assert.equal("sum 1+1=2", (s:wait_output("1+1=2", { plain = true, timeout = 5 })))
      raises("TimeoutExpired", s.wait_output, s, "1+1=2", { timeout = 0.2 })
      assert.equal("only-err", (s:wait_output("only%-err", { timeout = 5 })))
      raises("TimeoutExpired", s.wait_output, s, "only%-err", { stream = "stdout", timeout = 0.2 })
      raises("TimeoutExpired", s.wait_output, s, "sum", { since = "now", timeout = 0.2 })

      local c <close> = mk.process { shell = COUNTER }:start()
      local _, n1 = c:wait_output("^(%d+)$")
      assert.equal("1", n1)
      c:wait_output("^5$", { timeout = 10 })
      local _, n2 = c:wait_output("^(%d+)$", { since = "now", timeout = 10 })
      assert.is_true(tonumber(n2) > 5, "since = now matched old line " .. n2)
    end)

    it("wait_output: TimeoutExpired when nothing matches", function()
      local s <close> = mk.process { FX, "--print", "something", "--forever" }:start()
      local e = raises("TimeoutExpired", s.wait_output, s, "nothing like this", { timeout = 0.2 })
      assert.equal(s.name, e.name)
      assert.matches("nothing like this", tostring(e), 1, true)
      assert.matches("something", e.log_tail, 1, true)
      assert.is_true(s:running())
    end)

    it("wait_for(fn): truthy returns self", function()
      local s <close> = mk.process { FX, "--forever" }:start()
      local n = 0
      assert.equal(s, s:wait_for(function()
        n = n + 1
        return n >= 3
      end))
      assert.equal(3, n)
      assert.is_true(s:running())
    end)

    it("wait_for(fn): never truthy -> TimeoutExpired and the service is killed", function()
      local s <close> = mk.process { FX, "--forever", timeout = 0.3 }:start()
      local pid = s:pid()
      local e = raises("TimeoutExpired", s.wait_for, s, function() return false end)
      assert.equal(s.name, e.name)
      assert.is_false(s:running())
      assert.is_false(H.pid_alive(pid))
    end)

    it("<close> stops the service", function()
      local kept, pid
      do
        local s <close> = mk.process { FX, "--forever" }:start()
        kept, pid = s, s:pid()
        assert.is_true(H.pid_alive(pid))
      end
      assert.is_false(kept:running())
      assert.is_false(H.pid_alive(pid))
      assert.equal(-15, kept:exit_code())
      -- also when the block raises
      local ok = pcall(function()
        local s <close> = mk.process { FX, "--forever" }:start()
        kept, pid = s, s:pid()
        error("inside")
      end)
      assert.is_false(ok)
      assert.is_false(kept:running())
      assert.is_false(H.pid_alive(pid))
    end)

    it("the collector never kills a started service: the run holds it until it is stopped", function()
      local function forget()
        local s = mk.process { FX, "--forever", name = "forgotten" }:start()
        return s:pid()
      end
      local pid = forget()
      for _ = 1, 5 do collectgarbage() end
      mk.sleep(0.1)
      assert.is_true(H.pid_alive(pid))
      -- the run still knows it: stop it through the registry of services
      for svc in pairs(mk._services) do
        if svc.name == "forgotten" then svc:stop() end
      end
      assert.is_false(H.pid_alive(pid))
    end)

    it("__tostring shows the kind, the command, the pid and the state", function()
      local s <close> = mk.process { FX, "--print", "ts", "--forever" }
      local before = tostring(s)
      assert.matches("process", before, 1, true)
      assert.matches("fx_svc --print ts --forever", before, 1, true)
      s:start()
      local str = tostring(s)
      assert.matches("process", str, 1, true)
      assert.matches("fx_svc --print ts --forever", str, 1, true)
      assert.matches(tostring(s:pid()), str, 1, true)
      assert.matches("running", str, 1, true)
      s:stop()
      assert.not_matches("running", tostring(s), 1, true)
    end)
  end)

  -------------------------------------------------------------- module functions
end)

describe("wait_output on a stopped service", function()
  H.leakcheck()

  it("finds what was printed, and fails at once (not after the timeout) for what was not", function()
    local s = mk.process { H.fx, "--print", "said-this", "--forever" }:start()
    s:wait_output("said%-this")
    s:stop()
    assert.equal("said-this", (s:wait_output("said%-this")))
    local t0 = mk.now()
    local ok, e = pcall(s.wait_output, s, "never said", { timeout = 30 })
    assert.is_false(ok)
    assert.is_true(mk.is_error(e, "ExecutorError"), tostring(e))
    assert.matches("stopped", e.message, 1, true)
    assert.is_true(mk.now() - t0 < 20, "it waited for the timeout")
  end)
end)
