-- Errors that explain themselves, SpawnError at once, and the clean slate
-- children get (only fds 0-2, default dispositions, their own session).
local H = require "spec.helpers"
local mk = require "mkharness"

local FX = H.fx
local raises = H.raises
local file_exists = H.file_exists
local write_file = H.write_file

describe("mk.process", function()
  H.leakcheck()

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
    out = nil -- luacheck: ignore 311 (lets the collector free 100 MB before the next read)
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
