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
      ]], { host_args = { "--timeout", "2" }, args = { dir }, timeout = 40 }) -- 2 s: time to reach os.execute under load
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
      -- (the order of two lines written microseconds apart on two streams is
      -- not promised; the interleaving spec above checks order with a handshake)
      assert.matches("[web] out-line\n", r.stderr, 1, true)
      assert.matches("[web!] err-line\n", r.stderr, 1, true)
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
  describe("events.jsonl", function()
    local function kept_dir(r)
      local dir = r.stderr:match("run directory kept: ([^\n]+)")
      assert.is_not_nil(dir, r.stderr)
      return dir
    end

    local function by_event(list)
      local seen = {}
      for _, e in ipairs(list) do seen[e.event] = seen[e.event] or e end
      return seen
    end

    it("is in every run directory, the same lines as --report; the first event has the header", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local before = os.time()
      local r = scenario([[
        local s = mk.process { FX, "--print", "up", "--forever", name = "jsonl" }:start()
        s:wait_output("up")
        s:stop()
      ]], { host_args = { "--keep", "--report", file } })
      assert.equal(0, r.code, r.stderr)
      local dir = kept_dir(r)
      local text = H.slurp(dir .. "/events.jsonl")
      assert.is_not_nil(text, "no events.jsonl in " .. dir)
      local list = json_lines(text)
      local first = list[1]
      assert.equal("start", first.event)
      assert.equal(1, first.schema)
      assert.equal(mk.core.version, first.version)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", first.time)
      assert(first.epoch >= before - 1 and first.epoch <= os.time() + 1, "epoch " .. tostring(first.epoch))
      assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", first.epoch), first.time)
      for _, e in ipairs(list) do assert.is_number(e.t) end
      local seen = by_event(list)
      for _, ev in ipairs { "spawned", "stopped", "end" } do
        assert.is_not_nil(seen[ev], "no '" .. ev .. "' event in:\n" .. text)
      end
      -- --report still gets them, header included (it lacks only "end"'s
      -- successors: none)
      local rep = json_lines(H.slurp(file) or "")
      assert.equal(1, rep[1].schema)
      assert.equal(#list, #rep)
      mk.core.rmtree(dir)
    end)

    -- start() returns once its service is ready and writes its lines
    -- afterwards (at the next wait or harness call): a run that ends right
    -- after it still has them, before its teardown's, in time order
    it("a run that ends right after start() has its spawned and ready lines, in order", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local r = scenario([[
        mk.output { FX, "--print", "up", "--forever", name = "quick", banner = "^up$" }:start()
      ]], { host_args = { "--report", file } })
      assert.equal(0, r.code, r.stderr)
      local list = json_lines(H.slurp(file) or "")
      local order, last_t = {}, -math.huge
      for _, e in ipairs(list) do
        if e.service == "quick" then order[#order + 1] = e.event end
        assert(e.t >= last_t, "not in time order: " .. e.event)
        last_t = e.t
      end
      assert.same({ "spawned", "ready", "torn_down" }, order)
    end)

    it("under stock Lua, the lines start() left are written when the state closes", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local init = package.searchpath("mkharness", package.path)
      local lua_dir = init:match("^(.*)/mkharness/init%.lua$")
      local code = "package.path = '" .. lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;' .. package.path\n" ..
        "local mk = require 'mkharness'\n" ..
        "local s = mk.output { '" .. H.fx .. "', '--print', 'up', '--forever', name = 'stock', banner = '^up$' }:start()\n"
      local env = tmp_env { MKHARNESS_REPORT = file }
      local preload = os.getenv("MKH_SANITIZER_PRELOAD")
      if preload and preload ~= "" then env.LD_PRELOAD, env.ASAN_OPTIONS = preload, "detect_leaks=0" end
      local r = mk.run { "lua5.4", "-e", code, env = env, host = false }
      assert.equal(0, r.code, r.stderr)
      local seen = by_event(json_lines(H.slurp(file) or ""))
      assert.is_not_nil(seen.spawned, "no spawned line")
      assert.is_not_nil(seen.ready, "no ready line")
      assert.equal("stock", seen.ready.service)
    end)

    it("a failing run keeps it, with an error event: kind, service, message", function()
      local r = scenario([[
        mk.output { "false", name = "quitter", banner = "never" }:start()
      ]])
      assert.equal(1, r.code)
      local dir = kept_dir(r)
      local seen = by_event(json_lines(H.slurp(dir .. "/events.jsonl") or ""))
      assert.is_not_nil(seen.error, "no error event")
      assert.equal("ProcessExitedWithError", seen.error.kind)
      assert.equal("quitter", seen.error.service)
      assert.matches("exit code 1", seen.error.message, 1, true)
      assert.equal(1, seen["end"].status)
      mk.core.rmtree(dir)
    end)

    it("a failing run that started nothing has one too; a plain Lua error is kind 'error'", function()
      local r = scenario([[ error("boom-4711") ]])
      assert.equal(1, r.code)
      local dir = kept_dir(r)
      local seen = by_event(json_lines(H.slurp(dir .. "/events.jsonl") or ""))
      assert.equal("error", seen.error.kind)
      assert.matches("boom-4711", seen.error.message, 1, true)
      mk.core.rmtree(dir)
    end)

    it("a run that starts nothing and succeeds makes no run directory", function()
      local base = mk.tmpdir()
      local r = host({ "-e", "local mk = require 'mkharness'; mk.mark('nothing started')" },
        { env = { MKHARNESS_TMPDIR = base } })
      assert.equal(0, r.code, r.stderr)
      local ls = mk.run { "ls", "-A", base }
      assert.equal("", ls.stdout)
    end)

    it("mk.mark(text, fields) is an event in the report and a line in -v", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local r = scenario([[
        mk.mark("partition begins", { leader = "n1", term = 3 })
        mk.mark("healed")
      ]], { host_args = { "-v", "--report", file } })
      assert.equal(0, r.code, r.stderr)
      assert.matches("mkharness: mark: partition begins (leader=n1, term=3)", r.stderr, 1, true)
      assert.matches("mkharness: mark: healed\n", r.stderr, 1, true)
      local marks = {}
      for _, e in ipairs(json_lines(H.slurp(file) or "")) do
        if e.event == "mark" then marks[#marks + 1] = e end
      end
      assert.equal(2, #marks)
      assert.equal("partition begins", marks[1].text)
      assert.same({ leader = "n1", term = 3 }, marks[1].fields)
      assert.equal("healed", marks[2].text)
      assert.is_nil(marks[2].fields)
    end)

    it("mk.mark validates its arguments (ConfigError naming mk.mark)", function()
      H.config_error({ "mk.mark", "text" }, mk.mark)
      H.config_error({ "mk.mark", "text" }, mk.mark, "")
      H.config_error({ "mk.mark", "text" }, mk.mark, 42)
      H.config_error({ "mk.mark", "fields" }, mk.mark, "x", "leader=n1")
      H.config_error({ "mk.mark", "field names" }, mk.mark, "x", { "n1" })
      H.config_error({ "mk.mark", "field leader" }, mk.mark, "x", { leader = { "n1" } })
      H.config_error({ "mk.mark", "fields" }, mk.mark, "x", setmetatable({}, {}))
    end)

    it("mkharness test: test_start and test_end events with the test's name and status", function()
      local dir = mk.tmpdir()
      write(dir .. "/two_spec.lua", [[
describe("tiny", function()
  it("adds", function() assert.equal(2, 1 + 1) end)
  it("miscounts", function() assert.equal(3, 1 + 1) end)
end)
]])
      local file = dir .. "/report.jsonl"
      local r = host({ "--report", file, "test", "-o", "TAP", dir .. "/two_spec.lua" }, { cwd = dir })
      assert.not_equal(0, r.code)
      local starts, ends = {}, {}
      for _, e in ipairs(json_lines(H.slurp(file) or "")) do
        if e.event == "test_start" then starts[e.test] = true end
        if e.event == "test_end" then ends[e.test] = e.status end
      end
      assert.is_true(starts["tiny adds"])
      assert.is_true(starts["tiny miscounts"])
      assert.equal("success", ends["tiny adds"])
      assert.equal("failure", ends["tiny miscounts"])
      -- the failed run kept its directory, and its events.jsonl has them too
      local kept = r.stderr:match("run directory kept: ([^\n]+)")
      assert.is_not_nil(kept, r.stderr)
      assert.matches('"event":"test_end"', H.slurp(kept .. "/events.jsonl") or "", 1, true)
      mk.core.rmtree(kept)
    end)
  end)

  describe("run directories of earlier runs", function()
    local function touch(path, epoch)
      local r = mk.run { "touch", "-d", "@" .. epoch, path }
      assert.equal(0, r.code, r.stderr)
    end

    local function dead_pid() -- a shell's, reaped by the time mk.run returns
      local pid = math.tointeger(tonumber(mk.run({ "sh", "-c", "echo $$" }).stdout:match("%d+")))
      assert.is_not_nil(pid)
      return pid
    end

    it("finished ones beyond MKHARNESS_KEEP_RUNS are removed, newest kept; live and foreign ones stay", function()
      local base = mk.tmpdir()
      local dead = dead_pid()
      local now = os.time()
      -- four finished runs (marker), oldest first
      for k = 1, 4 do
        local d = string.format("%s/mkharness-%d-0000000%d", base, dead, k)
        assert(os.execute("mkdir -p " .. d))
        H.write_file(d .. "/.finished", "")
        touch(d .. "/.finished", now - 1000 + k)
      end
      -- a run killed outright: no marker, its pid gone; older than all
      local crashed = string.format("%s/mkharness-%d-0000000c", base, dead)
      os.execute("mkdir -p " .. crashed)
      touch(crashed, now - 5000)
      -- a live run: no marker, its pid alive
      local live = mk.process { "sleep", "30" }:start()
      local live_pid = live:pid()
      local alive = string.format("%s/mkharness-%d-000000aa", base, live_pid)
      os.execute("mkdir -p " .. alive)
      touch(alive, now - 9000)
      -- not a run directory
      local other = base .. "/mkharness-notes"
      os.execute("mkdir -p " .. other)
      touch(other, now - 9000)
      local r = scenario([[
        local s = mk.process { "true" }:start()
        s:wait_exit { timeout = 10 }
      ]], { env = { MKHARNESS_TMPDIR = base, MKHARNESS_KEEP_RUNS = "2" } })
      live:stop()
      assert.equal(0, r.code, r.stderr)
      local ls = mk.run { "ls", "-A", base }
      local names = {}
      for n in ls.stdout:gmatch("[^\n]+") do names[n] = true end
      local function name(k) return string.format("mkharness-%d-0000000%d", dead, k) end
      assert.is_nil(names[name(1)], ls.stdout)
      assert.is_nil(names[name(2)], ls.stdout)
      assert.is_true(names[name(3)], ls.stdout)
      assert.is_true(names[name(4)], ls.stdout)
      assert.is_nil(names[string.format("mkharness-%d-0000000c", dead)], ls.stdout)
      assert.is_true(names[string.format("mkharness-%d-000000aa", live_pid)], ls.stdout)
      assert.is_true(names["mkharness-notes"], ls.stdout)
    end)

    it("a kept run directory is marked finished at the end", function()
      local r = scenario([[ error("marked") ]])
      assert.equal(1, r.code)
      local dir = r.stderr:match("run directory kept: ([^\n]+)")
      assert.is_not_nil(dir, r.stderr)
      assert.is_true(exists(dir .. "/.finished"))
      mk.core.rmtree(dir)
    end)

    it("MKHARNESS_KEEP=1 keeps it under the host and under stock lua5.4", function()
      local r = scenario([[
        local s = mk.process { "true" }:start()
        s:wait_exit { timeout = 10 }
      ]], { env = tmp_env { MKHARNESS_KEEP = "1" } })
      assert.equal(0, r.code, r.stderr)
      local dir = r.stderr:match("run directory kept: ([^\n]+)")
      assert.is_not_nil(dir, r.stderr)
      assert.is_true(exists(dir .. "/events.jsonl"))
      mk.core.rmtree(dir)

      local init = package.searchpath("mkharness", package.path)
      local so = package.searchpath("mkharness.core", package.cpath)
      assert.is_not_nil(init)
      assert.is_not_nil(so)
      local luadir = init:gsub("/mkharness/init%.lua$", "")
      local sodir = so:gsub("/mkharness/core%.so$", "")
      local base = mk.tmpdir()
      local stock = mk.run { "lua5.4", "-e", [[
local mk = require "mkharness"
local s = mk.process { "true" }:start()
s:wait_exit { timeout = 10 }
print("RUNDIR=" .. mk.core.run_dir())
]], env = {
        LUA_PATH = luadir .. "/?.lua;" .. luadir .. "/?/init.lua;;", LUA_CPATH = sodir .. "/?.so;;",
        MKHARNESS_TMPDIR = base, MKHARNESS_KEEP = "1",
        LD_PRELOAD = os.getenv("MKH_SANITIZER_PRELOAD"),
        ASAN_OPTIONS = os.getenv("MKH_SANITIZER_PRELOAD") and "detect_leaks=0" or nil,
      }, timeout = 60 }
      assert.equal(0, stock.code, stock.stderr)
      local sdir = stock.stdout:match("RUNDIR=([^\n]+)")
      assert.is_not_nil(sdir, stock.stdout)
      assert.is_true(is_dir(sdir), sdir .. " was removed")
      assert.is_true(exists(sdir .. "/.finished"))
      local list = json_lines(H.slurp(sdir .. "/events.jsonl") or "")
      assert.equal("start", list[1].event)
      assert.equal("module", list[1].mode)
      assert.equal(1, list[1].schema)
    end)
  end)

  describe("GNU-style options", function()
    it("--timeout=S and --report=FILE", function()
      local file = mk.tmpdir() .. "/report.jsonl"
      local r = host { "--timeout=30", "--report=" .. file, "-e", "require('mkharness').mark('eq')" }
      assert.equal(0, r.code, r.stderr)
      assert.matches('"text":"eq"', H.slurp(file) or "", 1, true)
      r = host { "--timeout=0", "-e", "x = 1" }
      assert.equal(2, r.code)
      assert.matches("--timeout needs a positive number", r.stderr, 1, true)
    end)

    it("bundled short flags: -vq is quiet, -vt stamps verbose lines, -ve CODE", function()
      local r = host { "-vq", "--keep", "-e", "require('mkharness').mark('hidden')" }
      assert.equal(0, r.code, r.stderr)
      assert.equal("", r.stderr)
      r = host { "-vt", "-e", "require('mkharness').mark('stamped')" }
      assert.equal(0, r.code, r.stderr)
      assert.matches("+%d+%.%d%d%ds mkharness: mark: stamped", r.stderr)
      r = host { "-ve", "require('mkharness').mark('bundled-e')" }
      assert.equal(0, r.code, r.stderr)
      assert.matches("mark: bundled-e", r.stderr, 1, true)
      r = host { "-vx", "whatever.lua" }
      assert.equal(2, r.code)
      assert.matches("unknown option: -x", r.stderr, 1, true)
    end)

    it("a mistyped long option: did you mean", function()
      local r = host { "--tiemout", "5", "whatever.lua" }
      assert.equal(2, r.code)
      assert.matches("did you mean --timeout?", r.stderr, 1, true)
      r = host { "--reprot=x", "whatever.lua" }
      assert.equal(2, r.code)
      assert.matches("did you mean --report?", r.stderr, 1, true)
      r = host { "--keep=yes", "whatever.lua" }
      assert.equal(2, r.code)
      assert.matches("takes no value", r.stderr, 1, true)
    end)

    it("a mistyped subcommand: did you mean `test`, unless a file has that name", function()
      local dir = mk.tmpdir()
      local r = host({ "tset" }, { cwd = dir })
      assert.equal(2, r.code)
      assert.matches("did you mean `test`?", r.stderr, 1, true)
      write(dir .. "/tset", "print('a script named tset')\n")
      r = host({ "tset" }, { cwd = dir })
      assert.equal(0, r.code, r.stderr)
      assert.matches("a script named tset", r.stdout, 1, true)
    end)

    it("--help documents events.jsonl and the bundling", function()
      local r = host { "--help" }
      assert.equal(0, r.code)
      assert.matches("events.jsonl", r.stdout, 1, true)
      assert.matches("-vq", r.stdout, 1, true)
      assert.matches("MKHARNESS_KEEP_RUNS", r.stdout, 1, true)
    end)
  end)
end)
