-- Events of a run: verbose lines on stderr and the --report JSON lines.
-- Configured by the host (mkharness.host); under stock lua/busted the
-- environment variables MKHARNESS_VERBOSE and MKHARNESS_REPORT do the same.
local core = require "mkharness.core"

local E = {
  verbose = tonumber(os.getenv("MKHARNESS_VERBOSE") or "") or 0,
  quiet = false,
}
local report_file

local function json_string(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    local b = c:byte()
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\"
    elseif c == "\n" then return "\\n" elseif c == "\t" then return "\\t"
    elseif b >= 128 then return c -- UTF-8 passes through
    else return string.format("\\u%04x", b) end
  end) .. '"'
end

local function json(v)
  local t = type(v)
  if t == "string" then return json_string(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return math.type(v) == "integer" and tostring(v) or string.format("%.6f", v)
  elseif t == "boolean" then return tostring(v)
  elseif t == "table" then
    if #v > 0 or next(v) == nil then
      local parts = {}
      for i = 1, #v do parts[i] = json(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = json_string(k) .. ":" .. json(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end
E.json = json

function E.configure(opts)
  E.verbose = opts.verbose or E.verbose
  E.quiet = opts.quiet or false
  if opts.report then
    local f, err = io.open(opts.report, "w")
    if not f then error("cannot open report file: " .. err, 0) end
    f:setvbuf("line")
    report_file = f
  end
end

local env_report = os.getenv("MKHARNESS_REPORT")
if env_report and env_report ~= "" then E.configure { report = env_report } end

-- emit("ready", { service = "redis", ms = 12.3 }, "redis: ready after 12.3 ms")
function E.emit(event, fields, text)
  if report_file then
    local rec = { event = event, t = core.now() }
    for k, v in pairs(fields or {}) do rec[k] = v end
    report_file:write(json(rec), "\n")
  end
  if text and E.verbose > 0 and not E.quiet then
    io.stderr:write("mkharness: ", text, "\n")
  end
end

function E.close()
  if report_file then report_file:close() report_file = nil end
end

return E
