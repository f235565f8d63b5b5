-- Crash detection. A started service is held by the run until it is stopped or torn down,
-- so the collector never decides its fate. A service that ends while it
-- should be running - not by this scenario's stop(), kill() or a signal()
-- that ends it, and not an exit 0 of a service without readiness - has
-- crashed: that is an event at once, and the scenario's next harness call
-- raises UnexpectedExit (on_exit = "fail"), or it is recorded ("ignore"),
-- or started again ("restart", at most max_restarts times).
local core = require "mkharness.core"
local loop = require "mkharness.loop"
local events = require "mkharness.events"
local describe = require "mkharness.describe"
local fmt_s, svc_error, describe_code = describe.fmt_s, describe.svc_error, describe.describe_code

local held = {}

-- signals a scenario sends to end a service: an exit after one is not a crash
local ENDING = {}
for _, n in ipairs { "TERM", "INT", "QUIT", "KILL", "ABRT" } do ENDING[core.signum(n)] = true end

-- Look at one held service; returns its crash record when it has just crashed.
local function notice_exit(svc)
  local proc = svc._proc
  if svc._exit_seen or svc._stopped or not proc or not svc._ready_at then return nil end
  local code = proc:poll()
  if not code then return nil end
  svc._exit_seen, svc._exit = true, code
  local sig = svc._signalled
  if svc._ending or (code == 0 and #svc._probes == 0) or
     (sig and (ENDING[sig] or code == -sig or code == 128 + sig)) then
    events.emit("exited", { service = svc.name, exit_code = code },
      string.format("%s: exited (%s)", svc.name, describe_code(code, svc)))
    return nil
  end
  local now = core.now()
  local c = { code = code, at = now, since_ready = now - svc._ready_at }
  svc._crash = c
  events.emit("crashed", { service = svc.name, exit_code = code, since_ready = c.since_ready },
    string.format("%s: CRASHED: %s, %s after it was ready", svc.name, describe_code(code, svc), fmt_s(c.since_ready)))
  if svc.on_exit == "ignore" then
    c.reported = true
  elseif svc.on_exit == "restart" and (svc._restarts or 0) < svc.max_restarts then
    c.reported = true
    svc._restarts = (svc._restarts or 0) + 1
    events.emit("restarting", { service = svc.name, restarts = svc._restarts },
      string.format("%s: restarting (on_exit = \"restart\", %d of %d)", svc.name, svc._restarts, svc.max_restarts))
    svc:start()
  end
  return c
end

local function crash_error(svc)
  local c = svc._crash
  c.reported, c.raised = true, true
  svc_error(svc, "UnexpectedExit", string.format("%s while it should have been running (%s after it was ready, %s ago)",
    describe_code(c.code, svc), fmt_s(c.since_ready), fmt_s(core.now() - c.at)),
    { exit_code = c.code, since_ready = c.since_ready, crashed_at = c.at })
end

-- Every harness call looks: raise the first crash not yet reported (a
-- call about `except` itself judges that service's exit its own way).
local function check_crashes(except)
  loop.run_deferred() -- what the last call left to do, before anything else
  -- one poll over the held services' own pidfds (readable once exited)
  -- instead of asking the kernel about each: every harness call looks, and
  -- a group of N would otherwise cost N system calls per call
  local fds, by_fd = {}, {}
  for svc in pairs(held) do
    local proc = svc._proc
    local fd, own
    if proc and not svc._exit_seen and not svc._stopped and svc._ready_at then fd, own = proc:fd() end
    if own then
      fds[#fds + 1], by_fd[fd] = fd, svc
    else
      notice_exit(svc)
    end
  end
  if #fds > 0 then
    for fd in pairs(core.readable(fds)) do notice_exit(by_fd[fd]) end
  end
  for svc in pairs(held) do
    local c = svc._crash
    if c and not c.reported and svc ~= except then crash_error(svc) end
  end
end

-- pidfds of held services that may still crash, for the wait loop's poll
local function crash_fds(fds)
  for svc in pairs(held) do
    if svc._ready_at and not svc._exit_seen and not svc._stopped then
      local fd = svc._proc:fd()
      if fd then fds[#fds + 1] = fd end
    end
  end
  return fds
end


return { held = held, notice = notice_exit, check = check_crashes, fds = crash_fds }
