-- An executor's output: output(), err_output(), mark() and wait_output().
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local probes = require "mkharness.probes"
local wait = require "mkharness.wait"
local describe = require "mkharness.describe"
local executor = require "mkharness.executor"
local types = options.types
local svc_error, describe_code, log_tail = describe.svc_error, describe.describe_code, describe.log_tail
local Executor = executor.Executor

local function read_stream(self, s)
  local path = self._logs and self._logs[s]
  if not path then return "" end
  return core.read(path) or ""
end
function Executor:output() return read_stream(self, "stdout") end
function Executor:err_output() return read_stream(self, "stderr") end

-- svc:mark(): where its output ends now, for wait_output{ since = MARK }:
-- taken before the action that makes it print, so the line cannot be
-- missed however early it comes.
function Executor:mark()
  if not self._logs or not self._proc then svc_error(self, "ExecutorError", "mark() needs a started service") end
  local m = { service = self, name = self.name, start = self._starts }
  for _, s in ipairs { "stdout", "stderr" } do
    if self._logs[s] then m[s] = core.size(self._logs[s]) or 0 end
  end
  return setmetatable(m, options.Mark)
end

local WAIT_OUTPUT = {
  timeout = types.timeout, stream = types.enum("any", "stdout", "stderr"), plain = types.boolean,
  since = types.since, times = types.count,
}
function Executor:wait_output(pat, opts)
  local ctx = "wait_output"
  local o = options.check(ctx, opts, WAIT_OUTPUT)
  if o.plain then types.nonempty(ctx, "pattern", pat) else types.pattern(ctx, "pattern", pat) end
  if not self._logs then svc_error(self, "ExecutorError", "wait_output() needs a started service") end
  if type(o.since) == "table" then options.own_mark(ctx, "since", o.since, self, self._starts) end
  local probe = probes.output { banner = pat, stream = o.stream or "any", plain = o.plain or false, times = o.times }
  local st = probes.output_attach(probe, self, o.since == "now" or (type(o.since) == "table" and o.since))
  local saved = self.ready_match
  local timeout = o.timeout == nil and self.timeout or o.timeout
  local w = wait.waiter(self, { probe }, { timeout = timeout or nil, states = { st },
    what = "printing " .. string.format("%q", pat), what_done = "printed" })
  local ok, err
  if self._stopped then
    -- stopped by us: what it printed is all there will be, look once
    w.exited = self._exit or 0
    ok, err = pcall(wait.step, w, core.now())
    if ok and not err then
      ok, err = false, Error.new("ExecutorError", { name = self.name, command = self.command,
        message = string.format("wait_output(%q): not in the output, and the service is stopped (%s)",
          pat, describe_code(self._exit)), log_tail = log_tail(self, 20) })
    end
  else
    ok, err = pcall(wait.all, { w, except = self })
  end
  probe:detach(st)
  local m = self.ready_match
  self.ready_match = saved
  if not ok then error(err, 0) end
  return m.line, table.unpack(m)
end

