-- mkharness: process executors for integration and chaos test scenarios.
-- This file only assembles the module from its parts; it is kept to syntax
-- every Lua reads, so that loading it under another Lua says which one.
if _VERSION ~= "Lua 5.4" then
  error("mkharness needs Lua 5.4, but this is " .. tostring(_VERSION) .. ": run specs with `mkharness test`, " ..
    "or with busted under Lua 5.4: `lua5.4 /usr/bin/busted` (Debian's busted runs `lua`, which may be another version)", 2)
end

local core = require "mkharness.core"
local Error = require "mkharness.errors"
local probes = require "mkharness.probes"
local json = require "mkharness.json"
local crash = require "mkharness.crash"
local wait = require "mkharness.wait"
local executor = require "mkharness.executor"
require "mkharness.stop"   -- stop(), kill(), restart(), wait_exit()
require "mkharness.output" -- output(), err_output(), mark(), wait_output()
local group = require "mkharness.group"
local run = require "mkharness.run"
local http = require "mkharness.http"
local describe = require "mkharness.describe"
local defaults = require "mkharness.defaults"

local M = {
  _VERSION = "mkharness " .. core.version, core = core, Error = Error,
  Executor = executor.Executor,
  Service = executor.Executor, -- the class's earlier name
  DEFAULT_INTERVAL = defaults.interval,
}

-- The parts a scenario may not use (the proxy, the lab, chaos) load on
-- first use: a run that uses none of them does not pay for loading them.
-- The tail call keeps the caller's frame where errors look for it.
local function from(module, name)
  return function(...) return require(module)[name](...) end
end
-- a table of a module's entries (functions, or the checkers, which are
-- objects), filled from it on first look
local function entries_of(module, names)
  local function fill(t)
    local m = require(module)
    for _, k in ipairs(names) do rawset(t, k, m[k]) end
    setmetatable(t, nil)
  end
  return setmetatable({}, {
    __index = function(t, k) fill(t) return rawget(t, k) end,
    __pairs = function(t) fill(t) return next, t, nil end,
  })
end

-- executors
M.process, M.executor, M.output, M.tcp = executor.process, executor.executor, executor.output, executor.tcp
M.unix, M.http, M.pidfile, M.notify = executor.unix, executor.http, executor.pidfile, executor.notify

-- probes
M.probe = {
  output = probes.output, tcp = probes.tcp, unix = probes.unix, http = probes.http, file = probes.file,
  notify = probes.notify, exec = probes.exec, any = probes.any,
}

-- module functions
M.group = group.new
M.wait_until, M.sleep, M.now = wait.wait_until, wait.sleep, core.now
M.free_port, M.tmpdir, M.run = run.free_port, run.tmpdir, run.run
M.http_request, M.get = http.request, http.get
M.is_error = Error.is
M.json = { encode = json.encode, decode = function(s) return json.decode(s) end, null = json.null }
M.proxy, M.lab = from("mkharness.proxy", "new"), from("mkharness.lab", "new")

-- chaos: schedules of faults, histories, checkers
M.chaos = from("mkharness.chaos", "chaos")
M.fault = entries_of("mkharness.chaos", { "kill", "stop", "pause", "partition", "proxy", "custom" })
M.check = entries_of("mkharness.check", { "set", "no_lost_writes", "counter", "register", "latency", "history" })

-- mk.mark(text [, fields]): a user event, in events.jsonl, --report and -v.
-- Fields are flat (string keys, scalar values) so that the line reads as
-- the user wrote it; they go under "fields", never over the event's own.
function M.mark(text, fields)
  local describe_v = require("mkharness.options").describe
  local function bad(msg) Error.raise("ConfigError", { message = "mk.mark: " .. msg }) end
  if type(text) ~= "string" or text == "" then bad("text must be a non-empty string, got " .. describe_v(text)) end
  local shown = {}
  if fields ~= nil then
    if type(fields) ~= "table" or getmetatable(fields) ~= nil then
      bad("fields must be a plain table, got " .. describe_v(fields))
    end
    for k, v in pairs(fields) do
      if type(k) ~= "string" then bad("field names must be strings, got " .. describe_v(k)) end
      local tv = type(v)
      if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
        bad("field " .. k .. " must be a string, number or boolean, got " .. describe_v(v))
      end
      shown[#shown + 1] = k .. "=" .. tostring(v)
    end
    table.sort(shown)
  end
  require("mkharness.events").emit("mark", { text = text, fields = #shown > 0 and fields or nil },
    "mark: " .. text .. (#shown > 0 and (" (" .. table.concat(shown, ", ") .. ")") or ""))
end

-- for the host, the busted integration and the specs
M._services = executor.services
M._log_tail = describe.log_tail
M._check_crashes = function() crash.check(nil) end
M._teardown = executor.teardown

return M
