-- Helpers for bench/run.lua: statistics, /proc readers, the table and JSON.
local L = {}

---------------------------------------------------------------- statistics
-- Nearest-rank percentiles over a copy of the samples (no interpolation:
-- every figure printed is one that was actually measured).
function L.stats(samples)
  local s = {}
  for i, v in ipairs(samples) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return { n = 0 } end
  local function rank(p) return s[math.max(1, math.min(n, math.ceil(p * n)))] end
  local sum = 0
  for _, v in ipairs(s) do sum = sum + v end
  local med = rank(0.5)
  return { n = n, median = med, p90 = rank(0.9), max = s[n], min = s[1], mean = sum / n,
    ci = L.median_ci(s, med) }
end

-- Distribution-free 95 % confidence interval of the median, as a fraction
-- of the median: the order statistics n/2 -+ 0.98 sqrt(n) (normal
-- approximation of the binomial). Needs no assumption about the shape of
-- the samples, which are skewed here (a floor and a long tail). `s` sorted.
function L.median_ci(s, med)
  local n = #s
  if n < 6 or not med or med == 0 then return nil end
  local h = 0.98 * math.sqrt(n)
  local lo = s[math.max(1, math.floor(n / 2 - h))]
  local hi = s[math.min(n, math.ceil(n / 2 + 1 + h))]
  return math.max(med - lo, hi - med) / math.abs(med)
end

-- Adaptive n: keep sampling until the median's 95 % interval is within
-- ±tol of it (at least nmin samples, at most nmax: rows capped at nmax
-- print their wider interval).
function L.enough(samples, nmin, nmax, tol)
  local n = #samples
  if n < nmin then return false end
  if n >= nmax then return true end
  local st = L.stats(samples)
  return st.ci ~= nil and st.ci <= (tol or 0.10)
end

---------------------------------------------------------------- /proc
local function slurp(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
L.slurp = slurp

-- CPU time of this process (all threads) and of its reaped children, in
-- seconds, from /proc/self/stat (clock ticks; CLK_TCK given by the caller).
function L.cpu_times(tck)
  local s = slurp("/proc/self/stat")
  local rest = s:match("%)%s+(.*)$")
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  -- f[1] is field 3 (state): utime = field 14 -> f[12]
  local ut, st, cut, cst = tonumber(f[12]), tonumber(f[13]), tonumber(f[14]), tonumber(f[15])
  return (ut + st) / tck, (cut + cst) / tck
end

-- Nanosecond CPU time of the main thread (scheduler accounting), or nil.
function L.schedstat_ns()
  local s = slurp("/proc/self/schedstat")
  return s and tonumber(s:match("^(%d+)")) or nil
end

function L.rss_kb()
  local s = slurp("/proc/self/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

---------------------------------------------------------------- formatting
local function fnum(v, digits)
  -- 3 significant digits, no exponent
  if v == 0 then return "0" end
  local a = math.abs(v)
  local d = a >= 100 and 0 or a >= 10 and 1 or a >= 1 and 2 or 3
  if digits then d = digits end
  return string.format("%." .. d .. "f", v)
end

function L.fmt(v, unit)
  if v == nil then return "-" end
  if unit == "s" then
    if math.abs(v) >= 1 then return fnum(v) .. " s" end
    if math.abs(v) >= 0.001 then return fnum(v * 1000) .. " ms" end
    return fnum(v * 1e6) .. " µs"
  elseif unit == "MB" then return fnum(v) .. " MB"
  elseif unit == "%" then return fnum(v) .. " %"
  elseif unit == "x" then return fnum(v) .. "×"
  elseif unit == "count" then return string.format("%d", v)
  end
  return fnum(v) .. (unit and (" " .. unit) or "")
end

-- a target in seconds, as targets are written: "1 ms", "0.3 s"
function L.fmt_target(v)
  if v >= 1 then return string.format("%g s", v) end
  if v >= 0.1 then return string.format("%g s", v) end
  return string.format("%g ms", v * 1000)
end

-- display width of a UTF-8 string (for alignment with µs, ≤, ×)
local function width(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

local function pad(s, w, right)
  local fill = string.rep(" ", math.max(0, w - width(s)))
  return right and (fill .. s) or (s .. fill)
end

-- rows: list of arrays of cells; align: per column, true = right
function L.table(header, rows, align)
  local w = {}
  for i, h in ipairs(header) do w[i] = width(h) end
  for _, r in ipairs(rows) do
    if not r.section then
      for i = 1, #header do w[i] = math.max(w[i], width(r[i] or "")) end
    end
  end
  local total = #header - 1
  for i = 1, #header do total = total + w[i] + 1 end
  local out = {}
  local function line(r)
    local cells = {}
    for i = 1, #header do cells[i] = pad(r[i] or "", w[i], align[i]) end
    out[#out + 1] = (table.concat(cells, "  "):gsub("%s+$", ""))
  end
  line(header)
  out[#out + 1] = string.rep("-", total)
  for _, r in ipairs(rows) do
    if r.section then out[#out + 1] = r.section else line(r) end
  end
  return table.concat(out, "\n") .. "\n"
end

---------------------------------------------------------------- JSON
local function json(v, ind)
  ind = ind or ""
  local t = type(v)
  if t == "nil" then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return string.format("%.9g", v)
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }
      return map[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "table" then
    local inner = ind .. "  "
    if #v > 0 or next(v) == nil then
      if next(v) == nil then return "[]" end
      local parts = {}
      for _, x in ipairs(v) do parts[#parts + 1] = inner .. json(x, inner) end
      return "[\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = inner .. json(k) .. ": " .. json(v[k], inner) end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
  end
  return json(tostring(v))
end
L.json = json

return L
