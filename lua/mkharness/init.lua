-- mkharness: process executors for integration and chaos test scenarios.
-- This file only assembles the module from its parts; it is kept to syntax
-- every Lua reads, so that loading it under another Lua says which one.
if _VERSION ~= "Lua 5.4" then
  error("mkharness needs Lua 5.4, but this is " .. tostring(_VERSION) .. ": run specs with `mkharness test`, " ..
    "or with busted under Lua 5.4: `lua5.4 /usr/bin/busted` (Debian's busted runs `lua`, which may be another version)", 2)
end

local core = require "mkharness.core"
local Error = require "mkharness.errors"
local P = require "mkharness.probes"
local json = require "mkharness.json"
local crash = require "mkharness.crash"
local wait = require "mkharness.wait"
local X = require "mkharness.executor"
require "mkharness.stop"   -- stop(), kill(), restart(), wait_exit()
require "mkharness.output" -- output(), err_output(), mark(), wait_output()
local group = require "mkharness.group"
local run = require "mkharness.run"
local http = require "mkharness.http"
local D = require "mkharness.describe"
local defaults = require "mkharness.defaults"

local M = {
  _VERSION = "mkharness " .. core.version, core = core, Error = Error,
  Executor = X.Executor,
  Service = X.Executor, -- the class's earlier name
  DEFAULT_INTERVAL = defaults.interval,
}

-- executors
M.process, M.executor, M.output, M.tcp = X.process, X.executor, X.output, X.tcp
M.unix, M.http, M.pidfile, M.notify = X.unix, X.http, X.pidfile, X.notify

-- probes
M.probe = {
  output = P.output, tcp = P.tcp, unix = P.unix, http = P.http, file = P.file,
  notify = P.notify, exec = P.exec, any = P.any,
}

-- module functions
M.group = group.new
M.wait_until, M.sleep, M.now = wait.wait_until, wait.sleep, core.now
M.free_port, M.tmpdir, M.run = run.free_port, run.tmpdir, run.run
M.http_request, M.get = http.request, http.get
M.is_error = Error.is
M.json = { encode = json.encode, decode = function(s) return json.decode(s) end, null = json.null }
function M.proxy(t) return require("mkharness.proxy").new(t) end

-- for the host, the busted integration and the specs
M._services = X.services
M._log_tail = D.log_tail
M._check_crashes = function() crash.check(nil) end
M._teardown = X.teardown

return M
