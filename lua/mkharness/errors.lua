-- Harness errors: tables with metatable Error, raised with error(e).
-- tostring(e) is the full readable message (which service,
-- what was expected, what happened, how long it waited, the output's tail).
local Error = { __name = "mkharness.Error" }
Error.__index = Error

local KINDS = {
  ConfigError = true, SpawnError = true, AlreadyRunning = true,
  TimeoutExpired = true, ProcessExitedWithError = true,
  ProcessFinishedWithError = true, ExecutorError = true, UnexpectedExit = true,
  -- chaos: a fault that could not start or heal; a checker that found a
  -- history breaking its property
  FaultError = true, CheckFailed = true,
}
Error.KINDS = KINDS

-- The first line starts with the user's file:line, as Lua's own errors do,
-- so busted and the host show the line that failed.
function Error.__tostring(e)
  local parts = { e.where and (e.where .. ": ") or "", e.kind, ": " }
  if e.name then parts[#parts + 1] = "[" .. e.name .. "] " end
  parts[#parts + 1] = tostring(e.message)
  if e.command then parts[#parts + 1] = "\n  command: " .. e.command end
  if e.log_tail and e.log_tail ~= "" then
    parts[#parts + 1] = "\n  last output of " .. (e.name or "the service") .. ":\n    | "
    parts[#parts + 1] = e.log_tail:gsub("\n", "\n    | ")
  end
  -- cleanup or undo steps that failed too, while this error unwound
  for _, c in ipairs(type(e.cleanup) == "table" and e.cleanup or {}) do
    parts[#parts + 1] = "\n  then, while cleaning up: " .. tostring(c):gsub("\n", "\n    ")
  end
  return table.concat(parts)
end

-- The first stack level outside mkharness, luassert and busted: where the
-- user called us. Shown in errors because error tables carry no position.
local HIDDEN = { "mkharness[/\\][%w_]+%.lua$", "luassert[/\\]", "busted[/\\]", "[/\\]busted$" }
local function where()
  for level = 3, 60 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    local hidden = not (info.currentline and info.currentline > 0)
    for _, pat in ipairs(HIDDEN) do hidden = hidden or info.source:find(pat) ~= nil end
    if not hidden then return info.short_src .. ":" .. info.currentline end
  end
end

-- Error.new("TimeoutExpired", { message = ..., name = ..., ... })
function Error.new(kind, fields)
  assert(KINDS[kind], "unknown error kind " .. tostring(kind))
  local e = setmetatable({}, Error)
  for k, v in pairs(fields) do e[k] = v end
  e.kind = kind
  e.where = e.where or where()
  -- an error that names a file of the run directory (a log, a tmpdir)
  -- keeps the directory, also under stock Lua and busted where no host
  -- keeps failing runs' directories
  local ok, core = pcall(require, "mkharness.core")
  local dir = ok and core.run_dir(nil, true)
  if dir and tostring(e.message):find(dir, 1, true) then core.keep(true) end
  return e
end

function Error.raise(kind, fields)
  error(Error.new(kind, fields), 0)
end

function Error.is(e, kind)
  return getmetatable(e) == Error and (kind == nil or e.kind == kind)
end

return Error
