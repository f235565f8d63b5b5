-- The Executor class (mirakuru's executors under Lua names): construction
-- and option checking, launching and start(), what a running service
-- answers (running, pid, signal, pause), and the constructors. Stopping is
-- in stop.lua, output and its waits in output.lua: both add methods to
-- this class.
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local probes = require "mkharness.probes"
local events = require "mkharness.events"
local cleanup = require "mkharness.cleanup"
local defaults = require "mkharness.defaults"
local crash = require "mkharness.crash"
local wait = require "mkharness.wait"
local describe = require "mkharness.describe"
local loop = require "mkharness.loop"
local types = options.types
local fmt_ms, svc_error, describe_code, log_tail = describe.fmt_ms, describe.svc_error, describe.describe_code, describe.log_tail
local held, check_crashes = crash.held, crash.check
local make_waiter, wait_all = wait.waiter, wait.all

local X = {} -- what this file gives the others: the class, its helpers, the constructors

-- A run inside a service of another run (nested harnesses) hands its
-- services the tokens of the runs around it, so an outer stop() or
-- teardown finds them even after the inner harness was killed.
local OUTER do
  local outer, svc = os.getenv("MKHARNESS_OUTER"), os.getenv("MKHARNESS_SERVICE")
  OUTER = svc and (outer and (outer .. " " .. svc) or svc) or outer
end

local services = setmetatable({}, { __mode = "k" }) -- every executor, for reports
X.services = services

-- Names are unique in a run (they name log files): a taken name gets the
-- first free "-N" suffix, whichever way it was taken ("web-2" given by the
-- user, then "web" twice: web, web-3). A suite makes thousands of
-- executors of a few names: the suffixes a base has given out are one
-- count (base -> highest N), so neither the memory nor the search grows
-- with them; names taken another way are in `taken`.
local taken, last = {}, {}

local function is_taken(name)
  if taken[name] then return true end
  local base, n = name:match("^(.*)%-(%d+)$")
  n = tonumber(n)
  return base ~= nil and last[base] ~= nil and n >= 2 and n <= last[base]
end

local function unique_name(base)
  base = base:gsub("[^%w._-]", "_")
  if base == "" then base = "service" end
  if not is_taken(base) then
    taken[base] = true
    return base
  end
  local n = last[base] or 1
  repeat n = n + 1 until not taken[base .. "-" .. n]
  last[base] = n
  return base .. "-" .. n
end

-- mk.run's own executors give their names back once done
function X.forget_name(name)
  if taken[name] then taken[name] = nil return end
  local base, n = name:match("^(.*)%-(%d+)$")
  if base and last[base] == tonumber(n) then last[base] = n - 1 > 1 and n - 1 or nil end
end

local COMMON = {
  name = types.service_name, timeout = types.timeout, interval = types.interval,
  stop_timeout = types.seconds, stop_signal = types.signal, kill_signal = types.signal,
  expected_returncode = types.returncode, env = types.env, clear_env = types.boolean,
  cwd = types.nonempty, stdin = types.string, stdout = types.stream, stderr = types.stream,
  echo = types.boolean, already_running = types.enum("error", "reuse", "ignore"),
  on_exit = types.enum("fail", "ignore", "restart"), max_restarts = types.natural,
  stop_command = function(ctx, k, v)
    if type(v) == "string" then v = { cmd = v } end
    if type(v) ~= "table" then options.fail(ctx, k, "must be a command: { \"prog\", \"arg\", ... }, { cmd = \"...\" } or { shell = \"...\" }", v) end
    options.command(ctx .. " stop_command", v)
    return v
  end,
  user = types.user, group = types.group,
  host = function(ctx, k, v) return require("mkharness.lab").check_host(ctx, k, v) end,
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


local Executor = { __name = "mkharness.executor" }
Executor.__index = Executor

local function new_service(kind, ctx, t, extra_schema, probes_of)
  local argv, shown = options.command(ctx, t)
  local o = options.check(ctx, t, extra_schema)
  local self = setmetatable({}, Executor)
  self.kind = kind
  self.argv = argv
  self.command = shown
  local base = o.name
  if not base then
    base = t.shell and (t.shell:match("^%s*([^%s]+)") or "sh") or argv[1]
    base = (base:match("([^/]+)/*$") or base):sub(1, options.NAME_MAX) -- a derived name is cut, not refused
  end
  self.name = o.name and unique_name(o.name) or unique_name(base)
  self.timeout = o.timeout == nil and defaults.timeout or o.timeout
  self.interval = o.interval or defaults.interval
  self.stop_timeout = o.stop_timeout or defaults.stop_timeout
  self.stop_signal = o.stop_signal or core.signum(defaults.stop_signal)
  self.kill_signal = o.kill_signal or core.signum(defaults.kill_signal)
  self.expected_returncode = o.expected_returncode
  self.env = o.env or {}
  self.clear_env = o.clear_env or false
  self.cwd = o.cwd
  self.stdin = o.stdin
  self.stdout = o.stdout or defaults.stream
  self.stderr = o.stderr or defaults.stream
  self.echo = o.echo
  self.already_running = o.already_running or defaults.already_running
  self.on_exit = o.on_exit or defaults.on_exit
  self.max_restarts = o.max_restarts or defaults.max_restarts
  self.stop_command = o.stop_command
  self._ids = options.identity(ctx, o.user, o.group)
  self.user, self.group = o.user, o.group
  -- a lab host to run in; false: the machine's own network, even for mk.run
  if o.host == false or getmetatable(o.host) == require("mkharness.lab").Host then self.lab_host = o.host end
  local ready = probes.list(ctx, o.ready)
  if probes_of then
    for _, p in ipairs(probes_of(o, self)) do table.insert(ready, 1, p) end
  end
  for _, p in ipairs(probes.leaves(ready)) do
    if p.kind == "output" then
      local need = p.stream == "any" and { "stdout", "stderr" } or { p.stream }
      local ok = false
      for _, s in ipairs(need) do ok = ok or self[s] == "capture" end
      if not ok then
        options.fail(ctx, p.stream == "any" and "stdout" or p.stream,
          "must be \"capture\" for an output banner on " .. p.stream, self[p.stream == "any" and "stdout" or p.stream])
      end
    end
  end
  self._probes = ready
  services[self] = true
  return self
end

function Executor:__tostring()
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

X.Executor, X.pump_echo, X.echo_close = Executor, pump_echo, echo_close

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
function Executor:_adopt_daemon()
  -- the file appears before its writer has written it (echo PID > FILE):
  -- a short, bounded wait for the pid
  local text, pid
  local until_t = core.now() + 0.5
  repeat
    text = core.read(self.file) or ""
    pid = math.tointeger(tonumber(text:match("^%s*(%d+)%s*$") or ""))
    if pid or text:find("%S") then break end
    core.sleep(0.001)
  until core.now() > until_t
  if not pid then
    -- gone again, or not written yet in full: the file said "ready", and
    -- the launcher stays the process followed
    events.emit("daemon_unknown", { service = self.name, file = self.file },
      string.format("%s: ready, but %s names no pid (%q): following the launcher", self.name, self.file, text:sub(1, 40)))
    return
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

-- While the spawn waits in the loop (loop.spawn: timers fire meanwhile), a
-- start() of the same service from a timer is a no-op, as during its
-- readiness wait; left by an error or a closed coroutine, the probes let
-- go of what they hold.
local SPAWNING = { __close = function(g)
  g.svc._spawning = nil
  if g.undo then g.undo() end
end }

-- Spawn without waiting; returns a waiter for the readiness probes, or nil
-- when the service is adopted or has none.
function Executor:_launch()
  if self._spawning then return nil end -- being started
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
  local where, werr
  if self.lab_host ~= nil or self._control then where, werr = require("mkharness.lab").spawn_fields(self.lab_host) end
  if werr then
    for i, p in ipairs(self._probes) do p:detach(states[i]) end
    echo_close(self)
    svc_error(self, "SpawnError", "cannot start in " .. tostring(self.lab_host) .. ": " .. werr, { log_tail = "" })
  end
  where = where or {}
  local t0 = core.now()
  local spawning <close> = setmetatable({ svc = self, undo = function()
    for i, p in ipairs(self._probes) do p:detach(states[i]) end
    echo_close(self)
  end }, SPAWNING)
  self._spawning = true
  local proc, err = loop.spawn {
    argv = self.argv, env = env, path = path, cwd = self.cwd, stdin = self.stdin,
    stdout = self._logs.stdout and "file" or self.stdout, stdout_path = self._logs.stdout,
    stderr = self._logs.stderr and "file" or self.stderr, stderr_path = self._logs.stderr,
    stop_signal = self.stop_signal, kill_signal = self.kill_signal, stop_timeout = self.stop_timeout,
    token = "MKHARNESS_SERVICE=" .. extra.MKHARNESS_SERVICE, ids = self._ids,
    lab = where.lab, lab_host = where.lab_host, lab_where = where.lab_where,
  }
  spawning.undo, self._spawning = nil, nil
  if not proc then
    for i, p in ipairs(self._probes) do p:detach(states[i]) end
    echo_close(self)
    svc_error(self, "SpawnError", err, { log_tail = "" })
  end
  self._proc, self._exit, self._stopped = proc, nil, false
  self._exit_seen, self._crash, self._ending, self._signalled, self._ready_at = nil, nil, nil, nil, nil
  held[self] = true
  self._starts = (self._starts or 0) + 1 -- marks of earlier starts are void
  events.emit_later("spawned", { service = self.name, pid = proc:pid(), command = self.command,
    host = self.lab_host and self.lab_host.name or nil },
    string.format("%s: spawned pid %d: %s", self.name, proc:pid(), self.command))
  if #self._probes == 0 then self._ready_at = core.now() return nil end
  local mine = self._probes
  local released = false
  -- a waiter's probes let go of what they hold (watches, sockets, an HTTP
  -- request in flight) once, whichever way the wait ends
  local function release()
    if released then return end
    released = true
    for i, p in ipairs(mine) do p:detach(states[i]) end
  end
  return make_waiter(self, mine, {
    t0 = t0, timeout = self.timeout or nil, states = states,
    release = release,
    on_ready = function(w)
      self._ready_at = core.now()
      -- what only tidies up waits until start() has returned
      loop.defer(release)
      if self.kind == "pidfile" then self:_adopt_daemon() end
      local how = {}
      local attempts = 0 -- of the polling probes; event probes just saw their event
      for _, wp in ipairs(w.probes) do
        how[#how + 1] = wp.probe:describe()
        if wp.probe.poll then attempts = attempts + wp.attempts end
      end
      events.emit_later("ready", { service = self.name, ms = w.elapsed * 1000, probes = how, attempts = attempts },
        string.format("%s: ready after %s (%s, %s)", self.name, fmt_ms(w.elapsed), table.concat(how, ", "),
          attempts > 0 and string.format("%d attempt%s", attempts, attempts == 1 and "" or "s") or "on its event"))
    end,
    on_fail = function()
      release()
      self:kill()
    end,
  })
end

function Executor:start()
  check_crashes(self)
  local w = self:_launch()
  if w then wait_all { w, except = self } end
  return self
end

X.share_run_dir, X.drop_launcher = share_run_dir, drop_launcher

function Executor:running()
  return self._proc ~= nil and not self._stopped and self._proc:poll() == nil
end

function Executor:pid()
  if self:running() then return self._proc:pid() end
  return nil
end

function Executor:exit_code()
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

function Executor:signal(sig)
  local n = types.signal("signal", "sig", sig)
  check_crashes(self)
  need_running(self, "signal()")
  self._signalled = n
  self._proc:signal(n)
  return self
end

-- pause() / resume(): return once every process of the service followed,
-- within defaults.pause_wait seconds (a loaded machine may take a while to
-- schedule them, but never this long).
local function freeze(self, what, method, event)
  need_running(self, what)
  local ok, err = self._proc[method](self._proc, defaults.pause_wait)
  if not ok then svc_error(self, "ExecutorError", what .. ": " .. err) end
  events.emit(event, { service = self.name }, self.name .. ": " .. event)
  return self
end
function Executor:pause() return freeze(self, "pause()", "freeze", "paused") end
function Executor:resume() return freeze(self, "resume()", "thaw", "resumed") end


-- stopped(fn) / paused(fn): do, call fn, undo, even when fn raises.
local function around(self, what, before, after, fn)
  need_running(self, what .. "()")
  if fn ~= nil and type(fn) ~= "function" then
    Error.raise("ConfigError", { message = what .. "(fn): fn must be a function, got " .. options.describe(fn), name = self.name })
  end
  before(self)
  local undoing = (what == "stopped" and "restarting " or "resuming ") .. self.name
  if fn == nil then return cleanup.guard(after, self, undoing) end
  return cleanup.around(fn, after, self, undoing)
end

function Executor:stopped(fn) return around(self, "stopped", Executor.stop, Executor.start, fn) end
function Executor:paused(fn) return around(self, "paused", Executor.pause, Executor.resume, fn) end

function Executor:wait_for(fn)
  if type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "wait_for(fn): fn must be a function, got " .. options.describe(fn), name = self.name })
  end
  local w = make_waiter(self, { probes.fn(fn) }, { timeout = self.timeout or nil, what_done = "satisfied",
    on_fail = function() self:kill() end })
  wait_all { w, except = self }
  return self
end


function Executor:__close(err) cleanup.close(err, Executor.stop, self, "stop() of " .. self.name) end


-- The constructors: mk.process, mk.executor, mk.output, mk.tcp, ...
local function ctor(kind, extra, probes_of, without)
  local s = schema(extra, without)
  return function(t)
    return new_service(kind, "mk." .. kind, t, s, probes_of)
  end
end

X.process = ctor("process", nil, nil, { "ready", "already_running" })
X.executor = ctor("executor")
X.output = ctor("output", { banner = types.required(types.nonempty), stream = types.enum("any", "stdout", "stderr"), plain = types.boolean,
  times = types.count },
  function(o)
    return { probes.output({ banner = o.banner, stream = o.stream, plain = o.plain, times = o.times }, "mk.output") }
  end)
-- host: the address to probe, or a lab host to run in and probe
X.tcp = ctor("tcp", { host = function(ctx, k, v)
    if type(v) == "string" then return types.nonempty(ctx, k, v) end
    return require("mkharness.lab").check_host(ctx, k, v)
  end, port = types.required(types.port) }, function(o, self)
  self.host, self.port = o.host or "127.0.0.1", o.port
  if type(o.host) == "table" then self.host = o.host.ip elseif o.host == false then self.host = "127.0.0.1" end
  return { probes.tcp { host = self.host, port = self.port } }
end)
X.unix = ctor("unix", { socket = types.required(types.nonempty) }, function(o, self)
  self.socket = o.socket
  return { probes.unix { socket = o.socket } }
end)
X.http = ctor("http", { url = types.required(types.nonempty), status = function(_, _, v) return v end, method = types.nonempty,
  headers = types.table, body = types.string, insecure = types.boolean }, function(o, self)
  local p = probes.http({ url = o.url, status = o.status, method = o.method, headers = o.headers,
    body = o.body, insecure = o.insecure }, "mk.http")
  self.url, self.host, self.port = o.url, p.parsed.host, p.parsed.port
  return { p }
end)
X.pidfile = ctor("pidfile", { file = types.required(types.nonempty) }, function(o, self)
  self.file = o.file
  return { probes.file { path = o.file } }
end)
X.notify = ctor("notify", nil, function() return { probes.notify {} } end)


-- Stop every service still running (used at the end of a run).
-- Crashes not yet seen are events now (never worded as stops).
function X.teardown()
  loop.run_deferred()
  for svc in pairs(held) do crash.notice(svc) end
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

return X
