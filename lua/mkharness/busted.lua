-- luassert extensions for busted specs (docs/api.md, "Busted"):
--   assert.running(svc)   assert.not_running(svc)
--   assert.error_kind("TimeoutExpired", fn)
--   assert.eventually(fn, { timeout =, interval =, message = })
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

local function eventually(_, args)
  local fn, opts = args[1], args[2]
  if type(fn) ~= "function" then error("assert.eventually(fn, opts): fn must be a function", 3) end
  local ok, err = pcall(mk.wait_until, fn, opts)
  args.n = 1
  args[1] = ok and "it became true" or tostring(err)
  return ok
end
say:set("assertion.eventually.positive", "Expected the condition to become true in time:\n%s")
say:set("assertion.eventually.negative", "Expected the condition never to become true:\n%s")
assert:register("assertion", "eventually", eventually, "assertion.eventually.positive", "assertion.eventually.negative")

require("mkharness.busted_hooks").install()

return mk
