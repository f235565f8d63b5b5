-- Stopping an executor: stop() (stop_command, stop signal, escalation to
-- kill_signal and SIGKILL, judging the exit), kill(), restart(), wait_exit().
local core = require "mkharness.core"
local options = require "mkharness.options"
local events = require "mkharness.events"
local crash = require "mkharness.crash"
local describe = require "mkharness.describe"
local executor = require "mkharness.executor"
local loop = require "mkharness.loop"
local types = options.types
local fmt_ms, fmt_s, svc_error, describe_code = describe.fmt_ms, describe.fmt_s, describe.svc_error, describe.describe_code
local held, check_crashes, notice_exit = crash.held, crash.check, crash.notice
local Executor, services, pump_echo = executor.Executor, executor.services, executor.pump_echo
local echo_close, drop_launcher = executor.echo_close, executor.drop_launcher
local KILL = core.signum("KILL")

local function judge_ok(code, sig, expected)
  return code == 0 or code == -sig or code == 128 + sig or (expected ~= nil and code == expected)
end

local STOP = { signal = types.signal, timeout = types.seconds, expected_returncode = types.returncode }

-- Phase 1 of a stop: signal the group. Returns the state phase 2 needs,
-- or nil when there is nothing to stop. Split so a group stops in parallel.
function Executor:_stop_begin(opts)
  local o = options.check("stop", opts, STOP)
  if self._adopted then self._adopted = nil return nil end
  local proc = self._proc
  if not proc or self._stopped then return nil end
  local s = {
    sig = o.signal or self.stop_signal,
    timeout = o.timeout or self.stop_timeout,
    expected = o.expected_returncode == nil and self.expected_returncode or o.expected_returncode,
    t0 = core.now(),
  }
  notice_exit(self)
  self._ending = true
  s.code = proc:poll()
  if not s.code then
    proc:thaw() -- a paused service must see the signal or command now: frozen or stopped, it would not
    proc:signal(core.signum("CONT"))
    s.deadline = s.t0 + s.timeout
    if self.stop_command then
      -- the service's own way to stop (pg_ctl stop); signals follow only
      -- if it is still running after stop_timeout
      local t = { name = self.name .. "-stop", env = self.env, cwd = self.cwd, clear_env = self.clear_env,
        user = self.user, group = self.group, on_exit = "ignore" }
      for k, v in pairs(self.stop_command) do t[k] = v end
      s.command = executor.process(t)
      s.command:start()
    else
      proc:signal(s.sig)
    end
  end
  return s
end

-- After a stop_command: reap it (killed if it outlived the stop), and say
-- how it ended.
local function finish_stop_command(self, s)
  local cmd = s.command
  local ok, code = pcall(Executor.wait_exit, cmd, { timeout = math.max(0, s.deadline - core.now()) })
  if not ok then cmd:kill() code = cmd:exit_code() end
  cmd:stop()
  services[cmd] = nil
  events.emit("stop_command", { service = self.name, exit_code = code },
    string.format("%s: stop_command %s (%s)", self.name, cmd.command, describe_code(code)))
end

function Executor:_stop_finish(s)
  local proc = self._proc
  local code = s.code
  if not code then
    code = loop.proc_wait(proc, math.max(0, s.deadline - core.now()))
    if s.command then
      finish_stop_command(self, s)
      if not code then -- the command did not stop it: the signals' turn
        proc:signal(s.sig)
        s.deadline = core.now() + s.timeout
        code = loop.proc_wait(proc, s.timeout)
      end
    end
    if not code then
      s.escalated = true
      proc:signal(self.kill_signal)
      proc:thaw()
      proc:signal(core.signum("CONT"))
      code = loop.proc_wait(proc, math.max(s.timeout, 1))
      if not code and self.kill_signal ~= KILL then
        -- kill_signal can be caught; SIGKILL cannot
        s.forced = true
        proc:signal(KILL)
        code = loop.proc_wait(proc, 5)
      end
      if not code then
        svc_error(self, "ExecutorError", string.format(
          "stop(): still alive %s after SIGKILL (uninterruptible sleep, state D?); it is left to teardown",
          fmt_s(core.now() - s.t0)))
      end
    end
  end
  proc:sweep()
  drop_launcher(self)
  self._stopped, self._exit = true, code
  held[self] = nil
  echo_close(self)
  local took = core.now() - s.t0
  local crashed = self._crash
  if s.code then
    -- it had ended before stop(): say how, never as if stop() had done it
    events.emit("cleaned", { service = self.name, exit_code = code, crashed = crashed and true or nil },
      string.format("%s: was not running at stop() (%s%s); cleaned up", self.name,
        crashed and "crashed: " or "", describe_code(code, self)))
    if crashed and crashed.raised then return end -- already reported as UnexpectedExit
    if crashed then crashed.reported = true end
  else
    events.emit("stopped", { service = self.name, exit_code = code, ms = took * 1000, escalated = s.escalated or nil },
      string.format("%s: stopped in %s (%s%s)", self.name, fmt_ms(took), describe_code(code, self),
        s.escalated and string.format(", did not stop on SIG%s within %s: killed", core.signame(s.sig) or s.sig, fmt_s(s.timeout)) or ""))
  end
  if s.forced then
    svc_error(self, "ExecutorError", string.format(
      "stop(): ignored SIG%s and then kill_signal SIG%s for %s each; killed with SIGKILL (%s)",
      core.signame(s.sig) or s.sig, core.signame(self.kill_signal) or self.kill_signal,
      fmt_s(s.timeout), describe_code(code)), { exit_code = code })
  end
  if not s.escalated and not judge_ok(code, s.sig, s.expected) then
    svc_error(self, "ProcessFinishedWithError",
      string.format("finished with %s; expected 0, death by SIG%s%s", describe_code(code),
        core.signame(s.sig) or s.sig, s.expected and (" or " .. s.expected) or ""),
      { exit_code = code })
  end
end

function Executor:stop(opts)
  check_crashes(self)
  local s = self:_stop_begin(opts)
  if s then self:_stop_finish(s) end
  return self
end

local KILL_OPTS = { signal = types.signal, wait = types.boolean }
function Executor:kill(opts)
  local o = options.check("kill", opts, KILL_OPTS)
  local sig = o.signal or self.kill_signal
  local proc = self._proc
  if not proc or self._stopped then return self end
  notice_exit(self)
  self._ending = true
  if not proc:poll() then
    proc:signal(sig)
    if sig ~= KILL then
      proc:thaw()
      proc:signal(core.signum("CONT"))
    end
  end
  if o.wait ~= false then
    local code = loop.proc_wait(proc, sig == KILL and 5 or self.stop_timeout)
    if code then
      proc:sweep()
      drop_launcher(self)
      self._stopped, self._exit = true, code
      held[self] = nil
      echo_close(self)
      events.emit("killed", { service = self.name, signal = sig, exit_code = code },
        string.format("%s: killed with SIG%s (%s)", self.name, core.signame(sig) or sig, describe_code(code)))
    end
  end
  return self
end

-- A service that crashed (its crash already reported) is started again.
function Executor:restart()
  check_crashes(self)
  notice_exit(self)
  if self._crash then self._crash.reported = true end
  if self:running() then self:stop() end
  return self:start()
end

local WAIT_EXIT = { timeout = types.timeout }
function Executor:wait_exit(opts)
  local o = options.check("wait_exit", opts, WAIT_EXIT)
  if not self._proc then
    svc_error(self, "ExecutorError", "wait_exit() needs a started service")
  end
  if self._stopped then return self._exit end
  check_crashes(self)
  self._ending = true -- waited for: its exit is expected
  local timeout = o.timeout == nil and self.timeout or o.timeout
  local code = loop.proc_wait(self._proc, timeout or nil)
  if not code then
    svc_error(self, "TimeoutExpired", string.format("did not exit within %s", fmt_s(timeout)),
      { timeout = timeout })
  end
  self._exit = code
  -- waited for: its pid goes back to the system now (what it left in its
  -- group is still stop()'s and teardown's, found by token or cgroup)
  self._proc:release()
  pump_echo(self)
  return code
end

