-- mkharness: process executors for integration and chaos test scenarios.
-- The friendly API over mkharness.core (see DESIGN.md section 2).
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local O = require "mkharness.options"
local P = require "mkharness.probes"
local events = require "mkharness.events"
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

local function describe_code(code)
  if code == nil then return "still running" end
  if code < 0 then
    local name = core.signame(-code)
    return string.format("killed by signal %d%s", -code, name and (" (SIG" .. name .. ")") or "")
  end
  return "exit code " .. code
end

---------------------------------------------------------------- options
local COMMON = {
  name = T.nonempty, timeout = T.timeout, interval = T.interval,
  stop_timeout = T.seconds, stop_signal = T.signal, kill_signal = T.signal,
  expected_returncode = T.returncode, env = T.env, clear_env = T.boolean,
  cwd = T.nonempty, stdin = T.string, stdout = T.stream, stderr = T.stream,
  echo = T.boolean, already_running = T.enum("error", "reuse", "ignore"),
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
  if type(t) ~= "table" then
    Error.raise("ConfigError", { message = ctx .. " takes one table of options, got " .. O.describe(t) })
  end
  local argv, shown = O.command(ctx, t)
  local o = O.check(ctx, t, extra_schema)
  local self = setmetatable({}, Service)
  self.kind = kind
  self.argv = argv
  self.command = shown
  local base = o.name
  if not base then
    base = t.shell and (t.shell:match("^%s*([^%s]+)") or "sh") or argv[1]
    base = base:match("([^/]+)/*$") or base
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
  local probes = P.list(ctx, o.ready)
  if probes_of then
    for _, p in ipairs(probes_of(o, self)) do table.insert(probes, 1, p) end
  end
  for _, p in ipairs(probes) do
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

---------------------------------------------------------------- waiting
-- One loop waits for any number of "waiters" (a start, a group start,
-- wait_output, wait_for, wait_until): it checks what is due, then sleeps in
-- poll() on every event source (pidfds, inotify, notify sockets) until the
-- next polling attempt or deadline. Nothing sleeps a fixed time.

local function pause_for(cost, interval)
  return math.min(interval, math.max(MIN_PAUSE, cost * COST_FACTOR))
end

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
        local ok, detail = p.probe:check(p.st, svc, w.deadline)
        local after = core.now()
        p.attempts = p.attempts + 1
        if ok then
          p.done, p.detail = true, detail
        else
          p.last = detail
          if p.probe.poll then p.next_at = after + pause_for(after - t, w.interval) end
          all = false
        end
      else
        all = false
      end
    end
  end
  return all
end

local function wait_all(waiters)
  while true do
    local now = core.now()
    local fds, wake = {}, math.huge
    local pending = false
    for _, w in ipairs(waiters) do
      if not w.done then
        if step(w, now) then
          w.done = true
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
              for _, fd in ipairs(p.probe:fds(p.st) or {}) do fds[#fds + 1] = fd end
            end
          end
        end
      end
    end
    if not pending then return end
    local left = wake == math.huge and -1 or math.max(0, wake - core.now())
    core.poll(fds, left)
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
local function capture_paths(self)
  local dir, err = core.run_dir()
  if not dir then svc_error(self, "SpawnError", "cannot create the run directory: " .. err) end
  local logs = {}
  for _, s in ipairs { "stdout", "stderr" } do
    if self[s] == "capture" then
      logs[s] = string.format("%s/%s.%s.log", dir, self.name, s)
      local f = io.open(logs[s], "w") -- created now so inotify can watch it
      if f then f:close() end
    end
  end
  return logs
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
    token = "MKHARNESS_SERVICE=" .. extra.MKHARNESS_SERVICE,
  }
  if not proc then
    for i, p in ipairs(self._probes) do p:detach(states[i]) end
    echo_close(self)
    svc_error(self, "SpawnError", err, { log_tail = "" })
  end
  self._proc, self._exit, self._stopped = proc, nil, false
  events.emit("spawned", { service = self.name, pid = proc:pid(), command = self.command },
    string.format("%s: spawned pid %d: %s", self.name, proc:pid(), self.command))
  if #self._probes == 0 then return nil end
  local probes = self._probes
  return make_waiter(self, probes, {
    t0 = t0, timeout = self.timeout or nil, states = states,
    on_ready = function(w)
      for i, p in ipairs(probes) do p:detach(states[i]) end
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
  local w = self:_launch()
  if w then wait_all { w } end
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
  local o = O.check("stop", opts or {}, STOP)
  if self._adopted then self._adopted = nil return nil end
  local proc = self._proc
  if not proc or self._stopped then return nil end
  local s = {
    sig = o.signal or self.stop_signal,
    timeout = o.timeout or self.stop_timeout,
    expected = o.expected_returncode == nil and self.expected_returncode or o.expected_returncode,
    t0 = core.now(),
  }
  s.code = proc:poll()
  if not s.code then
    proc:signal(s.sig)
    proc:signal(core.signum("CONT")) -- a paused service must see the signal now
    s.deadline = s.t0 + s.timeout
  end
  return s
end

function Service:_stop_finish(s)
  local proc = self._proc
  local code = s.code
  if not code then
    code = proc:wait(math.max(0, s.deadline - core.now()))
    if not code then
      s.escalated = true
      proc:signal(self.kill_signal)
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
  self._stopped, self._exit = true, code
  echo_close(self)
  local took = core.now() - s.t0
  events.emit("stopped", { service = self.name, exit_code = code, ms = took * 1000, escalated = s.escalated or nil },
    string.format("%s: stopped in %s (%s%s)", self.name, fmt_ms(took), describe_code(code),
      s.escalated and string.format(", did not stop on SIG%s within %s: killed", core.signame(s.sig) or s.sig, fmt_s(s.timeout)) or ""))
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
  if opts ~= nil and type(opts) ~= "table" then
    Error.raise("ConfigError", { message = "stop: takes an optional table of options, got " .. O.describe(opts) })
  end
  local s = self:_stop_begin(opts)
  if s then self:_stop_finish(s) end
  return self
end

local KILL_OPTS = { signal = T.signal, wait = T.boolean }
function Service:kill(opts)
  local o = O.check("kill", opts or {}, KILL_OPTS)
  local sig = o.signal or self.kill_signal
  local proc = self._proc
  if not proc or self._stopped then return self end
  if not proc:poll() then
    proc:signal(sig)
    if sig ~= KILL then proc:signal(core.signum("CONT")) end
  end
  if o.wait ~= false then
    local code = proc:wait(sig == KILL and 5 or self.stop_timeout)
    if code then
      proc:sweep()
      self._stopped, self._exit = true, code
      echo_close(self)
      events.emit("killed", { service = self.name, signal = sig, exit_code = code },
        string.format("%s: killed with SIG%s (%s)", self.name, core.signame(sig) or sig, describe_code(code)))
    end
  end
  return self
end

function Service:restart()
  self:stop()
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
  need_running(self, "signal()")
  self._proc:signal(n)
  return self
end

function Service:pause()
  need_running(self, "pause()")
  self._proc:signal(core.signum("STOP"))
  events.emit("paused", { service = self.name }, self.name .. ": paused")
  return self
end

function Service:resume()
  need_running(self, "resume()")
  self._proc:signal(core.signum("CONT"))
  events.emit("resumed", { service = self.name }, self.name .. ": resumed")
  return self
end

-- stopped(fn) / paused(fn): do, call fn, undo, even when fn raises.
local function around(self, what, before, after, fn)
  need_running(self, what .. "()")
  before(self)
  if fn == nil then
    return setmetatable({}, { __close = function() after(self) end })
  end
  if type(fn) ~= "function" then
    Error.raise("ConfigError", { message = what .. "(fn): fn must be a function, got " .. O.describe(fn), name = self.name })
  end
  local r = table.pack(pcall(fn, self))
  local ok2, err2 = pcall(after, self)
  if not r[1] then error(r[2], 0) end
  if not ok2 then error(err2, 0) end
  return table.unpack(r, 2, r.n)
end

function Service:stopped(fn) return around(self, "stopped", Service.stop, Service.start, fn) end
function Service:paused(fn) return around(self, "paused", Service.pause, Service.resume, fn) end

local WAIT_EXIT = { timeout = T.timeout }
function Service:wait_exit(opts)
  local o = O.check("wait_exit", opts or {}, WAIT_EXIT)
  if not self._proc then
    svc_error(self, "ExecutorError", "wait_exit() needs a started service")
  end
  if self._stopped then return self._exit end
  local timeout = o.timeout == nil and self.timeout or o.timeout
  local code = self._proc:wait(timeout or nil)
  if not code then
    svc_error(self, "TimeoutExpired", string.format("did not exit within %s", fmt_s(timeout)),
      { timeout = timeout })
  end
  self._exit = code
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

local WAIT_OUTPUT = {
  timeout = T.timeout, stream = T.enum("any", "stdout", "stderr"), plain = T.boolean,
  since = T.enum("start", "now"),
}
function Service:wait_output(pat, opts)
  local ctx = "wait_output"
  local o = O.check(ctx, opts or {}, WAIT_OUTPUT)
  if o.plain then T.nonempty(ctx, "pattern", pat) else T.pattern(ctx, "pattern", pat) end
  if not self._logs then svc_error(self, "ExecutorError", "wait_output() needs a started service") end
  local probe = P.output { banner = pat, stream = o.stream or "any", plain = o.plain or false }
  local st = P.output_attach(probe, self, o.since == "now")
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
    ok, err = pcall(wait_all, { w })
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
  wait_all { w }
  return self
end

function Service:__close() self:stop() end
function Service:__gc()
  if self._proc and not self._stopped then pcall(Service.kill, self) end
end

---------------------------------------------------------------- executors
local function ctor(kind, extra, probes_of, without)
  local s = schema(extra, without)
  return function(t)
    return new_service(kind, "mk." .. kind, t, s, probes_of)
  end
end

M.process = ctor("process", nil, nil, { "ready", "already_running" })
M.executor = ctor("executor")
M.output = ctor("output", { banner = T.nonempty, stream = T.enum("any", "stdout", "stderr"), plain = T.boolean },
  function(o, self)
    if o.banner == nil then O.fail("mk.output", "banner", "is required") end
    return { P.output({ banner = o.banner, stream = o.stream, plain = o.plain }, "mk.output") }
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

function M.group(list)
  if type(list) ~= "table" then
    Error.raise("ConfigError", { message = "mk.group takes a list of executors, got " .. O.describe(list) })
  end
  local g = setmetatable({ members = {} }, Group)
  for k, v in pairs(list) do
    if math.type(k) ~= "integer" then O.fail("mk.group", tostring(k), "is not allowed: give a list of executors") end
    if getmetatable(v) ~= Service then O.fail("mk.group", "[" .. k .. "]", "must be an executor (mk.process{...} etc.)", v) end
  end
  for i, v in ipairs(list) do g.members[i] = v end
  return g
end

function Group:start()
  local waiters, launched = {}, {}
  local ok, err = pcall(function()
    for _, svc in ipairs(self.members) do
      local w = svc:_launch()
      launched[#launched + 1] = svc
      if w then waiters[#waiters + 1] = w end
    end
    wait_all(waiters)
  end)
  if not ok then
    for _, svc in ipairs(launched) do pcall(Service.kill, svc) end
    if Error.is(err) and err.name then
      err.message = err.message .. " (in a group of " .. #self.members .. "; the others were stopped)"
    end
    error(err, 0)
  end
  return self
end

function Group:stop()
  local pending, first_err = {}, nil
  for _, svc in ipairs(self.members) do
    local ok, s = pcall(Service._stop_begin, svc)
    if not ok then first_err = first_err or s
    elseif s then pending[#pending + 1] = { svc, s } end
  end
  for _, p in ipairs(pending) do
    local ok, err = pcall(Service._stop_finish, p[1], p[2])
    if not ok then first_err = first_err or err end
  end
  if first_err then error(first_err, 0) end
  return self
end

function Group:__close() self:stop() end
function Group:__tostring() return string.format("mkharness.group (%d members)", #self.members) end

---------------------------------------------------------------- module functions
local WAIT_UNTIL = { timeout = T.timeout, interval = T.interval, message = T.string }
function M.wait_until(fn, opts)
  if type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "mk.wait_until(fn, opts): fn must be a function, got " .. O.describe(fn) })
  end
  local o = O.check("mk.wait_until", opts or {}, WAIT_UNTIL)
  local timeout = o.timeout == nil and 10 or o.timeout
  local w = make_waiter(nil, { P.fn(fn) }, { timeout = timeout or nil, interval = o.interval,
    message = o.message, what_done = "true" })
  wait_all { w }
  return w.probes[1].detail
end

function M.sleep(s)
  T.seconds("mk.sleep", "seconds", s)
  core.sleep(s)
end

M.now = core.now

function M.free_port()
  local p, err = core.free_port()
  if not p then Error.raise("ExecutorError", { message = "free_port: " .. err }) end
  return p
end

local tmp_count = 0
function M.tmpdir()
  local dir, err = core.run_dir()
  if not dir then Error.raise("ExecutorError", { message = "tmpdir: " .. err }) end
  tmp_count = tmp_count + 1
  local path = string.format("%s/tmp-%d", dir, tmp_count)
  local ok, e2 = core.mkdir(path)
  if not ok then Error.raise("ExecutorError", { message = "tmpdir: " .. e2 }) end
  return path
end

local RUN = { timeout = T.timeout, stdin = T.string, env = T.env, cwd = T.nonempty, clear_env = T.boolean,
  cmd = function(_, _, v) return v end, shell = function(_, _, v) return v end }
function M.run(t)
  if type(t) ~= "table" then
    Error.raise("ConfigError", { message = "mk.run takes one table, got " .. O.describe(t) })
  end
  local o = O.check("mk.run", t, RUN)
  local spec = { env = o.env, cwd = o.cwd, stdin = o.stdin, clear_env = o.clear_env,
    cmd = t.cmd, shell = t.shell, name = "run", timeout = false }
  for i, a in ipairs(t) do spec[i] = a end
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
  echo_close(svc)
  local res = { code = code, stdout = svc:output(), stderr = svc:err_output() }
  for _, path in pairs(svc._logs) do os.remove(path) end
  services[svc] = nil
  used_names[svc.name] = nil
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
  if type(t) ~= "table" then
    Error.raise("ConfigError", { message = "mk.http_request takes a table, got " .. O.describe(t) })
  end
  local o = O.check("mk.http_request", t, HTTP_REQ)
  if not o.url then O.fail("mk.http_request", "url", "is required") end
  O.url("mk.http_request", "url", o.url)
  local method, max_body = (o.method or "GET"):upper(), o.max_body or MAX_BODY
  local res, err = core.http_request { url = o.url, method = method,
    headers = P.header_list("mk.http_request", o.headers or {}), body = o.body,
    timeout = o.timeout == nil and 30 or (o.timeout or 1e9), insecure = o.insecure, max_body = max_body }
  if not res then Error.raise("ExecutorError", { message = "http request failed: " .. err, url = o.url }) end
  if res.truncated then
    Error.raise("ExecutorError", { message = string.format("http request failed: %s %s: the body exceeded max_body (%d bytes)",
      method, o.url, max_body), url = o.url, max_body = max_body })
  end
  return setmetatable(res, Response)
end

function M.get(url, opts)
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
function M._teardown()
  core.teardown(true)
  for svc in pairs(services) do
    if svc._proc and not svc._stopped then
      svc._stopped = true
      svc._exit = svc._proc:poll()
    end
  end
  core.echo_shutdown() -- what they printed last; the thread is joined
end

return M
