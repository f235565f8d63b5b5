-- mk.group: members started at once (or after what they come after) and
-- waited for in one loop; stopped in layers, each member before what it
-- comes after.
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local cleanup = require "mkharness.cleanup"
local crash = require "mkharness.crash"
local wait = require "mkharness.wait"
local describe = require "mkharness.describe"
local executor = require "mkharness.executor"
local types = options.types
local describe_code = describe.describe_code
local check_crashes, wait_all = crash.check, wait.all
local Executor = executor.Executor

local G = {}
local Group = { __name = "mkharness.group" }
Group.__index = Group

-- mk.group{ db, api, after = { [api] = { db } } }: a member starts once
-- what it comes after is ready (the others start at once, in parallel) and
-- stops before it.
function G.new(list)
  if type(list) ~= "table" then
    Error.raise("ConfigError", { message = "mk.group takes a list of executors, got " .. options.describe(list) })
  end
  local g = setmetatable({ members = {}, after = {} }, Group)
  local member = {}
  for k, v in pairs(list) do
    if k ~= "after" then
      if math.type(k) ~= "integer" then options.fail("mk.group", tostring(k), "is not allowed: give a list of executors (and after =)") end
      if getmetatable(v) ~= Executor then options.fail("mk.group", "[" .. k .. "]", "must be an executor (mk.process{...} etc.)", v) end
      member[v] = true
    end
  end
  for i, v in ipairs(list) do g.members[i] = v end
  local after = list.after
  if after ~= nil then
    if type(after) ~= "table" then options.fail("mk.group", "after", "must be a table { [member] = { members it starts after } }", after) end
    for svc, deps in pairs(after) do
      if not member[svc] then options.fail("mk.group", "after", "has a key that is not a member of the group", svc) end
      if getmetatable(deps) == Executor then deps = { deps } end
      if type(deps) ~= "table" then options.fail("mk.group", "after[" .. svc.name .. "]", "must be a list of members", deps) end
      local list2 = {}
      for _, d in ipairs(deps) do
        if not member[d] then options.fail("mk.group", "after[" .. svc.name .. "]", "lists something that is not a member of the group", d) end
        list2[#list2 + 1] = d
      end
      g.after[svc] = list2
    end
    -- a cycle would wait forever: refuse it here
    local state = {}
    local function visit(svc, path)
      if state[svc] == "done" then return end
      if state[svc] == "active" then
        options.fail("mk.group", "after", "has a cycle: " .. table.concat(path, " -> ") .. " -> " .. svc.name)
      end
      state[svc] = "active"
      path[#path + 1] = svc.name
      for _, d in ipairs(g.after[svc] or {}) do visit(d, path) end
      path[#path] = nil
      state[svc] = "done"
    end
    for _, svc in ipairs(g.members) do visit(svc, {}) end
  end
  return g
end

-- Members in the order they may stop: each before what it comes after.
-- Returns a list of layers; the members of a layer stop together.
local function stop_layers(g)
  local dependents = {}
  for _, deps in pairs(g.after) do
    for _, d in ipairs(deps) do dependents[d] = (dependents[d] or 0) + 1 end
  end
  local layers, left, done = {}, #g.members, {}
  while left > 0 do
    local layer = {}
    for _, svc in ipairs(g.members) do
      if not done[svc] and (dependents[svc] or 0) == 0 then layer[#layer + 1] = svc end
    end
    for _, svc in ipairs(layer) do
      done[svc] = true
      left = left - 1
      for _, d in ipairs(g.after[svc] or {}) do dependents[d] = dependents[d] - 1 end
    end
    layers[#layers + 1] = layer
  end
  return layers
end

function Group:start()
  check_crashes()
  local waiters, launched = {}, {}
  local ok, err = pcall(function()
    local ready, started = {}, {}
    local function launch_due()
      for _, svc in ipairs(self.members) do
        local due = not started[svc]
        for _, d in ipairs(self.after[svc] or {}) do due = due and ready[d] end
        if due then
          started[svc] = true
          local w = svc:_launch()
          launched[#launched + 1] = svc
          if w then
            local on_ready = w.on_ready
            w.on_ready = function(x) ready[svc] = true if on_ready then on_ready(x) end end
            waiters[#waiters + 1] = w
          else
            ready[svc] = true
          end
        end
      end
    end
    launch_due()
    waiters.any = next(self.after) ~= nil
    while #launched < #self.members or not waiters.all_done do
      wait_all(waiters)
      local before = #launched
      launch_due()
      local all = true
      for _, w in ipairs(waiters) do all = all and w.done end
      waiters.all_done = all and #launched == #self.members
      if all and #launched == before and #launched < #self.members then break end
    end
  end)
  if not ok then
    -- the members still waiting let go of their probes now, not when the
    -- collector finds them
    for _, w in ipairs(waiters) do if w.release then w.release() end end
    -- say what happened to each other member, as it happened
    local fates = {}
    for _, svc in ipairs(launched) do
      local fate
      if svc._adopted then
        fate = "was already running (adopted, left alone)"
      elseif not svc._proc or svc._stopped then
        fate = "was not running"
      else
        local before, sig = svc._proc:poll(), svc.kill_signal
        -- also one that exited: kill() sweeps what it left (a daemon)
        local kok = pcall(Executor.kill, svc)
        local code = svc._proc:poll()
        if before then
          fate = "had already exited (" .. describe_code(before) .. ")"
        elseif not code then
          fate = "could not be killed (still running" .. (kok and "" or ", kill() failed") .. ")"
        elseif code == -sig then
          fate = "killed"
        else
          fate = "killed (" .. describe_code(code) .. ")"
        end
      end
      fates[svc] = fate
    end
    if Error.is(err) and err.name then
      local others = {}
      for _, svc in ipairs(self.members) do
        if svc.name ~= err.name then
          others[#others + 1] = svc.name .. " " .. (fates[svc] or "not started")
        end
      end
      err.message = err.message .. " (in a group of " .. #self.members
        .. (#others > 0 and ("; other members: " .. table.concat(others, ", ")) or "") .. ")"
    end
    error(err, 0)
  end
  return self
end

-- stop{ order = { api, db } } stops in that order, one at a time (members
-- not named go last, together); without it, each member stops before what
-- it comes after, and the members of one layer together.
local GROUP_STOP = { order = types.table }
function Group:stop(opts)
  local o = options.check("group:stop", opts, GROUP_STOP)
  local layers
  if o.order then
    layers = {}
    local named = {}
    for i, svc in ipairs(o.order) do
      if getmetatable(svc) ~= Executor then options.fail("group:stop", "order[" .. i .. "]", "must be a member", svc) end
      layers[#layers + 1] = { svc }
      named[svc] = true
    end
    local rest = {}
    for _, svc in ipairs(self.members) do if not named[svc] then rest[#rest + 1] = svc end end
    layers[#layers + 1] = rest
  else
    layers = stop_layers(self)
  end
  local first_err
  for _, layer in ipairs(layers) do
    local pending = {}
    for _, svc in ipairs(layer) do
      local ok, s = pcall(Executor._stop_begin, svc)
      if not ok then first_err = first_err or s
      elseif s then pending[#pending + 1] = { svc, s } end
    end
    for _, p in ipairs(pending) do
      local ok, err = pcall(Executor._stop_finish, p[1], p[2])
      if not ok then first_err = first_err or err end
    end
  end
  if first_err then error(first_err, 0) end
  return self
end

function Group:__close(err) cleanup.close(err, Group.stop, self, "stop() of a group") end
function Group:__tostring() return string.format("mkharness.group (%d members)", #self.members) end


return G
