-- Checkers over a chaos run's history (mk.check.*), and run:check().
--
-- A checker is a table { name =, check = fn(h, opts) -> result, opts = },
-- callable to set options: mk.check.set{ add = "put" }. A result is
-- { valid =, summary =, bad = { { entry =, why =, until_t = }... }, ... }.
-- `h` is the history prepared once per check: entries in order, with
-- completions paired with their invokes.
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local events = require "mkharness.events"
local chaos = require "mkharness.chaos"
local short, format_entry = chaos.short, chaos.format_entry

local K = {}

local Checker = { __name = "mkharness.checker" }
Checker.__index = Checker
function Checker:__call(opts)
  local o = options.check("mk.check." .. self.name, opts, self.schema)
  local merged = {}
  for k, v in pairs(self.opts or {}) do merged[k] = v end
  for k, v in pairs(o) do merged[k] = v end
  return setmetatable({ name = self.name, check = self.check, schema = self.schema, opts = merged }, Checker)
end
function Checker:__tostring() return "mk.check." .. self.name end

local function checker(name, schema, fn) return setmetatable({ name = name, check = fn, schema = schema, opts = {} }, Checker) end

-- f names: a string or a list of them, as a set
local function fnames(ctx, k, v)
  if type(v) == "string" then return { [v] = true } end
  if type(v) == "table" and #v > 0 then
    local s = {}
    for _, x in ipairs(v) do
      if type(x) ~= "string" then options.fail(ctx, k, "must be an operation name or a list of them", x) end
      s[x] = true
    end
    return s
  end
  options.fail(ctx, k, "must be an operation name or a list of them", v)
end

local function pct(xs, p)
  if #xs == 0 then return nil end
  local i = math.max(1, math.min(#xs, math.ceil(p * #xs)))
  return xs[i]
end

-- Values are compared by their text: a write of 1 and a read of "1" are
-- the same value (what a store gives back over HTTP is text). Making the
-- text of every value was most of a check's cost, so a check whose values
-- are all integers, or all strings, compares them as they are: the same
-- answers, as no two such values share a text. kinds(k, v) folds v's kind
-- into k; keyer(k) is the key function for the values folded into k.
local function key(v) return tostring(v) end
local function same(v) return v end
local function kinds(k, v)
  local kv = math.type(v) == "integer" and "i" or type(v) == "string" and "s" or "x"
  if k == nil or k == kv then return kv end
  return "x"
end
local function keyer(k) return (k == "i" or k == "s") and same or key end

-- ---- set: acknowledged writes are never lost --------------------------------

-- A read's value as a list of its elements: a list, or a table e -> true.
local function elements(v)
  if type(v) ~= "table" then return nil end
  if #v > 0 or next(v) == nil then return v end
  local out = {}
  for k, x in pairs(v) do if x then out[#out + 1] = k end end
  return out
end

K.set = checker("set", { add = fnames, read = fnames }, function(h, o)
  local adds, reads = o.add or { add = true, write = true }, o.read or { read = true }
  local final
  for i = #h, 1, -1 do
    local e = h[i]
    if e.type == "ok" and reads[e.f] then final = e break end
  end
  local n = { ok = 0, fail = 0, info = 0 }
  local done, kind = {}, nil -- the adds' completions; the kind of their values
  for _, e in ipairs(h) do
    if adds[e.f] and (e.type == "ok" or e.type == "fail" or e.type == "info") then
      n[e.type] = n[e.type] + 1
      done[#done + 1] = e
      kind = kinds(kind, e.value)
    end
  end
  if not final then
    return { valid = false, summary = "set: no successful read to check the writes against",
      bad = {}, why = "no final read" }
  end
  local els = elements(final.value)
  if not els then
    return { valid = false, summary = "set: the final read's value is not a list or set: " .. short(final.value),
      bad = { { entry = final, why = "not a set" } } }
  end
  for _, x in ipairs(els) do kind = kinds(kind, x) end
  local kf = keyer(kind)
  local by = {} -- key -> the add's completion (the first ok, else the last)
  for _, e in ipairs(done) do
    local kv = kf(e.value)
    local b = by[kv]
    if not b or b.type ~= "ok" then by[kv] = e end
  end
  local seen = {}
  for _, x in ipairs(els) do seen[kf(x)] = true end
  local bad, lost, recovered, unexpected = {}, 0, 0, 0
  for k, e in pairs(by) do
    if e.type == "ok" and not seen[k] and e.time < final.invoke_time then
      lost = lost + 1
      bad[#bad + 1] = { entry = e, why = "acknowledged write " .. k .. " is missing from the final read",
        until_t = final.time }
    elseif e.type == "info" and seen[k] then
      recovered = recovered + 1
    end
  end
  local size = 0
  for k in pairs(seen) do
    size = size + 1
    local e = by[k]
    if not e or e.type == "fail" then
      unexpected = unexpected + 1
      bad[#bad + 1] = { entry = e or final, until_t = final.time, why = e and ("value " .. k ..
        " is in the final read but its write failed") or ("value " .. k .. " is in the final read but was never written") }
    end
  end
  table.sort(bad, function(a, b) return a.entry.index < b.entry.index end)
  return {
    valid = #bad == 0, bad = bad, lost = lost, recovered = recovered, unexpected = unexpected,
    summary = string.format("set: %d writes (%d ok, %d fail, %d info); the final read (%s) holds %d values: " ..
      "%d of the %d acknowledged lost, %d indeterminate recovered, %d unexpected",
      n.ok + n.fail + n.info, n.ok, n.fail, n.info, final.process == "final" and "after healing" or
      ("client " .. tostring(final.process)), size, lost, n.ok, recovered, unexpected),
  }
end)
K.no_lost_writes = K.set

-- ---- counter: never backwards, ends at what was acknowledged ----------------

K.counter = checker("counter", { add = fnames, read = fnames }, function(h, o)
  local adds, reads = o.add or { add = true, incr = true }, o.read or { read = true }
  local okdone, attempted, maxdone = 0, 0, -math.huge
  local at_invoke = {} -- invoke index -> { lower, floor }
  local bad, nreads, nadds = {}, 0, 0
  local delta_of = {}
  local last
  for _, e in ipairs(h) do
    local ty = e.type
    if adds[e.f] then
      if ty == "invoke" then
        local d = tonumber(e.value) or 1
        delta_of[e.index] = d
        attempted = attempted + d
      elseif ty == "ok" then
        nadds = nadds + 1
        okdone = okdone + (delta_of[e.invoke] or tonumber(e.value) or 1)
      elseif ty == "fail" then
        attempted = attempted - (delta_of[e.invoke] or tonumber(e.value) or 1)
      end
    elseif reads[e.f] then
      if ty == "invoke" then
        at_invoke[e.index] = { okdone, maxdone }
      elseif ty == "ok" then
        nreads = nreads + 1
        local v = tonumber(e.value)
        local b = at_invoke[e.invoke] or { 0, -math.huge }
        if v == nil then
          bad[#bad + 1] = { entry = e, why = "read a non-number: " .. short(e.value) }
        elseif v < b[2] then
          bad[#bad + 1] = { entry = e, why = string.format("went backwards: read %s after a read of %s had completed", v, b[2]) }
        elseif v < b[1] then
          bad[#bad + 1] = { entry = e, why = string.format("read %s, but %s were acknowledged before it began", v, b[1]) }
        elseif v > attempted then
          bad[#bad + 1] = { entry = e, why = string.format("read %s, more than the %s ever attempted (ok + indeterminate)", v, attempted) }
        end
        if v and v > maxdone then maxdone = v end
        last = e
      end
    end
  end
  return { valid = #bad == 0, bad = bad, final = last and last.value,
    summary = string.format("counter: %d acknowledged adds summing to %s, %d reads; the last read %s " ..
      "(slack of indeterminate adds: %s); %d bad reads", nadds, okdone, nreads,
      last and tostring(last.value) or "(none)", attempted - okdone, #bad) }
end)

-- ---- register: a read returns only what was written -------------------------

K.register = checker("register", { write = fnames, read = fnames, initial = function(_, _, v) return v end },
  function(h, o)
    local writes, reads = o.write or { write = true }, o.read or { read = true }
    local inv, vals, fails, rds = {}, {}, {}, {}
    local k -- the kind of every value compared
    -- a nil value stands as its text: only text keys can hold it
    local function value(v)
      if v == nil then k = "x" return "nil" end
      k = kinds(k, v)
      return v
    end
    for _, e in ipairs(h) do
      if e.invoke then inv[e.invoke] = nil end -- completed: not abandoned
      if writes[e.f] then
        local ty = e.type
        if ty == "invoke" then inv[e.index] = e
        elseif ty == "fail" then fails[#fails + 1] = e.value == nil and "nil" or e.value
        elseif ty == "ok" or ty == "info" then vals[#vals + 1] = value(e.value) end
      elseif reads[e.f] and e.type == "ok" then
        rds[#rds + 1] = e
        if e.value ~= nil then k = kinds(k, e.value) end
      end
    end
    -- an invoke with no completion (abandoned) may have applied
    for _, e in pairs(inv) do vals[#vals + 1] = value(e.value) end
    local initial = o.initial
    if initial ~= nil then k = kinds(k, initial) end
    local kf = keyer(k)
    local written = {}
    for _, v in ipairs(vals) do written[kf(v)] = true end
    local bad, failed = {}, nil
    local ki = initial ~= nil and kf(initial)
    for _, e in ipairs(rds) do
      local v = e.value
      if v ~= nil and kf(v) ~= ki and not written[kf(v)] then
        if not failed then
          failed = {}
          for _, x in ipairs(fails) do failed[key(x)] = true end
        end
        bad[#bad + 1] = { entry = e, why = failed[key(v)] and ("read " .. short(v) .. ", whose write failed")
          or ("read " .. short(v) .. ", which was never written") }
      end
    end
    local n = #rds
    local nw = 0
    for _ in pairs(written) do nw = nw + 1 end
    return { valid = #bad == 0, bad = bad,
      summary = string.format("register: %d reads, %d distinct values written (ok or indeterminate); %d reads of a value never written",
        n, nw, #bad) }
  end)

-- ---- latency and availability by phase --------------------------------------

local function stats(list)
  local lat, ok = {}, 0
  for _, e in ipairs(list) do
    if e.type == "ok" then ok = ok + 1 lat[#lat + 1] = (e.time - e.invoke_time) * 1000 end
  end
  table.sort(lat)
  return { n = #list, ok = ok, availability = #list > 0 and ok / #list or nil,
    p50 = pct(lat, 0.5), p99 = pct(lat, 0.99), max = lat[#lat] }
end

local function fmt_stats(s)
  local function ms(x) return x and string.format("%.1f", x) or "-" end
  return string.format("%5d ops %6s ok  p50 %7s  p99 %7s  max %7s ms", s.n,
    s.availability and string.format("%.0f%%", s.availability * 100) or "-", ms(s.p50), ms(s.p99), ms(s.max))
end

local function number_in(lo, hi, what)
  return function(ctx, k, v)
    if type(v) ~= "number" or v ~= v or v < lo or v > hi then options.fail(ctx, k, "must be " .. what, v) end
    return v
  end
end
local LATENCY = { f = fnames, max_p99 = number_in(0, math.huge, "a number of milliseconds >= 0"),
  min_availability = number_in(0, 1, "a share from 0 to 1") }
K.latency = checker("latency", LATENCY, function(h, o)
  local ops = {}
  for _, e in ipairs(h) do
    if e.invoke_time and (e.type == "ok" or e.type == "fail" or e.type == "info") and (not o.f or o.f[e.f]) then
      ops[#ops + 1] = e
    end
  end
  -- completions come in nearly invoke order: sort only when needed
  for i = 2, #ops do
    if ops[i].invoke_time < ops[i - 1].invoke_time then
      table.sort(ops, function(a, b) return a.invoke_time < b.invoke_time end)
      break
    end
  end
  local function between(a, b) -- ops invoked in [a, b)
    local lo, hi = 1, #ops + 1
    while lo < hi do
      local mid = (lo + hi) // 2
      if ops[mid].invoke_time < a then lo = mid + 1 else hi = mid end
    end
    local out = {}
    for i = lo, #ops do
      if ops[i].invoke_time >= b then break end
      out[#out + 1] = ops[i]
    end
    return out
  end
  -- the fault occurrences, from their start and heal entries
  local occs, open = {}, {}
  for _, e in ipairs(h) do
    if e.type == "fault" then
      local id = e.occurrence or e.fault
      if e.f == "start" then
        open[id] = { name = e.fault, targets = e.targets, a = e.time }
        occs[#occs + 1] = open[id]
      elseif e.f == "heal" and open[id] then
        open[id].b = e.time
        open[id] = nil
      end
    end
  end
  local t_end = h[#h] and h[#h].time or 0
  local lines, bad, phases = {}, {}, {}
  local in_force, calm = {}, {}
  -- the times some fault was in force, as disjoint spans in order, met
  -- by the operations (in invoke order) in one pass: a long run has
  -- hundreds of occurrences and a test on each for each operation took
  -- seconds
  local spans = {}
  for i, oc in ipairs(occs) do spans[i] = { oc.a, oc.b or t_end } end
  table.sort(spans, function(x, y) return x[1] < y[1] end)
  local merged = {}
  for _, sp in ipairs(spans) do
    local last = merged[#merged]
    if last and sp[1] <= last[2] then
      if sp[2] > last[2] then last[2] = sp[2] end
    else
      merged[#merged + 1] = { sp[1], sp[2] }
    end
  end
  local j = 1
  for _, op in ipairs(ops) do
    local t = op.invoke_time
    while merged[j] and merged[j][2] < t do j = j + 1 end
    local sp = merged[j]
    if sp and t >= sp[1] then in_force[#in_force + 1] = op else calm[#calm + 1] = op end
  end
  local all_calm, all_force = stats(calm), stats(in_force)
  lines[#lines + 1] = "  no fault in force    " .. fmt_stats(all_calm)
  lines[#lines + 1] = "  some fault in force  " .. fmt_stats(all_force)
  -- Before and after a fault last as long as it did (a second at least)
  -- but stop at its neighbours: the last heal before it began, the next
  -- start after it healed. Each phase is then about that fault, and dense
  -- faults (one every few ms) do not each count the same second of
  -- operations again: that made a check of 100,000 operations and 500
  -- faults take 30 s.
  local starts, ends = {}, {}
  for i, oc in ipairs(occs) do starts[i], ends[i] = oc.a, oc.b or t_end end
  table.sort(starts)
  table.sort(ends)
  local function last_below(list, x) -- the largest value < x, or -inf
    local lo, hi = 1, #list + 1
    while lo < hi do
      local mid = (lo + hi) // 2
      if list[mid] < x then lo = mid + 1 else hi = mid end
    end
    return list[lo - 1] or -math.huge
  end
  local function first_above(list, x) -- the smallest value > x, or +inf
    local lo, hi = 1, #list + 1
    while lo < hi do
      local mid = (lo + hi) // 2
      if list[mid] <= x then lo = mid + 1 else hi = mid end
    end
    return list[lo] or math.huge
  end
  local SHOWN = 20 -- occurrences drawn in the table; result.phases has them all
  for i, oc in ipairs(occs) do
    local b = oc.b or t_end
    local w = math.max(b - oc.a, 1)
    local ph = { fault = oc.name, targets = oc.targets,
      before = stats(between(math.max(oc.a - w, last_below(ends, oc.a)), oc.a)),
      during = stats(between(oc.a, b)), after = stats(between(b, math.min(b + w, first_above(starts, b)))) }
    phases[#phases + 1] = ph
    if i <= SHOWN then
      lines[#lines + 1] = string.format("  %s%s:", oc.name, oc.targets and (" on " .. oc.targets) or "")
    elseif i == SHOWN + 1 then
      lines[#lines + 1] = string.format("  ... and %d more occurrences (the result's phases has them all)", #occs - SHOWN)
    end
    for _, p in ipairs { "before", "during", "after" } do
      local s = ph[p]
      if i <= SHOWN then lines[#lines + 1] = string.format("    %-7s %s", p, fmt_stats(s)) end
      if o.max_p99 and s.p99 and s.p99 > o.max_p99 then
        bad[#bad + 1] = { why = string.format("%s %s: p99 %.1f ms > max_p99 %g ms", p, oc.name, s.p99, o.max_p99) }
      end
      if o.min_availability and p ~= "during" and s.availability and s.availability < o.min_availability then
        bad[#bad + 1] = { why = string.format("%s %s: availability %.0f%% < min_availability %.0f%%", p, oc.name,
          s.availability * 100, o.min_availability * 100) }
      end
    end
  end
  return { valid = #bad == 0, bad = bad, phases = phases, calm = all_calm, in_force = all_force, table = lines,
    summary = string.format("latency: %d operations; with no fault in force %d (%s ok, p99 %s ms), with a fault in force %d " ..
      "(%s ok, p99 %s ms); %d fault occurrences by phase below",
      #ops, all_calm.n, all_calm.availability and string.format("%.0f%%", all_calm.availability * 100) or "-",
      all_calm.p99 and string.format("%.1f", all_calm.p99) or "-", all_force.n,
      all_force.availability and string.format("%.0f%%", all_force.availability * 100) or "-",
      all_force.p99 and string.format("%.1f", all_force.p99) or "-", #occs) }
end)

-- ---- running a check ------------------------------------------------------------

-- Completions without an `invoke` index (a hand-made history) are paired
-- with their process's open invoke; indexes are (re)numbered.
local function prepare(history)
  -- a run's own history is already numbered and paired: used as it is
  -- (copying 200,000 entries would cost more than most checks)
  local paired = true
  for i, e in ipairs(history) do
    if e.index ~= i or (e.type ~= "invoke" and e.type ~= "fault" and e.type ~= "mark" and not e.invoke_time) then
      paired = false
      break
    end
  end
  if paired then return history end
  local open, out = {}, {}
  for i, e in ipairs(history) do
    local c = {}
    for k, v in pairs(e) do c[k] = v end
    c.index = i
    c.time = c.time or i * 1e-3
    if c.type == "invoke" then
      open[c.process or 0] = c
    elseif c.type == "ok" or c.type == "fail" or c.type == "info" then
      local inv = open[c.process or 0]
      if inv then
        c.invoke, c.invoke_time = inv.index, inv.time
        if c.f == nil then c.f = inv.f end
        if c.value == nil then c.value = inv.value end
        open[c.process or 0] = nil
      end
      c.invoke_time = c.invoke_time or c.time
    end
    out[i] = c
  end
  return out
end
K.prepare = prepare

local function faults_between(h, a, b)
  local open, out = {}, {}
  for _, e in ipairs(h) do
    if e.type == "fault" then
      local id = e.occurrence or e.fault
      if e.f == "start" then open[id] = e
      elseif e.f == "heal" then
        local s = open[id]
        open[id] = nil
        if s and s.time <= b and e.time >= a then out[#out + 1] = { s = s, h = e } end
      end
    end
  end
  for _, s in pairs(open) do if s.time <= b then out[#out + 1] = { s = s } end end
  table.sort(out, function(x, y) return x.s.index < y.s.index end)
  return out
end

local function explain(h, res, seed, t0, name)
  local parts = { string.format("check %s failed (seed %s): %s", name, tostring(seed), res.summary) }
  local shown = 0
  for _, b in ipairs(res.bad) do
    shown = shown + 1
    if shown > 5 then
      parts[#parts + 1] = string.format("  ... and %d more", #res.bad - 5)
      break
    end
    parts[#parts + 1] = "  " .. b.why
    local e = b.entry
    if e then
      local a = e.invoke_time or e.time
      local fl = faults_between(h, a, b.until_t or e.time)
      local fs = {}
      for _, x in ipairs(fl) do
        fs[#fs + 1] = string.format("%s%s (%+.3fs..%s)", x.s.fault, x.s.targets and (" on " .. x.s.targets) or "",
          x.s.time - t0, x.h and string.format("%+.3fs", x.h.time - t0) or "not healed")
      end
      -- the first ones are the likely cause; the rest are counted
      local more = #fs > 2 and string.format(" (and %d later)", #fs - 2) or ""
      while #fs > 2 do table.remove(fs) end
      parts[#parts + 1] = (b.until_t and "    faults between it and the read that missed it: " or "    faults in force: ") ..
        (#fs > 0 and table.concat(fs, "; ") or "none") .. more
      if shown <= 3 then
        parts[#parts + 1] = "    history around it:"
        local from, to = math.max(1, (e.invoke or e.index) - 3), math.min(#h, e.index + 3)
        for i = from, to do
          parts[#parts + 1] = (i == e.index and "    > " or "      ") .. format_entry(h[i], t0)
        end
      end
    end
  end
  if res.table then
    for _, l in ipairs(res.table) do parts[#parts + 1] = l end
  end
  return table.concat(parts, "\n")
end

local CHECK_OPTS = { quiet = options.types.boolean }
function K.run(run, c, opts)
  local o = options.check("run:check", opts, CHECK_OPTS)
  local fn, name, copts
  if getmetatable(c) == Checker then fn, name, copts = c.check, c.name, c.opts
  elseif type(c) == "function" then fn, name, copts = c, "custom", {}
  else
    Error.raise("ConfigError", { option = "checker",
      message = "run:check(checker): checker must be one of mk.check.* or a function(history), got " .. options.describe(c) })
  end
  local h = run._prepared or prepare(run.history)
  run._prepared = h
  local t0 = run.t0 or (h[1] and h[1].time) or 0
  local res = fn(h, copts or {})
  res.name = name
  events.emit("check", { checker = name, valid = res.valid, bad = #res.bad, seed = run.seed },
    string.format("check %s: %s", name, res.valid and "passed" or "FAILED"))
  if not res.valid then
    Error.raise("CheckFailed", { checker = name, seed = run.seed, result = res,
      message = explain(h, res, run.seed, t0, name) })
  end
  if not o.quiet and not events.quiet then
    local text = string.format("mkharness: check %s passed (seed %s): %s\n", name, tostring(run.seed), res.summary)
    if res.table then text = text .. table.concat(res.table, "\n") .. "\n" end
    io.stderr:write(text)
  end
  return res
end

-- A history made by hand (or loaded), to check like a run's:
-- mk.check.history(entries, { seed = 1 }):check(mk.check.set)
function K.history(entries, opts)
  if type(entries) ~= "table" then
    Error.raise("ConfigError", { option = "entries", message = "mk.check.history(entries): entries must be a list, got " ..
      options.describe(entries) })
  end
  local o = options.check("mk.check.history", opts, { seed = function(_, _, v) return v end })
  return setmetatable({ history = entries, seed = o.seed, t0 = 0 }, chaos.Run)
end

return K
