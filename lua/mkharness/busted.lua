-- luassert extensions for busted specs (docs/api.md, "Busted"):
--   assert.running(svc)   assert.not_running(svc)
--   assert.error_kind("TimeoutExpired", fn)
--   assert.eventually(fn, { timeout =, interval =, message =, falsy =, no_error = })
--   assert.status(200, res)
-- Load with `require "mkharness.busted"` (or busted --helper); it also
-- installs the busted hooks (failure context, scoping: busted_hooks.lua).
local assert = require "luassert"
local say = require "say"
local mk = require "mkharness"

local function svc_arg(args, name)
  local svc = args[1]
  if getmetatable(svc) ~= mk.Service then
    error(name .. ": expected an executor, got " .. type(svc), 3)
  end
  return svc
end

local function running(_, args)
  local svc = svc_arg(args, "assert.running")
  args[1] = tostring(svc)
  args.n = 1
  return svc:running()
end
say:set("assertion.running.positive", "Expected the service to be running, but it is not:\n%s")
say:set("assertion.running.negative", "Expected the service not to be running, but it is:\n%s")
assert:register("assertion", "running", running, "assertion.running.positive", "assertion.running.negative")

local function error_kind(_, args)
  local kind, fn = args[1], args[2]
  if type(fn) ~= "function" then error("assert.error_kind(kind, fn): fn must be a function", 3) end
  local ok, err = pcall(fn)
  args.n = 2
  args[2] = ok and "no error" or tostring(err)
  if ok then return false end
  return mk.is_error(err, kind)
end
say:set("assertion.error_kind.positive", "Expected a harness error of kind %s, got:\n%s")
say:set("assertion.error_kind.negative", "Expected no harness error of kind %s, got:\n%s")
assert:register("assertion", "error_kind", error_kind, "assertion.error_kind.positive", "assertion.error_kind.negative")

-- assert.eventually(fn, opts): fn is called until it returns a truthy value
-- ({ falsy = true }: a falsy one; { no_error = true }: until it returns at
-- all). Errors it raises meanwhile mean "not yet"; on failure the first and
-- the last of them are both shown, since the first is often the cause and
-- the last the state things settled in. A ConfigError is a mistake in the
-- test and surfaces at once.
local EVENTUALLY_OWN = { falsy = true, no_error = true }
local function eventually(_, args)
  local fn, opts = args[1], args[2]
  if type(fn) ~= "function" then error("assert.eventually(fn, opts): fn must be a function", 3) end
  if opts ~= nil and type(opts) ~= "table" then error("assert.eventually(fn, opts): opts must be a table", 3) end
  local wait_opts = {}
  for k, v in pairs(opts or {}) do
    if not EVENTUALLY_OWN[k] then wait_opts[k] = v end
  end
  local falsy, no_error = opts and opts.falsy, opts and opts.no_error
  if falsy and no_error then error("assert.eventually(fn, opts): falsy and no_error exclude each other", 3) end
  local attempts, first, first_at, last, last_at = 0, nil, nil, nil, nil
  local function attempt()
    attempts = attempts + 1
    local ok, v = pcall(fn)
    if not ok then
      if mk.is_error(v, "ConfigError") then error(v, 0) end
      if first == nil then first, first_at = v, attempts end
      last, last_at = v, attempts
      return false
    end
    if no_error then return true end
    if falsy then return not v end
    return v
  end
  if falsy then wait_opts.message = wait_opts.message or "the value to become falsy" end
  if no_error then wait_opts.message = wait_opts.message or "the function to stop raising" end
  local ok, err = pcall(mk.wait_until, attempt, wait_opts)
  if not ok and mk.is_error(err, "ConfigError") then error(err, 0) end
  if ok then
    args[1] = "it did"
  else
    local parts = { tostring(err) }
    if first ~= nil then
      parts[#parts + 1] = string.format("first error (attempt %d of %d): %s", first_at, attempts, tostring(first))
      if last_at ~= first_at then
        parts[#parts + 1] = string.format("last error (attempt %d of %d): %s", last_at, attempts, tostring(last))
      end
    end
    args[1] = table.concat(parts, "\n")
  end
  args.n = 1
  args.nofmt = { true }
  return ok
end
say:set("assertion.eventually.positive", "Expected the condition to become true in time:\n%s")
say:set("assertion.eventually.negative", "Expected the condition never to become true:\n%s")
assert:register("assertion", "eventually", eventually, "assertion.eventually.positive", "assertion.eventually.negative")

-- assert.status(200, res): a wrong status shows what the server said, as
-- the status alone rarely explains itself. Long bodies are cut.
local BODY_SHOWN = 4096
local function show_response(res)
  local lines = { "HTTP " .. tostring(res.status) }
  local names = {}
  for k in pairs(type(res.headers) == "table" and res.headers or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do lines[#lines + 1] = "  " .. k .. ": " .. tostring(res.headers[k]) end
  local body = tostring(res.body or "")
  if #body > BODY_SHOWN then
    body = body:sub(1, BODY_SHOWN) .. string.format("\n  ... (%d more bytes)", #body - BODY_SHOWN)
  end
  lines[#lines + 1] = "body:" .. (body == "" and " (empty)" or ("\n  " .. body:gsub("\n", "\n  ")))
  return table.concat(lines, "\n")
end

local function status(_, args)
  local expected, res = args[1], args[2]
  if math.type(expected) ~= "integer" then error("assert.status(expected, res): expected must be an integer status", 3) end
  if type(res) ~= "table" or res.status == nil then
    error("assert.status(expected, res): res must be a response (mk.get, mk.http_request), got " .. type(res), 3)
  end
  args[2] = show_response(res)
  args.n = 2
  args.nofmt = { true, true }
  return res.status == expected
end
say:set("assertion.status.positive", "Expected HTTP status %s, got:\n%s")
say:set("assertion.status.negative", "Expected an HTTP status other than %s, got:\n%s")
assert:register("assertion", "status", status, "assertion.status.positive", "assertion.status.negative")

require("mkharness.busted_hooks").install()

return mk
