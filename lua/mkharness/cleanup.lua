-- Cleanup that never hides the error that caused it. One home for "do,
-- call, undo even if it raises" (stopped(), paused(), proxy:cut()) and for
-- <close> handlers (services, groups, proxies, guards): while an error
-- unwinds, cleanup never raises; what it found rides along with the pending
-- error (e.cleanup on a table error, appended to a string we re-raise, or a
-- note on stderr when the error cannot carry it).
local events = require "mkharness.events"

local C = {}

-- Set by the busted integration while a test runs. busted's message
-- handler returns nothing, so a <close> inside a test sees no error object
-- even while one unwinds: cleanup errors go to the sink, which fails the
-- test with them only if nothing else did.
C.sink = nil

function C.attach(err, found, what)
  local text = what .. ": " .. tostring(found)
  if type(err) == "table" then
    local ok = pcall(function()
      err.cleanup = err.cleanup or {}
      err.cleanup[#err.cleanup + 1] = found
    end)
    if ok then return end
  end
  events.emit("cleanup_error", { message = text }, nil)
  io.stderr:write("mkharness: while unwinding from an error, ", text, "\n")
end

-- A __close handler: run undo(obj); raise its error only when no error is
-- unwinding (err == nil, outside a busted test).
function C.close(err, undo, obj, what)
  if err == nil and not C.sink then return undo(obj) end
  local ok, found = pcall(undo, obj)
  if ok then return end
  if err == nil then C.sink(found, what) else C.attach(err, found, what) end
end

-- A to-be-closed guard that undoes: local _ <close> = C.guard(...)
function C.guard(undo, obj, what)
  return setmetatable({}, { __close = function(_, err) C.close(err, undo, obj, what) end })
end

-- fn(obj), then undo(obj) even when fn raised. fn's error wins; a failed
-- undo rides along with it. Returns fn's results.
function C.around(fn, undo, obj, what)
  local r = table.pack(pcall(fn, obj))
  local ok2, err2 = pcall(undo, obj)
  if not r[1] then
    local e = r[2]
    if not ok2 then
      if type(e) == "string" then e = string.format("%s\n(while %s: %s)", e, what, tostring(err2))
      else C.attach(e, err2, what) end
    end
    error(e, 0)
  end
  if not ok2 then error(err2, 0) end
  return table.unpack(r, 2, r.n)
end

return C
