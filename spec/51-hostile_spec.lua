-- Hostile readiness (part of the torture suite): services whose readiness
-- endpoint misbehaves. Each case must end within its deadline plus a
-- generous margin, in a clear harness error of the right kind (or ready,
-- where the hostility still means "ready"), never in a hang, and without
-- the host's memory following the service's abuse.
--
-- Every case runs in a fresh `mkharness` process with a hard limit, so a
-- hang fails that case instead of hanging the whole suite, and the memory
-- figures (VmRSS, VmHWM) are the host's own.
local H = require "spec.helpers"
local mk = require "mkharness"

local MARGIN = 3          -- seconds allowed past the deadline
local MEM_BOUND = 32768   -- kB the host's peak RSS may grow during a start()
local MSG_BOUND = 256 * 1024 -- an error message must stay readable

-- The scenario prelude: `trial(name, make)` builds an executor, times its
-- start(), records the outcome and the host's memory, stops it, and prints
-- one line `RESULT {...}` (a Lua table literal) for the spec to judge.
local PRELUDE = [[
local function mem()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a") f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)")), tonumber(s:match("VmHWM:%s*(%d+)"))
end
local function q(v) return string.format("%q", v) end
function trial(make)
  collectgarbage()
  local svc = make()
  local rss0, hwm0 = mem()
  local t0 = mk.now()
  local ok, err = pcall(svc.start, svc)
  local elapsed = mk.now() - t0
  local rss1, hwm1 = mem()
  local r = { "ok=" .. tostring(ok), "elapsed=" .. string.format("%.3f", elapsed),
    "rss0=" .. rss0, "rss1=" .. rss1, "hwm0=" .. hwm0, "hwm1=" .. hwm1 }
  if ok then
    local line = svc.ready_match and svc.ready_match.line
    if line then
      r[#r + 1] = "line_len=" .. #line
      r[#r + 1] = "line_tail=" .. q(line:sub(-16))
    end
  else
    r[#r + 1] = "kind=" .. q(mk.is_error(err) and err.kind or ("not a harness error: " .. type(err)))
    local msg = tostring(err)
    r[#r + 1] = "msg_len=" .. #msg
    r[#r + 1] = "msg=" .. q(msg:sub(1, 1200))
    r[#r + 1] = "name=" .. q(mk.is_error(err) and tostring(err.name) or "")
  end
  pcall(svc.kill, svc)
  io.stdout:write("RESULT {", table.concat(r, ", "), "}\n")
  io.stdout:flush()
end
]]

-- Run `body` (which calls trial once) in a fresh host; returns the result
-- table and the whole run for messages.
local function run_trial(body, opts)
  opts = opts or {}
  local r = H.scenario(PRELUDE .. body, { timeout = opts.limit or 40, args = opts.args, env = opts.env })
  local lit = r.stdout:match("RESULT (%b{})")
  assert(lit, "the scenario printed no result (exit " .. tostring(r.code) .. ")\nstdout:\n" ..
    r.stdout:sub(1, 2000) .. "\nstderr:\n" .. r.stderr:sub(1, 4000))
  local res = assert(load("return " .. lit))()
  res.run = r
  res.text = lit:sub(1, 1500)
  return res
end

local function expect_error(res, kind, deadline)
  assert(res.ok == false, "expected " .. kind .. ", but start() succeeded: " .. res.text)
  assert.equal(kind, res.kind, res.text)
  assert(res.elapsed <= deadline + MARGIN,
    string.format("took %.2f s, deadline %g s + %g s margin: %s", res.elapsed, deadline, MARGIN, res.text))
  assert(res.msg_len <= MSG_BOUND, "error message of " .. res.msg_len .. " bytes")
  assert.equal(0, res.run.code, res.run.stderr)
end

local function expect_small_memory(res)
  assert(res.hwm1 - res.hwm0 <= MEM_BOUND, string.format(
    "the host's peak RSS grew by %d kB during start() (bound %d kB): %s", res.hwm1 - res.hwm0, MEM_BOUND, res.text))
end

local function expect_ready(res, deadline)
  assert(res.ok == true, "expected ready, got " .. tostring(res.kind) .. ": " .. tostring(res.msg))
  assert(res.elapsed <= deadline + MARGIN, string.format("ready only after %.2f s: %s", res.elapsed, res.text))
  assert.equal(0, res.run.code, res.run.stderr)
end

describe("hostile readiness #torture #hostile", function()
  H.leakcheck()

  describe("HTTP", function()
    -- an HTTP fixture in `mode` probed with `method`: it is never ready
    local function never_ready(mode, name, method, timeout)
      local port = mk.free_port()
      local res = run_trial(string.format([[
trial(function()
  return mk.http { FX, "--listen", %d, "%s", "--serve-http", 200, name = "%s",
    url = "http://127.0.0.1:%d/health", method = "%s", timeout = %g }
end)]], port, mode, name, port, method, timeout))
      expect_error(res, "TimeoutExpired", timeout)
      assert.equal(name, res.name)
      return res
    end

    it("an endpoint that accepts and never answers: TimeoutExpired at the deadline", function()
      local res = never_ready("--http-hang", "hang", "HEAD", 1)
      assert(res.elapsed >= 0.9, "gave up before the deadline: " .. res.text)
    end)

    it("an endpoint that accepts and never answers, GET with a deadline of 2 s", function()
      never_ready("--http-hang", "hang", "GET", 2)
    end)

    it("an endpoint that answers garbage: TimeoutExpired, not ready", function()
      never_ready("--http-garbage", "garbage", "HEAD", 1)
    end)

    it("an endpoint that answers garbage to GET: TimeoutExpired, not ready", function()
      never_ready("--http-garbage", "garbage", "GET", 2)
    end)

    it("an endpoint that answers a 1 GB body to GET: the probe does not download it", function()
      local port = mk.free_port()
      local res = run_trial(string.format([[
trial(function()
  return mk.http { FX, "--listen", %d, "--http-huge", 1000000000, "--serve-http", 200, name = "huge",
    url = "http://127.0.0.1:%d/", method = "GET", timeout = 2 }
end)]], port, port))
      -- status 200 means ready; an error is acceptable too, but it must be
      -- a harness error and come quickly
      if res.ok then
        expect_ready(res, 2)
      else
        assert(res.kind and not res.kind:find("not a harness error"), res.text)
        assert(res.elapsed <= 2 + MARGIN, res.text)
      end
      expect_small_memory(res)
      assert(res.rss1 < 128 * 1024, "host RSS " .. res.rss1 .. " kB after the probe")
    end)
  end)

  describe("unix socket", function()
    it("a socket path that is a regular file: TimeoutExpired at the deadline", function()
      local dir = mk.tmpdir()
      local path = dir .. "/sock"
      local f = assert(io.open(path, "w"))
      f:write("not a socket\n")
      f:close()
      local res = run_trial(string.format([[
trial(function()
  return mk.unix { FX, "--forever", name = "regular", socket = %q, timeout = 1 }
end)]], path))
      expect_error(res, "TimeoutExpired", 1)
      assert.matches(path, res.msg, 1, true)
    end)

    it("a socket path the service itself makes a regular file: TimeoutExpired", function()
      local path = mk.tmpdir() .. "/sock"
      local res = run_trial(string.format([[
trial(function()
  return mk.unix { FX, "--touch", %q, "--forever", name = "regular", socket = %q, timeout = 1 }
end)]], path, path))
      expect_error(res, "TimeoutExpired", 1)
    end)

    it("a socket path that is a directory: TimeoutExpired", function()
      local path = mk.tmpdir() .. "/sockdir"
      assert(mk.core.mkdir(path))
      local res = run_trial(string.format([[
trial(function()
  return mk.unix { FX, "--forever", name = "dir", socket = %q, timeout = 1 }
end)]], path))
      expect_error(res, "TimeoutExpired", 1)
    end)
  end)

  describe("pid file", function()
    it("a pid file that a shell loop creates and removes: ready or TimeoutExpired, in time", function()
      local path = mk.tmpdir() .. "/flicker.pid"
      local res = run_trial(string.format([[
local F = %q
trial(function()
  return mk.pidfile { shell = "while :; do echo $$ > " .. F .. "; rm -f " .. F .. "; done",
    name = "flicker", file = F, timeout = 1 }
end)]], path))
      if res.ok then
        expect_ready(res, 1)
      else
        expect_error(res, "TimeoutExpired", 1)
      end
    end)

    it("a pid file that appears once and vanishes for good: ready or TimeoutExpired, in time", function()
      local path = mk.tmpdir() .. "/once.pid"
      local res = run_trial(string.format([[
local F = %q
trial(function()
  return mk.pidfile { FX, "--pidfile", F, "--rm", F, "--forever", name = "once", file = F, timeout = 1 }
end)]], path))
      if res.ok then
        expect_ready(res, 1)
      else
        expect_error(res, "TimeoutExpired", 1)
      end
    end)
  end)

  describe("output banner", function()
    -- 65533 bytes of filler, then BANNER on the same line: offset 65536
    -- (64 KB) falls inside "BANNER"
    local FILL = 65536 - 3

    it("a banner that matches only across a 64 KB boundary is found", function()
      local res = run_trial(string.format([[
trial(function()
  return mk.output { FX, "--flood-line", %d, "--print", "BANNER", "--forever", name = "boundary",
    banner = "yBANNER", timeout = 5 }
end)]], FILL))
      expect_ready(res, 5)
      assert.equal(FILL + #"BANNER", res.line_len)
      assert.equal("yyyyyyyyyyBANNER", res.line_tail)
    end)

    it("a banner split across the 64 KB boundary by two writes, apart in time, is found", function()
      local res = run_trial(string.format([[
trial(function()
  return mk.output { FX, "--flood-line", %d, "--write", "BAN", "--sleep", "0.2", "--print", "NER",
    "--forever", name = "split", banner = "yBANNER", timeout = 5 }
end)]], FILL))
      expect_ready(res, 5)
      assert.equal(FILL + #"BANNER", res.line_len)
    end)

    -- Lua patterns with a repetition are quadratic on a long run of the
    -- repeated character; the harness must not try such a pattern on a
    -- partial line that cannot match (its literal part is not there yet).
    it("a pattern banner (y+BANNER$) while a 64 KB partial line waits for its end: ready in time", function()
      local res = run_trial(string.format([[
trial(function()
  return mk.output { FX, "--flood-line", %d, "--write", "BAN", "--sleep", "0.2", "--print", "NER",
    "--forever", name = "split", banner = "y+BANNER$", timeout = 2 }
end)]], FILL))
      expect_ready(res, 2)
      assert.equal(FILL + #"BANNER", res.line_len)
    end)

    it("a single 50 MB line without a newline and no banner: TimeoutExpired, small memory", function()
      local res = run_trial([[
trial(function()
  return mk.output { FX, "--flood-line", 50000000, "--forever", name = "endless",
    banner = "BANNER", timeout = 2 }
end)]])
      expect_error(res, "TimeoutExpired", 2)
      expect_small_memory(res)
    end)

    it("a single 50 MB line, then the banner at its end (no newline): ready", function()
      local res = run_trial([[
trial(function()
  return mk.output { FX, "--flood-line", 50000000, "--write", "BANNER", "--forever", name = "tail",
    banner = "BANNER", timeout = 5 }
end)]])
      expect_ready(res, 5)
      expect_small_memory(res)
      assert.equal("yyyyyyyyyyBANNER", res.line_tail)
    end)

    it("a single 50 MB line ended by the banner and a newline: ready", function()
      local res = run_trial([[
trial(function()
  return mk.output { FX, "--flood-line", 50000000, "--print", "BANNER", "--forever", name = "tailnl",
    banner = "yBANNER$", timeout = 5 }
end)]])
      expect_ready(res, 5)
      expect_small_memory(res)
      assert.equal("yyyyyyyyyyBANNER", res.line_tail)
    end)

    -- string.find runs in C where no Lua hook fires: unbounded, this match
    -- takes hours, and Ctrl-C waited for it
    it("Ctrl-C (SIGINT to the host) during a backtracking match: exit 130 at once", function()
      local path = mk.tmpdir() .. "/scenario.lua"
      local f = assert(io.open(path, "w"))
      f:write(string.format([[
local mk = require "mkharness"
io.stdout:write("MATCHING\n") io.stdout:flush()
mk.output { %q, "--print", string.rep("a", 26) .. "x!", "--forever", name = "backtrack",
  banner = string.rep("(.-)", 12) .. "x$", timeout = 600 }:start()
]], H.fx))
      f:close()
      local host = mk.process { H.host, path, name = "host", stop_timeout = 5 }
      finally(function() pcall(host.kill, host) end)
      host:start()
      host:wait_output("MATCHING", { timeout = 30 })
      mk.sleep(1) -- well into the match
      local t0 = mk.now()
      host:signal("INT")
      local code = host:wait_exit { timeout = 30 }
      assert.equal(130, code, host:err_output())
      assert(mk.now() - t0 < 5, string.format("exit took %.1f s", mk.now() - t0))
    end)
  end)
end)
