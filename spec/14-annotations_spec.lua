-- lua/mkharness/meta.lua, the editor annotations: every public function
-- and every option key of the module is annotated there, and the module
-- itself never loads the file.
local H = require "spec.helpers"
local mk = require "mkharness"
local options = require "mkharness.options"

local META = "lua/mkharness/meta.lua"

-- classes[name] = { fields = set, parents = { names } }; functions[var] =
-- set of names defined as `function var.name(` or `function var:name(`;
-- var_class[var] = the class of `local var = {}` right after `---@class`.
local function parse(path)
  local classes, functions, var_class = {}, {}, {}
  local current
  for line in io.lines(path) do
    local name, parents = line:match("^%-%-%-@class%s+([%w_.]+)%s*:?%s*(.*)$")
    if name then
      current = { fields = {}, parents = {} }
      for p in parents:gmatch("[%w_.]+") do current.parents[#current.parents + 1] = p end
      classes[name] = current
      current.name = name
    elseif line:match("^%-%-%-@field") then
      local field = line:match("^%-%-%-@field%s+([%w_]+)")
      if field and current then current.fields[field] = true end
    elseif line:match("^local%s+[%w_]+%s*=%s*{}") and current then
      var_class[line:match("^local%s+([%w_]+)")] = current.name
      current = nil
    elseif not line:match("^%-%-%-") then
      current = nil
    end
    local var, fname = line:match("^function%s+([%w_]+)[.:]([%w_]+)%s*%(")
    if var then
      functions[var] = functions[var] or {}
      functions[var][fname] = true
    end
  end
  return classes, functions, var_class
end

-- The option keys a class annotates, its parents' included.
local function class_fields(classes, name, out)
  out = out or {}
  local c = assert(classes[name], "meta.lua has no class " .. name)
  for f in pairs(c.fields) do out[f] = true end
  for _, p in ipairs(c.parents) do class_fields(classes, p, out) end
  return out
end

local function sorted_keys(t)
  local list = {}
  for k in pairs(t) do list[#list + 1] = tostring(k) end
  table.sort(list)
  return list
end

-- The schema a call hands to options.check first: the call is cut short
-- there, so nothing is spawned or started.
local STOP = setmetatable({}, { __tostring = function() return "schema captured" end })
local function schema_of(fn)
  local real, got_ctx, got = options.check, nil, nil
  options.check = function(ctx, _, schema)
    got_ctx, got = ctx, schema
    error(STOP, 0)
  end
  local ok, err = pcall(fn)
  options.check = real
  assert(not ok and err == STOP, "options.check was not reached: " .. tostring(err))
  return got_ctx, got
end

local Lab = require("mkharness.lab").Lab

describe("editor annotations (meta.lua)", function()
  H.leakcheck()

  local classes, functions, var_class = parse(META)
  local function methods_of(class)
    for var, c in pairs(var_class) do
      if c == class then return functions[var] or {} end
    end
    error("meta.lua has no `local X = {}` for class " .. class)
  end

  it("is a ---@meta file that the module never loads", function()
    local f = assert(io.open(META))
    assert.matches("^%-%-%-@meta", f:read("l"))
    f:close()
    assert(loadfile(META)) -- still valid Lua, so luacheck and editors parse it
    -- loaded by no module file: grep them, since a lazy require would show
    -- only when its path runs
    for _, file in ipairs { "init", "busted", "busted_hooks", "executor", "probes", "proxy", "group", "run", "http" } do
      local text = H.slurp("lua/mkharness/" .. file .. ".lua")
      assert.is_nil(text:find("mkharness.meta", 1, true), file .. ".lua mentions mkharness.meta")
    end
    require "mkharness.busted"
    assert.is_nil(package.loaded["mkharness.meta"])
  end)

  it("annotates every public module function and field", function()
    local missing = {}
    local fns = methods_of("mkharness")
    local fields = class_fields(classes, "mkharness")
    for k, v in pairs(mk) do
      if not k:match("^_") or k == "_VERSION" then
        if type(v) == "function" then
          if not fns[k] then missing[#missing + 1] = "function mk." .. k end
        elseif not fields[k] then
          missing[#missing + 1] = "field mk." .. k
        end
      end
    end
    for k in pairs(mk.probe) do
      if not methods_of("mkharness.probes")[k] then missing[#missing + 1] = "mk.probe." .. k end
    end
    for k, v in pairs(mk.json) do
      local ok = type(v) == "function" and methods_of("mkharness.json")[k] or class_fields(classes, "mkharness.json")[k]
      if not ok then missing[#missing + 1] = "mk.json." .. k end
    end
    for k in pairs(mk.fault) do
      if not methods_of("mkharness.fault")[k] then missing[#missing + 1] = "mk.fault." .. k end
    end
    for k, v in pairs(mk.check) do
      local ok = type(v) == "function" and methods_of("mkharness.check")[k] or class_fields(classes, "mkharness.check")[k]
      if not ok then missing[#missing + 1] = "mk.check." .. k end
    end
    for _, k in ipairs { "new", "raise", "is" } do
      if not methods_of("mkharness.Error")[k] then missing[#missing + 1] = "mk.Error." .. k end
    end
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("annotates every method of executors, groups and proxies", function()
    local proxy = mk.proxy { upstream = 1 }
    local classes_of = {
      ["mkharness.Executor"] = mk.Executor,
      ["mkharness.Group"] = getmetatable(mk.group { mk.process { H.fx } }),
      ["mkharness.Proxy"] = getmetatable(proxy),
      ["mkharness.Lab"] = Lab,
      ["mkharness.ChaosCtx"] = require("mkharness.chaos").Ctx,
      ["mkharness.ChaosRun"] = require("mkharness.chaos").Run,
    }
    local missing = {}
    for class, mt in pairs(classes_of) do
      local annotated = methods_of(class)
      for k, v in pairs(mt) do
        if type(v) == "function" and not k:match("^_") and not annotated[k] then
          missing[#missing + 1] = class .. ":" .. k
        end
      end
    end
    proxy:stop()
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("annotates exactly the option keys each constructor and method accepts", function()
    local svc = mk.process { H.fx }
    local proxy = mk.proxy { upstream = 1 }
    local hrun = mk.check.history {}
    local calls = {
      ["mkharness.ProcessOptions"] = function() mk.process { H.fx } end,
      ["mkharness.ExecutorOptions"] = function() mk.executor { H.fx } end,
      ["mkharness.OutputOptions"] = function() mk.output { H.fx, banner = "x" } end,
      ["mkharness.TcpOptions"] = function() mk.tcp { H.fx, port = 1 } end,
      ["mkharness.UnixOptions"] = function() mk.unix { H.fx, socket = "s" } end,
      ["mkharness.HttpOptions"] = function() mk.http { H.fx, url = "http://127.0.0.1/" } end,
      ["mkharness.PidfileOptions"] = function() mk.pidfile { H.fx, file = "f" } end,
      ["mkharness.NotifyOptions"] = function() mk.notify { H.fx } end,
      ["mkharness.StopOptions"] = function() svc:stop {} end,
      ["mkharness.KillOptions"] = function() svc:kill {} end,
      ["mkharness.WaitExitOptions"] = function() svc:wait_exit {} end,
      ["mkharness.WaitOutputOptions"] = function() svc:wait_output("x", {}) end,
      ["mkharness.GroupStopOptions"] = function() mk.group({ svc }):stop {} end,
      ["mkharness.WaitUntilOptions"] = function() mk.wait_until(function() return true end, {}) end,
      ["mkharness.RunOptions"] = function() mk.run { H.fx } end,
      ["mkharness.TmpdirOptions"] = function() mk.tmpdir {} end,
      ["mkharness.HttpRequestOptions"] = function() mk.http_request { url = "http://127.0.0.1/" } end,
      ["mkharness.GetOptions"] = function() mk.get("http://127.0.0.1/", {}) end,
      ["mkharness.probe.OutputOptions"] = function() mk.probe.output { banner = "x" } end,
      ["mkharness.probe.TcpOptions"] = function() mk.probe.tcp { port = 1 } end,
      ["mkharness.probe.UnixOptions"] = function() mk.probe.unix { socket = "s" } end,
      ["mkharness.probe.HttpOptions"] = function() mk.probe.http { url = "http://127.0.0.1/" } end,
      ["mkharness.probe.FileOptions"] = function() mk.probe.file { path = "p" } end,
      ["mkharness.probe.NotifyOptions"] = function() mk.probe.notify {} end,
      ["mkharness.probe.ExecOptions"] = function() mk.probe.exec { H.fx } end,
      ["mkharness.probe.AnyOptions"] = function() mk.probe.any { function() end } end,
      ["mkharness.ProxyOptions"] = function() mk.proxy { upstream = 1 } end,
      ["mkharness.LatencyOptions"] = function() proxy:latency(1, {}) end,
      ["mkharness.FaultOptions"] = function() proxy:blackhole {} end,
      ["mkharness.SlicerOptions"] = function() proxy:slicer { size = 1 } end,
      ["mkharness.ResetOptions"] = function() proxy:reset {} end,
      ["mkharness.LabOptions"] = function() mk.lab { hosts = { "n1" } } end,
      -- a lab's methods reach their option check without a lab built
      ["mkharness.DropOptions"] = function() setmetatable({ _core = true, name = "lab" }, Lab):drop {} end,
      ["mkharness.LabLatencyOptions"] = function() setmetatable({ _core = true, name = "lab" }, Lab):latency {} end,
      ["mkharness.LossOptions"] = function() setmetatable({ _core = true, name = "lab" }, Lab):loss {} end,
      ["mkharness.ChaosOptions"] = function() mk.chaos {} end,
      ["mkharness.MemberFaultOptions"] = function() mk.fault.kill { { svc } } end,
      ["mkharness.PartitionFaultOptions"] = function() mk.fault.partition { {} } end,
      ["mkharness.ProxyFaultOptions"] = function() mk.fault.proxy { { proxy }, "latency", 1 } end,
      ["mkharness.CustomFaultOptions"] = function() mk.fault.custom {} end,
      ["mkharness.SetCheckOptions"] = function() return mk.check.set {} end,
      ["mkharness.CounterCheckOptions"] = function() return mk.check.counter {} end,
      ["mkharness.RegisterCheckOptions"] = function() return mk.check.register {} end,
      ["mkharness.LatencyCheckOptions"] = function() return mk.check.latency {} end,
      ["mkharness.CheckHistoryOptions"] = function() return mk.check.history {} end,
      ["mkharness.RunCheckOptions"] = function() hrun:check(mk.check.set, {}) end,
    }
    local wrong = {}
    for class, call in pairs(calls) do
      local ctx, schema = schema_of(call)
      local annotated = class_fields(classes, class)
      for key in pairs(schema) do
        if not annotated[key] then wrong[#wrong + 1] = ctx .. ": option " .. key .. " has no ---@field in " .. class end
      end
      for key in pairs(annotated) do
        if not schema[key] then wrong[#wrong + 1] = ctx .. ": " .. class .. " annotates " .. key .. ", which it refuses" end
      end
    end
    -- stop and pause take kill's options
    for _, call in ipairs { function() mk.fault.stop { { svc } } end, function() mk.fault.pause { { svc } } end } do
      local ctx, schema = schema_of(call)
      assert.same(sorted_keys(class_fields(classes, "mkharness.MemberFaultOptions")), sorted_keys(schema), ctx)
    end
    -- bandwidth and limit_data take the fault options blackhole takes
    for _, call in ipairs { function() proxy:bandwidth(1, {}) end, function() proxy:limit_data(1, {}) end } do
      local ctx, schema = schema_of(call)
      assert.same(sorted_keys(class_fields(classes, "mkharness.FaultOptions")), sorted_keys(schema), ctx)
    end
    proxy:stop()
    table.sort(wrong)
    assert.same({}, wrong)
  end)

  it("annotates the busted matchers and the error fields", function()
    require "mkharness.busted"
    local matchers = class_fields(classes, "luassert")
    for _, m in ipairs { "running", "not_running", "error_kind", "eventually", "status" } do
      assert.is_true(matchers[m] or false, "assert." .. m)
      -- luassert reads `not_running` as `not` + `running`
      local registered = m:gsub("^not_", "")
      assert.is_table(require("luassert.namespaces").assertion[registered], "assert." .. m .. " is registered")
    end
    local fields = class_fields(classes, "mkharness.Error")
    local _, err = pcall(mk.wait_until, function() return false end, { timeout = 0.01 })
    for k in pairs(err) do assert.is_true(fields[k] or false, "Error field " .. k) end
    for _, k in ipairs { "kind", "message", "name", "exit_code", "log_tail", "cleanup", "where", "command", "timeout" } do
      assert.is_true(fields[k] or false, "Error field " .. k)
    end
  end)
end)
