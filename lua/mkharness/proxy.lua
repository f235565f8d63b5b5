-- mk.proxy{ upstream = "HOST:PORT" or PORT, listen = 0, host = "127.0.0.1" or a lab }:
-- the TCP fault proxy. Forwarding runs on its own thread in C
-- (src/proxy.c), so it goes on whatever the scenario does, os.execute
-- included; this file is the API: option checking, faults, errors.
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local events = require "mkharness.events"
local cleanup = require "mkharness.cleanup"
local types = options.types
local fail = options.fail

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
  types.nonempty(ctx, k, v)
  local host, port = v:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = v:match("^([^:%[%]%s]+):(%d+)$") end
  if not host then fail(ctx, k, 'must be "host:port" (IPv6: "[::1]:port")', v) end
  local n = math.tointeger(tonumber(port))
  if not n or n < 1 or n > 65535 then fail(ctx, k, "has a port out of range (1-65535)", v) end
  return host, n
end

-- upstream: "host:port", or a port alone (a number or a string of digits)
-- meaning 127.0.0.1:port. Returns the "host:port" form.
local function upstream(ctx, k, v)
  local n = type(v) == "string" and v:match("^%d+$") and tonumber(v) or v
  if type(n) == "number" then
    n = n == math.floor(n) and math.tointeger(n) or nil
    if not n or n < 1 or n > 65535 then
      fail(ctx, k, 'must be "host:port" or a port number 1-65535', v)
    end
    return "127.0.0.1:" .. n
  end
  host_port(ctx, k, v)
  return v
end

-- where it listens: an address, or a lab (its control node, which the
-- lab's hosts reach)
local function listen_host(ctx, k, v)
  local lab = package.loaded["mkharness.lab"]
  local mt = getmetatable(v)
  if lab and mt == lab.Lab then
    if not v._core then fail(ctx, k, "is " .. v.name .. ", which is closed") end
    return v.control_ip
  end
  if lab and mt == lab.Host then
    fail(ctx, k, "is a host of a lab: a proxy listens on the machine or on a lab's control node (host = lab), " ..
      "which every host of the lab reaches", v)
  end
  return types.nonempty(ctx, k, v)
end

local SCHEMA = {
  upstream = types.required(upstream, '("host:port" or a port)'),
  listen = listen_port,
  host = listen_host,
  name = types.nonempty,
  timeout = types.timeout, -- for resolving the names: DNS may never answer
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

-- The options every connection fault takes: which way, and how many
-- connections (drawn per connection when it opens, as toxiproxy's toxicity).
local DIRS = { up = 1, down = 2, both = 3 }
local function direction(ctx, k, v)
  if DIRS[v] == nil then
    fail(ctx, k, 'must be "up" (client to upstream), "down" (upstream to client) or "both"', v)
  end
  return v
end
local function probability(ctx, k, v)
  if type(v) ~= "number" or not (v >= 0 and v <= 1) then
    fail(ctx, k, "must be a number from 0 to 1 (the share of connections the fault applies to)", v)
  end
  return v
end
local function integer(ctx, k, v, min, what)
  if math.type(v) ~= "integer" and type(v) == "number" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" or v < min or v > 2 ^ 53 then
    fail(ctx, k, string.format("must be an integer number of %s >= %d", what, min), v)
  end
  return v
end

-- Options of a fault method: `extra` plus direction and probability,
-- with their defaults filled in.
local function fault_opts(ctx, opts, extra)
  local schema = { direction = direction, probability = probability }
  for k, f in pairs(extra or {}) do schema[k] = f end
  local o = options.check(ctx, opts, schema)
  o.direction = o.direction or "both"
  o.probability = o.probability or 1
  return o
end

-- ", up only (client to upstream), 50 % of connections"
local function scope_text(o)
  local s = ""
  if o.direction == "up" then s = s .. ", up only (client to upstream)"
  elseif o.direction == "down" then s = s .. ", down only (upstream to client)" end
  if o.probability < 1 then s = s .. string.format(", %g %% of connections", o.probability * 100) end
  return s
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
  for k in pairs(type(t) == "table" and t or {}) do
    if math.type(k) == "integer" then fail(CTX, "[" .. k .. "]", "is not allowed: the proxy takes named options only") end
  end
  local o = options.check(CTX, t, SCHEMA)
  local uhost, uport = host_port(CTX, "upstream", o.upstream)
  local self = setmetatable({
    upstream = o.upstream, -- "host:port", also when given as a port
    host = o.host or "127.0.0.1",
    listen = o.listen or 0,
    name = o.name or ("proxy->" .. o.upstream),
    _faults = {},
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

-- _faults: fault name -> its settings (nil: off), handed to the thread whole.
-- scope(f, params): the fault's table for core:faults; params are ignored
-- (zero) when the fault is off.
local function scope(f, params)
  local t = { dirs = f and DIRS[f.direction] or 0, probability = f and f.probability or 1 }
  for k, v in pairs(params) do t[k] = f and v or 0 end
  return t
end

local function apply(self)
  local f = self._faults
  local lat, bw, sl, lim = f.latency or {}, f.bandwidth or {}, f.slicer or {}, f.limit_data or {}
  self._core:faults {
    latency = scope(f.latency, { seconds = (lat.ms or 0) / 1000, jitter = (lat.jitter or 0) / 1000 }),
    bandwidth = scope(f.bandwidth, { rate = bw.bytes_per_second or 0 }),
    blackhole = scope(f.blackhole, {}),
    slicer = scope(f.slicer, { size = sl.size or 0, variation = sl.size_variation or 0, delay = (sl.delay or 0) / 1000 }),
    limit = scope(f.limit_data, { bytes = lim.bytes or 0 }),
  }
  return self
end

-- Record fault `name` with its settings, emit its event, apply.
local function set_fault(self, name, o, text)
  self._faults[name] = o
  local fields = {}
  for k, v in pairs(o) do fields[k] = v end
  emit(self, name, text .. scope_text(o), fields)
  return apply(self)
end

local function ms_opt(ctx, k, v) return amount(ctx, k, v, false, "milliseconds") end
local LATENCY_OPTS = { jitter = ms_opt }

function Proxy:latency(ms, opts)
  local ctx = "proxy:latency"
  amount(ctx, "ms", ms, false, "milliseconds")
  local o = fault_opts(ctx, opts, LATENCY_OPTS)
  o.ms, o.jitter = ms, o.jitter or 0
  -- latency(0) is no latency: the connection goes back to the splice path
  local on = (ms > 0 or o.jitter > 0) and o or nil
  self._faults.latency = on
  local fields = { ms = ms, jitter = o.jitter, direction = o.direction, probability = o.probability }
  emit(self, "latency", string.format("latency %g ms (jitter %g ms)", ms, o.jitter) .. scope_text(o), fields)
  return apply(self)
end

function Proxy:bandwidth(bytes_per_second, opts)
  local ctx = "proxy:bandwidth"
  amount(ctx, "bytes_per_second", bytes_per_second, true, "bytes per second")
  local o = fault_opts(ctx, opts)
  o.bytes_per_second = bytes_per_second
  return set_fault(self, "bandwidth", o, string.format("bandwidth %g bytes/s", bytes_per_second))
end

function Proxy:blackhole(opts)
  local o = fault_opts("proxy:blackhole", opts)
  return set_fault(self, "blackhole", o, "blackhole: connections accepted, nothing passes")
end

local SLICER_OPTS = {
  size = types.required(function(ctx, k, v) return integer(ctx, k, v, 1, "bytes") end, "(bytes per piece)"),
  size_variation = function(ctx, k, v) return integer(ctx, k, v, 0, "bytes") end,
  delay = ms_opt,
}
-- slicer{ size = N, size_variation = V, delay = ms }: what passes is sent in
-- pieces of N +- V bytes, `delay` ms apart (each piece its own TCP segment).
function Proxy:slicer(opts)
  local ctx = "proxy:slicer"
  local o = fault_opts(ctx, opts, SLICER_OPTS)
  o.size_variation, o.delay = o.size_variation or 0, o.delay or 0
  if o.size > 1 << 30 then fail(ctx, "size", "must be at most 1 GiB", o.size) end
  if o.size_variation >= o.size then
    fail(ctx, "size_variation", "must be smaller than size (" .. o.size .. ")", o.size_variation)
  end
  return set_fault(self, "slicer", o, string.format("slicer: pieces of %d±%d bytes, %g ms apart",
    o.size, o.size_variation, o.delay))
end

-- limit_data(bytes): once `bytes` have passed in a direction (counted from
-- now on open connections), the connection is closed.
function Proxy:limit_data(bytes, opts)
  local ctx = "proxy:limit_data"
  integer(ctx, "bytes", bytes, 0, "bytes")
  local o = fault_opts(ctx, opts)
  o.bytes = math.tointeger(bytes) or bytes
  return set_fault(self, "limit_data", o, string.format("limit_data: close after %d bytes", o.bytes))
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

-- reset{ probability = p }: RST each open connection with probability p.
function Proxy:reset(opts)
  local ctx = "proxy:reset"
  local o = options.check(ctx, opts, { probability = probability })
  local prob = o.probability or 1
  need_running(self, "reset()")
  self._core:reset(prob)
  emit(self, "reset", prob < 1 and string.format("reset: %g %% of open connections sent an RST", prob * 100)
    or "reset: every open connection sent an RST", { probability = prob })
  return self
end

-- No faults (latency, bandwidth, blackhole, slicer, limit_data), and up.
function Proxy:clear()
  self._faults = {}
  apply(self)
  if self._core:state() and not select(2, self._core:state()) then self:up() end
  emit(self, "clear", "faults cleared")
  return self
end

-- cut(fn): down for the duration of fn (up again even when fn raises, then
-- re-raise); returns fn's results. cut() without fn: a to-be-closed guard.
function Proxy:cut(fn)
  if fn ~= nil and type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "proxy:cut(fn): fn must be a function, got " .. options.describe(fn),
      name = self.name, option = "fn" })
  end
  self:down()
  if fn == nil then return cleanup.guard(Proxy.up, self, "up() of proxy " .. tostring(self.name)) end
  return cleanup.around(fn, Proxy.up, self, "up() of proxy " .. tostring(self.name))
end

-- { connections, active, bytes_up, bytes_down, upstream_errors, resets, limited }
function Proxy:stats() return self._core:stats() end

function Proxy:__tostring()
  local running, listening = self._core:state()
  local state = not running and "stopped" or not listening and "down" or "running"
  local f, extra = self._faults, {}
  local function add(o, text)
    if not o then return end
    if o.direction ~= "both" then text = text .. " " .. o.direction end
    if o.probability < 1 then text = text .. string.format(" p=%g", o.probability) end
    extra[#extra + 1] = text
  end
  local l = f.latency
  if l then
    add(l, l.jitter > 0 and string.format("latency %g±%g ms", l.ms, l.jitter) or string.format("latency %g ms", l.ms))
  end
  add(f.bandwidth, f.bandwidth and string.format("%g B/s", f.bandwidth.bytes_per_second))
  add(f.blackhole, "blackhole")
  add(f.slicer, f.slicer and string.format("slicer %d±%d B/%g ms", f.slicer.size, f.slicer.size_variation, f.slicer.delay))
  add(f.limit_data, f.limit_data and string.format("limit_data %d B", f.limit_data.bytes))
  return string.format("mkharness.proxy %s:%s -> %s (%s%s)", self.host, self.port or "?", self.upstream,
    state, #extra > 0 and ", " .. table.concat(extra, ", ") or "")
end

M.Proxy = Proxy
return M
