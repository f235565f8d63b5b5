-- mk.process (mirakuru's SimpleExecutor): command forms, common options,
-- methods, module functions, errors; a service never blocks on its output,
-- and children get a clean slate.
local H = require "spec.helpers"
local mk = require "mkharness"

local FX = H.fx

---------------------------------------------------------------- local helpers

-- Call fn, expect it to raise; return the error.
local function catch(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return e
end

-- Expect fn(...) to raise a harness error of `kind`; return it.
local function raises(kind, fn, ...)
  local e = catch(fn, ...)
  assert(mk.is_error(e, kind), "expected a " .. kind .. ", got: " .. tostring(e))
  return e
end

-- Expect a ConfigError whose message names every string in `names`.
local function config_error(names, fn, ...)
  local e = raises("ConfigError", fn, ...)
  if type(names) == "string" then names = { names } end
  for _, n in ipairs(names) do
    assert.matches(n, e.message, 1, true)
  end
  return e
end

local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- /proc/PID/stat state letter (R, S, T, Z, ...) or nil.
local function proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("%) (%a)")
end

-- Whether pid's cgroup (v2) is frozen; nil when it has no freezer (the
-- root cgroup, or no cgroup v2 mounted).
local function cg_frozen(pid)
  local mnt
  for line in io.lines("/proc/self/mountinfo") do
    local m, fstype = line:match("^%S+ %S+ %S+ %S+ (%S+) .- %- (%S+) ")
    if fstype == "cgroup2" then mnt = m break end
  end
  local f = io.open("/proc/" .. pid .. "/cgroup")
  local cg = f and f:read("a"):match("0::([^\n]*)")
  if f then f:close() end
  if not mnt or not cg or cg == "/" then return nil end
  local ev = io.open(mnt .. cg .. "/cgroup.events")
  local frozen = ev and ev:read("a"):match("frozen (%d)")
  if ev then ev:close() end
  if frozen then return frozen == "1" end
end

-- Paused: frozen by the cgroup freezer (the state stays S), or stopped (T).
-- A shell caught inside vfork() waits for its stopped child
-- uninterruptibly (D) and stops only once the child execs or dies.
local function is_paused(pid)
  local st = proc_state(pid)
  return st == "T" or st == "t" or st == "D" or cg_frozen(pid) == true
end

-- Running again: neither stopped nor frozen.
local function is_resumed(pid)
  local st = proc_state(pid)
  return st ~= nil and st ~= "T" and st ~= "t" and cg_frozen(pid) ~= true
end

-- pause() returns once the service is paused: no waiting here
local function wait_paused(pid)
  assert(is_paused(pid), "pid " .. pid .. " not paused (state " .. tostring(proc_state(pid)) .. ")")
end

local function file_exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function write_file(path, data)
  local f = assert(io.open(path, "w"))
  f:write(data)
  f:close()
end

-- A shell loop printing a counter every 20 ms.
local COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"

describe("mk.process", function()
  H.leakcheck()

  -------------------------------------------------------------- 2.1 commands
  describe("command forms", function()
    it("argv list: no shell, numbers become strings", function()
      local s <close> = mk.process { FX, "--print", 42, "--print", 1.5, "--print", "a b|c$HOME" }
      assert.same({ FX, "--print", "42", "--print", "1.5", "--print", "a b|c$HOME" }, s.argv)
      s:start()
      assert.equal(0, s:wait_exit { timeout = 10 })
      assert.equal("42\n1.5\na b|c$HOME\n", s:output())
    end)

    it("cmd = is split by shell word rules (quotes, backslashes), without a shell", function()
      local cmd = FX .. [[ --print "a  b" --print 'c "d" $HOME' --print e\ f --print "q\"x" --print g\\h]]
      local s <close> = mk.process { cmd = cmd }
      assert.equal(cmd, s.command)
      assert.same({ FX, "--print", "a  b", "--print", 'c "d" $HOME', "--print", "e f",
        "--print", 'q"x', "--print", "g\\h" }, s.argv)
      s:start()
      assert.equal(0, s:wait_exit { timeout = 10 })
      assert.equal('a  b\nc "d" $HOME\ne f\nq"x\ng\\h\n', s:output())
    end)

    it("shell = runs through /bin/sh -c (a pipe works)", function()
      local sh = FX .. " --print hello --print world | tr a-z A-Z"
      local s <close> = mk.process { shell = sh }
      assert.equal(sh, s.command)
      s:start()
      assert.equal(0, s:wait_exit { timeout = 10 })
      assert.equal("HELLO\nWORLD\n", s:output())
    end)

    it("ConfigError: no command", function()
      local e = raises("ConfigError", mk.process, { name = "x" })
      assert.matches("command", e.message, 1, true)
      raises("ConfigError", mk.process, {})
    end)

    it("ConfigError: two command forms at once", function()
      raises("ConfigError", mk.process, { FX, cmd = FX })
      raises("ConfigError", mk.process, { cmd = FX, shell = FX })
      raises("ConfigError", mk.process, { FX, shell = FX })
    end)

    it("ConfigError: unterminated quote in cmd", function()
      config_error("cmd", mk.process, { cmd = FX .. [[ --print "abc]] })
      config_error("cmd", mk.process, { cmd = FX .. [[ --print 'abc]] })
    end)

    it("ConfigError: an unquoted | in cmd suggests shell =", function()
      local e = config_error("cmd", mk.process, { cmd = FX .. " --print a | cat" })
      assert.matches("shell =", e.message, 1, true)
      -- quoted it is just an argument
      assert.same({ FX, "--print", "a | b" }, mk.process { cmd = FX .. " --print 'a | b'" }.argv)
    end)

    it("ConfigError: empty argv[0], empty cmd/shell", function()
      raises("ConfigError", mk.process, { "" })
      raises("ConfigError", mk.process, { "", "x" })
      config_error("cmd", mk.process, { cmd = "" })
      config_error("shell", mk.process, { shell = "" })
    end)

    it("ConfigError: a non-string argv element", function()
      config_error("[2]", mk.process, { FX, {} })
      config_error("[2]", mk.process, { FX, true })
      config_error("[1]", mk.process, { function() end })
      raises("ConfigError", mk.process, "not a table")
    end)
  end)

  -------------------------------------------------------------- 2.2 options
  describe("option checking", function()
    -- option, a wrong type, a wrong value, a typo of its key
    local cases = {
      { "name", 5, "", "nme" },
      { "timeout", "10", -1, "timout" },
      { "interval", "x", 0, "intervall" },
      { "stop_timeout", "1", -1, "stop_timout" },
      { "stop_signal", {}, "NOSUCHSIG", "stop_signl" },
      { "kill_signal", true, "BOGUS", "kill_signl" },
      { "expected_returncode", "3", 256, "expected_returncod" },
      { "env", "A=1", { A = {} }, "envv" },
      { "clear_env", "yes", 1, "clear_enf" },
      { "cwd", 5, "", "cwdd" },
      { "stdin", 5, {}, "stdn" },
      { "stdout", 1, "file", "stdot" },
      { "stderr", false, "pipe", "stderrr" },
      { "echo", "yes", 0, "echoo" },
    }
    for _, c in ipairs(cases) do
      local opt, bad_type, bad_value, typo = c[1], c[2], c[3], c[4]
      it(opt .. ": wrong type, wrong value and a typo'd key are ConfigErrors naming it", function()
        local e = config_error(opt, mk.process, { FX, [opt] = bad_type })
        assert.equal("ConfigError", e.kind)
        config_error(opt, mk.process, { FX, [opt] = bad_value })
        config_error({ typo, opt }, mk.process, { FX, [typo] = 1 })
      end)
    end

    it("a non-string key and ready/already_running (not for mk.process) are ConfigErrors", function()
      raises("ConfigError", mk.process, { FX, [true] = 1 })
      config_error("ready", mk.process, { FX, ready = function() return true end })
      config_error("already_running", mk.process, { FX, already_running = "reuse" })
    end)

    it("method options are checked too", function()
      local s = mk.process { FX, "--forever" }
      config_error("sginal", s.stop, s, { sginal = "TERM" })
      config_error("signal", s.stop, s, { signal = "NOPE" })
      config_error("timeout", s.stop, s, { timeout = -1 })
      config_error("expected_returncode", s.stop, s, { expected_returncode = "x" })
      raises("ConfigError", s.stop, s, "TERM")
      config_error("wait", s.kill, s, { wait = "no" })
      config_error("signal", s.kill, s, { signal = "NOPE" })
      config_error("timout", s.wait_exit, s, { timout = 1 })
      config_error("strem", s.wait_output, s, "x", { strem = "stdout" })
      config_error("since", s.wait_output, s, "x", { since = "later" })
      config_error("stream", s.wait_output, s, "x", { stream = "both" })
      raises("ConfigError", s.wait_output, s, "(", {})
      raises("ConfigError", s.signal, s, "NOSUCHSIG")
      raises("ConfigError", s.wait_for, s, "not a function")
      assert.is_false(s:running())
    end)
  end)

  describe("options", function()
    it("name defaults to the basename of argv[0], made unique", function()
      local a = mk.process { FX, "--forever" }
      local b = mk.process { FX, "--forever" }
      local c = mk.process { cmd = FX .. " --forever" }
      assert.matches("^fx_svc", a.name)
      assert.matches("^fx_svc", b.name)
      assert.matches("^fx_svc", c.name)
      assert.not_equal(a.name, b.name)
      assert.not_equal(b.name, c.name)
      assert.not_equal(a.name, c.name)
      local d = mk.process { FX, name = "spec10-named" }
      assert.equal("spec10-named", d.name)
      local d2 = mk.process { FX, name = "spec10-named" }
      assert.not_equal(d.name, d2.name)
    end)

    it("timeout is the limit of wait_for", function()
      local s <close> = mk.process { FX, "--forever", timeout = 0.2 }:start()
      local e = raises("TimeoutExpired", s.wait_for, s, function() return false end)
      assert.near(0.2, e.timeout, 1e-6)
      -- false = no limit is accepted
      assert.is_false(mk.process { FX, timeout = false }.timeout)
    end)

    it("interval caps the pause between attempts of a polling wait", function()
      -- each attempt costs 20 ms; an adaptive pace without the cap would
      -- pause far longer than the 0.5 s limit after the first attempt
      local s <close> = mk.process { FX, "--forever", interval = 0.01, timeout = 0.5 }:start()
      local calls = 0
      raises("TimeoutExpired", s.wait_for, s, function()
        calls = calls + 1
        mk.sleep(0.02)
        return false
      end)
      assert.is_true(calls >= 3, "only " .. calls .. " attempts")
    end)

    it("stop_timeout: a service ignoring SIGTERM is killed after it", function()
      local s = mk.process { FX, "--ignore", "TERM", "--print", "ready", "--forever", stop_timeout = 0.3 }:start()
      s:wait_output("ready")
      assert.equal(s, s:stop()) -- escalation is not an error
      assert.equal(-9, s:exit_code())
      assert.is_false(s:running())
    end)

    it("stop_signal: by name, SIGxxx, any case, or number", function()
      for _, sig in ipairs { "usr1", "USR1", "SIGUSR1", "SigUsr1", 10 } do
        local s = mk.process { FX, "--on-signal", "USR1", 3, "--print", "ready", "--forever",
          stop_signal = sig, expected_returncode = 3 }:start()
        s:wait_output("ready")
        s:stop()
        assert.equal(3, s:exit_code(), "stop_signal = " .. tostring(sig))
      end
      -- the stop signal really is the one sent: TERM would kill it with -15
      local s = mk.process { FX, "--on-signal", "USR1", 3, "--print", "ready", "--forever",
        stop_signal = "usr1" }:start()
      s:wait_output("ready")
      local e = raises("ProcessFinishedWithError", s.stop, s)
      assert.equal(3, e.exit_code)
    end)

    it("stop_signal: death by the stop signal is a clean stop", function()
      local s = mk.process { FX, "--print", "ready", "--forever", stop_signal = "INT" }:start()
      s:wait_output("ready")
      s:stop()
      assert.equal(-2, s:exit_code())
    end)

    it("kill_signal is what stop() escalates to", function()
      local s = mk.process { FX, "--ignore", "TERM", "--print", "ready", "--forever",
        stop_timeout = 0.2, kill_signal = "sigint" }:start()
      s:wait_output("ready")
      s:stop()
      assert.equal(-2, s:exit_code())
      local s2 = mk.process { FX, "--ignore", "TERM", "--print", "ready", "--forever",
        stop_timeout = 0.2, kill_signal = 2 }:start()
      s2:wait_output("ready")
      s2:stop()
      assert.equal(-2, s2:exit_code())
    end)

    it("expected_returncode is accepted by stop() besides 0", function()
      local s = mk.process { FX, "--exit", 3, expected_returncode = 3 }:start()
      assert.equal(3, s:wait_exit { timeout = 10 })
      s:stop()
      assert.equal(3, s:exit_code())
      local s2 = mk.process { FX, "--exit", 4, expected_returncode = 3 }:start()
      s2:wait_exit { timeout = 10 }
      local e = raises("ProcessFinishedWithError", s2.stop, s2)
      assert.equal(4, e.exit_code)
    end)

    it("env adds variables and removes them with false", function()
      local s <close> = mk.process { FX, "--env", "SPEC10_A", "--env", "SPEC10_N", "--env", "PATH",
        "--env", "MKHARNESS_RUN",
        env = { SPEC10_A = "hello world", SPEC10_N = 7, PATH = false } }:start()
      s:wait_exit { timeout = 10 }
      local out = s:output()
      assert.matches("env SPEC10_A=hello world\n", out, 1, true)
      assert.matches("env SPEC10_N=7\n", out, 1, true)
      assert.matches("env PATH unset\n", out, 1, true)
      assert.matches("env MKHARNESS_RUN=[^\n]+\n", out)
      -- inherited by default
      local s2 <close> = mk.process { FX, "--env", "PATH" }:start()
      s2:wait_exit { timeout = 10 }
      assert.equal("env PATH=" .. os.getenv("PATH") .. "\n", s2:output())
    end)

    it("clear_env starts from an empty environment (only the harness markers remain)", function()
      local s <close> = mk.process { "/usr/bin/env", clear_env = true }:start()
      assert.equal(0, s:wait_exit { timeout = 10 })
      local out = s:output()
      assert.matches("MKHARNESS_RUN=", out, 1, true)
      for _, l in ipairs(lines(out)) do
        assert.matches("^MKHARNESS_[%w_]+=", l)
      end
      local s2 <close> = mk.process { FX, "--env", "PATH", "--env", "SPEC10_B", clear_env = true,
        env = { SPEC10_B = "b" } }:start()
      s2:wait_exit { timeout = 10 }
      assert.equal("env PATH unset\nenv SPEC10_B=b\n", s2:output())
    end)

    it("cwd sets the working directory", function()
      local dir = mk.tmpdir()
      local real = mk.run { "realpath", dir }.stdout
      local s <close> = mk.process { FX, "--pwd", cwd = dir }:start()
      s:wait_exit { timeout = 10 }
      assert.equal("pwd " .. real, s:output())
    end)

    it("stdin is written to the child's stdin, then closed", function()
      local s <close> = mk.process { FX, "--cat-stdin", "--print", "EOF", stdin = "line 1\nline 2" }:start()
      assert.equal(0, s:wait_exit { timeout = 10 })
      assert.equal("line 1\nline 2EOF\n", s:output())
      -- nil: /dev/null
      local s2 <close> = mk.process { FX, "--cat-stdin", "--print", "EOF" }:start()
      assert.equal(0, s2:wait_exit { timeout = 10 })
      assert.equal("EOF\n", s2:output())
    end)

    it("stdin: 1 MB is read fully by the child", function()
      local data = string.rep("0123456789abcdef", 65536) -- 1 MiB
      local s <close> = mk.process { FX, "--cat-stdin", stdin = data }:start()
      assert.equal(0, s:wait_exit { timeout = 20 })
      local out = s:output()
      assert.equal(#data, #out)
      assert.is_true(out == data, "stdin came back altered")
    end)

    it("stdin: a child that never reads it does not block start() or stop()", function()
      local s = mk.process { FX, "--print", "up", "--forever", stdin = string.rep("z", 1 << 20) }:start()
      s:wait_output("up")
      s:stop()
      assert.is_false(s:running())
    end)

    it("stdout/stderr = \"capture\" (the default) keep output apart", function()
      local s <close> = mk.process { FX, "--print", "out", "--eprint", "err" }:start()
      s:wait_exit { timeout = 10 }
      assert.equal("out\n", s:output())
      assert.equal("err\n", s:err_output())
    end)

    it("stdout/stderr = \"null\" discard output", function()
      local s <close> = mk.process { FX, "--fdinfo", "--eprint", "err", stdout = "null", stderr = "null" }:start()
      s:wait_exit { timeout = 10 }
      assert.equal("", s:output())
      assert.equal("", s:err_output())
      local s2 <close> = mk.process { FX, "--fdinfo", stdout = "capture", stderr = "null" }:start()
      s2:wait_exit { timeout = 10 }
      assert.matches("fd 2 -> /dev/null\n", s2:output(), 1, true)
    end)

    it("stdout/stderr = \"inherit\" write to the harness's own stdout/stderr", function()
      local r = H.scenario([[
        local s = mk.process { FX, "--print", "to-stdout", "--eprint", "to-stderr",
          stdout = "inherit", stderr = "inherit" }:start()
        s:wait_exit { timeout = 10 }
        s:stop()
        io.write("captured=[", s:output(), s:err_output(), "]\n")
      ]])
      assert.equal(0, r.code, r.stderr)
      assert.matches("to-stdout\n", r.stdout, 1, true)
      assert.matches("to-stderr\n", r.stderr, 1, true)
      assert.matches("captured=[]", r.stdout, 1, true)
    end)

    it("echo copies output to the harness's stderr, prefixed [name]", function()
      local r = H.scenario([[
        local s = mk.process { FX, "--print", "hello-echo", "--eprint", "err-echo",
          name = "echoer", echo = true }:start()
        s:wait_exit { timeout = 10 }
        s:stop()
        assert(s:output() == "hello-echo\n")
        local q = mk.process { FX, "--print", "quiet-line", name = "quiet" }:start()
        q:wait_exit { timeout = 10 }
        q:stop()
      ]])
      assert.equal(0, r.code, r.stderr)
      assert.matches("[echoer] hello-echo\n", r.stderr, 1, true)
      assert.matches("%[echoer!?%] err%-echo\n", r.stderr)
      assert.not_matches("quiet-line", r.stderr, 1, true)
      assert.not_matches("hello-echo", r.stdout, 1, true)
    end)

    it("echo copies what a service writes at once, on a busy machine too", function()
      -- two busy loops make it likely that the service writes before the
      -- harness gets back from spawning it: nothing may be lost then
      local r = H.scenario([[
        local busy = {}
        for i = 1, 2 do busy[i] = mk.process { shell = "while :; do :; done" }:start() end
        for i = 1, 8 do
          local s = mk.process { FX, "--print", "early-" .. i, name = "early" .. i, echo = true }:start()
          s:wait_exit { timeout = 10 }
          s:stop()
        end
        for i = 1, 2 do busy[i]:stop() end
      ]])
      assert.equal(0, r.code, r.stderr)
      for i = 1, 8 do
        assert.matches("[early" .. i .. "] early-" .. i .. "\n", r.stderr, 1, true)
      end
    end)
  end)

  -------------------------------------------------------------- 2.5 methods
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
      assert.equal(s, s:wait_for(function(svc)
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

  -------------------------------------------------------------- 2.6 module functions
  describe("module functions", function()
    it("wait_until returns fn's value", function()
      local n = 0
      local v = mk.wait_until(function()
        n = n + 1
        return n >= 3 and "done" or nil
      end, { timeout = 5 })
      assert.equal("done", v)
      assert.equal(3, n)
      assert.equal(42, mk.wait_until(function() return 42 end))
    end)

    it("wait_until raises TimeoutExpired carrying message", function()
      local e = raises("TimeoutExpired", mk.wait_until, function() return false end,
        { timeout = 0.2, message = "the moon to rise" })
      assert.matches("the moon to rise", e.message, 1, true)
      assert.matches("the moon to rise", tostring(e), 1, true)
      assert.near(0.2, e.timeout, 1e-6)
      config_error("timout", mk.wait_until, function() return true end, { timout = 1 })
      config_error("timeout", mk.wait_until, function() return true end, { timeout = "1" })
      raises("ConfigError", mk.wait_until, "not a function")
    end)

    it("sleep and now (monotonic, same clock as clock_gettime(CLOCK_MONOTONIC))", function()
      local a = mk.now()
      assert.equal("float", math.type(a))
      mk.sleep(0.05)
      local b = mk.now()
      assert.is_true(b - a >= 0.049, "slept " .. (b - a))
      local prev = mk.now()
      for _ = 1, 1000 do
        local t = mk.now()
        assert.is_true(t >= prev)
        prev = t
      end
      -- another program's CLOCK_MONOTONIC timestamp lies between two readings
      local path = mk.tmpdir() .. "/stamp"
      local t0 = mk.now()
      assert.equal(0, mk.run { FX, "--stamp", path }.code)
      local t1 = mk.now()
      local stamp = tonumber(H.slurp(path))
      assert.is_true(t0 <= stamp and stamp <= t1, string.format("%f <= %f <= %f", t0, stamp, t1))
      raises("ConfigError", mk.sleep, -1)
      raises("ConfigError", mk.sleep, "1")
    end)

    it("free_port is an integer port that can be listened on", function()
      local p = mk.free_port()
      assert.equal("integer", math.type(p))
      assert.is_true(p >= 1 and p <= 65535)
      local s <close> = mk.process { FX, "--listen", p, "--forever" }:start()
      local _, got = s:wait_output("port (%d+)", { timeout = 10 })
      assert.equal(p, tonumber(got))
    end)

    it("tmpdir is fresh, distinct and exists", function()
      local a, b = mk.tmpdir(), mk.tmpdir()
      assert.is_string(a)
      assert.not_equal(a, b)
      for _, d in ipairs { a, b } do
        assert.equal("", mk.run { "ls", "-A", d }.stdout)
        write_file(d .. "/f", "x")
        assert.is_true(file_exists(d .. "/f"))
      end
    end)

    it("run returns code, stdout and stderr", function()
      local r = mk.run { FX, "--print", "o", "--eprint", "e", "--exit", 3 }
      assert.same({ code = 3, stdout = "o\n", stderr = "e\n" }, r)
      assert.same({ code = 0, stdout = "HI\n", stderr = "" }, mk.run { shell = "echo hi | tr a-z A-Z" })
      assert.equal("a b\n", mk.run { cmd = "echo 'a b'" }.stdout)
    end)

    it("run with stdin, env and cwd", function()
      local dir = mk.tmpdir()
      local real = mk.run { "realpath", dir }.stdout
      local r = mk.run { FX, "--cat-stdin", "--env", "SPEC10_R", "--pwd",
        stdin = "in\n", env = { SPEC10_R = "r" }, cwd = dir, timeout = 10 }
      assert.equal(0, r.code)
      assert.equal("in\nenv SPEC10_R=r\npwd " .. real, r.stdout)
    end)

    it("run raises TimeoutExpired and leaves no process", function()
      local e = raises("TimeoutExpired", mk.run, { "sleep", "5", timeout = 0.2 })
      assert.matches("sleep", tostring(e), 1, true)
      assert.same({}, H.leftovers())
      config_error("timout", mk.run, { "true", timout = 1 })
      raises("SpawnError", mk.run, { "/nonexistent/spec10-prog" })
    end)

    it("is_error", function()
      local e = raises("TimeoutExpired", mk.wait_until, function() end, { timeout = 0.05 })
      assert.is_true(mk.is_error(e))
      assert.is_true(mk.is_error(e, "TimeoutExpired"))
      assert.is_false(mk.is_error(e, "ConfigError"))
      assert.is_false(mk.is_error("TimeoutExpired"))
      assert.is_false(mk.is_error({ kind = "TimeoutExpired", message = "x" }, "TimeoutExpired"))
      assert.is_false(mk.is_error(nil))
      assert.equal(mk.Error, getmetatable(e))
    end)
  end)

  -------------------------------------------------------------- 2.7 errors
  describe("errors", function()
    it("carry kind, message, name, exit_code, log_tail; tostring has the name and the tail", function()
      local s = mk.process { FX, "--print", "first-line", "--flood", 10000, "--print", "next-to-last",
        "--eprint", "an error line", "--exit", 3, name = "spec10-failing" }:start()
      s:wait_exit { timeout = 10 }
      local e = raises("ProcessFinishedWithError", s.stop, s)
      assert.equal("ProcessFinishedWithError", e.kind)
      assert.equal("spec10-failing", e.name)
      assert.equal(3, e.exit_code)
      assert.is_string(e.message)
      assert.matches("3", e.message, 1, true)
      assert.matches("next-to-last", e.log_tail, 1, true)
      assert.matches("an error line", e.log_tail, 1, true)
      assert.not_matches("first-line", e.log_tail, 1, true) -- the last lines only
      local str = tostring(e)
      assert.matches("spec10-failing", str, 1, true)
      assert.matches("next-to-last", str, 1, true)
      assert.matches("an error line", str, 1, true)
      assert.matches("ProcessFinishedWithError", str, 1, true)
    end)

    it("TimeoutExpired carries the timeout and the output tail", function()
      local s <close> = mk.process { FX, "--print", "still booting", "--forever", name = "spec10-slow" }:start()
      s:wait_output("booting")
      local e = raises("TimeoutExpired", s.wait_exit, s, { timeout = 0.1 })
      assert.near(0.1, e.timeout, 1e-6)
      assert.equal("spec10-slow", e.name)
      local str = tostring(e)
      assert.matches("spec10-slow", str, 1, true)
      assert.matches("still booting", str, 1, true)
    end)
  end)

  -------------------------------------------------------------- SpawnError at once
  describe("SpawnError from start(), at once", function()
    it("command not found (path and PATH lookup)", function()
      for _, prog in ipairs { "/nonexistent/spec10-prog", "spec10-no-such-program" } do
        local s = mk.process { prog, "arg", timeout = 30 }
        local e = raises("SpawnError", s.start, s)
        assert.equal(s.name, e.name)
        assert.matches(prog, tostring(e), 1, true)
        assert.is_false(s:running())
        assert.is_nil(s:pid())
        s:stop()
      end
      raises("SpawnError", function() mk.process { cmd = "spec10-no-such-program --x" }:start() end)
    end)

    it("a file that is not executable", function()
      local path = mk.tmpdir() .. "/not-exec.sh"
      write_file(path, "#!/bin/sh\necho hi\n")
      assert.equal(0, mk.run { "chmod", "644", path }.code)
      local s = mk.process { path, timeout = 30 }
      raises("SpawnError", s.start, s)
      assert.is_false(s:running())
    end)

    it("a directory as the command", function()
      local s = mk.process { mk.tmpdir(), timeout = 30 }
      raises("SpawnError", s.start, s)
      assert.is_false(s:running())
    end)

    it("a bad cwd (checked at start, not in the constructor)", function()
      local s = mk.process { FX, "--forever", cwd = "/nonexistent/spec10-dir", timeout = 30 }
      local e = raises("SpawnError", s.start, s)
      assert.matches("/nonexistent/spec10-dir", tostring(e), 1, true)
      assert.is_false(s:running())
      local file = mk.tmpdir() .. "/plain"
      write_file(file, "")
      local s2 = mk.process { FX, "--forever", cwd = file, timeout = 30 }
      raises("SpawnError", s2.start, s2)
    end)
  end)

  -------------------------------------------------------------- never blocks on output
  it("a service writing 100 MB never blocks while the scenario runs Lua", function()
    local marker = mk.tmpdir() .. "/flood-done"
    local s <close> = mk.process { FX, "--flood", 100000000, "--eflood", 10000000, "--touch", marker,
      "--print", "done", "--forever" }:start()
    -- ~4 s of pure Lua without calling the harness
    local x, stop_at = 0, os.clock() + 4
    while os.clock() < stop_at do
      for _ = 1, 1000 do x = x + 1 end
    end
    assert.is_true(x > 0)
    assert.is_true(file_exists(marker), "the service was still writing after 4 s of Lua")
    assert.equal("done", (s:wait_output("^done$", { timeout = 10 })))
    local out = s:output()
    assert.is_true(#out >= 100000005, "output() has " .. #out .. " bytes")
    assert.is_true(out:sub(-5) == "done\n", "output() does not end with done")
    out = nil
    assert.is_true(#s:err_output() >= 10000000)
    s:stop()
    -- do not keep 110 MB of 'x' lines in a kept run directory
    for _, path in pairs(rawget(s, "_logs") or {}) do os.remove(path) end
    collectgarbage()
  end)

  -------------------------------------------------------------- a clean slate
  describe("a clean slate", function()
    local function harness_sigign()
      local st = H.slurp("/proc/self/status")
      return st:match("SigIgn:%s*(%x+)")
    end

    local function check_fdinfo(out, pid)
      local fds = {}
      for fd in out:gmatch("fd (%d+) %->") do fds[#fds + 1] = tonumber(fd) end
      assert.same({ 0, 1, 2 }, fds)
      local blk = out:match("sigblk (%x+)")
      local ign = out:match("sigign (%x+)")
      assert.matches("^0+$", blk, nil, false)
      assert.matches("^0+$", ign, nil, false)
      local p, pg, sid = out:match("pid (%d+) pgid (%d+) sid (%d+)")
      assert.equal(tostring(pid), p)
      assert.equal(p, pg)
      assert.equal(p, sid)
    end

    it("only fds 0, 1, 2; empty signal mask, no ignored signal; own session", function()
      -- the harness itself ignores SIGPIPE: the child must not inherit that
      assert.matches("[1-9a-fA-F]", harness_sigign(), nil, false)
      local s <close> = mk.process { FX, "--fdinfo", "--forever" }:start()
      s:wait_output("^pid ")
      check_fdinfo(s:output(), s:pid())
    end)

    it("holds with stdin given and output to null/inherit-free streams", function()
      local s <close> = mk.process { FX, "--fdinfo", "--forever", stdin = "x", stderr = "null" }:start()
      s:wait_output("^pid ")
      check_fdinfo(s:output(), s:pid())
    end)
  end)
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
