-- Waiting: one loop waits for any number of "waiters" (a start, a group
-- start, wait_output, wait_for, wait_until): it checks what is due, then
-- sleeps in poll() on every event source (pidfds, inotify, notify sockets)
-- until the next polling attempt or deadline. Nothing sleeps a fixed time.
-- Every pass also looks for crashes of the services already running.
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local probes = require "mkharness.probes"
local defaults = require "mkharness.defaults"
local crash = require "mkharness.crash"
local describe = require "mkharness.describe"
local loop = require "mkharness.loop"
local types = options.types
local fmt_s, svc_error, describe_code = describe.fmt_s, describe.svc_error, describe.describe_code
local check_crashes, crash_fds = crash.check, crash.fds

local W = {}


local function pause_for(cost, interval)
  return math.min(interval, math.max(defaults.min_pause, cost * defaults.cost_factor))
end
probes.pause_for = pause_for -- mk.probe.any paces its polling members the same way

local function probe_summary(w)
  local parts = {}
  for _, p in ipairs(w.probes) do
    if not p.done then
      -- an event probe makes no attempts to count: it waited for its event
      local tries = p.probe.poll and string.format("%d attempt%s", p.attempts, p.attempts == 1 and "" or "s")
        or "waited for the event"
      parts[#parts + 1] = string.format("%s (%s%s%s)", p.probe:describe(), tries,
        p.last and (", last: " .. tostring(p.last)) or "", p.busy and p.flight and ((p.last and "; then " or ", ") .. p.flight) or "")
    end
  end
  return table.concat(parts, "; ")
end

-- Did the last poll see one of a polling probe's own fds (the unix
-- probe's watch on the socket's directory)? Then it is tried at once, not
-- at its polling pace.
local function woke(p, ready)
  local fds = p.probe:fds(p.st)
  if fds then
    for _, fd in ipairs(fds) do if ready[fd] then return true end end
  end
  return false
end

-- Check a waiter once; returns true when it is satisfied. Raises on failure.
-- `ready`: the fds the last poll found ready (nil: look at everything). An
-- exit makes the service's fd readable, so without it there is no exit to
-- ask the kernel about: a group of N waiting costs no N system calls a pass.
local function step(w, now, ready)
  local svc = w.svc
  local fd, own
  if ready and svc and svc._proc and not w.exited then fd, own = svc._proc:fd() end
  if svc and svc._proc and not w.exited and not (own and not ready[fd]) then
    local code = svc._proc:poll()
    if code then
      w.exited = code
      if code ~= 0 then -- exit 0 before ready: a daemonizing launcher, keep probing
        -- a last look: the banner may be the last thing it printed
        for _, p in ipairs(w.probes) do
          if not p.done and not p.probe.poll then
            local ok, detail = p.probe:check(p.st, svc, w.deadline)
            p.done, p.last = ok, detail
          end
        end
        local all = true
        for _, p in ipairs(w.probes) do all = all and p.done end
        if not all or #w.probes == 0 then
          if w.on_fail then w.on_fail(w) end
          local tried = probe_summary(w)
          svc_error(svc, "ProcessExitedWithError",
            string.format("%s before %s (after %s); was waiting for %s", describe_code(code),
              w.what, fmt_s(now - w.t0), tried ~= "" and tried or "nothing"),
            { exit_code = code, waited = now - w.t0 })
        end
      end
    end
  end
  local all = true
  local events = ready and next(ready) ~= nil
  for _, p in ipairs(w.probes) do
    if not p.done then
      if not p.probe.poll or p.busy or now >= p.next_at or (events and woke(p, ready)) then
        local by_cpu = p.probe.poll and p.probe:paced_by_cpu()
        local t, c = core.now(), by_cpu and core.cputime()
        local ok, detail, answered, busy, soon = p.probe:check(p.st, svc, w.deadline)
        local after = core.now()
        if by_cpu then p.cpu = (p.cpu or 0) + core.cputime() - c end
        if not busy then p.attempts = p.attempts + 1 end
        if ok then
          p.done, p.detail = true, detail
        elseif busy then
          -- an attempt in flight (an HTTP request): checked again when its
          -- fds or wake time say so; its pause comes when it ends
          if not p.busy then p.busy, p.flight = t, detail end
          all = false
        else
          t, p.busy, p.flight = p.busy or t, nil, nil -- the pause is paced by the whole attempt's cost
          -- a polling attempt the deadline cut short (a request given the
          -- last few ms) says less than the one before
          if not (p.probe.poll and p.last and w.deadline and after >= w.deadline) then p.last = detail end
          if p.probe.poll then
            -- what the attempt cost: the loop's own CPU for the probes
            -- whose work is ours (a loaded machine that keeps us waiting
            -- for a core must not slow the pace fifty-fold), the time it
            -- took for the rest (a command's, a function's)
            local pause = pause_for(by_cpu and p.cpu or after - t, w.interval)
            p.cpu = nil
            -- a service that answers but is not ready yet must not see its
            -- log fill with probe requests: back off towards `interval`
            if answered then
              p.backoff = math.min(w.interval, math.max(pause, (p.backoff or defaults.min_pause) * 2))
              pause = p.backoff
            else
              p.backoff = nil
            end
            if soon then pause = math.min(pause, soon) end
            p.next_at = after + pause
          end
          all = false
        end
      else
        all = false
      end
    end
  end
  return all
end

-- Returns once every waiter is done; with `waiters.any`, as soon as one
-- more is (a group then starts what depended on it).
local function wait_all(waiters)
  -- The loop's CPU budget: it earns wait_cpu_share of the wall time and
  -- spends what this thread uses in passes that polling woke (the pass,
  -- its poll, the probe attempts), up to wait_cpu_burst ahead. Once spent,
  -- polling wake-ups wait until it is earned back, so a long wait costs
  -- that share of a core whatever the machine and however many probes
  -- there are: per-attempt pacing alone cannot bound the loop's own cost.
  -- Passes that events woke are the services' doing and cost the budget
  -- nothing, so a service flooding its output does not slow the polling of
  -- the others. Short waits, events and deadlines are never held back,
  -- and a polling probe never waits longer than its interval.
  local share, burst = defaults.wait_cpu_share, defaults.wait_cpu_burst
  local budget, cpu0, t0 = burst, core.cputime(), core.now()
  local ready -- what the last poll saw (nil on the first pass)
  local evented = false -- the pass being paid for was woken by an event
  while true do
    local cpu, t = core.cputime(), core.now()
    local spent = evented and 0 or cpu - cpu0
    budget = math.max(-burst, math.min(burst, budget + (t - t0) * share - spent))
    cpu0, t0 = cpu, t
    evented = ready ~= nil and next(ready) ~= nil
    check_crashes(waiters.except)
    local now = core.now()
    local fds, wake, deadline, hold = {}, math.huge, math.huge, math.huge
    local pending, progressed = false, false
    for _, w in ipairs(waiters) do
      if not w.done then
        if step(w, now, ready) then
          w.done, progressed = true, true
          w.elapsed = core.now() - w.t0
          if w.on_ready then w.on_ready(w) end
        else
          now = core.now()
          if w.deadline and now >= w.deadline then
            if w.on_fail then w.on_fail(w) end
            local tried = probe_summary(w)
            local msg = string.format("%snot %s after %s (timeout %s); waited for %s",
              w.svc and "" or "condition ", w.what_done or "ready", fmt_s(now - w.t0),
              fmt_s(w.deadline - w.t0), tried)
            local fields = { timeout = w.deadline - w.t0, waited = now - w.t0, tried = tried }
            if w.svc then svc_error(w.svc, "TimeoutExpired", msg, fields) end
            fields.message = w.message and (w.message .. " (" .. msg .. ")") or msg
            Error.raise("TimeoutExpired", fields)
          end
          pending = true
          if w.deadline then deadline = math.min(deadline, w.deadline) end
          if w.svc and w.svc._proc and not w.exited then
            local fd = w.svc._proc:fd()
            if fd then fds[#fds + 1] = fd end
          end
          for _, p in ipairs(w.probes) do
            if not p.done then
              local pw = p.probe:wake(p.st) -- any{} paces its polling members this way
              if p.probe.poll or pw then hold = math.min(hold, w.interval) end
              if p.probe.poll and not p.busy then wake = math.min(wake, p.next_at) end
              wake = math.min(wake, pw or math.huge)
              for _, fd in ipairs(p.probe:fds(p.st) or {}) do fds[#fds + 1] = fd end
            end
          end
        end
      end
    end
    if not pending or (waiters.any and progressed) then return end
    now = core.now()
    if wake < math.huge and budget < 0 then wake = math.max(wake, now + math.min(-budget / share, hold)) end
    wake = math.min(wake, deadline)
    local left = wake == math.huge and -1 or math.max(0, wake - now)
    ready = loop.block(crash_fds(fds), left)
  end
end

local function make_waiter(svc, probe_list, opts)
  local t0 = opts.t0 or core.now()
  local w = {
    svc = svc, t0 = t0, probes = {}, interval = opts.interval or (svc and svc.interval) or defaults.interval,
    deadline = opts.timeout and (t0 + opts.timeout) or nil, what = opts.what or "it was ready",
    what_done = opts.what_done, on_ready = opts.on_ready, on_fail = opts.on_fail,
    release = opts.release, message = opts.message,
  }
  for i, p in ipairs(probe_list) do
    w.probes[i] = { probe = p, st = opts.states and opts.states[i] or {}, attempts = 0, next_at = 0 }
  end
  return w
end


W.step, W.all, W.waiter = step, wait_all, make_waiter

local WAIT_UNTIL = { timeout = types.timeout, interval = types.interval, message = types.string }
function W.wait_until(fn, opts)
  if type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "mk.wait_until(fn, opts): fn must be a function, got " .. options.describe(fn) })
  end
  local o = options.check("mk.wait_until", opts, WAIT_UNTIL)
  local timeout = o.timeout == nil and defaults.wait_until_timeout or o.timeout
  local w = make_waiter(nil, { probes.fn(fn) }, { timeout = timeout or nil, interval = o.interval,
    message = o.message, what_done = "true" })
  wait_all { w }
  return w.probes[1].detail
end

-- Sleeps in poll on the held services' pidfds, so a crash is an event
-- (and an UnexpectedExit) at once, not when the sleep is over.
function W.sleep(s)
  types.seconds("mk.sleep", "seconds", s)
  local deadline = core.now() + s
  repeat
    check_crashes()
    loop.block(crash_fds {}, math.max(0, deadline - core.now()))
  until core.now() >= deadline
  check_crashes()
end

return W
