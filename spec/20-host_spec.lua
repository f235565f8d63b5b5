-- The `mkharness` host CLI (arg table, exit statuses, options,
-- failure report, --report, `mkharness test`, the installed layout).
local H = require "spec.helpers"
local mk = require "mkharness"

local function exists(p)
  local _, kind = mk.core.size(p)
  return kind ~= nil, kind
end

local function is_dir(p)
  local _, kind = mk.core.size(p)
  return kind == "directory"
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Inner run directories go under a directory of ours, so nothing is left
-- in $TMPDIR whatever the outcome.
local function tmp_env(extra)
  local env = { MKHARNESS_TMPDIR = mk.tmpdir() }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

-- Run the host with these arguments (no scenario prefix).
local function host(args, opts)
  opts = opts or {}
  local argv = { H.host }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.timeout = opts.timeout or 60
  argv.env = opts.env or tmp_env()
  argv.cwd = opts.cwd
  return mk.run(argv)
end

local function scenario(code, opts)
  opts = opts or {}
  opts.env = opts.env or tmp_env()
  return H.scenario(code, opts)
end

local function pid_dead_after(pidfile)
  local pid = tonumber((H.slurp(pidfile) or ""):match("%d+"))
  assert.is_not_nil(pid, "no pid in " .. pidfile)
  return not H.pid_alive(pid), pid
end

local function json_lines(text)
  local json = require "dkjson"
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local obj, _, err = json.decode(line)
    assert(type(obj) == "table", "not a JSON object: " .. line .. " (" .. tostring(err) .. ")")
    out[#out + 1] = obj
  end
  return out
end

describe("mkharness host", function()
  H.leakcheck()

  describe("arguments", function()
    it("arg[0] is the script, arg[1..] its arguments, ... too, arg[-1] the host; #! is skipped", function()
      local dir = mk.tmpdir()
      local path = write(dir .. "/args.lua", table.concat({
        "#!/usr/bin/env mkharness",
        "print('0=' .. arg[0])",
        "print('1=' .. arg[1], '2=' .. arg[2], 'n=' .. #arg)",
        "print('-1=' .. arg[-1])",
        "local a, b = ...",
        "print('dots=' .. select('#', ...), a, b)",
      }, "\n") .. "\n")
      local r = host { path, "alpha", "beta gamma" }
      assert.equal(0, r.code, r.stderr)
      assert.matches("0=" .. path .. "\n", r.stdout, 1, true)
      assert.matches("1=alpha\t2=beta gamma\tn=2\n", r.stdout, 1, true)
      assert.matches("-1=" .. H.host .. "\n", r.stdout, 1, true)
      assert.matches("dots=2\talpha\tbeta gamma\n", r.stdout, 1, true)
    end)
  end)

  describe("exit status", function()
    it("is 0 on success", function()
      local r = scenario("local s = mk.process { FX, '--forever' }:start() s:stop()")
      assert.equal(0, r.code, r.stderr)
    end)

    it("is 1 for a Lua error", function()
      local r = scenario("error('plain lua error')")
      assert.equal(1, r.code)
      assert.matches("plain lua error", r.stderr, 1, true)
    end)

    it("is 1 for a failed assertion", function()
      local r = scenario("assert(false)")
      assert.equal(1, r.code)
      assert.matches("assertion failed", r.stderr, 1, true)
    end)

    it("is 2 for a syntax error, with file:line", function()
      local dir = mk.tmpdir()
      local path = write(dir .. "/broken.lua", "local x = 1\nlocal y = = 2\n")
      local r = host { path }
      assert.equal(2, r.code)
      assert.matches(path .. ":2:", r.stderr, 1, true)
    end)

    it("is 2 for a missing script", function()
      local path = mk.tmpdir() .. "/no-such-script.lua"
      local r = host { path }
      assert.equal(2, r.code)
      assert.matches("no-such-script.lua", r.stderr, 1, true)
    end)

    it("is 2 for an unknown option", function()
      local r = host { "--no-such-option", "whatever.lua" }
      assert.equal(2, r.code)
      assert.matches("--no-such-option", r.stderr, 1, true)
    end)

    it("is 2 without a script", function()
      local r = host {}
      assert.equal(2, r.code)
      assert.matches("usage", r.stderr, 1, true)
    end)

    it("follows os.exit(3), after teardown", function()
      local dir = mk.tmpdir()
      local r = scenario([[
        SVC = mk.process { FX, "--pidfile", arg[1] .. "/svc.pid", "--forever" }:start()
        mk.wait_until(function() local f = io.open(arg[1] .. "/svc.pid") if f then f:close() return true end end)
        os.exit(3)
      ]], { args = { dir } })
      assert.equal(3, r.code, r.stderr)
      local dead, pid = pid_dead_after(dir .. "/svc.pid")
      assert(dead, "service " .. pid .. " survived os.exit(3)")
    end)
  end)

  describe("options", function()
    it("-e runs a chunk alone", function()
      local r = host { "-e", "print('from -e', 6 * 7)" }
      assert.equal(0, r.code, r.stderr)
      assert.equal("from -e\t42\n", r.stdout)
    end)

    it("-e runs before the script", function()
      local dir = mk.tmpdir()
      local path = write(dir .. "/after.lua", "print('PRE=' .. tostring(PRE))\n")
      local r = host { "-e", "PRE = 42", path }
      assert.equal(0, r.code, r.stderr)
      assert.equal("PRE=42\n", r.stdout)
    end)

    it("--version prints the name and version", function()
      local r = host { "--version" }
      assert.equal(0, r.code)
      assert.matches("^mkharness %d+%.%d+", r.stdout)
    end)

    it("--help prints the usage and exits 0", function()
      local r = host { "--help" }
      assert.equal(0, r.code)
      assert.matches("usage", r.stdout, 1, true)
      assert.matches("--timeout", r.stdout, 1, true)
      assert.matches("--report", r.stdout, 1, true)
    end)

    it("-v prints events and the services' output prefixed [name]", function()
      local r = scenario([[
        local s = mk.process { FX, "--print", "echo-me-7311", "--forever", name = "chatty" }:start()
        s:wait_output("echo%-me")
        s:stop()
      ]], { host_args = { "-v" } })
      assert.equal(0, r.code, r.stderr)
      assert.matches("spawned", r.stderr, 1, true)
      assert.matches("stopped", r.stderr, 1, true)
      assert.matches("[chatty] echo-me-7311", r.stderr, 1, true)
    end)

    it("-v says when and how a service became ready: 'name: ready after N ms (probe, K attempts)'", function()
      local port = mk.free_port()
      local r = scenario(string.format([[
        local s = mk.tcp { FX, "--sleep", "0.1", "--listen", %d, "--serve-tcp", port = %d, name = "db" }:start()
        s:stop()
      ]], port, port), { host_args = { "-v" } })
      assert.equal(0, r.code, r.stderr)
      assert.matches("db: ready after [%d.]+ ms %(tcp 127%.0%.0%.1:" .. port .. ", %d+ attempts?%)", r.stderr)
    end)

    it("-q prints nothing on success, even with -v and --keep", function()
      local r = scenario([[
        local s = mk.process { FX, "--print", "quiet-please", "--forever", name = "hush" }:start()
        s:wait_output("quiet")
        s:stop()
      ]], { host_args = { "-q", "-v", "--keep" } })
      assert.equal(0, r.code, r.stderr)
      assert.equal("", r.stderr)
      assert.equal("", r.stdout)
    end)

    it("-q still reports a failure", function()
      local r = scenario("error('loud-failure-5519')", { host_args = { "-q" } })
      assert.equal(1, r.code)
      assert.matches("loud-failure-5519", r.stderr, 1, true)
    end)

    it("--timeout: exit 124, says the run timeout expired, services torn down", function()
      local dir = mk.tmpdir()
      local r = scenario([[
        SVC = mk.process { FX, "--ignore", "TERM", "--pidfile", arg[1] .. "/svc.pid", "--forever",
          stop_timeout = 1 }:start()
        mk.wait_until(function() local f = io.open(arg[1] .. "/svc.pid") if f then f:close() return true end end)
        mk.sleep(30)
      ]], { host_args = { "--timeout", "0.5" }, args = { dir }, timeout = 25 })
      assert.equal(124, r.code, r.stderr)
      assert.matches("timeout", r.stderr, 1, true)
      assert.matches("expired", r.stderr, 1, true)
      local dead, pid = pid_dead_after(dir .. "/svc.pid")
      assert(dead, "service " .. pid .. " survived the run timeout")
    end)

    it("--timeout also stops a pure-Lua loop", function()
      local r = scenario("while true do end", { host_args = { "--timeout", "0.5" }, timeout = 25 })
      assert.equal(124, r.code, r.stderr)
    end)

    it("--timeout holds where no signal reaches Lua (os.execute): the supervisor kills the host", function()
      local dir = mk.tmpdir()
      local r = scenario([[
        KEEP = mk.process { FX, "--ignore", "TERM", "--pidfile", arg[1] .. "/svc.pid", "--forever" }:start()
        mk.wait_until(function() local f = io.open(arg[1] .. "/svc.pid") if f then f:close() return true end end)
        os.execute("sleep 60")
      ]], { host_args = { "--timeout", "0.3" }, args = { dir }, timeout = 30 })
      assert.equal(124, r.code, r.stderr)
      assert.matches("did not end within", r.stderr, 1, true)
      local dead, pid = pid_dead_after(dir .. "/svc.pid")
      assert(dead, "service " .. pid .. " survived the hard run timeout")
    end)

    it("--keep keeps the run directory and its logs", function()
      local r = scenario([[
        local s = mk.process { FX, "--print", "kept-line-2207", "--forever", name = "keeper" }:start()
        s:wait_output("kept%-line")
        s:stop()
      ]], { host_args = { "--keep" } })
      assert.equal(0, r.code, r.stderr)
      local dir = r.stderr:match("run directory kept: ([^\n]+)")
      assert.is_not_nil(dir, r.stderr)
      assert.is_true(is_dir(dir), dir)
      assert.matches("kept-line-2207", H.slurp(dir .. "/keeper.stdout.log") or "", 1, true)
      mk.core.rmtree(dir)
    end)

    it("without --keep, the run directory is removed on success", function()
      local r = scenario([[
        local s = mk.process { FX, "--print", "gone", "--forever" }:start()
        s:wait_output("gone")
        s:stop()
        print("RUNDIR=" .. mk.core.run_dir())
      ]])
      assert.equal(0, r.code, r.stderr)
      local dir = r.stdout:match("RUNDIR=([^\n]+)")
      assert.is_not_nil(dir, r.stdout)
      assert.is_false(exists(dir), dir .. " was left behind")
      assert.not_matches("run directory kept", r.stderr, 1, true)
    end)
  end)

  describe("failure report", function()
    it("has the error, the traceback, the services' output and the kept run directory", function()
      local r = scenario([[
        SVC = mk.process { FX, "--print", "distinctive-output-9182", "--forever", name = "witness" }:start()
        SVC:wait_output("distinctive")
        local function deeper() error("the scenario broke here") end
        deeper()
      ]])
      assert.equal(1, r.code)
      assert.matches("FAILED", r.stderr, 1, true)
      assert.matches("the scenario broke here", r.stderr, 1, true)
      assert.matches("stack traceback", r.stderr, 1, true)
      assert.matches("deeper", r.stderr, 1, true)
      assert.matches("distinctive-output-9182", r.stderr, 1, true)
      assert.matches("witness", r.stderr, 1, true)
      local dir = r.stderr:match("run directory kept: ([^\n]+)")
      assert.is_not_nil(dir, r.stderr)
      assert.is_true(is_dir(dir), dir)
      assert.matches("distinctive-output-9182", H.slurp(dir .. "/witness.stdout.log") or "", 1, true)
      mk.core.rmtree(dir)
    end)

    it("includes the tail of a service's output for a harness error", function()
      local r = scenario([[
        SVC = mk.process { FX, "--print", "last-words-4471", "--exit", "3", name = "dying" }:start()
        SVC:wait_exit { timeout = 10 }
        SVC:stop()
      ]])
      assert.equal(1, r.code)
      assert.matches("ProcessFinishedWithError", r.stderr, 1, true)
      assert.matches("last-words-4471", r.stderr, 1, true)
    end)

    it("prints a service's tail once: the error has it, the services list does not repeat it", function()
      local r = scenario([[
        SVC = mk.process { shell = "echo said-$((6000+42)); exec sleep 1000", name = "mumbler" }:start()
        SVC:wait_output("nothing like this", { timeout = 0.2 })
      ]])
      assert.equal(1, r.code)
      assert.matches("TimeoutExpired", r.stderr, 1, true)
      local _, n = r.stderr:gsub("said%-6042", "")
      assert.equal(1, n, r.stderr)
      assert.matches("%-%-%- mumbler %(pid %d+, running%): [^\n]*\n    %(its last output is in the error above%)", r.stderr)
    end)

    it("lists only services running at the failure or ended unnoticed, not those already dealt with", function()
      local r = scenario([[
        RUNNING = mk.process { FX, "--print", "still-here-1", "--forever", name = "runner" }:start()
        RUNNING:wait_output("still")
        -- a failure the scenario caught and reported itself
        local ok, err = pcall(function()
          mk.output { FX, "--print", "caught-out-2", "--forever", banner = "never", timeout = 0.2, name = "caught" }:start()
        end)
        assert(not ok)
        print("handled: " .. err.kind)
        local done = mk.process { FX, "--print", "stopped-out-3", "--forever", name = "done" }:start()
        done:wait_output("stopped")
        done:stop()
        local gone = mk.process { FX, "--print", "gone-out-4", "--exit", "5", name = "gone" }:start()
        while gone:running() do mk.core.sleep(0.01) end
        error("the scenario broke")
      ]])
      assert.equal(1, r.code)
      assert.matches("handled: TimeoutExpired", r.stdout, 1, true)
      local report = r.stderr:match("\nservices:\n(.-)mkharness: run directory kept")
      assert.is_not_nil(report, r.stderr)
      assert.matches("%-%-%- runner %(pid %d+, running%)", report)
      assert.matches("still-here-1", report, 1, true)
      assert.matches("--- gone (ended on its own: exit code 5)", report, 1, true)
      assert.matches("gone-out-4", report, 1, true)
      assert.not_matches("caught", report, 1, true)
      assert.not_matches("done", report, 1, true)
    end)
  end)

  describe("--report FILE", function()
    it("writes JSON lines of events with monotonic timestamps", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local t0 = mk.now()
      local r = scenario([[
        local s = mk.output { FX, "--sleep", "0.05", "--print", "banner-up", "--forever",
          name = "reporter", banner = "banner%-up" }:start()
        s:stop()
      ]], { host_args = { "--report", file } })
      local t1 = mk.now()
      assert.equal(0, r.code, r.stderr)
      local text = H.slurp(file)
      assert.is_not_nil(text, "no report file")
      local events = json_lines(text)
      local seen, last = {}, -math.huge
      for _, e in ipairs(events) do
        assert.is_string(e.event)
        assert.is_number(e.t)
        assert(e.t >= t0 and e.t <= t1, string.format("t=%f outside [%f, %f]", e.t, t0, t1))
        assert(e.t >= last, "timestamps go backwards")
        last = e.t
        seen[e.event] = seen[e.event] or e
      end
      for _, ev in ipairs { "spawned", "ready", "stopped" } do
        assert.is_not_nil(seen[ev], "no '" .. ev .. "' event in:\n" .. text)
      end
      assert.equal("reporter", seen.spawned.service)
      assert(seen.spawned.t <= seen.ready.t and seen.ready.t <= seen.stopped.t, "events out of order")
    end)

    it("lines are valid JSON even when the text has invalid UTF-8 and NUL bytes", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local r = scenario([[
        local s = mk.process { FX, "--print", "bad\xffbyte", "--forever", name = "bad" }:start()
        s:stop()
        require("mkharness.events").emit("note", { text = "a\xffb\0c\xe2\x82", ["k\xc0"] = 1 })
      ]], { host_args = { "--report", file } })
      assert.equal(0, r.code, r.stderr)
      local text = H.slurp(file)
      assert.is_not_nil(text, "no report file")
      for line in text:gmatch("[^\n]+") do
        assert(utf8.len(line), "not UTF-8: " .. line)
      end
      local seen = {}
      for _, e in ipairs(json_lines(text)) do seen[e.event] = e end
      assert.matches("bad\u{FFFD}byte", seen.spawned.command, 1, true)
      assert.equal("a\u{FFFD}b\0c\u{FFFD}\u{FFFD}", seen.note.text)
      assert.equal(1, seen.note["k\u{FFFD}"])
    end)

    it("an event whose fields cannot be encoded still writes a line", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local r = scenario([[
        require("mkharness.events").emit("odd", { list = { 1, x = 2 } })
      ]], { host_args = { "--report", file } })
      assert.equal(0, r.code, r.stderr)
      local seen = {}
      for _, e in ipairs(json_lines(H.slurp(file))) do seen[e.event] = e end
      assert.matches("mixed table", seen.odd.encode_error, 1, true)
    end)

    it("the report file is not inherited by os.execute or io.popen children", function()
      local dir = mk.tmpdir()
      local file = dir .. "/report.jsonl"
      local r = scenario([[
        local dir = ...
        assert(os.execute("ls -l /proc/self/fd > " .. dir .. "/execute.txt"))
        local p = io.popen("ls -l /proc/self/fd")
        local f = io.open(dir .. "/popen.txt", "w")
        f:write(p:read("a"))
        f:close()
        p:close()
      ]], { host_args = { "--report", file }, args = { dir } })
      assert.equal(0, r.code, r.stderr)
      for _, name in ipairs { "execute.txt", "popen.txt" } do
        local listing = H.slurp(dir .. "/" .. name)
        assert.matches("/proc/", listing, 1, true) -- the listing is real
        assert.not_matches("report.jsonl", listing, 1, true)
      end
      assert.matches('"event":"end"', H.slurp(file), 1, true)
    end)
  end)

  describe("mkharness test", function()
    local dir
    before_each(function()
      dir = mk.tmpdir()
      write(dir .. "/pass_spec.lua", [[
describe("tiny", function() it("adds", function() assert.equal(2, 1 + 1) end) end)
]])
      write(dir .. "/fail_spec.lua", [[
describe("tiny", function() it("miscounts", function() assert.equal(3, 1 + 1) end) end)
]])
    end)

    it("passes with TAP output", function()
      local r = host({ "test", "-o", "TAP", dir .. "/pass_spec.lua" }, { cwd = dir })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("ok 1", r.stdout, 1, true)
      assert.not_matches("not ok", r.stdout, 1, true)
    end)

    it("exits non-zero when a spec fails", function()
      local r = host({ "test", "-o", "TAP", dir .. "/fail_spec.lua" }, { cwd = dir })
      assert.not_equal(0, r.code)
      assert.matches("not ok 1", r.stdout, 1, true)
    end)

    it("-o junit writes XML", function()
      local r = host({ "test", "-o", "junit", dir .. "/pass_spec.lua" }, { cwd = dir })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("<testsuite", r.stdout, 1, true)
    end)

    it("specs can use the module", function()
      write(dir .. "/mk_spec.lua", string.format([[
local mk = require "mkharness"
describe("inside", function() it("runs a service", function()
  local s = mk.process { %q, "--print", "in-busted", "--forever" }:start()
  assert.equal("in-busted", (s:wait_output("in%%-busted")))
  s:stop()
end) end)
]], H.fx))
      local r = host({ "test", "-o", "TAP", dir .. "/mk_spec.lua" }, { cwd = dir })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("ok 1", r.stdout, 1, true)
    end)
  end)

  describe("live echo (-v)", function()
    -- The host's stderr goes to a file the scenario can read (arg[1]):
    -- services and scenario wait for lines to be echoed there.
    local function run_echo(code, host_args, opts)
      opts = opts or {}
      local dir = mk.tmpdir()
      local path = write(dir .. "/scenario.lua",
        "local mk = require 'mkharness'\nlocal FX, F = " .. string.format("%q", H.fx) .. ", arg[1]\n" ..
        -- whole lines: the -v spawned line holds the command, hence the text
        "local function seen(text) return (io.open(F):read('a'):find('\\n' .. text .. '\\n', 1, true)) ~= nil end\n" ..
        "local function after(text) return string.format(\"until grep -qxF '%s' %s; do sleep 0.01; done; \", text, F) end\n" ..
        code)
      local err = dir .. "/stderr"
      local cmd = { H.host }
      for _, a in ipairs(host_args or { "-v" }) do cmd[#cmd + 1] = a end
      cmd[#cmd + 1] = path
      cmd[#cmd + 1] = err
      local words = {}
      for i, a in ipairs(cmd) do words[i] = "'" .. a .. "'" end
      local r = mk.run { shell = "exec " .. table.concat(words, " ") .. " 2>" .. err,
        env = tmp_env(opts.env), timeout = 60 }
      r.stderr = H.slurp(err) or ""
      return r, dir
    end

    local function echoed(text)
      local lines = {}
      for l in text:gmatch("[^\n]+") do
        if l:match("^%[[%w-]+!?%] ") then lines[#lines + 1] = l end
      end
      return lines
    end

    it("merges services' stdout and stderr lines in the order they were written", function()
      -- each line is printed only once the other service's previous line
      -- was echoed: grouped or batched echo would deadlock (wait_exit times out)
      local r = run_echo([[
        local A = mk.process { name = "A", shell = "echo a1; " .. after("[B] b1") ..
          "echo a2 >&2; " .. after("[B!] b2") .. "echo a3" }:start()
        local B = mk.process { name = "B", shell = after("[A] a1") .. "echo b1; " ..
          after("[A!] a2") .. "echo b2 >&2; " .. after("[A] a3") .. "echo b3" }:start()
        A:wait_exit { timeout = 10 }
        B:wait_exit { timeout = 10 }
        A:stop() B:stop()
      ]])
      assert.equal(0, r.code, r.stderr)
      assert.same({ "[A] a1", "[B] b1", "[A!] a2", "[B!] b2", "[A] a3", "[B] b3" }, echoed(r.stderr))
    end)

    it("echoes during os.execute, pure Lua code, mk.get and mk.run", function()
      local port = mk.free_port()
      local r = run_echo(string.format([[
        local function line_soon(n) -- printed 0.2 s after its start
          return mk.process { FX, "--sleep", "0.2", "--print", "line-" .. n, "--forever", name = "p" .. n }:start()
        end
        local http = mk.http { FX, "--listen", %d, "--http-delay", "1", "--serve-http", "200",
          url = "http://127.0.0.1:%d/", name = "slow" }:start()
        local p1 = line_soon(1)
        assert(os.execute("timeout 10 sh -c \"" .. after("[p1] line-1"):gsub("; $", "") .. "\""),
          "not echoed during os.execute")
        local p2 = line_soon(2)
        local t = mk.now()
        while not seen("[p2] line-2") do assert(mk.now() - t < 10, "not echoed during Lua code") end
        local p3 = line_soon(3)
        mk.get("http://127.0.0.1:%d/") -- 1 s
        assert(seen("[p3] line-3"), "not echoed during mk.get")
        local p4 = line_soon(4)
        mk.run { "sleep", "1" }
        assert(seen("[p4] line-4"), "not echoed during mk.run")
        for _, s in ipairs { p1, p2, p3, p4, http } do s:stop() end
      ]], port, port, port))
      assert.equal(0, r.code, r.stderr)
    end)

    it("during mk.sleep(1), a ticker's lines are echoed within 50 ms of their write", function()
      -- The ticker writes its CLOCK_MONOTONIC instant in each line; -t
      -- stamps each echoed line when the echo thread writes it, in seconds
      -- since the report's start event (same clock: mk.now()). So
      -- start.t + stamp - written is the echo's latency, to the ms (-t's
      -- precision). Measured on a shared 2-core host at load 3.5: p50
      -- 0.08 ms, p99 0.65 ms, max 1.2 ms over 200 lines; 50 ms is 40 times
      -- the worst seen, room for a busier machine and ASan.
      local dir = mk.tmpdir()
      local report = dir .. "/report.jsonl"
      local r = run_echo([[
        local s = mk.process { FX, "--ticks", "9", "0.1", "--forever", name = "ticker" }:start()
        io.stdout:write("sleep ", mk.now(), "\n")
        mk.sleep(1)
        io.stdout:write("woke ", mk.now(), "\n")
        s:stop()
      ]], { "-v", "-t", "--report", report })
      assert.equal(0, r.code, r.stderr)
      local t0 = json_lines(H.slurp(report))[1]
      assert.equal("start", t0.event)
      t0 = t0.t
      local slept = tonumber(r.stdout:match("sleep ([%d.]+)"))
      local woke = tonumber(r.stdout:match("woke ([%d.]+)"))
      local during = 0
      for stamp, i, written in r.stderr:gmatch("%+([%d.]+)s %[ticker%] tick (%d+) ([%d.]+)\n") do
        local seen, w = t0 + tonumber(stamp), tonumber(written)
        if w > slept and w < woke - 0.05 then
          during = during + 1
          local latency = seen - w
          assert(latency > -0.001, "tick " .. i .. " echoed before it was written?")
          assert(latency <= 0.050, string.format("tick %s echoed %.1f ms after its write", i, latency * 1000))
          assert(seen < woke, "tick " .. i .. " echoed only after mk.sleep returned")
        end
      end
      assert(during >= 7, "only " .. during .. " ticks during the sleep:\n" .. r.stderr)
      -- -t also stamps the harness's own event lines
      assert.matches("\n?%+%d+%.%d%d%ds mkharness: ticker: spawned pid", r.stderr)
    end)

    it("a service's last line without newline comes out when it stops, lines before the failure report", function()
      local r = run_echo([[
        local s = mk.process { FX, "--print", "before-report", "--write", "no-newline-tail", "--forever", name = "w" }:start()
        s:wait_output("no%-newline")
        s:stop()
        local f = mk.process { FX, "--print", "last-words", "--forever", name = "f" }:start()
        f:wait_output("last")
        error("scenario-failed-4242")
      ]])
      assert.equal(1, r.code, r.stderr)
      assert.matches("[w] no-newline-tail\n", r.stderr, 1, true)
      local words = r.stderr:find("[f] last-words\n", 1, true)
      assert.truthy(words, r.stderr)
      assert.truthy(words < r.stderr:find("FAILED: ", 1, true), r.stderr)
    end)

    local ESC = "\27["
    local COLOR_SCENARIO = [[
      local s = mk.process { FX, "--print", "out-line", "--eprint", "err-line", name = "web" }:start()
      s:wait_exit { timeout = 10 }
      s:stop()
    ]]

    it("--color=always colours each service by its name, the same every run, and marks stderr lines", function()
      local r1 = run_echo(COLOR_SCENARIO, { "-v", "--color=always" })
      local r2 = run_echo(COLOR_SCENARIO, { "-v", "--color", "always" }, { env = { NO_COLOR = "1" } })
      assert.equal(0, r1.code, r1.stderr)
      assert.equal(0, r2.code, r2.stderr)
      local c1 = r1.stderr:match("\27%[(%d+)m%[web%]\27%[0m out%-line\n")
      assert.truthy(c1, r1.stderr)
      assert.equal(c1, r2.stderr:match("\27%[(%d+)m%[web%]\27%[0m out%-line\n"))
      assert.matches("\27[" .. c1 .. "m[web\27[1;31m!\27[0;" .. c1 .. "m]\27[0m err-line\n", r1.stderr, 1, true)
      -- another name, another colour (these two differ in the palette)
      local r3 = run_echo(COLOR_SCENARIO:gsub('"web"', '"cache"'), { "-v", "--color=always" })
      local c3 = r3.stderr:match("\27%[(%d+)m%[cache%]\27%[0m out%-line\n")
      assert.truthy(c3, r3.stderr)
      assert.not_equal(c1, c3)
    end)

    it("no colour when stderr is a file; on a terminal unless NO_COLOR is set (--color overrides)", function()
      local r = run_echo(COLOR_SCENARIO, { "-v" })
      assert.equal(0, r.code, r.stderr)
      assert.matches("[web] out-line\n[web!] err-line\n", r.stderr, 1, true)
      assert.not_matches(ESC, r.stderr, 1, true)
      -- on a pseudo-terminal (script(1)); its output is the terminal's
      local dir = mk.tmpdir()
      local path = write(dir .. "/color.lua", "local mk = require 'mkharness'\nlocal FX = " ..
        string.format("%q", H.fx) .. "\n" .. COLOR_SCENARIO)
      local function on_tty(args, no_color)
        local res = mk.run { "script", "-qec", H.host .. " " .. args .. " " .. path, "/dev/null",
          env = tmp_env { NO_COLOR = no_color or false }, timeout = 60 }
        assert.equal(0, res.code, res.stdout .. res.stderr)
        assert.matches("out-line", res.stdout, 1, true)
        return res.stdout:find(ESC, 1, true) ~= nil
      end
      assert.is_true(on_tty("-v"))
      assert.is_true(on_tty("-v", ""))
      assert.is_false(on_tty("-v", "1"))
      assert.is_false(on_tty("-v --color=auto", "1"))
      assert.is_true(on_tty("-v --color=always", "1"))
      assert.is_false(on_tty("-v --color=never"))
    end)

    it("--color=bogus and a --color without value are usage errors (exit 2)", function()
      local r = host { "--color=bogus", "-e", "" }
      assert.equal(2, r.code)
      assert.matches("--color takes auto, always or never, got: bogus", r.stderr, 1, true)
      assert.equal(2, host({ "--color" }).code)
      assert.equal(0, host({ "--color", "never", "-t", "-e", "" }).code)
    end)
  end)

  describe("install", function()
    local prefix
    setup(function()
      prefix = mk.tmpdir() .. "/prefix"
      local r = mk.run { "cmake", "--install", H.build, "--prefix", prefix, timeout = 120 }
      assert(r.code == 0, "cmake --install failed:\n" .. r.stdout .. r.stderr)
    end)

    it("has the documented layout", function()
      assert.is_true(exists(prefix .. "/bin/mkharness"))
      assert.is_true(exists(prefix .. "/lib/lua/5.4/mkharness/core.so"))
      assert.is_true(exists(prefix .. "/share/lua/5.4/mkharness/init.lua"))
    end)

    it("stock lua5.4 with LUA_PATH/LUA_CPATH runs a process", function()
      local share, lib = prefix .. "/share/lua/5.4", prefix .. "/lib/lua/5.4"
      local code = string.format([[
local mk = require "mkharness"
print("MOD=" .. package.searchpath("mkharness", package.path))
print("CORE=" .. package.searchpath("mkharness.core", package.cpath))
local s = mk.process { %q, "--print", "stock-lua", "--forever" }:start()
assert(s:running())
print("GOT=" .. s:wait_output("stock"))
s:stop()
assert(not s:running())
print("DONE")
]], H.fx)
      local r = mk.run { "lua5.4", "-e", code, cwd = prefix, env = {
        LUA_PATH = share .. "/?.lua;" .. share .. "/?/init.lua;;",
        LUA_CPATH = lib .. "/?.so;;",
        MKHARNESS_TMPDIR = mk.tmpdir(),
        -- a sanitizer build's core.so needs its runtimes loaded first
        LD_PRELOAD = os.getenv("MKH_SANITIZER_PRELOAD"),
        ASAN_OPTIONS = os.getenv("MKH_SANITIZER_PRELOAD") and "detect_leaks=0" or nil,
      } }
      assert.equal(0, r.code, r.stderr)
      assert.matches("MOD=" .. share .. "/mkharness/init.lua", r.stdout, 1, true)
      assert.matches("CORE=" .. lib .. "/mkharness/core.so", r.stdout, 1, true)
      assert.matches("GOT=stock-lua\nDONE\n", r.stdout, 1, true)
    end)

    it("the installed host finds its Lua files without LUA_PATH", function()
      local r = mk.run { prefix .. "/bin/mkharness", "-e", [[
local mk = require "mkharness"
print("MOD=" .. package.searchpath("mkharness", package.path))
local s = mk.process { "true" }:start()
s:wait_exit { timeout = 10 }
]], cwd = prefix, env = tmp_env { LUA_PATH = false, LUA_CPATH = false, LUA_PATH_5_4 = false, LUA_CPATH_5_4 = false } }
      assert.equal(0, r.code, r.stderr)
      local mod = r.stdout:match("MOD=([^\n]+)")
      assert.is_not_nil(mod, r.stdout)
      assert.equal(prefix, mod:sub(1, #prefix))
      assert.matches("/share/lua/5.4/mkharness/init.lua$", mod)
    end)
  end)
end)
