-- mkharness: process executors for integration and chaos test scenarios.
-- The friendly API over mkharness.core (see DESIGN.md section 2).
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local O = require "mkharness.options"
local P = require "mkharness.probes"
local events = require "mkharness.events"
local cleanup = require "mkharness.cleanup"
local json = require "mkharness.json"
local T = O.types

local M = { _VERSION = "mkharness " .. core.version, core = core, Error = Error, probe = {} }

M.probe.output = function(t) return P.output(t) end
M.probe.tcp = P.tcp
M.probe.unix = P.unix
M.probe.http = function(t) return P.http(t) end
M.probe.file = P.file
M.probe.notify = P.notify
M.probe.exec = P.exec
M.probe.any = P.any

-- The default polling pace. The pause between two attempts of a polling
-- probe adapts to what an attempt costs: 50x its duration (so probing uses
-- about 2% of a core), at least 1 ms, and never more than `interval`.
-- The floor bounds the wait loop's own cost per pass and keeps readiness
-- latency p50 near 1 ms (bench/run.lua measures both); an exec probe that
-- takes 2 ms polls every 100 ms.
M.DEFAULT_INTERVAL = 0.1
local MIN_PAUSE, COST_FACTOR = 0.001, 50
local KILL = core.signum("KILL")

-- A run inside a service of another run (nested harnesses) hands its
-- services the tokens of the runs around it, so an outer stop() or
-- teardown finds them even after the inner harness was killed.
local OUTER do
  local outer, svc = os.getenv("MKHARNESS_OUTER"), os.getenv("MKHARNESS_SERVICE")
  OUTER = svc and (outer and (outer .. " " .. svc) or svc) or outer
end

-- Children forked by io.popen are the script's to wait for (its close does):
-- register them, so that waiting for stray zombies never takes them.
do
  local popen = io.popen
  io.popen = function(...)
    local before = {}
    for _, pid in ipairs(core.children()) do before[pid] = true end
    local f, err, code = popen(...)
    if f then
      for _, pid in ipairs(core.children()) do
        if not before[pid] then core.own_child(pid) end
      end
    end
    return f, err, code
  end
end

local services = setmetatable({}, { __mode = "k" }) -- every executor, for reports
M._services = services
local used_names = {}

local function fmt_ms(s) return string.format("%.1f ms", s * 1000) end
local function fmt_s(s) return string.format("%.2f s", s) end

local function log_tail(svc, n)
  if not svc._logs then return nil end
  local out = {}
  for _, s in ipairs { "stdout", "stderr" } do
    local path = svc._logs[s]
    local t = path and core.tail(path, n or 20)
    if t and t ~= "" then
      out[#out + 1] = (svc._logs.stdout and svc._logs.stderr) and ("[" .. s .. "]\n" .. t) or t
    end
  end
  return table.concat(out, "\n")
end
M._log_tail = log_tail

-- A capture filling its filesystem fails in the service (ENOSPC), out of
-- the harness's sight: what it sees is a banner that never comes or an early
-- exit. So a wait that ends so looks at the capture filesystem (statvfs)
-- and says so, naming the files, rather than a bare timeout.
local function disk_full_note(svc, kind)
  if not svc._logs or not (kind == "TimeoutExpired" or kind:match("^Process")) then return nil end
  local full = {}
  for _, s in ipairs { "stdout", "stderr" } do
    local path = svc._logs[s]
    if path and core.fs_full(path) then full[#full + 1] = path end
  end
  if #full > 0 then return table.concat(full, " and ") end
end

local function svc_error(svc, kind, message, fields)
  local f = fields or {}
  f.disk_full = disk_full_note(svc, kind)
  if f.disk_full then
    message = message .. "; no space left on device: the filesystem of " .. f.disk_full .. " is full"
  end
  f.message = message
  f.name = svc.name
  f.command = svc.command
  f.log_tail = f.log_tail or log_tail(svc, 20)
  Error.raise(kind, f)
end

local function describe_code(code, svc)
  if code == nil then return "still running" end
  if svc and svc._proc and svc._proc:foreign() then return "exited (status unknown: not our child)" end
  if code < 0 then
    local name = core.signame(-code)
    return string.format("killed by signal %d%s", -code, name and (" (SIG" .. name .. ")") or "")
  end
  return "exit code " .. code
end

---------------------------------------------------------------- options
local COMMON = {
  name = T.service_name, timeout = T.timeout, interval = T.interval,
  stop_timeout = T.seconds, stop_signal = T.signal, kill_signal = T.signal,
  expected_returncode = T.returncode, env = T.env, clear_env = T.boolean,
  cwd = T.nonempty, stdin = T.string, stdout = T.stream, stderr = T.stream,
  echo = T.boolean, already_running = T.enum("error", "reuse", "ignore"),
  on_exit = T.enum("fail", "ignore", "restart"), max_restarts = T.natural,
  stop_command = function(ctx, k, v)
    if type(v) == "string" then v = { cmd = v } end
    if type(v) ~= "table" then O.fail(ctx, k, "must be a command: { \"prog\", \"arg\", ... }, { cmd = \"...\" } or { shell = \"...\" }", v) end
    O.command(ctx .. " stop_command", v)
    return v
  end,
  user = T.user, group = T.group,
  ready = function(_, _, v) return v end,
  cmd = function(_, _, v) return v end, shell = function(_, _, v) return v end,
}

local function schema(extra, without)
  local s = {}
  for k, v in pairs(COMMON) do s[k] = v end
  for k, v in pairs(extra or {}) do s[k] = v end
  for _, k in ipairs(without or {}) do s[k] = nil end
  return s
end

-- Names are unique in a run (they name log files): a taken name gets the
-- first free "-N" suffix, whichever way it was taken ("web-2" given by the
-- user, then "web" twice: web, web-3).
local function unique_name(base)
  base = base:gsub("[^%w._-]", "_")
  if base == "" then base = "service" end
  local name, n = base, 1
  while used_names[name] do
    n = n + 1
    name = base .. "-" .. n
  end
  used_names[name] = true
  return name
end

---------------------------------------------------------------- Service
local Service = { __name = "mkharness.executor" }
Service.__index = Service
M.Service = Service

local function new_service(kind, ctx, t, extra_schema, probes_of)
  local argv, shown = O.command(ctx, t)
  local o = O.check(ctx, t, extra_schema)
  local self = setmetatable({}, Service)
  self.kind = kind
  self.argv = argv
  self.command = shown
  local base = o.name
  if not base then
    base = t.shell and (t.shell:match("^%s*([^%s]+)") or "sh") or argv[1]
    base = (base:match("([^/]+)/*$") or base):sub(1, O.NAME_MAX) -- a derived name is cut, not refused
  end
  self.name = o.name and unique_name(o.name) or unique_name(base)
  self.timeout = o.timeout == nil and 60 or o.timeout
  self.interval = o.interval or M.DEFAULT_INTERVAL
  self.stop_timeout = o.stop_timeout or 10
  self.stop_signal = o.stop_signal or core.signum("TERM")
  self.kill_signal = o.kill_signal or core.signum("KILL")
  self.expected_returncode = o.expected_returncode
  self.env = o.env or {}
  self.clear_env = o.clear_env or false
  self.cwd = o.cwd
  self.stdin = o.stdin
  self.stdout = o.stdout or "capture"
  self.stderr = o.stderr or "capture"
  self.echo = o.echo
  self.already_running = o.already_running or "error"
  self.on_exit = o.on_exit or "fail"
  self.max_restarts = o.max_restarts or 5
  self.stop_command = o.stop_command
  self._ids = O.identity(ctx, o.user, o.group)
  self.user, self.group = o.user, o.group
  local probes = P.list(ctx, o.ready)
  if probes_of then
    for _, p in ipairs(probes_of(o, self)) do table.insert(probes, 1, p) end
  end
  for _, p in ipairs(P.leaves(probes)) do
    if p.kind == "output" then
      local need = p.stream == "any" and { "stdout", "stderr" } or { p.stream }
      local ok = false
      for _, s in ipairs(need) do ok = ok or self[s] == "capture" end
      if not ok then
        O.fail(ctx, p.stream == "any" and "stdout" or p.stream,
          "must be \"capture\" for an output banner on " .. p.stream, self[p.stream == "any" and "stdout" or p.stream])
      end
    end
  end
  self._probes = probes
  services[self] = true
  return self
end

function Service:__tostring()
  local state
  if self._proc and not self._proc:poll() then
    state = string.format("pid %d, running", self._proc:pid())
  elseif self._adopted then
    state = "adopted"
  elseif self._exit ~= nil then
    state = describe_code(self._exit)
  else
    state = "not started"
  end
  return string.format("mkharness.%s %q (%s)", self.kind, self.command, state)
end

local function build_env(self, extra)
  local vars, order = {}, {}
  local function set(kv)
    local k = kv:match("^([^=]*)=")
    if not k then return end
    if vars[k] == nil then order[#order + 1] = k end
    vars[k] = kv
  end
  if not self.clear_env then
    for _, kv in ipairs(core.environ()) do set(kv) end
  end
  -- another user's own variables, as login(1) sets them; env = may override
  local ids = self._ids
  if ids and ids.user_given then
    set("HOME=" .. ids.home)
    set("USER=" .. ids.user)
    set("LOGNAME=" .. ids.user)
  end
  for k, v in pairs(self.env) do
    if v == false then vars[k] = nil else set(k .. "=" .. v) end
  end
  for k, v in pairs(extra) do set(k .. "=" .. v) end
  local list = {}
  for _, k in ipairs(order) do
    if vars[k] then list[#list + 1] = vars[k] end
  end
  local path = vars.PATH and vars.PATH:sub(6) or os.getenv("PATH")
  return list, path
end

-- Echo: the echo thread (src/echo.c) copies new complete lines of captured
-- output to our stderr as they are written; a flush puts out what is
-- complete now, a close all of it (the service is gone).
local function pump_echo(self)
  for _, e in pairs(self._echo or {}) do e:flush() end
end

local function echo_close(self)
  for _, e in pairs(self._echo or {}) do e:close() end
  self._echo = nil
end

---------------------------------------------------------------- crashes
-- A started service is held by the run until it is stopped or torn down,
-- so the collector never decides its fate. A service that ends while it
-- should be running - not by this scenario's stop(), kill() or a signal()
-- that ends it, and not an exit 0 of a service without readiness - has
-- crashed: that is an event at once, and the scenario's next harness call
-- raises UnexpectedExit (on_exit = "fail"), or it is recorded ("ignore"),
-- or started again ("restart", at most max_restarts times).
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
  for svc in pairs(held) do notice_exit(svc) end
  for svc in pairs(held) do
    local c = svc._crash
    if c and not c.reported and svc ~= except then crash_error(svc) end
  end
end
M._check_crashes = function() check_crashes(nil) end

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

---------------------------------------------------------------- waiting
-- One loop waits for any number of "waiters" (a start, a group start,
-- wait_output, wait_for, wait_until): it checks what is due, then sleeps in
-- poll() on every event source (pidfds, inotify, notify sockets) until the
-- next polling attempt or deadline. Nothing sleeps a fixed time.

local function pause_for(cost, interval)
  return math.min(interval, math.max(MIN_PAUSE, cost * COST_FACTOR))
end
P.pause_for = pause_for -- mk.probe.any paces its polling members the same way

local function probe_summary(w)
  local parts = {}
  for _, p in ipairs(w.probes) do
    if not p.done then
      parts[#parts + 1] = string.format("%s (%d attempt%s%s)", p.probe:describe(), p.attempts,
        p.attempts == 1 and "" or "s", p.last and (", last: " .. tostring(p.last)) or "")
    end
  end
  return table.concat(parts, "; ")
end

-- Check a waiter once; returns true when it is satisfied. Raises on failure.
local function step(w, now)
  local svc = w.svc
  if svc and svc._proc and not w.exited then
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
  for _, p in ipairs(w.probes) do
    if not p.done then
      if not p.probe.poll or now >= p.next_at then
        local t = core.now()
        local ok, detail, answered = p.probe:check(p.st, svc, w.deadline)
        local after = core.now()
        p.attempts = p.attempts + 1
        if ok then
          p.done, p.detail = true, detail
        else
          -- a polling attempt the deadline cut short (a request given the
          -- last few ms) says less than the one before
          if not (p.probe.poll and p.last and w.deadline and after >= w.deadline) then p.last = detail end
          if p.probe.poll then
            local pause = pause_for(after - t, w.interval)
            -- a service that answers but is not ready yet must not see its
            -- log fill with probe requests: back off towards `interval`
            if answered then
              p.backoff = math.min(w.interval, math.max(pause, (p.backoff or MIN_PAUSE) * 2))
              pause = p.backoff
            else
              p.backoff = nil
            end
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
  while true do
    check_crashes(waiters.except)
    local now = core.now()
    local fds, wake = {}, math.huge
    local pending, progressed = false, false
    for _, w in ipairs(waiters) do
      if not w.done then
        if step(w, now) then
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
          if w.deadline then wake = math.min(wake, w.deadline) end
          if w.svc and w.svc._proc and not w.exited then
            local fd = w.svc._proc:fd()
            if fd then fds[#fds + 1] = fd end
          end
          for _, p in ipairs(w.probes) do
            if not p.done then
              if p.probe.poll then wake = math.min(wake, p.next_at) end
              wake = math.min(wake, p.probe:wake(p.st) or math.huge)
              for _, fd in ipairs(p.probe:fds(p.st) or {}) do fds[#fds + 1] = fd end
            end
          end
        end
      end
    end
    if not pending or (waiters.any and progressed) then return end
    local left = wake == math.huge and -1 or math.max(0, wake - core.now())
    core.poll(crash_fds(fds), left)
  end
end

local function make_waiter(svc, probes, opts)
  local t0 = opts.t0 or core.now()
  local w = {
    svc = svc, t0 = t0, probes = {}, interval = opts.interval or (svc and svc.interval) or M.DEFAULT_INTERVAL,
    deadline = opts.timeout and (t0 + opts.timeout) or nil, what = opts.what or "it was ready",
    what_done = opts.what_done, on_ready = opts.on_ready, on_fail = opts.on_fail,
    message = opts.message,
  }
  for i, p in ipairs(probes) do
    w.probes[i] = { probe = p, st = opts.states and opts.states[i] or {}, attempts = 0, next_at = 0 }
  end
  return w
end

---------------------------------------------------------------- start
-- A service running as another user must reach what it is handed by path
-- (its notify socket, an mk.tmpdir given to it): the run directory becomes
-- traversable (0711) but not listable; what is in it stays private unless
-- given to that user.
local function share_run_dir(raise)
  local dir, err = core.run_dir()
  if dir then dir, err = core.chmod(dir, 457) end -- 0711
  if not dir then raise("cannot make the run directory traversable for another user: " .. err) end
end
local function capture_paths(self)
  local dir, err = core.run_dir()
  if not dir then svc_error(self, "SpawnError", "cannot create the run directory: " .. err) end
  local logs = {}
  for _, s in ipairs { "stdout", "stderr" } do
    if self[s] == "capture" then
      logs[s] = string.format("%s/%s.%s.log", dir, self.name, s)
      -- created now so inotify can watch it; private (0600) even in a run
      -- directory others may traverse: the service writes through the fd
      -- it is handed and never needs the path
      local f = core.open_file(logs[s], "w", 384)
      if f then f:close() end
    end
  end
  return logs
end

-- mk.pidfile: once ready, the pid in the file is the service's main process
-- (pid(), running(), signal(), pause(), stopped(), crash detection). The
-- launcher, exited or not, is cleaned up with it.
function Service:_adopt_daemon()
  local text = core.read(self.file) or ""
  local pid = math.tointeger(tonumber(text:match("^%s*(%d+)%s*$") or ""))
  if not pid then
    svc_error(self, "ExecutorError", string.format("the pid file %s holds no pid: %q", self.file, text:sub(1, 40)))
  end
  local launcher = self._proc
  if pid == launcher:pid() then return end
  local daemon, err = core.adopt(pid, launcher)
  if not daemon then
    svc_error(self, "ExecutorError", "cannot follow the daemon named by " .. self.file .. ": " .. err)
  end
  if launcher:poll() then launcher:release() end
  self._launcher, self._proc = launcher, daemon
  events.emit("adopted_daemon", { service = self.name, pid = pid, launcher = launcher:pid() },
    string.format("%s: follows its daemon, pid %d (from %s)", self.name, pid, self.file))
end

-- the launcher of an adopted daemon goes with it
local function drop_launcher(self)
  local l = self._launcher
  if l then
    self._launcher = nil
    l:sweep()
  end
end

-- Spawn without waiting; returns a waiter for the readiness probes, or nil
-- when the service is adopted or has none.
function Service:_launch()
  if self._proc and not self._stopped then
    if not self._proc:poll() then return nil end -- running: start() is a no-op
    -- it ended on its own since the last start: what it left goes now
    self._proc:sweep()
    self._exit, self._stopped = self._proc:poll(), true
  end
  -- a pid file left by a daemon that is gone (stopped by us, crashed) would
  -- read as "already running", then as "ready" at once: it goes first
  if self.kind == "pidfile" then
    local pid = math.tointeger(tonumber((core.read(self.file) or ""):match("^%s*(%d+)") or ""))
    if core.size(self.file) and not (pid and pid >= 1 and core.alive(pid)) then os.remove(self.file) end
  end
  -- already running? (mirakuru's pre-start check)
  if self.already_running ~= "ignore" then
    for _, p in ipairs(self._probes) do
      local yes, who = p:precheck(self)
      if yes then
        if self.already_running == "reuse" then
          self._adopted = true
          events.emit("adopted", { service = self.name, who = who }, self.name .. ": already running, adopted (" .. who .. ")")
          return nil
        end
        svc_error(self, "AlreadyRunning", who .. "; refusing to start a second one (already_running = \"reuse\" adopts it)",
          { log_tail = "" })
      end
    end
  end
  self._adopted = nil
  echo_close(self) -- the last run's lines, before its files are truncated
  self._logs = capture_paths(self)
  if self._ids then share_run_dir(function(e) svc_error(self, "SpawnError", e) end) end
  self.ready_match = nil
  local states, extra = {}, {
    MKHARNESS_RUN = core.run_id(),
    MKHARNESS_SERVICE = core.run_id() .. "/" .. self.name,
    MKHARNESS_OUTER = OUTER,
  }
  for i, p in ipairs(self._probes) do
    local ok, st = pcall(p.attach, p, self)
    if not ok then
      for j = 1, i - 1 do self._probes[j]:detach(states[j]) end
      svc_error(self, "SpawnError", "cannot prepare " .. p:describe() .. ": " .. tostring(st))
    end
    states[i] = st
    for k, v in pairs(st.env or {}) do extra[k] = v end
  end
  -- before the spawn: the echo thread's watches see every write, in order
  if self.echo or (self.echo == nil and events.verbose > 0 and not events.quiet) then
    self._echo = {}
    for _, s in ipairs { "stdout", "stderr" } do
      if self._logs[s] then
        local e, err = core.echo(self._logs[s], self.name, s == "stderr")
        if e then self._echo[s] = e else io.stderr:write("mkharness: " .. err .. "\n") end
      end
    end
  end
  local env, path = build_env(self, extra)
  local t0 = core.now()
  local proc, err = core.spawn {
    argv = self.argv, env = env, path = path, cwd = self.cwd, stdin = self.stdin,
    stdout = self._logs.stdout or self.stdout, stderr = self._logs.stderr or self.stderr,
    stop_signal = self.stop_signal, kill_signal = self.kill_signal, stop_timeout = self.stop_timeout,
    token = "MKHARNESS_SERVICE=" .. extra.MKHARNESS_SERVICE, ids = self._ids,
  }
  if not proc then
    for i, p in ipairs(self._probes) do p:detach(states[i]) end
    echo_close(self)
    svc_error(self, "SpawnError", err, { log_tail = "" })
  end
  self._proc, self._exit, self._stopped = proc, nil, false
  self._exit_seen, self._crash, self._ending, self._signalled, self._ready_at = nil, nil, nil, nil, nil
  held[self] = true
  self._starts = (self._starts or 0) + 1 -- marks of earlier starts are void
  events.emit("spawned", { service = self.name, pid = proc:pid(), command = self.command },
    string.format("%s: spawned pid %d: %s", self.name, proc:pid(), self.command))
  if #self._probes == 0 then self._ready_at = core.now() return nil end
  local probes = self._probes
  return make_waiter(self, probes, {
    t0 = t0, timeout = self.timeout or nil, states = states,
    on_ready = function(w)
      self._ready_at = core.now()
      for i, p in ipairs(probes) do p:detach(states[i]) end
      if self.kind == "pidfile" then self:_adopt_daemon() end
      local how = {}
      local attempts = 0
      for _, wp in ipairs(w.probes) do
        how[#how + 1] = wp.probe:describe()
        attempts = attempts + wp.attempts
      end
      events.emit("ready", { service = self.name, ms = w.elapsed * 1000, probes = how, attempts = attempts },
        string.format("%s: ready after %s (%s, %d attempt%s)", self.name, fmt_ms(w.elapsed),
          table.concat(how, ", "), attempts, attempts == 1 and "" or "s"))
    end,
    on_fail = function()
      for i, p in ipairs(probes) do p:detach(states[i]) end
      self:kill()
    end,
  })
end

function Service:start()
  check_crashes(self)
  local w = self:_launch()
  if w then wait_all { w, except = self } end
  return self
end

---------------------------------------------------------------- stop & co
local function judge_ok(code, sig, expected)
  return code == 0 or code == -sig or code == 128 + sig or (expected ~= nil and code == expected)
end

local STOP = { signal = T.signal, timeout = T.seconds, expected_returncode = T.returncode }

-- Phase 1 of a stop: signal the group. Returns the state phase 2 needs,
-- or nil when there is nothing to stop. Split so a group stops in parallel.
function Service:_stop_begin(opts)
  local o = O.check("stop", opts, STOP)
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
      s.command = M.process(t)
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
  local ok, code = pcall(Service.wait_exit, cmd, { timeout = math.max(0, s.deadline - core.now()) })
  if not ok then cmd:kill() code = cmd:exit_code() end
  cmd:stop()
  services[cmd] = nil
  events.emit("stop_command", { service = self.name, exit_code = code },
    string.format("%s: stop_command %s (%s)", self.name, cmd.command, describe_code(code)))
end

function Service:_stop_finish(s)
  local proc = self._proc
  local code = s.code
  if not code then
    code = proc:wait(math.max(0, s.deadline - core.now()))
    if s.command then
      finish_stop_command(self, s)
      if not code then -- the command did not stop it: the signals' turn
        proc:signal(s.sig)
        s.deadline = core.now() + s.timeout
        code = proc:wait(s.timeout)
      end
    end
    if not code then
      s.escalated = true
      proc:signal(self.kill_signal)
      proc:thaw()
      proc:signal(core.signum("CONT"))
      code = proc:wait(math.max(s.timeout, 1))
      if not code and self.kill_signal ~= KILL then
        -- kill_signal can be caught; SIGKILL cannot
        s.forced = true
        proc:signal(KILL)
        code = proc:wait(5)
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
  local crash = self._crash
  if s.code then
    -- it had ended before stop(): say how, never as if stop() had done it
    events.emit("cleaned", { service = self.name, exit_code = code, crashed = crash and true or nil },
      string.format("%s: was not running at stop() (%s%s); cleaned up", self.name,
        crash and "crashed: " or "", describe_code(code, self)))
    if crash and crash.raised then return end -- already reported as UnexpectedExit
    if crash then crash.reported = true end
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

function Service:stop(opts)
  check_crashes(self)
  local s = self:_stop_begin(opts)
  if s then self:_stop_finish(s) end
  return self
end

local KILL_OPTS = { signal = T.signal, wait = T.boolean }
function Service:kill(opts)
  local o = O.check("kill", opts, KILL_OPTS)
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
    local code = proc:wait(sig == KILL and 5 or self.stop_timeout)
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
function Service:restart()
  check_crashes(self)
  notice_exit(self)
  if self._crash then self._crash.reported = true end
  if self:running() then self:stop() end
  return self:start()
end

function Service:running()
  return self._proc ~= nil and not self._stopped and self._proc:poll() == nil
end

function Service:pid()
  if self:running() then return self._proc:pid() end
  return nil
end

function Service:exit_code()
  if self._proc and not self._stopped then
    local code = self._proc:poll()
    if code then self._exit = code end
  end
  return self._exit
end

local function need_running(self, what)
  if not self:running() then
    svc_error(self, "ExecutorError", what .. " needs a running service, but it is " ..
      (self._proc and describe_code(self:exit_code()) or "not started"), { log_tail = log_tail(self, 10) })
  end
end

function Service:signal(sig)
  local n = T.signal("signal", "sig", sig)
  check_crashes(self)
  need_running(self, "signal()")
  self._signalled = n
  self._proc:signal(n)
  return self
end

-- How long pause()/resume() wait for every process to follow: a loaded
-- machine may take a while to schedule them, but never this long.
local PAUSE_WAIT = 5

function Service:pause()
  need_running(self, "pause()")
  local ok, err = self._proc:freeze(PAUSE_WAIT)
  if not ok then svc_error(self, "ExecutorError", "pause(): " .. err) end
  events.emit("paused", { service = self.name }, self.name .. ": paused")
  return self
end

function Service:resume()
  need_running(self, "resume()")
  local ok, err = self._proc:thaw(PAUSE_WAIT)
  if not ok then svc_error(self, "ExecutorError", "resume(): " .. err) end
  events.emit("resumed", { service = self.name }, self.name .. ": resumed")
  return self
end


-- stopped(fn) / paused(fn): do, call fn, undo, even when fn raises.
local function around(self, what, before, after, fn)
  need_running(self, what .. "()")
  if fn ~= nil and type(fn) ~= "function" then
    Error.raise("ConfigError", { message = what .. "(fn): fn must be a function, got " .. O.describe(fn), name = self.name })
  end
  before(self)
  local undoing = (what == "stopped" and "restarting " or "resuming ") .. self.name
  if fn == nil then return cleanup.guard(after, self, undoing) end
  return cleanup.around(fn, after, self, undoing)
end

function Service:stopped(fn) return around(self, "stopped", Service.stop, Service.start, fn) end
function Service:paused(fn) return around(self, "paused", Service.pause, Service.resume, fn) end

local WAIT_EXIT = { timeout = T.timeout }
function Service:wait_exit(opts)
  local o = O.check("wait_exit", opts, WAIT_EXIT)
  if not self._proc then
    svc_error(self, "ExecutorError", "wait_exit() needs a started service")
  end
  if self._stopped then return self._exit end
  check_crashes(self)
  self._ending = true -- waited for: its exit is expected
  local timeout = o.timeout == nil and self.timeout or o.timeout
  local code = self._proc:wait(timeout or nil)
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

local function read_stream(self, s)
  local path = self._logs and self._logs[s]
  if not path then return "" end
  return core.read(path) or ""
end
function Service:output() return read_stream(self, "stdout") end
function Service:err_output() return read_stream(self, "stderr") end

-- svc:mark(): where its output ends now, for wait_output{ since = MARK }:
-- taken before the action that makes it print, so the line cannot be
-- missed however early it comes.
function Service:mark()
  if not self._logs or not self._proc then svc_error(self, "ExecutorError", "mark() needs a started service") end
  local m = { service = self, name = self.name, start = self._starts }
  for _, s in ipairs { "stdout", "stderr" } do
    if self._logs[s] then m[s] = core.size(self._logs[s]) or 0 end
  end
  return setmetatable(m, O.Mark)
end

local WAIT_OUTPUT = {
  timeout = T.timeout, stream = T.enum("any", "stdout", "stderr"), plain = T.boolean,
  since = T.since, times = T.count,
}
function Service:wait_output(pat, opts)
  local ctx = "wait_output"
  local o = O.check(ctx, opts, WAIT_OUTPUT)
  if o.plain then T.nonempty(ctx, "pattern", pat) else T.pattern(ctx, "pattern", pat) end
  if not self._logs then svc_error(self, "ExecutorError", "wait_output() needs a started service") end
  if type(o.since) == "table" then O.own_mark(ctx, "since", o.since, self, self._starts) end
  local probe = P.output { banner = pat, stream = o.stream or "any", plain = o.plain or false, times = o.times }
  local st = P.output_attach(probe, self, o.since == "now" or (type(o.since) == "table" and o.since))
  local saved = self.ready_match
  local timeout = o.timeout == nil and self.timeout or o.timeout
  local w = make_waiter(self, { probe }, { timeout = timeout or nil, states = { st },
    what = "printing " .. string.format("%q", pat), what_done = "printed" })
  local ok, err
  if self._stopped then
    -- stopped by us: what it printed is all there will be, look once
    w.exited = self._exit or 0
    ok, err = pcall(step, w, core.now())
    if ok and not err then
      ok, err = false, Error.new("ExecutorError", { name = self.name, command = self.command,
        message = string.format("wait_output(%q): not in the output, and the service is stopped (%s)",
          pat, describe_code(self._exit)), log_tail = log_tail(self, 20) })
    end
  else
    ok, err = pcall(wait_all, { w, except = self })
  end
  probe:detach(st)
  local m = self.ready_match
  self.ready_match = saved
  if not ok then error(err, 0) end
  return m.line, table.unpack(m)
end

function Service:wait_for(fn)
  if type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "wait_for(fn): fn must be a function, got " .. O.describe(fn), name = self.name })
  end
  local w = make_waiter(self, { P.fn(fn) }, { timeout = self.timeout or nil, what_done = "satisfied",
    on_fail = function() self:kill() end })
  wait_all { w, except = self }
  return self
end


function Service:__close(err) cleanup.close(err, Service.stop, self, "stop() of " .. self.name) end

---------------------------------------------------------------- executors
local function ctor(kind, extra, probes_of, without)
  local s = schema(extra, without)
  return function(t)
    return new_service(kind, "mk." .. kind, t, s, probes_of)
  end
end

M.process = ctor("process", nil, nil, { "ready", "already_running" })
M.executor = ctor("executor")
M.output = ctor("output", { banner = T.nonempty, stream = T.enum("any", "stdout", "stderr"), plain = T.boolean,
  times = T.count },
  function(o, self)
    if o.banner == nil then O.fail("mk.output", "banner", "is required") end
    return { P.output({ banner = o.banner, stream = o.stream, plain = o.plain, times = o.times }, "mk.output") }
  end)
M.tcp = ctor("tcp", { host = T.nonempty, port = T.port }, function(o, self)
  if o.port == nil then O.fail("mk.tcp", "port", "is required") end
  self.host, self.port = o.host or "127.0.0.1", o.port
  return { P.tcp { host = self.host, port = self.port } }
end)
M.unix = ctor("unix", { socket = T.nonempty }, function(o, self)
  if o.socket == nil then O.fail("mk.unix", "socket", "is required") end
  self.socket = o.socket
  return { P.unix { socket = o.socket } }
end)
M.http = ctor("http", { url = T.nonempty, status = function(_, _, v) return v end, method = T.nonempty,
  headers = T.table, body = T.string, insecure = T.boolean }, function(o, self)
  if o.url == nil then O.fail("mk.http", "url", "is required") end
  local p = P.http({ url = o.url, status = o.status, method = o.method, headers = o.headers,
    body = o.body, insecure = o.insecure }, "mk.http")
  self.url, self.host, self.port = o.url, p.parsed.host, p.parsed.port
  return { p }
end)
M.pidfile = ctor("pidfile", { file = T.nonempty }, function(o, self)
  if o.file == nil then O.fail("mk.pidfile", "file", "is required") end
  self.file = o.file
  return { P.file { path = o.file } }
end)
M.notify = ctor("notify", nil, function() return { P.notify {} } end)

---------------------------------------------------------------- group
local Group = { __name = "mkharness.group" }
Group.__index = Group

-- mk.group{ db, api, after = { [api] = { db } } }: a member starts once
-- what it comes after is ready (the others start at once, in parallel) and
-- stops before it.
function M.group(list)
  if type(list) ~= "table" then
    Error.raise("ConfigError", { message = "mk.group takes a list of executors, got " .. O.describe(list) })
  end
  local g = setmetatable({ members = {}, after = {} }, Group)
  local member = {}
  for k, v in pairs(list) do
    if k ~= "after" then
      if math.type(k) ~= "integer" then O.fail("mk.group", tostring(k), "is not allowed: give a list of executors (and after =)") end
      if getmetatable(v) ~= Service then O.fail("mk.group", "[" .. k .. "]", "must be an executor (mk.process{...} etc.)", v) end
      member[v] = true
    end
  end
  for i, v in ipairs(list) do g.members[i] = v end
  local after = list.after
  if after ~= nil then
    if type(after) ~= "table" then O.fail("mk.group", "after", "must be a table { [member] = { members it starts after } }", after) end
    for svc, deps in pairs(after) do
      if not member[svc] then O.fail("mk.group", "after", "has a key that is not a member of the group", svc) end
      if getmetatable(deps) == Service then deps = { deps } end
      if type(deps) ~= "table" then O.fail("mk.group", "after[" .. svc.name .. "]", "must be a list of members", deps) end
      local list2 = {}
      for _, d in ipairs(deps) do
        if not member[d] then O.fail("mk.group", "after[" .. svc.name .. "]", "lists something that is not a member of the group", d) end
        list2[#list2 + 1] = d
      end
      g.after[svc] = list2
    end
    -- a cycle would wait forever: refuse it here
    local state = {}
    local function visit(svc, path)
      if state[svc] == "done" then return end
      if state[svc] == "active" then
        O.fail("mk.group", "after", "has a cycle: " .. table.concat(path, " -> ") .. " -> " .. svc.name)
      end
      state[svc] = "active"
      path[#path + 1] = svc.name
      for _, d in ipairs(g.after[svc] or {}) do visit(d, path) end
      path[#path] = nil
      state[svc] = "done"
    end
    for _, svc in ipairs(g.members) do visit(svc, {}) end
  end
  return g
end

-- Members in the order they may stop: each before what it comes after.
-- Returns a list of layers; the members of a layer stop together.
local function stop_layers(g)
  local dependents = {}
  for svc, deps in pairs(g.after) do
    for _, d in ipairs(deps) do dependents[d] = (dependents[d] or 0) + 1 end
  end
  local layers, left, done = {}, #g.members, {}
  while left > 0 do
    local layer = {}
    for _, svc in ipairs(g.members) do
      if not done[svc] and (dependents[svc] or 0) == 0 then layer[#layer + 1] = svc end
    end
    for _, svc in ipairs(layer) do
      done[svc] = true
      left = left - 1
      for _, d in ipairs(g.after[svc] or {}) do dependents[d] = dependents[d] - 1 end
    end
    layers[#layers + 1] = layer
  end
  return layers
end

function Group:start()
  check_crashes()
  local waiters, launched = {}, {}
  local ok, err = pcall(function()
    local ready, started = {}, {}
    local function launch_due()
      for _, svc in ipairs(self.members) do
        local due = not started[svc]
        for _, d in ipairs(self.after[svc] or {}) do due = due and ready[d] end
        if due then
          started[svc] = true
          local w = svc:_launch()
          launched[#launched + 1] = svc
          if w then
            local on_ready = w.on_ready
            w.on_ready = function(x) ready[svc] = true if on_ready then on_ready(x) end end
            waiters[#waiters + 1] = w
          else
            ready[svc] = true
          end
        end
      end
    end
    launch_due()
    waiters.any = next(self.after) ~= nil
    while #launched < #self.members or not waiters.all_done do
      wait_all(waiters)
      local before = #launched
      launch_due()
      local all = true
      for _, w in ipairs(waiters) do all = all and w.done end
      waiters.all_done = all and #launched == #self.members
      if all and #launched == before and #launched < #self.members then break end
    end
  end)
  if not ok then
    -- say what happened to each other member, as it happened
    local fates = {}
    for _, svc in ipairs(launched) do
      local fate
      if svc._adopted then
        fate = "was already running (adopted, left alone)"
      elseif not svc._proc or svc._stopped then
        fate = "was not running"
      else
        local before, sig = svc._proc:poll(), svc.kill_signal
        -- also one that exited: kill() sweeps what it left (a daemon)
        local kok = pcall(Service.kill, svc)
        local code = svc._proc:poll()
        if before then
          fate = "had already exited (" .. describe_code(before) .. ")"
        elseif not code then
          fate = "could not be killed (still running" .. (kok and "" or ", kill() failed") .. ")"
        elseif code == -sig then
          fate = "killed"
        else
          fate = "killed (" .. describe_code(code) .. ")"
        end
      end
      fates[svc] = fate
    end
    if Error.is(err) and err.name then
      local others = {}
      for _, svc in ipairs(self.members) do
        if svc.name ~= err.name then
          others[#others + 1] = svc.name .. " " .. (fates[svc] or "not started")
        end
      end
      err.message = err.message .. " (in a group of " .. #self.members
        .. (#others > 0 and ("; other members: " .. table.concat(others, ", ")) or "") .. ")"
    end
    error(err, 0)
  end
  return self
end

-- stop{ order = { api, db } } stops in that order, one at a time (members
-- not named go last, together); without it, each member stops before what
-- it comes after, and the members of one layer together.
local GROUP_STOP = { order = T.table }
function Group:stop(opts)
  local o = O.check("group:stop", opts, GROUP_STOP)
  local layers
  if o.order then
    layers = {}
    local named = {}
    for i, svc in ipairs(o.order) do
      if getmetatable(svc) ~= Service then O.fail("group:stop", "order[" .. i .. "]", "must be a member", svc) end
      layers[#layers + 1] = { svc }
      named[svc] = true
    end
    local rest = {}
    for _, svc in ipairs(self.members) do if not named[svc] then rest[#rest + 1] = svc end end
    layers[#layers + 1] = rest
  else
    layers = stop_layers(self)
  end
  local first_err
  for _, layer in ipairs(layers) do
    local pending = {}
    for _, svc in ipairs(layer) do
      local ok, s = pcall(Service._stop_begin, svc)
      if not ok then first_err = first_err or s
      elseif s then pending[#pending + 1] = { svc, s } end
    end
    for _, p in ipairs(pending) do
      local ok, err = pcall(Service._stop_finish, p[1], p[2])
      if not ok then first_err = first_err or err end
    end
  end
  if first_err then error(first_err, 0) end
  return self
end

function Group:__close(err) cleanup.close(err, Group.stop, self, "stop() of a group") end
function Group:__tostring() return string.format("mkharness.group (%d members)", #self.members) end

---------------------------------------------------------------- module functions
local WAIT_UNTIL = { timeout = T.timeout, interval = T.interval, message = T.string }
function M.wait_until(fn, opts)
  if type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "mk.wait_until(fn, opts): fn must be a function, got " .. O.describe(fn) })
  end
  local o = O.check("mk.wait_until", opts, WAIT_UNTIL)
  local timeout = o.timeout == nil and 10 or o.timeout
  local w = make_waiter(nil, { P.fn(fn) }, { timeout = timeout or nil, interval = o.interval,
    message = o.message, what_done = "true" })
  wait_all { w }
  return w.probes[1].detail
end

-- Sleeps in poll on the held services' pidfds, so a crash is an event
-- (and an UnexpectedExit) at once, not when the sleep is over.
function M.sleep(s)
  T.seconds("mk.sleep", "seconds", s)
  local deadline = core.now() + s
  repeat
    check_crashes()
    core.poll(crash_fds {}, math.max(0, deadline - core.now()))
  until core.now() >= deadline
  check_crashes()
end

M.now = core.now

function M.free_port()
  local p, err = core.free_port()
  if not p then Error.raise("ExecutorError", { message = "free_port: " .. err }) end
  return p
end

local tmp_count = 0
local TMPDIR = { owner = T.user, mode = T.mode }
function M.tmpdir(opts)
  local o = O.check("mk.tmpdir", opts, TMPDIR)
  local ids = o.owner and O.identity("mk.tmpdir", o.owner, nil, "owner")
  local function raise(msg) Error.raise("ExecutorError", { message = "tmpdir: " .. msg }) end
  local dir, err = core.run_dir()
  if not dir then raise(err) end
  tmp_count = tmp_count + 1
  local path = string.format("%s/tmp-%d", dir, tmp_count)
  local ok, e2 = core.mkdir(path)
  if not ok then raise(e2) end
  if ids then
    share_run_dir(raise)
    local done, e3, errno = core.chown(path, ids.uid, ids.gid)
    if not done then
      raise(string.format("cannot give %s to user '%s': %s%s", path, ids.user, e3,
        errno == 1 and " (only root can give a directory to another user)" or ""))
    end
  end
  -- chmod after chown: chown may clear the set-id bits
  if o.mode then
    local done, e4 = core.chmod(path, o.mode)
    if not done then raise(e4) end
  end
  return path
end

local RUN = { timeout = T.timeout, stdin = T.string, env = T.env, cwd = T.nonempty, clear_env = T.boolean,
  user = T.user, group = T.group, cmd = function(_, _, v) return v end, shell = function(_, _, v) return v end }
function M.run(t)
  local o = O.check("mk.run", t, RUN)
  O.identity("mk.run", o.user, o.group) -- named as mk.run's when they do not exist
  t = t or {}
  local spec = { env = o.env, cwd = o.cwd, stdin = o.stdin, clear_env = o.clear_env, user = o.user, group = o.group,
    cmd = t.cmd, shell = t.shell, name = "run", timeout = false }
  -- the argv by its keys, as O.command reads it: ipairs would follow an
  -- __index for ever
  for k, a in pairs(t) do if math.type(k) == "integer" then spec[k] = a end end
  local svc = M.process(spec)
  svc:start()
  local ok, code = pcall(Service.wait_exit, svc, { timeout = o.timeout == nil and 60 or o.timeout })
  if not ok then
    svc:kill()
    if Error.is(code) then code.message = "mk.run: " .. svc.command .. ": " .. code.message end
    error(code, 0)
  end
  svc._proc:sweep()
  svc._stopped = true
  held[svc] = nil
  echo_close(svc)
  local res = { code = code, stdout = svc:output(), stderr = svc:err_output() }
  for _, path in pairs(svc._logs) do os.remove(path) end
  services[svc] = nil
  used_names[svc.name] = nil
  check_crashes()
  return res
end

-- Responses stay plain tables (status, headers, body) with one method.
local Response = { __name = "mkharness.Response" }
Response.__index = Response
function Response:json()
  return json.decode(self.body, "res:json() (HTTP " .. tostring(self.status) .. ")")
end

local HTTP_REQ = { url = T.nonempty, method = T.nonempty, headers = T.table, body = T.string,
  timeout = T.timeout, insecure = T.boolean,
  max_body = function(ctx, k, v)
    local n = math.tointeger(v)
    if not n or n < 0 then O.fail(ctx, k, "must be a number of bytes (an integer >= 0)", v) end
    return n
  end }
-- an endless body must not take all memory
local MAX_BODY = 64 * 1024 * 1024
function M.http_request(t)
  if type(t) == "string" then t = { url = t } end
  local o = O.check("mk.http_request", t, HTTP_REQ)
  if not o.url then O.fail("mk.http_request", "url", "is required") end
  O.url("mk.http_request", "url", o.url)
  local method, max_body = (o.method or "GET"):upper(), o.max_body or MAX_BODY
  check_crashes()
  local res, err = core.http_request { url = o.url, method = method,
    headers = P.header_list("mk.http_request", o.headers or {}), body = o.body,
    timeout = o.timeout == nil and 30 or (o.timeout or 1e9), insecure = o.insecure, max_body = max_body }
  check_crashes()
  if not res then Error.raise("ExecutorError", { message = "http request failed: " .. err, url = o.url }) end
  if res.truncated then
    Error.raise("ExecutorError", { message = string.format("http request failed: %s %s: the body exceeded max_body (%d bytes)",
      method, o.url, max_body), url = o.url, max_body = max_body })
  end
  return setmetatable(res, Response)
end

function M.get(url, opts)
  O.check("mk.get", opts, HTTP_REQ)
  local t = { url = url }
  for k, v in pairs(opts or {}) do t[k] = v end
  return M.http_request(t)
end

M.is_error = Error.is

-- mk.json.encode(v), mk.json.decode(s), mk.json.null (lua/mkharness/json.lua)
M.json = { encode = json.encode, decode = function(s) return json.decode(s) end, null = json.null }

-- The TCP fault proxy (DESIGN 2.8), in lua/mkharness/proxy.lua.
function M.proxy(t) return require("mkharness.proxy").new(t) end

-- Stop every service still running (used at the end of a run).
-- Crashes not yet seen are events now (never worded as stops).
function M._teardown()
  for svc in pairs(held) do notice_exit(svc) end
  core.teardown(true)
  for svc in pairs(services) do
    if svc._proc and not svc._stopped then
      local was = svc._exit_seen
      svc._stopped = true
      svc._exit = svc._proc:poll()
      if not was then
        events.emit("torn_down", { service = svc.name, exit_code = svc._exit },
          string.format("%s: stopped by teardown (%s)", svc.name, describe_code(svc._exit)))
      end
    end
    held[svc] = nil
  end
  core.echo_shutdown() -- what they printed last; the thread is joined
end

return M
