-- Harness errors: tables with metatable Error, raised with error(e).
-- tostring(e) is the full readable message (principle 6: which service,
-- what was expected, what happened, how long it waited, the output's tail).
local Error = { __name = "mkharness.Error" }
Error.__index = Error

local KINDS = {
  ConfigError = true, SpawnError = true, AlreadyRunning = true,
  TimeoutExpired = true, ProcessExitedWithError = true,
  ProcessFinishedWithError = true, ExecutorError = true,
}
Error.KINDS = KINDS

function Error.__tostring(e)
  local parts = { e.kind, ": " }
  if e.name then parts[#parts + 1] = "[" .. e.name .. "] " end
  parts[#parts + 1] = e.message
  if e.where then parts[#parts + 1] = "\n  at " .. e.where end
  if e.command then parts[#parts + 1] = "\n  command: " .. e.command end
  for _, c in ipairs(type(e.cleanup) == "table" and e.cleanup or {}) do -- undo steps that failed too
    parts[#parts + 1] = "\n  then, while undoing: " .. tostring(c):gsub("\n", "\n    ")
  end
  if e.log_tail and e.log_tail ~= "" then
    parts[#parts + 1] = "\n  last output of " .. (e.name or "the service") .. ":\n    | "
    parts[#parts + 1] = e.log_tail:gsub("\n", "\n    | ")
  end
  return table.concat(parts)
end

-- The first stack level outside the module's own files: where the user
-- called us. Shown in errors because error tables carry no position.
local function where()
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.currentline and info.currentline > 0 and not info.source:find("mkharness[/\\][%w_]+%.lua$") then
      return info.short_src .. ":" .. info.currentline
    end
  end
end

-- Error.new("TimeoutExpired", { message = ..., name = ..., ... })
function Error.new(kind, fields)
  assert(KINDS[kind], "unknown error kind " .. tostring(kind))
  local e = setmetatable({}, Error)
  for k, v in pairs(fields) do e[k] = v end
  e.kind = kind
  e.where = e.where or where()
  return e
end

function Error.raise(kind, fields)
  error(Error.new(kind, fields), 0)
end

function Error.is(e, kind)
  return getmetatable(e) == Error and (kind == nil or e.kind == kind)
end

return Error
