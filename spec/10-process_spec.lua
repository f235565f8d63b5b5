-- mk.process (mirakuru's SimpleExecutor): the command forms, option
-- checking and the common options.
local H = require "spec.helpers"
local mk = require "mkharness"

local FX = H.fx
local raises = H.raises
local config_error = H.config_error
local lines = H.lines

describe("mk.process", function()
  H.leakcheck()


  -------------------------------------------------------------- commands
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

  -------------------------------------------------------------- options
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

  -------------------------------------------------------------- methods
end)
