-- JSON for mk.json, res:json() and the --report lines. dkjson (Debian
-- package lua-dkjson, a hard dependency) writes and reads the text; this
-- wrapper first decides the shape of every table, so that nothing is
-- dropped or changed silently: a table is a JSON array (keys 1..n, holes
-- become null) or a JSON object (string keys), anything else is a
-- ConfigError naming where in the value the problem is.
local Error = require "mkharness.errors"

local found, dkjson = pcall(require, "dkjson")
if not found then
  error("mkharness needs the Lua module dkjson (Debian package lua-dkjson): " .. tostring(dkjson), 0)
end

local J = { null = dkjson.null }

local function fail(ctx, msg)
  Error.raise("ConfigError", { message = ctx .. ": " .. msg })
end

-- Invalid UTF-8 bytes replaced by U+FFFD, one per byte; valid text unchanged.
function J.fix_utf8(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while true do
    local n, bad = utf8.len(s, i)
    if n then
      out[#out + 1] = s:sub(i)
      return table.concat(out)
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = "\u{FFFD}"
    i = bad + 1
  end
end

-- Numbers go to dkjson as ready-made text: it would write floats with 14
-- significant digits (0.1 + 0.2 would read back as 0.3), and it takes a
-- numeric "n" field for an array length, so {n = 5} would become five nulls.
local Num = { __tojson = function(self) return self[1] end }
local NULL = setmetatable({ "null" }, Num)

local function number_text(x)
  if math.type(x) == "integer" then return tostring(x) end
  for digits = 15, 17 do -- the shortest form that reads back as the same double
    local s = string.format("%." .. digits .. "g", x)
    if tonumber(s) == x then return s end
  end
end

local Obj = { __jsontype = "object" } -- empty objects only; others get their key order
local Arr = { __jsontype = "array" }

local function key_path(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return path .. "." .. k end
  return path .. "[" .. (type(k) == "string" and string.format("%q", k) or tostring(k)) .. "]"
end

local function describe_key(k)
  if type(k) == "string" then return string.format("%q", k) end
  return type(k) .. " " .. tostring(k)
end

-- A copy of v that dkjson encodes exactly as decided here. `lenient` (the
-- report) replaces invalid UTF-8 and writes NaN/inf as null instead of failing.
local function normalize(v, ctx, path, seen, lenient)
  local t = type(v)
  if t == "string" then
    if utf8.len(v) then return v end
    if lenient then return J.fix_utf8(v) end
    local _, bad = utf8.len(v)
    fail(ctx, string.format("%s: string is not valid UTF-8 (bad byte at %d)", path, bad))
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      if lenient then return NULL end
      fail(ctx, path .. ": NaN or infinity (" .. tostring(v) .. ") has no JSON form")
    end
    return setmetatable({ number_text(v) }, Num)
  elseif t == "boolean" then
    return v
  elseif t ~= "table" then
    fail(ctx, path .. ": a " .. t .. " has no JSON form")
  end
  if v == dkjson.null then return v end
  if seen[v] then fail(ctx, path .. ": reference cycle") end
  seen[v] = true
  local nint, max, a_str, a_int = 0, 0, nil, nil
  for k in pairs(v) do
    if type(k) == "string" then
      a_str = a_str or k
    elseif math.type(k) == "integer" and k >= 1 then
      nint = nint + 1
      if k > max then max = k end
      a_int = a_int or k
    else
      fail(ctx, path .. ": key " .. describe_key(k) .. " is neither a string nor a positive integer")
    end
  end
  local out
  if a_str and a_int then
    fail(ctx, string.format("%s: mixed table: list items (%d, e.g. [%d]) and named keys (e.g. %q) "
      .. "have no single JSON form", path, nint, a_int, a_str))
  elseif a_int then
    -- holes are written as null; mostly holes is more likely a mistake
    if max > 10 and max > 2 * nint then
      fail(ctx, string.format("%s: sparse array: %d items up to index %d, more than half would be null",
        path, nint, max))
    end
    out = setmetatable({ n = max }, Arr) -- dkjson writes 1..n, nil as null
    for i, x in pairs(v) do out[i] = normalize(x, ctx, key_path(path, i), seen, lenient) end
  elseif a_str then
    -- keys sorted, so the same table always gives the same text
    local order = {}
    for k in pairs(v) do order[#order + 1] = k end
    table.sort(order)
    out = {}
    for i, k in ipairs(order) do
      local x = v[k]
      local key = k
      if not utf8.len(k) then
        if not lenient then fail(ctx, key_path(path, k) .. ": key is not valid UTF-8") end
        key = J.fix_utf8(k)
      end
      out[key] = normalize(x, ctx, key_path(path, k), seen, lenient)
      order[i] = key
    end
    setmetatable(out, { __jsontype = "object", __jsonorder = order })
  else -- empty: an array unless marked as an object (decoded objects are)
    local mt = getmetatable(v)
    out = setmetatable({}, type(mt) == "table" and mt.__jsontype == "object" and Obj or Arr)
  end
  seen[v] = nil
  return out
end

local function encode(v, ctx, lenient)
  local copy = normalize(v, ctx, "value", {}, lenient)
  local ok, text = pcall(dkjson.encode, copy)
  if not ok or type(text) ~= "string" then fail(ctx, tostring(text)) end
  return text
end

-- mk.json.encode(v): JSON text, or a ConfigError naming what cannot be encoded.
function J.encode(v)
  return encode(v, "mk.json.encode", false)
end

-- For the report: never fails on text (invalid UTF-8 becomes U+FFFD).
function J.encode_report(v)
  return encode(v, "report", true)
end

-- mk.json.decode(s): the value (null is nil; objects and arrays come back
-- marked so that empty ones encode again as {} and []), or a ConfigError.
function J.decode(s, ctx)
  ctx = ctx or "mk.json.decode"
  if type(s) ~= "string" then fail(ctx, "takes a string, got " .. type(s)) end
  local ok, v, pos, err = pcall(dkjson.decode, s, 1, nil)
  if not ok then fail(ctx, "cannot decode: " .. tostring(v)) end
  if err then fail(ctx, err) end
  -- dkjson stops after the first value; anything but space after it is an error
  local extra = s:find("[^ \t\r\n]", pos)
  if extra then fail(ctx, string.format("unexpected text after the JSON value at byte %d", extra)) end
  return v
end

return J
