-- mk.chaos{...}: a workload runs while faults (the nemesis) start and heal
-- on a seeded schedule; every operation, fault and mark goes into a
-- history (Jepsen's model) that checkers (mkharness.check) judge.
--
-- The schedule is drawn in full before the run from a private PRNG, so one
-- seed gives the same faults, targets and offsets whatever the workload
-- does (its own math.random included). Faults are timers of
-- mkharness.loop: they fire from inside whatever harness call the workload
-- is in. Logical clients are coroutines; one blocked in a harness wait
-- yields to the others.
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local events = require "mkharness.events"
local loop = require "mkharness.loop"
local crash = require "mkharness.crash"
local json = require "mkharness.json"
local types = options.types
local fail = options.fail

local C = {}

-- ---- the PRNG: xoshiro256** seeded by splitmix64 (Lua 5.4 integers wrap) --

local Rng = {}
Rng.__index = Rng

local function rotl(x, k) return (x << k) | (x >> (64 - k)) end

function C.rng(seed)
  local s = {}
  local x = math.tointeger(seed) or 0
  for i = 1, 4 do
    x = x + 0x9e3779b97f4a7c15
    local z = x
    z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
    z = (z ~ (z >> 27)) * 0x94d049bb133111eb
    s[i] = z ~ (z >> 31)
  end
  return setmetatable({ s[1], s[2], s[3], s[4] }, Rng)
end

function Rng:next()
  local s0, s1, s2, s3 = self[1], self[2], self[3], self[4]
  local result = rotl(s1 * 5, 7) * 9
  local t = s1 << 17
  s2 = s2 ~ s0
  s3 = s3 ~ s1
  s1 = s1 ~ s2
  s0 = s0 ~ s3
  s2 = s2 ~ t
  s3 = rotl(s3, 45)
  self[1], self[2], self[3], self[4] = s0, s1, s2, s3
  return result
end

-- As math.random: () a float in [0, 1), (m) an integer in [1, m], (m, n).
function Rng:random(m, n)
  local f = (self:next() >> 11) * (1.0 / 9007199254740992.0)
  if m == nil then return f end
  if n == nil then m, n = 1, m end
  return m + math.floor(f * (n - m + 1))
end

function Rng:uniform(range) return range[1] + (range[2] - range[1]) * self:random() end

-- a shuffled copy
function Rng:shuffle(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  for i = #out, 2, -1 do
    local j = self:random(i)
    out[i], out[j] = out[j], out[i]
  end
  return out
end

-- ---- options: every chaos schema, in one place --------------------------

-- { min, max } seconds, or one number for both
local function range(ctx, k, v)
  if type(v) == "number" then v = { v, v } end
  if type(v) ~= "table" or getmetatable(v) ~= nil then fail(ctx, k, "must be { min, max } seconds or a number", v) end
  local a, b = v[1], v[2]
  for _, x in ipairs { a, b } do
    if type(x) ~= "number" or x ~= x or x < 0 or x == math.huge then
      fail(ctx, k, "must be { min, max } with numbers of seconds >= 0", x)
    end
  end
  if type(a) ~= "number" or type(b) ~= "number" then fail(ctx, k, "must be { min, max } seconds", v) end
  if a > b then fail(ctx, k, string.format("has min %g greater than max %g", a, b)) end
  for key in pairs(v) do
    if key ~= 1 and key ~= 2 then fail(ctx, k, "must be { min, max }: only two numbers", v) end
  end
  return { a, b }
end

local PICKS = { one = true, minority = true, majority = true, all = true }
local function pick_opt(ctx, k, v)
  if type(v) == "function" or PICKS[v] then return v end
  fail(ctx, k, 'must be "one", "minority", "majority", "all" or a function(targets, rng) returning a list', v)
end

local function seed_opt(ctx, k, v)
  if type(v) == "number" and math.type(v) == "float" and v == math.floor(v) and v >= 0 and v < 2 ^ 63 then
    v = math.tointeger(v)
  end
  if math.type(v) ~= "integer" or v < 0 then fail(ctx, k, "must be an integer >= 0", v) end
  return v
end

local function concurrent_opt(ctx, k, v)
  if v == true or v == false then return v end
  return types.count(ctx, k, v)
end

local FAULT_COMMON = { every = range, lasting = range, pick = pick_opt, name = types.nonempty }

local CHAOS = {
  seed = seed_opt,
  duration = types.required(function(ctx, k, v)
    if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
      fail(ctx, k, "must be a positive number of seconds", v)
    end
    return v
  end, "(seconds)"),
  faults = types.table,
  workload = types.required(types.func),
  final = types.func,
  clients = types.count,
  concurrent = concurrent_opt,
  grace = types.seconds,
  name = types.nonempty,
}

-- ---- faults ----------------------------------------------------------------

local Fault = { __name = "mkharness.fault" }
Fault.__index = Fault
function Fault:__tostring() return "mkharness.fault " .. self.name end
C.Fault = Fault

local DEFAULT_EVERY, DEFAULT_LASTING = { 2, 5 }, { 1, 3 }

-- targets: a list, or a function returning one (members that change)
local function targets_opt(ctx, v, what)
  if type(v) == "function" then return v end
  if type(v) ~= "table" or getmetatable(v) ~= nil then
    fail(ctx, "[1]", "must be a list of " .. what .. " (or a function returning one)", v)
  end
  if #v == 0 then fail(ctx, "[1]", "must list at least one of " .. what) end
  return v
end

local counter = 0
local function new_fault(kind, ctx, t, schema, positional)
  if type(t) ~= "table" then fail(ctx, "opts", "takes a table", t) end
  local s = {}
  for k, f in pairs(FAULT_COMMON) do s[k] = f end
  for k, f in pairs(schema or {}) do s[k] = f end
  local o = options.check(ctx, t, s)
  for k in pairs(t) do
    if math.type(k) == "integer" and (k < 1 or k > (positional or 1)) then
      fail(ctx, "[" .. k .. "]", "is not expected here")
    end
  end
  counter = counter + 1
  local f = setmetatable({ kind = kind, every = o.every or DEFAULT_EVERY, lasting = o.lasting or DEFAULT_LASTING,
    pick = o.pick or "one", opts = o }, Fault)
  f.name = o.name or kind
  return f, o
end

local function target_name(x)
  if type(x) == "table" and x.name then return tostring(x.name) end
  return tostring(x)
end

-- choose from `list` (the targets not taken by another fault in force)
local function choose(pick, list, rng)
  if #list == 0 then return {} end
  if type(pick) == "function" then
    local r = pick(list, rng)
    if r == nil then return {} end
    if type(r) ~= "table" or getmetatable(r) ~= nil or r.name then r = { r } end
    return r
  end
  local sh = rng:shuffle(list)
  local n = #list
  local k = pick == "one" and 1 or pick == "all" and n
    or pick == "minority" and rng:random(math.max(1, (n - 1) // 2))
    or math.max(1, n // 2 + 1) -- majority
  local out = {}
  for i = 1, math.min(k, n) do out[i] = sh[i] end
  return out
end

local function member_fault(kind, ctx, what, act, undo)
  return function(t)
    local f = new_fault(kind, ctx, t)
    f.targets = targets_opt(ctx, t[1], what)
    f.act = function(_, members)
      for _, m in ipairs(members) do act(m) end
    end
    f.undo = function(_, members)
      for _, m in ipairs(members) do undo(m) end
    end
    return f
  end
end

C.kill = member_fault("kill", "mk.fault.kill", "services",
  function(m) m:kill { signal = "KILL" } end, function(m) m:start() end)
C.stop = member_fault("stop", "mk.fault.stop", "services",
  function(m) m:stop() end, function(m) m:start() end)
C.pause = member_fault("pause", "mk.fault.pause", "services",
  function(m) m:pause() end, function(m) m:resume() end)

-- partition{ lab, mode = "halves"|"majority"|"isolate"|"oneway" }: the
-- lab's hosts (lab:hosts()) cut as the mode says; each occurrence heals
-- its own cuts (the handle the lab returned), so partitions in force
-- together do not end each other.
local MODES = { "halves", "majority", "isolate", "oneway" }
function C.partition(t)
  local ctx = "mk.fault.partition"
  local f = new_fault("partition", ctx, t, { mode = types.enum(table.unpack(MODES)) })
  local lab = t[1]
  if type(lab) ~= "table" or type(lab.hosts) ~= "function" or type(lab.heal) ~= "function" then
    fail(ctx, "[1]", "must be a lab (with hosts(), partition{}, isolate(), drop{} and heal())", lab)
  end
  f.lab, f.mode = lab, f.opts.mode or "halves"
  f.name = f.opts.name or ("partition " .. f.mode)
  f.targets = function() return lab:hosts() end
  f.pick = f.opts.pick or "all"
  f.act = function(occ, hosts, rng)
    local sh = rng:shuffle(hosts)
    local n = #sh
    if f.mode == "isolate" then
      occ.state = select(2, lab:isolate(sh[1]))
      return "isolate " .. sh[1]
    elseif f.mode == "oneway" then
      if n < 2 then error("oneway needs two hosts", 0) end
      occ.state = select(2, lab:drop { from = sh[1], to = sh[2] })
      return "drop " .. sh[1] .. " -> " .. sh[2]
    end
    local cut = f.mode == "halves" and n // 2 or math.max(1, (n - 1) // 2)
    local a, b = {}, {}
    for i, h in ipairs(sh) do
      if i <= cut then a[#a + 1] = h else b[#b + 1] = h end
    end
    occ.state = select(2, lab:partition { a, b })
    return table.concat(a, ",") .. " | " .. table.concat(b, ",")
  end
  -- a lab-like object without handles: heal all
  f.undo = function(occ) lab:heal(occ.state) end
  return f
end

-- proxy{ proxies, "latency", 200, jitter = 50 }: a fault of mk.proxy,
-- cleared at heal.
local PROXY_ACTIONS = { latency = true, bandwidth = true, blackhole = true, reset = true, down = true,
  slicer = true, limit_data = true }
function C.proxy(t)
  local ctx = "mk.fault.proxy"
  if type(t) ~= "table" then fail(ctx, "opts", "takes a table", t) end
  local action = t[2]
  if not PROXY_ACTIONS[action] then
    fail(ctx, "[2]", 'must be "latency", "bandwidth", "blackhole", "reset", "down", "slicer" or "limit_data"', action)
  end
  local f = new_fault("proxy", ctx, t, { direction = types.enum("up", "down", "both"), probability = function(c, k, v)
      if type(v) ~= "number" or not (v >= 0 and v <= 1) then fail(c, k, "must be a number from 0 to 1", v) end
      return v
    end,
    jitter = types.seconds }, 3)
  f.targets = targets_opt(ctx, t[1], "proxies")
  f.name = f.opts.name or ("proxy " .. action)
  local arg = t[3]
  if (action == "latency" or action == "bandwidth" or action == "limit_data") and type(arg) ~= "number" then
    fail(ctx, "[3]", "must be the " .. action .. " amount (a number)", arg)
  end
  if action == "slicer" and type(arg) ~= "table" then fail(ctx, "[3]", "must be the slicer's options table", arg) end
  local fo = {}
  for _, k in ipairs { "direction", "probability" } do fo[k] = f.opts[k] end
  f.act = function(_, proxies)
    for _, p in ipairs(proxies) do
      if action == "latency" then
        local lo = { jitter = f.opts.jitter }
        for k, v in pairs(fo) do lo[k] = v end
        p:latency(arg, lo)
      elseif action == "bandwidth" or action == "limit_data" then p[action](p, arg, fo)
      elseif action == "blackhole" then p:blackhole(fo)
      elseif action == "reset" then p:reset { probability = fo.probability }
      elseif action == "down" then p:down()
      else p:slicer(arg) end
    end
  end
  f.undo = function(_, proxies) for _, p in ipairs(proxies) do p:clear() end end
  -- checked now, not at the first firing
  if f.opts.jitter and action ~= "latency" then fail(ctx, "jitter", "is for latency only") end
  return f
end

-- custom{ start = fn(targets, rng) -> state, heal = fn(state, targets), targets = list }
function C.custom(t)
  local ctx = "mk.fault.custom"
  local f = new_fault("custom", ctx, t, { start = types.required(types.func), heal = types.required(types.func),
    targets = types.table })
  if t[1] ~= nil then fail(ctx, "[1]", "is not expected: give targets = { ... }") end
  f.name = f.opts.name or "custom"
  local list = f.opts.targets
  f.targets = list and targets_opt(ctx, list, "targets") or function() return { f.name } end
  f.pick = f.opts.pick or (list and "one" or "all")
  f.act = function(occ, targets, rng) occ.state = f.opts.start(targets, rng) end
  f.undo = function(occ, targets) f.opts.heal(occ.state, targets) end
  return f
end

-- A plain { start = fn, heal = fn } in faults = {...} is a custom fault.
local function as_fault(v, i)
  if getmetatable(v) == Fault then return v end
  if type(v) == "table" and getmetatable(v) == nil and type(v.start) == "function" then
    return C.custom(v)
  end
  fail("mk.chaos", "faults[" .. i .. "]", "must be a fault (mk.fault.*) or a { start = fn, heal = fn } table", v)
end

-- ---- the schedule ------------------------------------------------------------

-- Every occurrence, drawn before the run: { fault =, i =, start =, heal =, r = }.
-- `limit`: at most that many in force at once (an occurrence that would
-- exceed it is left out, deterministically).
function C.schedule(faults, seed, duration, limit)
  local rng = C.rng(seed)
  local all = {}
  for fi, f in ipairs(faults) do
    local t = 0
    while true do
      t = t + rng:uniform(f.every)
      if t >= duration then break end
      local heal = math.min(duration, t + rng:uniform(f.lasting))
      all[#all + 1] = { fault = f, fi = fi, start = t, heal = heal, r = rng:next() }
      t = heal
    end
  end
  table.sort(all, function(a, b)
    if a.start ~= b.start then return a.start < b.start end
    return a.fi < b.fi
  end)
  local kept, in_force = {}, {}
  for _, o in ipairs(all) do
    local live = {}
    for _, x in ipairs(in_force) do if x.heal > o.start then live[#live + 1] = x end end
    in_force = live
    if limit == true or #in_force < limit then
      kept[#kept + 1] = o
      in_force[#in_force + 1] = o
    end
  end
  for i, o in ipairs(kept) do o.i = i end
  return kept
end

-- ---- the history -------------------------------------------------------------

local function short(v)
  local tv = type(v)
  if tv == "string" then return #v > 60 and (v:sub(1, 57) .. "...") or v end
  if tv == "table" then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    if #v == n and n <= 8 then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = short(x) end
      return "[" .. table.concat(parts, " ") .. "]"
    end
    return string.format("{%d items}", n)
  end
  return tostring(v)
end
C.short = short

-- One line of the history, as excerpts print it.
function C.format_entry(e, t0)
  local at = string.format("%+9.3fs", e.time - (t0 or 0))
  if e.type == "fault" then
    return string.format("%s  nemesis %-6s %s%s%s", at, e.f, e.fault, e.targets and (" on " .. e.targets) or "",
      e.error and (" FAILED: " .. e.error) or "")
  elseif e.type == "mark" then
    return string.format("%s  %-7s mark   %s", at, tostring(e.process), e.value)
  end
  local extra = ""
  if e.type ~= "invoke" then
    extra = string.format(" (%.1f ms)", (e.time - e.invoke_time) * 1000)
    if e.error then extra = extra .. " " .. tostring(e.error) end
  end
  return string.format("%s  c%-6s %-6s %s %s%s", at, tostring(e.process), e.type, tostring(e.f), short(e.value), extra)
end

-- ---- running -----------------------------------------------------------------

local Run = { __name = "mkharness.chaos_run" }
Run.__index = Run
C.Run = Run

-- what fn raises to end its operation as fail or info (ctx:fail, ctx:info)
local Outcome = {}

local function classify(err)
  if getmetatable(err) == Outcome then return err.type, err.reason end
  if Error.is(err, "TimeoutExpired") then return "info", err.message end
  if Error.is(err, "ExecutorError") then
    local m = tostring(err.message)
    -- refused: the request never reached a server, so it cannot have applied
    if m:find("Couldn't connect", 1, true) or m:find("onnection refused", 1, true) then return "fail", m end
    return "info", m
  end
  return nil
end
C.classify = classify

local Ctx = { __name = "mkharness.chaos_ctx" }
Ctx.__index = Ctx
C.Ctx = Ctx

function Ctx:running() return not self._run._ending end
function Ctx:elapsed() return core.now() - self._run.t0 end
function Ctx:sleep(s) require("mkharness.wait").sleep(s) end
function Ctx:fail(reason) error(setmetatable({ type = "fail", reason = reason }, Outcome), 0) end
function Ctx:info(reason) error(setmetatable({ type = "info", reason = reason }, Outcome), 0) end
function Ctx:mark(text, fields)
  require("mkharness").mark(text, fields)
  local run = self._run
  run:_push { index = run._n + 1, type = "mark", process = self.client, value = text, time = core.now() }
end

-- invoke(f, value, fn): record the invoke, call fn(value, ctx), record the
-- completion. fn returning = ok (its result, when not nil, is the op's
-- value: a read's); ctx:fail(why) = fail; ctx:info(why), a timeout or a
-- broken connection = info (indeterminate). Returns the value and type.
-- Each entry is made whole by its table constructor (sized once, no
-- field added later): this runs for every operation.
local core_now = core.now
function Ctx:invoke(f, value, fn)
  if type(fn) ~= "function" then
    Error.raise("ConfigError", { message = "ctx:invoke(f, value, fn): fn must be a function, got " .. options.describe(fn),
      option = "fn" })
  end
  local run, client = self._run, self.client
  local i0, t0 = run._n + 1, core_now()
  local inv = { index = i0, type = "invoke", f = f, value = value, process = client, time = t0 }
  run:_push(inv)
  self._inflight = inv
  local ok, res = pcall(fn, value, self)
  local t1 = core_now()
  self._inflight = nil
  local c
  if ok then
    if res == nil then res = value end
    c = { index = run._n + 1, type = "ok", f = f, value = res, process = client, time = t1, invoke = i0,
      invoke_time = t0 }
    run:_push(c)
  else
    local ty, why = classify(res)
    c = { index = run._n + 1, type = ty or "info", f = f, value = value, process = client, time = t1, invoke = i0,
      invoke_time = t0, error = why or tostring(res) }
    run:_push(c)
    if not ty then -- a bug or a crash, not an outcome: recorded, then raised
      run:_op_event(c)
      error(res, 0)
    end
  end
  local p = run._pending
  local n = #p + 1
  p[n] = c
  if n >= 4096 then run:_flush()
  elseif n % 256 == 0 then loop.collect() end -- for a workload that never waits
  return c.value, c.type
end

-- The history, while the run goes, is kept in chunks: the collector's one
-- indivisible step per cycle reads again, whole, every table written to
-- since it was traversed, and a single list of a long run's entries took
-- milliseconds there. run.history is the one list once the run ends.
local CHUNK = 4096
function Run:_push(e)
  local k = self._k + 1
  local h = self._h
  if k > CHUNK then
    h, k = {}, 1
    self._h = h
    self._chunks[#self._chunks + 1] = h
  end
  h[k] = e
  self._k, self._n = k, e.index
end

function Run:_seal()
  local out, n = {}, 0
  for _, ch in ipairs(self._chunks) do
    table.move(ch, 1, #ch, n + 1, out)
    n = n + #ch
  end
  self.history, self._chunks, self._h = out, nil, nil
end

function Run:_op_event(c)
  local p = self._pending
  p[#p + 1] = c
  if #p >= 4096 then self:_flush() end
end

-- JSON text of a string, as the report encoder would give it, at a
-- fraction of its cost: an op line is written for every operation.
local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function jstr(s)
  s = tostring(s)
  -- most values need no escaping: one scan says so
  if not s:find('[%c"\\\128-\255]') then return '"' .. s .. '"' end
  if not utf8.len(s) then s = json.fix_utf8(s) end
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or string.format("\\u%04x", c:byte()) end) .. '"'
end
C.jstr = jstr

-- One op line's fixed pieces are the same for most of a run's operations:
-- each is encoded once, and core.op_add puts a line together (the two
-- times as "%.9f" writes them, at a fraction of string.format's cost) in
-- a buffer core.op_take gives back whole, one string per batch.
local op_add, op_take = core.op_add, core.op_take
local TAILS = setmetatable({}, { __index = function(t, ty)
  local s = ',"type":"' .. tostring(ty) .. '","value":'
  if type(ty) == "string" then t[ty] = s end
  return s
end })

local function op_head(client, err, f)
  return '{"client":' .. client .. "," .. err .. '"event":"op","f":' .. f .. ',"index":'
end

-- operations to events.jsonl, one line each (written in batches); keys
-- in sorted order, as every other event line
function Run:_flush()
  local p = self._pending
  local np = #p
  if np == 0 then return end
  self._pending = {}
  local fmt, mtype = string.format, math.type
  local heads = self._jheads or {} -- [process][f]: the line up to its index
  self._jheads = heads
  for i = 1, np do
    local c = p[i]
    local proc, f, err = c.process, c.f, c.error
    local head
    local byf = heads[proc]
    if byf then head = byf[f] end
    if not head or err then
      local client = mtype(proc) == "integer" and tostring(proc) or jstr(proc)
      if err then
        head = op_head(client, '"error":' .. jstr(tostring(err):sub(1, 200)) .. ",", jstr(f))
      else
        head = op_head(client, "", jstr(f))
        local tp, tf = type(proc), type(f)
        -- kept for the names a workload uses (a key cannot be nil or NaN)
        if (tp == "string" or mtype(proc) == "integer") and (tf == "string" or mtype(f) == "integer") then
          if not byf then byf = {} heads[proc] = byf end
          byf[f] = head
        end
      end
    end
    local v = c.value
    local tv = mtype(v)
    -- numbers as JSON numbers (a finite float with all its digits), the rest as short text
    if tv ~= "integer" then
      v = (tv == "float" and v == v and v ~= math.huge and v ~= -math.huge) and fmt("%.17g", v) or jstr(short(v))
    end
    op_add(head, c.index, c.time, c.invoke_time, TAILS[c.type], v)
  end
  events.write_lines { op_take() }
end

local function names_of(list)
  local out = {}
  for i, x in ipairs(list) do out[i] = target_name(x) end
  return table.concat(out, ",")
end

-- The history entry goes in before the act, so that a fault due during
-- another's act (it fires inside it) comes after it, as it happened;
-- the event follows the act, with its outcome.
function Run:_fault_entry(occ, action)
  local e = { index = self._n + 1, type = "fault", f = action, fault = occ.fault.name, kind = occ.fault.kind,
    targets = occ.shown, time = occ.acted, occurrence = occ.i,
    planned = action == "start" and occ.start or occ.heal } -- seconds from the run's start
  self:_push(e)
  return e
end

function Run:_fault_event(occ, e, err)
  local action = e.f
  e.targets, e.error = occ.shown, err and tostring(err) or nil
  local planned = self.t0 + (action == "start" and occ.start or occ.heal)
  events.emit("fault", { action = action, fault = occ.fault.name, kind = occ.fault.kind, targets = occ.shown,
    occurrence = occ.i, offset = occ.acted - self.t0, planned = planned - self.t0,
    late_ms = (occ.acted - planned) * 1000, error = e.error, seed = self.seed },
    string.format("chaos: %s %s%s%s", action, occ.fault.name, occ.shown and (" on " .. occ.shown) or "",
      err and (" FAILED: " .. tostring(err)) or ""))
end

function Run:_start(occ)
  local f = occ.fault
  occ.acted = core.now() -- the instant before the act: lateness counts from here
  occ.started = occ.acted
  self.late[#self.late + 1] = occ.acted - (self.t0 + occ.start)
  local rng = C.rng(occ.r)
  local entry
  local ok, err = pcall(function()
    local all = type(f.targets) == "function" and f.targets() or f.targets
    local free = {}
    for _, x in ipairs(all) do if not self.busy[x] then free[#free + 1] = x end end
    local chosen = choose(f.pick, free, rng)
    if #chosen == 0 then occ.skipped = true return end
    occ.chosen = chosen
    occ.shown = names_of(chosen)
    for _, x in ipairs(chosen) do self.busy[x] = occ end
    occ.in_force = true
    entry = self:_fault_entry(occ, "start")
    local detail = f.act(occ, chosen, rng)
    if type(detail) == "string" then occ.shown = detail end
  end)
  if occ.skipped then
    events.emit("fault", { action = "skip", fault = f.name, occurrence = occ.i },
      "chaos: skip " .. f.name .. " (no free target)")
    return
  end
  entry = entry or self:_fault_entry(occ, "start") -- the targets could not be had
  self:_fault_event(occ, entry, not ok and err or nil)
  if not ok then
    self.errors[#self.errors + 1] = string.format("fault %s could not start on %s: %s", f.name,
      tostring(occ.shown), tostring(err))
    -- what it may have done is undone at the heal
  end
  self.active[occ] = true
  occ.timer = loop.at(self.t0 + occ.heal, function() self:_heal(occ) end)
end

function Run:_heal(occ)
  if not self.active[occ] then return end
  self.active[occ] = nil
  loop.cancel(occ.timer)
  occ.acted = core.now()
  local entry = self:_fault_entry(occ, "heal")
  local ok, err = pcall(occ.fault.undo, occ, occ.chosen or {}, C.rng(occ.r))
  for _, x in ipairs(occ.chosen or {}) do self.busy[x] = nil end
  occ.in_force = false
  occ.healed_at = occ.acted
  self:_fault_event(occ, entry, not ok and err or nil)
  if not ok then
    self.errors[#self.errors + 1] = string.format("fault %s could not heal on %s: %s", occ.fault.name,
      tostring(occ.shown), tostring(err))
  end
end

-- At the end: every fault in force healed, the ones not yet started dropped.
function Run:_heal_all()
  for _, occ in ipairs(self.schedule) do
    if occ.start_timer then loop.cancel(occ.start_timer) end
  end
  local list = {}
  for occ in pairs(self.active) do list[#list + 1] = occ end
  table.sort(list, function(a, b) return a.i < b.i end)
  for _, occ in ipairs(list) do self:_heal(occ) end
end

-- The client scheduler: resumes the clients' coroutines; a client blocked
-- in a harness wait (loop.block) yields its fds and wake time here.
local YIELD = {}
local function run_clients(run, fn, n, ctxs)
  local clients, by_co = {}, {}
  for i = 1, n do
    local ctx = ctxs[i]
    local co = coroutine.create(function() return fn(ctx) end)
    -- no count hook: Lua runs twice as fast without one, and the host
    -- hooks the client core.resume runs when a signal comes
    debug.sethook(co)
    local c = { co = co, ctx = ctx, runnable = true }
    clients[i], by_co[co] = c, c
  end
  local sched = {
    owns = function(co) return by_co[co] ~= nil end,
    yield = function(fds, left) coroutine.yield(YIELD, fds, left) end,
  }
  local prev = loop.sched
  loop.sched = sched
  local failure
  local ok, err = pcall(function()
    local alive = n
    while alive > 0 do
      local fired = loop.next_due() and loop.next_due() <= core.now()
      loop.run_due()
      local now = core.now()
      -- a client left blocked past the grace is given up (its op: info)
      if run._ending and now > run._ending + run.grace then
        for _, c in ipairs(clients) do
          if not c.done then
            c.done, alive = true, alive - 1
            local inv = c.ctx._inflight
            if inv then
              local e = { index = run._n + 1, f = inv.f, process = inv.process, time = now, invoke = inv.index,
                invoke_time = inv.time, type = "info", value = inv.value, error = "abandoned after the run's grace" }
              run:_push(e)
              run:_op_event(e)
            end
            coroutine.close(c.co)
          end
        end
        break
      end
      local ran = false
      for _, c in ipairs(clients) do
        if not c.done and (c.runnable or fired or (c.wake and c.wake <= now)) then
          ran = true
          c.runnable = false
          local r = table.pack(core.resume(c.co))
          if not r[1] then
            failure = failure or { err = r[2], client = c.ctx.client, tb = debug.traceback(c.co) }
            c.done, alive = true, alive - 1
            run._ending = run._ending or core.now()
            run:_heal_all()
          elseif coroutine.status(c.co) == "dead" then
            c.done, alive = true, alive - 1
          elseif r[2] == YIELD then
            c.fds = r[3] or {}
            c.wake = (r[4] and r[4] >= 0) and (core.now() + r[4]) or nil
          else -- a plain coroutine.yield(): runnable again next pass
            c.runnable, c.fds, c.wake = true, {}, nil
          end
        end
      end
      if alive > 0 and not ran then
        local fds, wake, owner = {}, math.huge, {}
        for _, c in ipairs(clients) do
          if not c.done then
            for _, fd in ipairs(c.fds or {}) do
              fds[#fds + 1] = fd
              owner[fd] = owner[fd] or {}
              table.insert(owner[fd], c)
            end
            if c.wake then wake = math.min(wake, c.wake) end
          end
        end
        local due = loop.next_due()
        if due then wake = math.min(wake, due) end
        if run._ending then wake = math.min(wake, run._ending + run.grace) end
        loop.collect(due)
        local ready = core.poll(crash.fds(fds), wake == math.huge and -1 or math.max(0, wake - core.now()))
        for fd in pairs(ready) do
          for _, c in ipairs(owner[fd] or {}) do c.runnable = true end
        end
      elseif alive > 0 then
        -- a crash of a held service wakes nobody's fds: look now
        crash.check()
      end
    end
  end)
  loop.sched = prev
  if not ok then
    for _, c in ipairs(clients) do if not c.done then coroutine.close(c.co) end end
    error(err, 0)
  end
  return failure
end

function C.chaos(t)
  local ctx = "mk.chaos"
  local o = options.check(ctx, t, CHAOS)
  for k in pairs(t) do
    if math.type(k) == "integer" then fail(ctx, "[" .. k .. "]", "is not expected: mk.chaos takes named options") end
  end
  local faults = {}
  for i, v in ipairs(o.faults or {}) do faults[i] = as_fault(v, i) end
  local env = os.getenv("MKHARNESS_SEED")
  local seed = o.seed
  local seed_from
  if env and env ~= "" then
    seed = math.tointeger(tonumber(env))
    if not seed or seed < 0 then
      Error.raise("ConfigError", { option = "MKHARNESS_SEED",
        message = "MKHARNESS_SEED must be an integer >= 0, got " .. options.describe(env) })
    end
    seed_from = "MKHARNESS_SEED"
  elseif seed == nil then
    -- no seed given: one from the clock, printed so the run can be replayed
    seed = math.tointeger(math.floor((core.now() * 1e6) % 1e9)) ~ (os.time() % 100000)
    seed_from = "random"
  end
  local limit = o.concurrent == nil and 1 or o.concurrent == false and 1 or o.concurrent
  local run = setmetatable({
    seed = seed, seed_from = seed_from or "seed", duration = o.duration, name = o.name or "chaos",
    _chunks = {}, _k = 0, _n = 0, _pending = {}, late = {}, errors = {}, active = {}, busy = {},
    grace = o.grace or 5, faults = faults,
  }, Run)
  run._h = {}
  run._chunks[1] = run._h
  run.schedule = C.schedule(faults, seed, o.duration, limit)
  local n = o.clients or 1
  local ctxs = {}
  for i = 1, n do
    ctxs[i] = setmetatable({ client = i, seed = seed, rng = C.rng(seed ~ (i * 0x5851f42d4c957f2d)), _run = run }, Ctx)
  end

  local prev_hook, prev_err = events.before_emit, loop.on_error
  events.emit("chaos", { action = "begin", seed = seed, seed_from = run.seed_from, duration = o.duration,
    faults = #faults, planned = #run.schedule, clients = n },
    string.format("chaos: %s begins: seed %d%s, %g s, %d faults planned, %d client%s", run.name, seed,
      run.seed_from == "MKHARNESS_SEED" and " (from MKHARNESS_SEED)" or "", o.duration, #run.schedule, n,
      n == 1 and "" or "s"))
  events.before_emit = function() run:_flush() end
  loop.on_error = function(err) run.errors[#run.errors + 1] = "chaos timer: " .. tostring(err) end
  run.t0 = core.now()
  for _, occ in ipairs(run.schedule) do
    occ.start_timer = loop.at(run.t0 + occ.start, function() run:_start(occ) end)
  end
  local end_timer = loop.at(run.t0 + o.duration, function()
    run._ending = core.now()
    run:_heal_all()
  end)

  -- the collector is paced only for faults: they are what must be on time
  local paced = run.schedule[1] ~= nil
  if paced then loop.hold_gc() end
  local ok, failure = pcall(run_clients, run, o.workload, n, ctxs)
  if paced then loop.release_gc() end
  -- whatever happened: every fault healed, no timer left behind
  loop.cancel(end_timer)
  run._ending = run._ending or core.now()
  run:_heal_all()
  run.ended = core.now()
  if ok and not failure and o.final and #run.errors == 0 then
    local fctx = setmetatable({ client = "final", seed = seed, rng = C.rng(seed ~ 0x7f4a7c15), _run = run,
      final = true }, Ctx)
    local fok, ferr = pcall(o.final, fctx)
    if not fok then failure = { err = ferr, client = "final" } end
  end
  run:_seal()
  core.http_release() -- the multi handles the clients' requests reused (their fds)
  run:_flush()
  events.before_emit, loop.on_error = prev_hook, prev_err
  local okn, failn, infon = 0, 0, 0
  for _, e in ipairs(run.history) do
    if e.type == "ok" then okn = okn + 1 elseif e.type == "fail" then failn = failn + 1
    elseif e.type == "info" then infon = infon + 1 end
  end
  run.counts = { ok = okn, fail = failn, info = infon }
  events.emit("chaos", { action = "end", seed = seed, ok = okn, fail = failn, info = infon,
    errors = #run.errors > 0 and #run.errors or nil },
    string.format("chaos: %s ends: %d ok, %d fail, %d info operations", run.name, okn, failn, infon))
  if not ok then error(failure, 0) end
  if failure then
    local e = failure.err
    local where = " (seed " .. seed .. ", client " .. tostring(failure.client) .. ")"
    if Error.is(e) then
      e.message = tostring(e.message) .. where
      e.seed = seed
      error(e, 0)
    end
    error(tostring(e) .. where .. (failure.tb and ("\n" .. failure.tb) or ""), 0)
  end
  if #run.errors > 0 then
    Error.raise("FaultError", { seed = seed, faults = run.errors,
      message = string.format("chaos %s (seed %d): %s", run.name, seed, table.concat(run.errors, "; ")) })
  end
  return run
end

-- ---- the run's API -----------------------------------------------------------

-- The operations (completions, or with `all` invokes too) of function f.
function Run:ops(f, all)
  local out = {}
  for _, e in ipairs(self.history) do
    if (e.type == "ok" or e.type == "fail" or e.type == "info" or (all and e.type == "invoke"))
      and (f == nil or e.f == f) then
      out[#out + 1] = e
    end
  end
  return out
end

-- The fault occurrences that happened: { name, kind, targets, start, heal }
-- (times relative to the run's start).
function Run:fault_log()
  local out = {}
  for _, occ in ipairs(self.schedule) do
    if occ.started and not occ.skipped then
      out[#out + 1] = { name = occ.fault.name, kind = occ.fault.kind, targets = occ.shown,
        start = occ.started - self.t0, heal = occ.healed_at and (occ.healed_at - self.t0) or nil,
        planned_start = occ.start, planned_heal = occ.heal }
    end
  end
  return out
end

-- run:check(checker [, { quiet = true }]): raises CheckFailed, or returns
-- the result (and prints its summary).
function Run:check(checker, opts)
  return require("mkharness.check").run(self, checker, opts)
end

function Run:__tostring()
  local n = self.history and #self.history or self._n -- chunked while the run goes
  return string.format("mkharness.chaos_run %s (seed %d, %d history entries)", self.name, self.seed, n)
end

return C
