-- Paths taken where the kernel (or valgrind) lacks something: without
-- pidfd_open, process exit comes from a SIGCHLD self-pipe. Each case runs
-- in a fresh host with the feature turned off by its environment switch.
local H = require "spec.helpers"
local mk = require "mkharness"

describe("fallbacks", function()
  H.leakcheck()

  it("without pidfd: start, readiness, death before ready, stop and a group work", function()
    local r = H.scenario([[
      local s = mk.output { FX, "--sleep", "0.1", "--print", "READY", "--forever", banner = "READY" }:start()
      assert(s:running())
      s:stop()
      local ok, e = pcall(mk.output { FX, "--sleep", "0.05", "--exit", "3", banner = "never", timeout = 20 }.start,
        mk.output { FX, "--sleep", "0.05", "--exit", "3", banner = "never", timeout = 20 })
      assert(mk.is_error(e, "ProcessExitedWithError") and e.exit_code == 3, tostring(e))
      local g = mk.group { mk.output { FX, "--sleep", "0.1", "--print", "A", "--forever", banner = "A" },
        mk.output { FX, "--sleep", "0.2", "--print", "B", "--forever", banner = "B" } }
      g:start() g:stop()
      local w = mk.process { FX, "--sleep", "0.1", "--exit", "4" }:start()
      assert(w:wait_exit { timeout = 10 } == 4)
      print("fallback ok")
    ]], { env = { MKHARNESS_PIDFD = "0" } })
    assert.equal(0, r.code, r.stderr)
    assert.matches("fallback ok", r.stdout, 1, true)
  end)

  it("without pidfd and cgroup: teardown still leaves nothing", function()
    local dir = mk.tmpdir()
    local r = H.scenario([[
      KEEP = mk.process { FX, "--daemonize", "--ignore", "TERM", "--pidfile", arg[1] .. "/d.pid", "--forever" }:start()
      mk.wait_until(function() local f = io.open(arg[1] .. "/d.pid") if f then f:close() return true end end)
    ]], { args = { dir }, env = { MKHARNESS_PIDFD = "0", MKHARNESS_CGROUP = "0" } })
    assert.equal(0, r.code, r.stderr)
    local pid = tonumber(H.slurp(dir .. "/d.pid"):match("%d+"))
    assert.is_false(H.pid_alive(pid))
  end)
end)
