-- How services and their failures are told: durations, exit codes, the
-- tail of a service's output, and the harness errors raised about a
-- service (which service, what happened, the output's last lines).
local core = require "mkharness.core"
local Error = require "mkharness.errors"

local D = {}

local function fmt_ms(s) return string.format("%.1f ms", s * 1000) end
local function fmt_s(s) return string.format("%.2f s", s) end

local function log_tail(svc, n)
  if not svc._logs then return nil end
  local out = {}
  for _, s in ipairs { "stdout", "stderr" } do
    local path = svc._logs[s]
    local t = path and core.tail(path, n or 20)
    if t and t ~= "" then
      out[#out + 1] = (svc._logs.stdout and svc._logs.stderr) and ("[" .. s .. "]\n" .. t) or t
    end
  end
  return table.concat(out, "\n")
end

-- A capture filling its filesystem fails in the service (ENOSPC), out of
-- the harness's sight: what it sees is a banner that never comes or an early
-- exit. So a wait that ends so looks at the capture filesystem (statvfs)
-- and says so, naming the files, rather than a bare timeout.
local function disk_full_note(svc, kind)
  if not svc._logs or not (kind == "TimeoutExpired" or kind:match("^Process")) then return nil end
  local full = {}
  for _, s in ipairs { "stdout", "stderr" } do
    local path = svc._logs[s]
    if path and core.fs_full(path) then full[#full + 1] = path end
  end
  if #full > 0 then return table.concat(full, " and ") end
end

local function svc_error(svc, kind, message, fields)
  local f = fields or {}
  f.disk_full = disk_full_note(svc, kind)
  if f.disk_full then
    message = message .. "; no space left on device: the filesystem of " .. f.disk_full .. " is full"
  end
  f.message = message
  f.name = svc.name
  f.command = svc.command
  f.log_tail = f.log_tail or log_tail(svc, 20)
  Error.raise(kind, f)
end

local function describe_code(code, svc)
  if code == nil then return "still running" end
  if svc and svc._proc and svc._proc:foreign() then return "exited (status unknown: not our child)" end
  if code < 0 then
    local name = core.signame(-code)
    return string.format("killed by signal %d%s", -code, name and (" (SIG" .. name .. ")") or "")
  end
  return "exit code " .. code
end


D.fmt_ms, D.fmt_s, D.log_tail, D.svc_error, D.describe_code = fmt_ms, fmt_s, log_tail, svc_error, describe_code
return D
