-- Busted integration, installed once per busted run (by `mkharness test`,
-- by `require "mkharness.busted"`, or by the mkharness.junit handler):
--   * a failing test carries its context: every service's state and what it
--     printed since the test began (appended to the failure message, or put
--     in <system-out>/<system-err> by mkharness.junit);
--   * scoping: a service is stopped when the block that started it ends
--     (an `it`: at its end, with a warning; before_each: after the test's
--     after_each hooks; setup/lazy_setup/describe body: at the describe's end);
--   * an unreported crash of a service fails the test during which it
--     happened (mk._check_crashes, when the module has it).
-- Spec files are insulated by busted (each one reloads mkharness), so nothing
-- here holds on to a module instance: it looks at package.loaded each time.
local B = {}

local function mkmod() return package.loaded["mkharness"] end

-- busted's core (its context stack tells which block is running). The
-- public `require "busted"` is a proxy whose __index closes over it.
local function busted_core(api)
  local mt = getmetatable(api)
  local index = type(mt) == "table" and mt.__index
  if type(index) ~= "function" then return nil end
  for i = 1, 10 do
    local name, v = debug.getupvalue(index, i)
    if not name then break end
    if name == "busted" and type(v) == "table" and v.context then return v end
  end
end

---------------------------------------------------------------- context
local function code_text(code)
  if code == nil then return "?" end
  if code < 0 then
    local core = package.loaded["mkharness.core"]
    local name = core and core.signame(-code)
    return string.format("killed by signal %d%s", -code, name and (" (SIG" .. name .. ")") or "")
  end
  return "exit code " .. code
end

-- kind: "not started" | "adopted" | "running" | "stopped" | "exited"
local function state_of(svc)
  if svc._adopted then return "adopted", "adopted (already running, not started by the harness)" end
  local proc = svc._proc
  if not proc then return "not started", "not started" end
  if svc._stopped then return "stopped", "stopped (" .. code_text(svc._exit) .. ")" end
  local code = proc:poll()
  if code == nil then return "running", string.format("running (pid %d)", proc:pid()) end
  if code == 0 then return "exited", "exited by itself (exit code 0)" end
  return "exited", "crashed: " .. code_text(code)
end

local STREAMS = { "stdout", "stderr" }

local function snapshot()
  local mk = mkmod()
  local snap = {}
  if not (mk and mk._services) then return snap end
  for svc in pairs(mk._services) do
    local sizes = {}
    for _, s in ipairs(STREAMS) do
      local path = svc._logs and svc._logs[s]
      sizes[s] = path and mk.core.size(path) or 0
    end
    local _, text = state_of(svc)
    snap[svc] = { proc = svc._proc, state = text, sizes = sizes }
  end
  return snap
end

-- The last n lines written to path after byte `from`; "" when none. Reads
-- at most the last 64 KiB: a tail, not the whole capture.
local function tail_since(core, path, from, n)
  local size = core.size(path)
  if not size or size <= from then return "", 0 end
  local start = math.max(from, size - 65536)
  local data = core.read(path, start) or ""
  if start > from then data = data:gsub("^[^\n]*\n?", "", 1) end
  data = data:gsub("\n$", "")
  local lines = {}
  for line in (data .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local total = #lines
  if total > n then lines = { table.unpack(lines, total - n + 1, total) } end
  return table.concat(lines, "\n"), total
end

-- What a failing test's report says: { services = { {name, state, stdout,
-- stderr, note} }, quiet = { "name (state)", ... } }, or nil without services.
local function collect(snap, err)
  local mk = mkmod()
  if not (mk and mk._services) then return nil end
  -- a harness error already shows its service's last output: not twice
  local shown
  if type(err) == "table" and getmetatable(err) and getmetatable(err).__name == "mkharness.Error"
    and err.name and err.log_tail and err.log_tail ~= "" then
    shown = err.name
  end
  local list = {}
  for svc in pairs(mk._services) do list[#list + 1] = svc end
  if #list == 0 then return nil end
  table.sort(list, function(a, b) return a.name < b.name end)
  local out = { services = {}, quiet = {} }
  for _, svc in ipairs(list) do
    local before = snap and snap[svc]
    local same_run = before and before.proc == svc._proc
    local kind, state = state_of(svc)
    local e = { name = svc.name, command = svc.command, state = state }
    local touched = not same_run and svc._proc ~= nil or (before and before.state ~= state)
    if svc._proc and not same_run then e.state = state .. ", started during the test"
    elseif kind == "exited" and before and before.state ~= state then e.state = state .. ", during the test" end
    if kind == "exited" and same_run and before.state == state then e.state = state .. ", before the test began" end
    local printed = false
    for _, s in ipairs(STREAMS) do
      local path = svc._logs and svc._logs[s]
      if path then
        local from = same_run and before.sizes[s] or 0
        local text, total = tail_since(mk.core, path, from, 20)
        if text ~= "" or total > 0 then
          printed = true
          e[s], e[s .. "_total"] = text, total
        end
      end
    end
    if shown == svc.name then
      e.stdout, e.stderr = nil, nil
      e.note = "its last output is in the error above"
      touched = true
    end
    if touched or printed then
      out.services[#out.services + 1] = e
    else
      out.quiet[#out.quiet + 1] = svc.name .. ": " .. e.state
    end
  end
  return out
end

local function quote_lines(text, indent)
  return indent .. "| " .. text:gsub("\n", "\n" .. indent .. "| ")
end

local function stream_block(e, s, indent, label)
  if not e[s] then return nil end
  local total = e[s .. "_total"]
  return string.format("%s%s%s since the test began%s:\n%s", indent, label or "", s,
    total > 20 and string.format(" (last 20 of %d lines)", total) or "", quote_lines(e[s], indent .. "  "))
end

-- The text appended to a failure message (terminal, TAP, json handlers).
local function render(ctx)
  local out = { "mkharness: services at this failure:" }
  for _, e in ipairs(ctx.services) do
    out[#out + 1] = "  " .. e.name .. ": " .. e.state .. (e.note and ("; " .. e.note) or "")
    for _, s in ipairs(STREAMS) do out[#out + 1] = stream_block(e, s, "    ") end
    if not e.note and not e.stdout and not e.stderr then out[#out + 1] = "    (no output during the test)" end
  end
  if #ctx.quiet > 0 then
    out[#out + 1] = "  no output and no change during the test: " .. table.concat(ctx.quiet, "; ")
  end
  return table.concat(out, "\n")
end
B.render = render

-- JUnit: states and stdout in <system-out>, stderr in <system-err>.
function B.render_streams(ctx)
  local o, e = {}, {}
  for _, x in ipairs(ctx.services) do
    o[#o + 1] = x.name .. ": " .. x.state .. (x.note and ("; " .. x.note) or "")
    o[#o + 1] = stream_block(x, "stdout", "  ")
    if x.stderr then e[#e + 1] = stream_block(x, "stderr", "", x.name .. ": ") end
  end
  if #ctx.quiet > 0 then o[#o + 1] = "no output and no change during the test: " .. table.concat(ctx.quiet, "; ") end
  return table.concat(o, "\n"), table.concat(e, "\n")
end

---------------------------------------------------------------- install
local function full_name(api, el)
  local names = { el.name or el.descriptor }
  local p = api.parent(el)
  while p and (p.name or p.descriptor) and p.descriptor ~= "file" and p.descriptor ~= "suite" do
    table.insert(names, 1, p.name or p.descriptor)
    p = api.parent(p)
  end
  return table.concat(names, " ")
end

local function new_state(api, core)
  local S = {
    api = api, core = core,
    junit = false,                                -- set by mkharness.junit
    context = setmetatable({}, { __mode = "k" }), -- test element -> collected context
    snaps = setmetatable({}, { __mode = "k" }),   -- test element -> snapshot at its start
    scopes = setmetatable({}, { __mode = "k" }),  -- block element -> scope
    owner = setmetatable({}, { __mode = "k" }),   -- service -> scope that started it
    hooked = setmetatable({}, { __mode = "k" }),  -- file elements and events modules seen
  }
  local pending_snap -- taken by our before_each, before the test's own hooks
  local prep          -- services started in before_each/after_each hooks

  local function scope_of(el, kind)
    local sc = S.scopes[el]
    if not sc then
      sc = { kind = kind, el = el, list = {}, labs = {} }
      S.scopes[el] = sc
    end
    return sc
  end

  -- Which block started a service: busted's context stack says.
  local function scope_for(el)
    if not el then return nil end
    local d = el.descriptor
    if d == "it" then return scope_of(el, "test") end
    if d == "before_each" or d == "after_each" then
      prep = prep or { kind = "each", list = {}, labs = {} }
      return prep
    end
    if d == "strict_setup" or d == "lazy_setup" or d == "strict_teardown" or d == "lazy_teardown" then
      local p = api.parent(el)
      return p and scope_of(p, "block")
    end
    if d == "describe" or d == "file" or d == "suite" then return scope_of(el, "block") end
  end

  local function on_spawn(fields)
    local mk = mkmod()
    if not (mk and mk._services and fields) then return end
    for svc in pairs(mk._services) do
      if svc.name == fields.service and svc._proc and svc._proc:pid() == fields.pid then
        local o = S.owner[svc]
        -- a restart keeps the service in the scope that first started it
        if o and not o.released then return end
        local sc = scope_for(core and core.context.get())
        if sc then
          S.owner[svc] = sc
          sc.list[#sc.list + 1] = svc
        end
        return
      end
    end
  end

  -- A lab belongs to the block that built it, as a service does.
  local function on_lab(fields)
    local mod = package.loaded["mkharness.lab"]
    local lab = mod and fields and fields.action == "up" and mod.find(fields.lab)
    local sc = lab and scope_for(core and core.context.get())
    if sc then sc.labs[#sc.labs + 1] = lab end
  end

  -- Services announce their start through mkharness.events ("spawned"),
  -- labs theirs ("lab", action "up").
  local function watch_events()
    local events = package.loaded["mkharness.events"]
    if type(events) ~= "table" or S.hooked[events] then return end
    S.hooked[events] = true
    local function watched(emit)
      return function(event, fields, text)
        emit(event, fields, text)
        local scope = (event == "spawned" and on_spawn) or (event == "lab" and on_lab)
        if scope then
          local ok, err = pcall(scope, fields)
          if not ok then io.stderr:write("mkharness: busted scoping: ", tostring(err), "\n") end
        end
      end
    end
    -- "spawned" is written later (emit_later), but announced at once
    events.emit, events.emit_later = watched(events.emit), watched(events.emit_later)
  end
  S.watch_events = watch_events

  local function release(sc, test_name)
    if not sc or sc.released then return end
    sc.released = true
    for _, svc in ipairs(sc.list) do
      if S.owner[svc] == sc then
        S.owner[svc] = nil
        if svc._proc and not svc._stopped and svc._proc:poll() == nil then
          if test_name then
            io.stderr:write(string.format("mkharness: warning: test '%s' left service %s running; stopped it\n",
              test_name, svc.name))
          end
          local ok, err = pcall(svc.stop, svc)
          if not ok then
            io.stderr:write("mkharness: warning: stopping ", svc.name, ": ", tostring(err), "\n")
          end
        end
      end
    end
    -- after the services, which may run in its hosts
    for _, lab in ipairs(sc.labs or {}) do
      if lab._core then
        if test_name then
          io.stderr:write(string.format("mkharness: warning: test '%s' left lab %s open; closed it\n", test_name, lab.name))
        end
        local ok, err = pcall(lab.close, lab)
        if not ok then io.stderr:write("mkharness: warning: closing ", lab.name, ": ", tostring(err), "\n") end
      end
    end
  end

  -- Our before_each runs first and our after_each last of the file's hooks.
  local function hook_blocks()
    local el = core and core.context.get()
    if not el or (el.descriptor ~= "file" and el.descriptor ~= "describe") then return end
    local file = el
    while file and file.descriptor ~= "file" do file = api.parent(file) end
    if file then
      if S.hooked[file] then return end
      S.hooked[file] = true
    end
    api.before_each(function()
      watch_events()
      pending_snap = snapshot()
    end)
    api.after_each(function()
      local p = prep
      prep = nil
      release(p)
    end)
  end
  S.hook_blocks = hook_blocks

  -- The crash check runs as the test's `finally` (after the user's own, if
  -- any): an error there is this test's error, not a later one's. After a
  -- test that already failed, a crash is only consumed: its context shows it.
  local function on_test_start(el)
    watch_events()
    local name = full_name(api, el)
    require("mkharness.events").emit("test_start", { test = name }, "test: " .. name)
    S.snaps[el] = pending_snap or snapshot()
    pending_snap = nil
    local env = el.env
    local set_finally = env and env.finally
    if type(set_finally) ~= "function" then return nil, true end
    local user
    -- cleanup errors of <close> handlers during this test (see cleanup.lua)
    local cleanup = require "mkharness.cleanup"
    local found = {}
    cleanup.sink = function(e, what) found[#found + 1] = { e = e, what = what } end
    local function check()
      if user then user() end
      cleanup.sink = nil
      local failed = S.context[el] ~= nil
      if #found > 0 then
        if not failed then -- nothing else failed the test: its cleanup does
          local first = found[1].e
          for i = 2, #found do cleanup.attach(first, found[i].e, found[i].what) end
          error(first, 0)
        end
        for _, f in ipairs(found) do cleanup.attach(nil, f.e, f.what) end
      end
      local mk = mkmod()
      if not (mk and mk._check_crashes) then return end
      if not failed then return mk._check_crashes() end
      for _ = 1, 64 do if pcall(mk._check_crashes) then break end end
    end
    set_finally(check)
    env.finally = function(fn) user = fn end
    return nil, true
  end

  local function on_test_end(el, _, status)
    local name = full_name(api, el)
    require("mkharness.events").emit("test_end", { test = name, status = tostring(status) },
      "test " .. tostring(status) .. ": " .. name)
    require("mkharness.cleanup").sink = nil
    release(S.scopes[el], full_name(api, el))
    S.scopes[el] = nil
    return nil, true
  end

  local publishing = false
  local function on_failure(status)
    return function(el, parent, message, trace)
      if publishing or S.context[el] ~= nil then return nil, true end
      local ok, ctx = pcall(collect, S.snaps[el], trace and trace.message)
      if not ok then ctx = nil io.stderr:write("mkharness: failure context: ", tostring(ctx), "\n") end
      S.context[el] = ctx or false
      if not ctx or S.junit then return nil, true end
      -- re-publish with the context appended; this publication stops here
      publishing = true
      local pok, perr = pcall(api.publish, { status, "it" }, el, parent,
        tostring(message) .. "\n" .. render(ctx), trace)
      publishing = false
      if not pok then error(perr, 0) end
      return nil, false
    end
  end

  local function block_end(el)
    release(S.scopes[el])
    S.scopes[el] = nil
    return nil, true
  end

  api.subscribe({ "file", "start" }, function() hook_blocks() return nil, true end)
  api.subscribe({ "describe", "start" }, function() watch_events() return nil, true end)
  api.subscribe({ "describe", "end" }, block_end)
  api.subscribe({ "file", "end" }, block_end)
  api.subscribe({ "suite", "end" }, block_end)
  api.subscribe({ "test", "start" }, on_test_start)
  api.subscribe({ "test", "end" }, on_test_end)
  -- first in line, ahead of the output handlers, to decorate the message
  api.subscribe({ "failure", "it" }, on_failure("failure"), { priority = 1 })
  api.subscribe({ "error", "it" }, on_failure("error"), { priority = 1 })
  return S
end

-- Install into the running busted (idempotent); returns the state, or nil
-- outside busted.
function B.install()
  local ok, api = pcall(require, "busted")
  if not ok or type(api) ~= "table" then return nil end
  local core = busted_core(api)
  local reg = debug.getregistry()
  local key = "mkharness.busted_hooks"
  local S = reg[key]
  if not (S and S.api == api) then
    if not pcall(function() return api.subscribe end) or not api.subscribe then return nil end
    S = new_state(api, core)
    reg[key] = S
  end
  S.watch_events()
  S.hook_blocks() -- the file being loaded, when a spec requires us
  return S
end

-- `mkharness test`: busted speaks as "mkharness test", a usage error exits
-- 2, --help is help (exit 0), and the hooks and the JUnit decoration are on.
function B.host_test()
  local make_cli = require "busted.modules.cli"
  package.loaded["busted.modules.cli"] = function(options)
    local cli = make_cli(options)
    local parse = cli.parse
    cli.parse = function(self, args)
      local res, err = parse(self, args)
      if not res then
        for _, a in pairs(args) do
          if a == "--help" or a == "-h" then
            io.stdout:write((tostring(err):gsub("^.-: error: ", ""):gsub("; re%-run with %-%-help for usage%.$", "")), "\n")
            os.exit(0)
          end
        end
        io.stderr:write(tostring(err), "\n")
        os.exit(2)
      end
      -- after busted's set-up, before any test: handlers are subscribed by then
      require("busted").subscribe({ "suite", "start" }, function()
        B.install()
        return nil, true
      end, { priority = 1 })
      return res, err
    end
    return cli
  end
  package.loaded["busted.outputHandlers.junit"] = require "mkharness.junit"
  -- busted names itself after the file that called its runner
  return assert(load("require('busted.runner')({ standalone = false })", "@mkharness test"))
end

return B
