-- mk.proxy{ upstream = "HOST:PORT", listen = 0, host = "127.0.0.1" }: the TCP
-- fault proxy (DESIGN 2.8). Forwarding runs on its own thread in C
-- (src/proxy.c), so it goes on whatever the scenario does, os.execute
-- included; this file is the API: option checking, faults, errors.
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local O = require "mkharness.options"
local events = require "mkharness.events"
local cleanup = require "mkharness.cleanup"
local T = O.types
local fail = O.fail

local Proxy = { __name = "mkharness.proxy" }
Proxy.__index = Proxy

local CTX = "mk.proxy"

local function listen_port(ctx, k, v)
  if type(v) == "number" and math.type(v) ~= "integer" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" or v < 0 or v > 65535 then
    fail(ctx, k, "must be an integer port 1-65535, or 0 for any free port", v)
  end
  return v
end

-- "host:port", "[v6addr]:port" -> host, port
local function host_port(ctx, k, v)
  T.nonempty(ctx, k, v)
  local host, port = v:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = v:match("^([^:%[%]%s]+):(%d+)$") end
  if not host then fail(ctx, k, 'must be "host:port" (IPv6: "[::1]:port")', v) end
  local n = math.tointeger(tonumber(port))
  if not n or n < 1 or n > 65535 then fail(ctx, k, "has a port out of range (1-65535)", v) end
  return host, n
end

local SCHEMA = {
  upstream = function(ctx, k, v) host_port(ctx, k, v) return v end,
  listen = listen_port,
  host = T.nonempty,
  name = T.nonempty,
  timeout = T.timeout, -- for resolving the names: DNS may never answer
}

-- A number of milliseconds (or bytes per second): finite, >= 0 (> 0).
-- a delay is at most a day: the proxy thread computes deadlines from it
local DAY_MS = 86400 * 1000
local function amount(ctx, k, v, positive, unit)
  if type(v) ~= "number" or v ~= v or v == math.huge or v < 0 or (positive and v == 0) then
    fail(ctx, k, string.format("must be a %s number of %s", positive and "positive" or "non-negative", unit), v)
  end
  if unit == "milliseconds" and v > DAY_MS then fail(ctx, k, "must be at most a day (86400000 ms)", v) end
  return v
end

local function raise(self, kind, message, fields)
  fields = fields or {}
  fields.message, fields.name = message, self.name
  Error.raise(kind, fields)
end

local function emit(self, action, text, fields)
  fields = fields or {}
  fields.proxy, fields.action = self.name, action
  events.emit("proxy", fields, self.name .. ": " .. text)
end

local M = {}

function M.new(t)
  local o = O.check(CTX, t, SCHEMA)
  for k in pairs(t or {}) do
    if math.type(k) == "integer" then fail(CTX, "[" .. k .. "]", "is not allowed: the proxy takes named options only") end
  end
  if o.upstream == nil then fail(CTX, "upstream", 'is required ("host:port")') end
  local uhost, uport = host_port(CTX, "upstream", o.upstream)
  local self = setmetatable({
    upstream = o.upstream,
    host = o.host or "127.0.0.1",
    listen = o.listen or 0,
    name = o.name or ("proxy->" .. o.upstream),
    _faults = { latency = 0, jitter = 0, bandwidth = 0, blackhole = false },
  }, Proxy)
  if self.listen ~= 0 then self.port = self.listen end
  local c, err = core.proxy(self.host, self.listen, uhost, uport,
    o.timeout == nil and 5 or (o.timeout or 1e9))
  if not c then
    local key = err:find("'" .. uhost .. "'", 1, true) and "upstream" or "host"
    fail(CTX, key, "cannot be used: " .. err)
  end
  self._core = c
  return self
end

function Proxy:start()
  local port, err = self._core:start()
  if not port then
    local msg = string.format("cannot start: %s (on %s)", err, self.host)
    local p, pid, cmd = self.port, nil, nil
    if p then pid, cmd = core.port_owner(p) end
    if pid then msg = msg .. string.format("; port %d is held by pid %d (%s)", p, pid, cmd) end
    raise(self, "ExecutorError", msg)
  end
  self.port = port
  emit(self, "start", string.format("listening on %s:%d, forwarding to %s", self.host, port, self.upstream),
    { port = port, upstream = self.upstream })
  return self
end

function Proxy:stop()
  if self._core:state() then
    self._core:stop()
    emit(self, "stop", "stopped")
  end
  return self
end
function Proxy:__close(err) cleanup.close(err, Proxy.stop, self, "stop() of proxy " .. tostring(self.name)) end

-- running(): the thread is forwarding; listening(): and not down()
function Proxy:running() return (self._core:state()) end
function Proxy:listening() return select(2, self._core:state()) end

local function apply(self)
  local f = self._faults
  self._core:faults(f.latency / 1000, f.jitter / 1000, f.bandwidth, f.blackhole)
  return self
end

local LATENCY_OPTS = { jitter = function(ctx, k, v) return amount(ctx, k, v, false, "milliseconds") end }

function Proxy:latency(ms, opts)
  local ctx = "proxy:latency"
  amount(ctx, "ms", ms, false, "milliseconds")
  local o = O.check(ctx, opts, LATENCY_OPTS)
  self._faults.latency, self._faults.jitter = ms, o.jitter or 0
  emit(self, "latency", string.format("latency %g ms (jitter %g ms)", ms, o.jitter or 0),
    { ms = ms, jitter = o.jitter or 0 })
  return apply(self)
end

function Proxy:bandwidth(bytes_per_second)
  amount("proxy:bandwidth", "bytes_per_second", bytes_per_second, true, "bytes per second")
  self._faults.bandwidth = bytes_per_second
  emit(self, "bandwidth", string.format("bandwidth %g bytes/s", bytes_per_second), { bytes_per_second = bytes_per_second })
  return apply(self)
end

function Proxy:blackhole()
  self._faults.blackhole = true
  emit(self, "blackhole", "blackhole: connections accepted, nothing passes")
  return apply(self)
end

local function need_running(self, what)
  if not self._core:state() then
    raise(self, "ExecutorError", what .. " needs a started proxy (call :start() first)")
  end
end

function Proxy:down()
  need_running(self, "down()")
  self._core:down()
  emit(self, "down", "down: connections refused, open ones closed")
  return self
end

function Proxy:up()
  need_running(self, "up()")
  local ok, err = self._core:up()
  if not ok then raise(self, "ExecutorError", "up(): cannot listen again: " .. err) end
  emit(self, "up", "up: accepting connections again")
  return self
end

function Proxy:reset()
  need_running(self, "reset()")
  self._core:reset()
  emit(self, "reset", "reset: every open connection sent an RST")
  return self
end

-- No faults: no latency, no bandwidth limit, no blackhole, and up.
function Proxy:clear()
  self._faults = { latency = 0, jitter = 0, bandwidth = 0, blackhole = false }
  apply(self)
  if self._core:state() and not select(2, self._core:state()) then self:up() end
  emit(self, "clear", "faults cleared")
  return self
end

-- cut(fn): down for the duration of fn (up again even when fn raises, then
-- re-raise); returns fn's results. cut() without fn: a to-be-closed guard.
function Proxy:cut(fn)
  if fn ~= nil and type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "proxy:cut(fn): fn must be a function, got " .. O.describe(fn),
      name = self.name, option = "fn" })
  end
  self:down()
  if fn == nil then return cleanup.guard(Proxy.up, self, "up() of proxy " .. tostring(self.name)) end
  return cleanup.around(fn, Proxy.up, self, "up() of proxy " .. tostring(self.name))
end

-- { connections, active, bytes_up, bytes_down, upstream_errors, resets }
function Proxy:stats() return self._core:stats() end

function Proxy:__tostring()
  local running, listening = self._core:state()
  local state = not running and "stopped" or not listening and "down" or "running"
  local f, extra = self._faults, {}
  if f.latency > 0 or f.jitter > 0 then
    extra[#extra + 1] = f.jitter > 0 and string.format("latency %g±%g ms", f.latency, f.jitter)
      or string.format("latency %g ms", f.latency)
  end
  if f.bandwidth > 0 then extra[#extra + 1] = string.format("%g B/s", f.bandwidth) end
  if f.blackhole then extra[#extra + 1] = "blackhole" end
  return string.format("mkharness.proxy %s:%s -> %s (%s%s)", self.host, self.port or "?", self.upstream,
    state, #extra > 0 and ", " .. table.concat(extra, ", ") or "")
end

M.Proxy = Proxy
return M
