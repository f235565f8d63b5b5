-- mk.lab{ hosts = { "n1", "n2", "n3" } }: hosts with a network of their
-- own, without root. The building and the packet filtering are in C
-- (src/lab.c, a keeper process in a user + network namespace); this file is
-- the API: names, option checking, which pairs are cut, and the events.
--
-- A fault is a set of cut one-way links "from -> to". Each host drops, at
-- its own input, the packets of the hosts cut towards it; partition, isolate
-- and drop add links (counted: two faults may cut the same link) and return
-- a handle, heal(handle) removes that fault's links, heal() all of them. The control node (the
-- scenario's own network in the lab: probes, mk.get, proxies, mk.run) is
-- never cut, as Jepsen's control node.
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local events = require "mkharness.events"
local cleanup = require "mkharness.cleanup"
local types = options.types
local fail = options.fail

local L = {}

local Lab = { __name = "mkharness.lab" }
local Host = { __name = "mkharness.lab_host" }
L.Lab, L.Host = Lab, Host

-- a value checked later, where the lab is known (a host name or lab.n1)
local function any(_, _, v) return v end

local NAME_MAX = 31 -- a name is also an interface-free hostname: short, DNS-safe
local HOSTS_MAX = 253 -- .2 to .254 of the lab's /24

local labs = setmetatable({}, { __mode = "k" }) -- live labs; the newest is the default control node
local serial = 0

function Host:__tostring() return "lab host " .. self.name end

local function raise(self, msg)
  Error.raise("ExecutorError", { message = msg, name = self and self.name or nil })
end

-- Lab fields first, then methods, then hosts by name: lab.n1
function Lab.__index(self, k)
  local m = rawget(Lab, k)
  if m ~= nil then return m end
  local hosts = rawget(self, "_by_name")
  return hosts and hosts[k]
end

function Lab:__tostring()
  return string.format("lab %s (%d hosts%s)", self.name, #self._hosts, self._core and "" or ", closed")
end

local function host_names(ctx, k, v)
  if type(v) ~= "table" or #v == 0 then fail(ctx, k, 'must be a list of host names, as { "n1", "n2" }', v) end
  if #v > HOSTS_MAX then
    fail(ctx, k, string.format("has %d hosts; the lab's address plan (one /24) holds at most %d", #v, HOSTS_MAX))
  end
  local seen = {}
  for i, name in ipairs(v) do
    if type(name) ~= "string" or not name:match("^[a-z][a-z0-9-]*$") or #name > NAME_MAX then
      fail(ctx, k .. "[" .. i .. "]", string.format("must be a host name: a lower-case letter, then letters, " ..
        "digits or '-', at most %d characters", NAME_MAX), name)
    end
    if name == "localhost" or name:match("^ip6%-") then
      fail(ctx, k .. "[" .. i .. "]", "is a name every host needs for itself (it would shadow the loopback)", name)
    end
    if rawget(Lab, name) ~= nil or name == "name" then
      fail(ctx, k .. "[" .. i .. "]", "is the name of a lab method (lab." .. name .. "); choose another", name)
    end
    if seen[name] then fail(ctx, k .. "[" .. i .. "]", "is given twice", name) end
    seen[name] = true
  end
  return v
end

local SCHEMA = { hosts = types.required(host_names, "(a list of host names)"), name = types.nonempty }

local function emit(self, action, text, fields)
  fields = fields or {}
  fields.lab, fields.action = self.name, action
  events.emit("lab", fields, self.name .. ": " .. text)
end

function L.new(t)
  for k in pairs(type(t) == "table" and t or {}) do
    if math.type(k) == "integer" then
      fail("mk.lab", "[" .. k .. "]", "is not allowed: the lab takes named options only (hosts = { ... })")
    end
  end
  local o = options.check("mk.lab", t, SCHEMA)
  serial = serial + 1
  local self = setmetatable({ name = o.name or (serial == 1 and "lab" or "lab" .. serial), _hosts = {},
    _by_name = {}, _cut = {}, _netem = {} }, Lab)
  local dir, err = core.run_dir()
  if not dir then raise(self, "mk.lab: " .. err) end
  -- the hosts file every process in the lab sees as /etc/hosts: the
  -- hosts first (the first match wins), then the machine's own lines
  local path = string.format("%s/%s.hosts", dir, self.name)
  local lines = { "# the hosts of " .. self.name .. ", added by mkharness" }
  local names = {}
  for i, name in ipairs(o.hosts) do names[i] = name end
  -- the addresses come from the keeper: build first, then write the file it binds
  local f, ferr = io.open(path, "w")
  if not f then raise(self, "mk.lab: cannot write the hosts file: " .. tostring(ferr)) end
  f:close()
  local t0 = core.now()
  local c, cerr = core.lab(names, path)
  if not c then raise(self, "mk.lab: " .. cerr) end
  self._core = c
  for i, name in ipairs(names) do
    local h = setmetatable({ lab = self, name = name, index = i, ip = c:addr(i) }, Host)
    self._hosts[i], self._by_name[name] = h, h
    lines[#lines + 1] = h.ip .. "\t" .. name
  end
  self.control_ip = c:addr(0)
  local sys = io.open("/etc/hosts")
  lines[#lines + 1] = sys and sys:read("a") or "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback"
  if sys then sys:close() end
  f = io.open(path, "w")
  if f then f:write(table.concat(lines, "\n"), "\n") f:close() end
  core.chmod(path, tonumber("644", 8))
  labs[self] = serial
  emit(self, "up", string.format("up in %.1f ms: %s", (core.now() - t0) * 1000, table.concat(names, ", ")),
    { hosts = names })
  return self
end

-- the newest live lab of that name (the busted integration scopes labs
-- to the block that built them, as it does services)
function L.find(name)
  local best, n = nil, -1
  for lab, k in pairs(labs) do
    if lab.name == name and k > n then best, n = lab, k end
  end
  return best
end

-- the newest live lab, for commands run without host = (mk.run, exec probes)
function L.default()
  local best, n = nil, -1
  for lab, s in pairs(labs) do if lab._core and s > n then best, n = lab, s end end
  return best
end

-- a host of a live lab, given as lab.n1 (or "n1" with the lab given)
local function host_of(self, ctx, k, v)
  if getmetatable(v) == Host and v.lab == self then return v end
  if type(v) == "string" and self._by_name[v] then return self._by_name[v] end
  local names = {}
  for i, h in ipairs(self._hosts) do names[i] = h.name end
  fail(ctx, k, "must be a host of " .. self.name .. " (" .. table.concat(names, ", ") .. ")", v)
end

-- options.types checker for host = on executors and mk.run
function L.check_host(ctx, k, v)
  if v == false then return v end
  if getmetatable(v) ~= Host then
    fail(ctx, k, "must be a host of a lab (as lab.n1), or false for the machine's own network", v)
  end
  if not v.lab._core then fail(ctx, k, "is a host of " .. v.lab.name .. ", which is closed") end
  return v
end

-- what core.spawn needs to run a process in host h (false: outside; nil:
-- the default lab's control node, if a lab is up)
function L.spawn_fields(h)
  if h == false then return nil end
  if h == nil then
    local lab = L.default()
    if not lab then return nil end
    return { lab = lab._core, lab_host = 0, lab_where = "the control node of " .. lab.name }
  end
  if not h.lab._core then return nil, h.lab.name .. " is closed" end
  return { lab = h.lab._core, lab_host = h.index, lab_where = "lab host '" .. h.name .. "'" }
end

local function alive(self)
  if not self._core then raise(self, self.name .. " is closed") end
end

function Lab:ip(h)
  alive(self)
  return host_of(self, self.name .. ":ip", "host", h).ip
end

function Lab:hosts()
  local t = {}
  for i, h in ipairs(self._hosts) do t[i] = h.name end
  return t
end

-- Pushes the cut links to every host whose set changed, in one request;
-- in force on return.
local function apply(self)
  local scripts, changed = {}, false
  for _, h in ipairs(self._hosts) do
    local from = {}
    for _, g in ipairs(self._hosts) do
      if self._cut[g.index .. ">" .. h.index] then from[#from + 1] = g.ip end
    end
    local script = "flush chain inet mkharness input\n"
    if #from > 0 then
      script = script .. "add rule inet mkharness input ip saddr { " .. table.concat(from, ", ") .. " } drop\n"
    end
    if script ~= h._script then scripts[h.index], changed = script, true end
  end
  if not changed then return end
  local ok, err = self._core:filter(scripts)
  if not ok then
    for _, h in ipairs(self._hosts) do h._script = nil end -- unknown now: pushed again next time
    raise(self, self.name .. ": cannot change the packet filter: " .. err)
  end
  for i, script in pairs(scripts) do self._hosts[i]._script = script end
end

-- the cut links as "n1->n2" strings, sorted
function Lab:cuts()
  local t = {}
  for _, a in ipairs(self._hosts) do
    for _, b in ipairs(self._hosts) do
      if self._cut[a.index .. ">" .. b.index] then t[#t + 1] = a.name .. "->" .. b.name end
    end
  end
  return t
end

-- a fault's cut links, for heal(handle)
local Cut = { __name = "mkharness.lab_cut" }
L.Cut = Cut

local function cut(self, a, b, added)
  if a == b then return end
  local k = a.index .. ">" .. b.index
  self._cut[k] = (self._cut[k] or 0) + 1
  added[#added + 1] = k
end

-- a list of hosts (names or lab.nX), or one host
local function host_list(self, ctx, k, v)
  if type(v) == "string" or getmetatable(v) == Host then return { host_of(self, ctx, k, v) } end
  if type(v) ~= "table" or #v == 0 then fail(ctx, k, "must be a host or a non-empty list of hosts", v) end
  local t = {}
  for i, x in ipairs(v) do t[i] = host_of(self, ctx, k .. "[" .. i .. "]", x) end
  return t
end

-- lab:partition{ { "n1" }, { "n2", "n3" } }: no traffic between groups.
-- Hosts named in no group form one more group together.
function Lab:partition(groups)
  alive(self)
  local ctx = self.name .. ":partition"
  if type(groups) ~= "table" or #groups == 0 then
    fail(ctx, "groups", 'must be a list of groups of hosts, as { { "n1" }, { "n2", "n3" } }', groups)
  end
  local side, sides = {}, {}
  for i, g in ipairs(groups) do
    sides[i] = host_list(self, ctx, "groups[" .. i .. "]", g)
    for _, h in ipairs(sides[i]) do
      if side[h] then fail(ctx, "groups[" .. i .. "]", "names " .. h.name .. ", already in another group") end
      side[h] = i
    end
  end
  local rest = {}
  for _, h in ipairs(self._hosts) do if not side[h] then rest[#rest + 1] = h side[h] = 0 end end
  if #rest > 0 then sides[#sides + 1] = rest end
  local added = {}
  for _, a in ipairs(self._hosts) do
    for _, b in ipairs(self._hosts) do
      if side[a] ~= side[b] then cut(self, a, b, added) end
    end
  end
  apply(self)
  local shown = {}
  for i, s in ipairs(sides) do
    local n = {}
    for j, h in ipairs(s) do n[j] = h.name end
    shown[i] = n
  end
  local text = {}
  for i, n in ipairs(shown) do text[i] = table.concat(n, " ") end
  emit(self, "partition", "partition " .. table.concat(text, " | "), { groups = shown, cuts = self:cuts() })
  return self, setmetatable({ lab = self, links = added }, Cut)
end

function Lab:isolate(h)
  alive(self)
  local host = host_of(self, self.name .. ":isolate", "host", h)
  local added = {}
  for _, g in ipairs(self._hosts) do cut(self, host, g, added) cut(self, g, host, added) end
  apply(self)
  emit(self, "isolate", "isolate " .. host.name, { host = host.name, cuts = self:cuts() })
  return self, setmetatable({ lab = self, links = added }, Cut)
end

-- lab:drop{ from = "n1", to = "n2" }: one way; from and to may be lists
function Lab:drop(t)
  alive(self)
  local ctx = self.name .. ":drop"
  local o = options.check(ctx, t, { from = types.required(any, "(a host or a list)"),
    to = types.required(any, "(a host or a list)") })
  local from, to = host_list(self, ctx, "from", o.from), host_list(self, ctx, "to", o.to)
  local fn, tn, added = {}, {}, {}
  for i, a in ipairs(from) do fn[i] = a.name for _, b in ipairs(to) do cut(self, a, b, added) end end
  for i, b in ipairs(to) do tn[i] = b.name end
  apply(self)
  emit(self, "drop", "drop " .. table.concat(fn, " ") .. " -> " .. table.concat(tn, " "),
    { from = fn, to = tn, cuts = self:cuts() })
  return self, setmetatable({ lab = self, links = added }, Cut)
end

-- netem on a host's link: lab:latency{ host =, ms =, jitter = }, lab:loss{ host =, percent = }
local function netem(self, ctx, h, what, value, text)
  local ne = self._netem[h] or { ms = 0, jitter = 0, percent = 0 }
  for k, v in pairs(what) do ne[k] = v end
  local ok, err = self._core:netem(h.index, ne.ms, ne.jitter, ne.percent)
  if not ok then raise(self, ctx .. ": " .. err) end
  self._netem[h] = (ne.ms > 0 or ne.jitter > 0 or ne.percent > 0) and ne or nil
  emit(self, value, text, { host = h.name, ms = ne.ms, jitter = ne.jitter, percent = ne.percent })
  return self
end

local function amount(ctx, k, v, max)
  if type(v) ~= "number" or not (v >= 0 and v <= max) then fail(ctx, k, "must be a number from 0 to " .. max, v) end
  return v
end

function Lab:latency(t)
  alive(self)
  local ctx = self.name .. ":latency"
  local o = options.check(ctx, t, { host = types.required(any, "(a host)"),
    ms = types.required(function(c, k, v) return amount(c, k, v, 3600e3) end, "(milliseconds)"),
    jitter = function(c, k, v) return amount(c, k, v, 3600e3) end })
  local h = host_of(self, ctx, "host", o.host)
  return netem(self, ctx, h, { ms = o.ms, jitter = o.jitter or 0 }, "latency",
    string.format("latency %g ms (jitter %g ms) on %s", o.ms, o.jitter or 0, h.name))
end

function Lab:loss(t)
  alive(self)
  local ctx = self.name .. ":loss"
  local o = options.check(ctx, t, { host = types.required(any, "(a host)"),
    percent = types.required(function(c, k, v) return amount(c, k, v, 100) end, "(0 to 100)") })
  local h = host_of(self, ctx, "host", o.host)
  return netem(self, ctx, h, { percent = o.percent }, "loss", string.format("loss %g %% on %s", o.percent, h.name))
end

-- heal(): everything back, no cut link and no netem. heal(handle): only
-- the links that partition/isolate/drop call cut (what another fault cut
-- too stays cut until that one heals).
function Lab:heal(handle)
  alive(self)
  if handle ~= nil then
    if getmetatable(handle) ~= Cut or handle.lab ~= self then
      fail(self.name .. ":heal", "handle", "must be what partition, isolate or drop of this lab returned", handle)
    end
    if not handle.healed then
      handle.healed = true
      for _, k in ipairs(handle.links) do
        local n = (self._cut[k] or 0) - 1
        self._cut[k] = n > 0 and n or nil
      end
      apply(self)
    end
    emit(self, "heal", "healed one fault's cuts", { cuts = self:cuts(), partial = true })
    return self
  end
  local had = #self:cuts() > 0 or next(self._netem) ~= nil
  self._cut = {}
  apply(self)
  for h in pairs(self._netem) do
    local ok, err = self._core:netem(h.index, 0, 0, 0)
    if not ok then raise(self, self.name .. ":heal: " .. h.name .. ": " .. err) end
    self._netem[h] = nil
  end
  emit(self, "heal", had and "healed" or "healed (nothing was cut)", { cuts = {} })
  return self
end

-- The keeper's pid and the user namespace's inode: what a leak check
-- looks for once the lab is closed.
function Lab:keeper()
  alive(self)
  return self._core:keeper()
end

function Lab:close()
  if self._core then
    self._core:close()
    self._core = nil
    labs[self] = nil
    emit(self, "close", "closed")
  end
  return self
end
function Lab:__close(err) cleanup.close(err, Lab.close, self, "close() of " .. self.name) end

return L
