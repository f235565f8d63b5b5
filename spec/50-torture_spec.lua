-- The torture suite: "nothing outlives the harness" and "children get only
-- fds 0, 1, 2" under abuse.
--
-- Leak torture: batches of short scenarios, each in a fresh `mkharness`
-- process (four at a time), start a random mix of hostile services and end
-- a different way per batch, cycling: normal end, Lua error, --timeout,
-- SIGINT, SIGTERM, SIGKILL at a random moment (while the scenario loops
-- start()/stop()). Half the scenarios run without the cgroup net. Some
-- build a lab: its keeper carries the scenario's directory on its command
-- line (a fork of the host), so it is looked for like every other process.
-- After each batch: no process of any scenario is alive (found by pid file,
-- by the scenario's directory on its command line, and by its run marker),
-- no zombie is left whose parent is us, and each run directory is gone
-- after success and kept (and named) after failure.
--
-- Reproduce a failure with the seed it prints:
--   MKH_TORTURE_SEED=N mkharness test spec/50-torture_spec.lua
-- (MKH_TORTURE_BATCHES=N changes the number of batches, 4 scenarios each.)
--
-- Resource hygiene: 1000 start/stop cycles in one host leave its fd count
-- and RSS alone; a service started after the host has opened files,
-- sockets and watches sees only fds 0, 1, 2.
local H = require "spec.helpers"
local mk = require "mkharness"
local core = mk.core

local SEED = tonumber(os.getenv("MKH_TORTURE_SEED") or "")
  or (os.time() * 1000 + math.floor((core.now() % 1) * 1000)) % 2147483647
local BATCHES = tonumber(os.getenv("MKH_TORTURE_BATCHES") or "") or 72
local PER_BATCH = 4
local WAYS = { "normal", "error", "timeout", "INT", "TERM", "KILL" }
local EXPECT = { normal = 0, error = 1, timeout = 124, INT = 130, TERM = 143 }
local KILL_GRACE = 3   -- seconds SIGKILLed runs may take to clean up (guardian, supervisor)
local STOP_TIMEOUT = 0.1 -- stubborn services: keeps teardown short, escalation still needed

---------------------------------------------------------------- helpers
local self_pid = tonumber((H.slurp("/proc/self/stat") or ""):match("^(%d+)"))

local function ls(dir)
  local r = mk.run { "ls", "-A1", dir }
  local out = {}
  for name in r.stdout:gmatch("[^\n]+") do out[#out + 1] = name end
  return out
end

local function proc_stat(pid)
  local s = H.slurp("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local comm, state, ppid = s:match("%((.*)%) (%a) (%d+)")
  return state, tonumber(ppid), comm
end

-- Every process whose command line mentions one of `dirs` or whose
-- environment carries one of `markers`: { "pid (why): cmdline", ... }.
-- A scenario's directory is on the command line of each process it made
-- (pid files and the fork tree live there; forks keep their parent's
-- command line), so this finds even those killed before they wrote a
-- pid file, and those whose environment was scrubbed.
local function scenario_processes(dirs, markers)
  local found = {}
  for _, name in ipairs(ls("/proc")) do
    local pid = tonumber(name)
    if pid and pid ~= self_pid then
      local cmd = H.slurp("/proc/" .. pid .. "/cmdline")
      local why
      if cmd and cmd ~= "" then
        for _, d in ipairs(dirs) do
          if cmd:find(d .. "/", 1, true) or cmd:find(d .. "\0", 1, true) then why = "dir " .. d break end
        end
        if not why and #markers > 0 then
          local env = H.slurp("/proc/" .. pid .. "/environ") or ""
          for _, m in ipairs(markers) do
            if env:find(m .. "\0", 1, true) then why = "marker " .. m break end
          end
        end
      end
      if why then
        local state = proc_stat(pid)
        if state and state ~= "Z" and state ~= "X" then
          found[#found + 1] = string.format("%d (%s, state %s): %s", pid, why, state, (cmd:gsub("%z", " ")))
        end
      end
    end
  end
  return found
end

-- Our zombie children: { "pid comm", ... }
-- (`held`: the leaders of our own executors, which the harness keeps as
-- zombies until it sweeps them, so that their pids stay ours)
local function our_zombies(held)
  local out = {}
  for _, name in ipairs(ls("/proc")) do
    local pid = tonumber(name)
    if pid and not (held and held[pid]) then
      local state, ppid, comm = proc_stat(pid)
      if state == "Z" and ppid == self_pid then out[#out + 1] = pid .. " " .. tostring(comm) end
    end
  end
  return out
end

-- pids recorded under a scenario directory (pid files of --pidfile and of
-- --fork-tree): { {pid=, file=} }
local function recorded(dir)
  local list = {}
  local r = mk.run { "find", dir, "-name", "*.pid" }
  for path in r.stdout:gmatch("[^\n]+") do
    local pid = tonumber((H.slurp(path) or ""):match("%d+"))
    if pid then list[#list + 1] = { pid = pid, file = path:sub(#dir + 2) } end
  end
  return list
end

-- alive, and still one of ours (guards against pid reuse)
local function ours_alive(pid)
  if not H.pid_alive(pid) then return false end
  local _, _, comm = proc_stat(pid)
  return comm == "fx_svc" or comm == "exe" or comm == "sh"
end

local function kill_pids(list)
  for _, pid in ipairs(list) do os.execute("kill -9 " .. math.tointeger(pid) .. " 2>/dev/null") end
end

-- Where cgroup v2 is mounted (nil when it is not).
local function cgroup2_mount()
  for line in (H.slurp("/proc/self/mountinfo") or ""):gmatch("[^\n]+") do
    local mnt, fstype = line:match("^%S+ %S+ %S+ %S+ (%S+) .- %- (%S+) ")
    if fstype == "cgroup2" then return mnt end
  end
end
local CG_MOUNT = cgroup2_mount()

-- cgroup directories a run made (mkharness-<run id>, anywhere), deepest first
local function run_cgroups(run_ids)
  if not CG_MOUNT or #run_ids == 0 then return {} end
  local want = {}
  for _, id in ipairs(run_ids) do want["mkharness-" .. id] = true end
  local r = mk.run { "find", CG_MOUNT, "-type", "d", "-name", "mkharness-*" }
  local out = {}
  for path in r.stdout:gmatch("[^\n]+") do
    local base = path:match("([^/]+)$")
    if want[base] then
      local sub = mk.run { "find", path, "-depth", "-type", "d" }
      for d in sub.stdout:gmatch("[^\n]+") do out[#out + 1] = d end
    end
  end
  return out
end

local function tail(s, n)
  n = n or 3000
  return #s > n and ("..." .. s:sub(-n)) or s
end

---------------------------------------------------------------- scenario code
-- Each service kind: a function(tag) returning Lua source that starts it
-- and keeps a reference (so the collector does not stop it early).
local KINDS = {}

KINDS.daemon = function(t) -- double fork, new session, ignores TERM
  return ([[keep(mk.process { FX, "--daemonize", "--ignore", "TERM", "--pidfile", D .. "/%s.pid",
  "--forever", name = "daemon", stop_timeout = ST }):start()]]):format(t)
end

KINDS.stubborn = function(t) -- ignores SIGTERM, ready by banner
  return ([[keep(mk.output { FX, "--ignore", "TERM", "--pidfile", D .. "/%s.pid", "--print", "stubborn up",
  "--forever", name = "stubborn", banner = "stubborn up", stop_timeout = ST }):start()]]):format(t)
end

KINDS.tree = function(t) -- 6 descendants: own pgrp, setsid grandchild, scrubbed env, double fork...
  return ([[keep(mk.output { FX, "--pidfile", D .. "/%s.pid", "--fork-tree", D .. "/%s", "--print", "tree up",
  "--forever", name = "tree", banner = "tree up", stop_timeout = ST }):start()]]):format(t, t)
end

KINDS.exits = function(t, rnd) -- exits at once, successfully or not
  return ([[keep(mk.process { FX, "--pidfile", D .. "/%s.pid", "--exit", %d, name = "exits", on_exit = "ignore" }):start()]])
    :format(t, rnd(0, 1) == 0 and 0 or 3)
end

KINDS.flood = function(t, rnd) -- floods stdout or stderr before (and instead of) its banner
  local stream = rnd(0, 1) == 0 and "--flood" or "--eflood"
  return ([[keep(mk.output { FX, "--pidfile", D .. "/%s.pid", "%s", %d, "--print", "flooded", "--forever",
  name = "flood", banner = "flooded" }):start()]]):format(t, stream, rnd(100, 3000) * 1000)
end

KINDS.port = function(t) -- holds the port another executor wants
  return ([[do
  local port = mk.free_port()
  keep(mk.tcp { FX, "--pidfile", D .. "/%s.pid", "--listen", port, "--serve-tcp", name = "holder",
    port = port }):start()
  local ok, err = pcall(function()
    return keep(mk.tcp { FX, "--pidfile", D .. "/%s-second.pid", "--listen", port, "--serve-tcp",
      name = "second", port = port }):start()
  end)
  if ok or not mk.is_error(err, "AlreadyRunning") then
    error("a second service on a taken port: expected AlreadyRunning, got " .. tostring(ok and "success" or err), 0)
  end
end]]):format(t, t)
end

KINDS.shell = function(t) -- a shell with a background job, one child ignoring TERM
  return ([[keep(mk.process { shell = FX .. " --pidfile " .. D .. "/%s-a.pid --forever & exec " .. FX ..
  " --ignore TERM --pidfile " .. D .. "/%s-b.pid --forever", name = "shell", stop_timeout = ST }):start()]])
    :format(t, t)
end

KINDS.lab = function(t) -- a lab (its keeper, namespaces, rules) with a stubborn service inside and a partition
  return ([[do
  local ok, lab = pcall(mk.lab, { hosts = { "n1", "n2" } })
  if ok then -- a machine without user namespaces tortures the rest
    keep(lab)
    keep(mk.output { FX, "--ignore", "TERM", "--pidfile", D .. "/%s.pid", "--print", "lab up", "--forever",
      name = "inlab", banner = "lab up", host = lab.n1, stop_timeout = ST }):start()
    lab:partition { { "n1" }, { "n2" } }
  end
end]]):format(t)
end

local KIND_NAMES = { "daemon", "stubborn", "tree", "exits", "flood", "port", "shell", "lab" }

-- The start/stop loop the interrupted scenarios run until they are ended:
-- so an interruption lands during start(), during stop() (stubborn
-- services wait for escalation) or in between.
local LOOP = [[
local n = 0
while true do
  n = n + 1
  local pf = D .. "/loop" .. n .. ".pid"
  local k, s = n % 3
  if k == 0 then
    s = mk.output { FX, "--pidfile", pf, "--print", "up", "--forever", name = "loop", banner = "up" }
  elseif k == 1 then
    s = mk.output { FX, "--ignore", "TERM", "--pidfile", pf, "--print", "up", "--forever", name = "loopstub",
      banner = "up", stop_timeout = 0.05 }
  else
    s = mk.process { FX, "--daemonize", "--pidfile", pf, "--forever", name = "loopd" }
  end
  s:start()
  s:stop()
end
]]

local function scenario_code(kinds, way, rnd)
  local parts = {
    "local D = arg[1]",
    "local ST = " .. STOP_TIMEOUT,
    "local KEEP = {}",
    "local function keep(s) KEEP[#KEEP + 1] = s return s end",
    "mk.tmpdir() -- the run directory exists from here on",
    [[io.stdout:write("STARTED ", mk.core.run_id(), "\n") io.stdout:flush()]],
  }
  for i, k in ipairs(kinds) do parts[#parts + 1] = KINDS[k]("k" .. i .. k, rnd) end
  parts[#parts + 1] = [[io.stdout:write("UP\n") io.stdout:flush()]]
  if way == "normal" then
    if rnd(0, 1) == 0 then -- stop what we started (some refuse to stop cleanly: fine)
      parts[#parts + 1] = "for i = #KEEP, 1, -1 do pcall(KEEP[i].stop, KEEP[i]) end"
    else
      parts[#parts + 1] = "-- forgotten stop()s: the host tears down"
    end
  elseif way == "error" then
    parts[#parts + 1] = "error('torture: failing on purpose')"
  else
    parts[#parts + 1] = LOOP
  end
  return table.concat(parts, "\n") .. "\n"
end

---------------------------------------------------------------- one batch
local stats = { scenarios = 0, recorded = 0, by = {} }

local function plan_batch(b)
  math.randomseed(SEED + b)
  local rnd = math.random
  local way = WAYS[(b - 1) % #WAYS + 1]
  local list = {}
  for i = 1, PER_BATCH do
    local s = { index = i, way = way, cgroup = (i % 2 == 1) and "1" or "0" }
    local n = rnd(2, 5)
    s.kinds = {}
    for j = 1, n do s.kinds[j] = KIND_NAMES[rnd(1, #KIND_NAMES)] end
    s.code = scenario_code(s.kinds, way, rnd)
    s.delay = rnd(0, 300) / 1000 -- for signals: after STARTED
    if way == "timeout" then s.timeout = rnd(50, 600) / 1000 end
    if way == "INT" or way == "TERM" then
      s.target = rnd(0, 1) == 0 and "group" or "pid"
    elseif way == "KILL" then
      -- without a cgroup, a scrubbed setsid descendant can only be found
      -- while one of the two host processes lives: never kill both then
      local targets = s.cgroup == "1" and { "group", "pid", "inner" } or { "pid", "inner" }
      s.target = targets[rnd(1, #targets)]
    end
    list[i] = s
  end
  return way, list
end

local function describe_scenario(s)
  return string.format("seed=%d batch=%d scenario=%d way=%s%s cgroup=%s kinds=%s%s%s",
    SEED, s.batch, s.index, s.way, s.target and (" target=" .. s.target) or "", s.cgroup,
    table.concat(s.kinds, ","), s.way ~= "normal" and s.way ~= "error" and string.format(" delay=%.3f", s.delay) or "",
    s.timeout and string.format(" timeout=%.3f", s.timeout) or "")
end

local function launch(s)
  s.dir = mk.tmpdir()       -- pid files, the fork tree
  s.tmp = mk.tmpdir()       -- MKHARNESS_TMPDIR: where its run directory goes
  local path = mk.tmpdir() .. "/scenario.lua"
  local f = assert(io.open(path, "w"))
  f:write("local mk = require 'mkharness'\nlocal FX = " .. string.format("%q", H.fx) .. "\n", s.code)
  f:close()
  s.path = path
  local argv = { H.host }
  if s.timeout then argv[#argv + 1] = "--timeout" argv[#argv + 1] = string.format("%.3f", s.timeout) end
  argv[#argv + 1] = path
  argv[#argv + 1] = s.dir
  argv.name = "host"
  argv.env = { MKHARNESS_TMPDIR = s.tmp, MKHARNESS_CGROUP = s.cgroup }
  argv.stop_timeout = 5
  argv.on_exit = "ignore" -- the host ends every way on purpose
  argv.timeout = false
  s.host = mk.process(argv)
  s.host:start()
  s.host_pid = s.host:pid()
end

-- The Lua host process under the supervisor (the pid that was started).
local function inner_host(pid)
  local txt = H.slurp("/proc/" .. pid .. "/task/" .. pid .. "/children") or ""
  for p in txt:gmatch("%d+") do
    local _, _, comm = proc_stat(p)
    if comm ~= "mkh-guardian" then return tonumber(p) end
  end
end

local function deliver(s)
  local pid = s.host:pid()
  if not pid then s.delivered = "host already gone" return end
  local sig = s.way
  if s.target == "group" then
    s.host:signal(sig)
  elseif s.target == "pid" then
    mk.run { "kill", "-" .. sig, tostring(pid) }
  else
    local inner = inner_host(pid)
    if not inner then s.delivered = "no inner host" return end
    mk.run { "kill", "-" .. sig, tostring(inner) }
  end
  s.delivered = string.format("%.3f s after STARTED", core.now() - s.t_started)
end

-- Signal each scenario `delay` after it printed STARTED.
local function signal_all(list)
  local pending = {}
  for _, s in ipairs(list) do
    if s.way == "INT" or s.way == "TERM" or s.way == "KILL" then pending[#pending + 1] = s end
  end
  if #pending == 0 then return end
  mk.wait_until(function()
    local left = 0
    local now = core.now()
    for _, s in ipairs(pending) do
      if not s.delivered then
        if not s.t_started then
          if s.host:output():find("STARTED", 1, true) then
            s.t_started = now
          elseif not s.host:running() then
            s.delivered = "host ended before STARTED"
          end
        end
        if s.t_started and now >= s.t_started + s.delay then deliver(s) end
        if not s.delivered then left = left + 1 end
      end
    end
    return left == 0
  end, { timeout = 60, interval = 0.002, message = "scenarios did not start" })
end

local function check_run_dir(s, code, stderr, ctx)
  local entries = {}
  for _, e in ipairs(ls(s.tmp)) do
    -- the link to the newest kept run goes with it
    if e == "mkharness-last" then os.remove(s.tmp .. "/" .. e) else entries[#entries + 1] = e end
  end
  if s.way == "KILL" then
    -- whatever the host managed: nothing else is checked; clean up
    for _, e in ipairs(entries) do core.rmtree(s.tmp .. "/" .. e) end
    return
  end
  if #entries == 0 and code ~= 0 and not s.run_id then
    return -- ended (--timeout) before the scenario made its run directory
  end
  if code == 0 then
    assert(#entries == 0, ctx .. ": run directory left after success: " .. table.concat(entries, ", "))
  else
    assert(#entries == 1, ctx .. ": expected one kept run directory, found: " .. table.concat(entries, ", ") ..
      "\nhost stderr:\n" .. tail(stderr))
    local kept = s.tmp .. "/" .. entries[1]
    assert(entries[1]:match("^mkharness%-"), ctx .. ": unexpected entry " .. kept)
    assert(stderr:find("run directory kept: " .. kept, 1, true),
      ctx .. ": the host did not name the kept run directory " .. kept .. "\nhost stderr:\n" .. tail(stderr))
    core.rmtree(kept)
  end
end

local function run_batch(b)
  local way, list = plan_batch(b)
  for _, s in ipairs(list) do s.batch = b end
  local all_dirs = {}
  finally(function()
    -- whatever a failed batch leaves, so the next one starts clean
    local left = {}
    for _, s in ipairs(list) do
      if s.host then pcall(s.host.kill, s.host) end
      if s.dir then
        for _, r in ipairs(recorded(s.dir)) do
          if ours_alive(r.pid) then left[#left + 1] = r.pid end
        end
      end
    end
    kill_pids(left)
    -- empty cgroups a failed check left behind (rmdir, deepest first)
    local ids = {}
    for _, s in ipairs(list) do if s.run_id then ids[#ids + 1] = s.run_id end end
    for _, d in ipairs(run_cgroups(ids)) do os.remove(d) end
  end)

  for _, s in ipairs(list) do launch(s) all_dirs[#all_dirs + 1] = s.dir end
  signal_all(list)

  -- every host ends, with the exit status of its way
  for _, s in ipairs(list) do
    local ok, code = pcall(s.host.wait_exit, s.host, { timeout = 60 })
    s.ctx = describe_scenario(s) .. "\n  scenario: " .. s.path
    assert(ok, s.ctx .. ": the host did not end: " .. tostring(code) .. "\nhost stderr:\n" .. tail(s.host:err_output()))
    s.code = code
    stats.scenarios = stats.scenarios + 1
    local key = s.way .. (s.target and ("/" .. s.target) or "") .. " cgroup=" .. s.cgroup
    stats.by[key] = (stats.by[key] or 0) + 1
  end

  local markers = {}
  for _, s in ipairs(list) do
    s.stdout, s.stderr = s.host:output(), s.host:err_output()
    s.run_id = s.stdout:match("STARTED (%S+)")
    if s.run_id then
      markers[#markers + 1] = "MKHARNESS_RUN=" .. s.run_id
      s.ctx = s.ctx .. "\n  run: " .. s.run_id
    end
  end

  for _, s in ipairs(list) do
    local ctx = s.ctx .. (s.delivered and ("\n  signal: " .. s.delivered) or "")
    local expected = EXPECT[s.way]
    if s.way == "KILL" then expected = s.target == "inner" and 128 + 9 or -9 end
    if s.delivered == "host ended before STARTED" then expected = nil end
    if expected then
      assert(s.code == expected, string.format("%s: exit status %s, expected %d\nhost stdout:\n%s\nhost stderr:\n%s",
        ctx, tostring(s.code), expected, tail(s.stdout, 500), tail(s.stderr)))
    end
    if s.way == "normal" or s.way == "error" then
      assert(s.stdout:find("UP", 1, true), ctx .. ": the population never came up\n" .. tail(s.stderr))
    end
    if s.way == "error" then
      assert(s.stderr:find("torture: failing on purpose", 1, true), ctx .. ": " .. tail(s.stderr))
    elseif s.way == "INT" or s.way == "TERM" then
      assert(s.stderr:find("SIG" .. s.way, 1, true), ctx .. ": the host did not report SIG" .. s.way .. "\n" .. tail(s.stderr))
    elseif s.way == "timeout" then
      assert(s.stderr:find("run timeout", 1, true), ctx .. ": " .. tail(s.stderr))
    end
  end

  -- nothing alive: strictly at once after a graceful end (the host has
  -- reaped everything before exiting); within KILL_GRACE after a SIGKILL
  local grace = way == "KILL" and KILL_GRACE or 0
  local left
  local deadline = core.now() + grace
  repeat
    left = scenario_processes(all_dirs, markers)
    for _, s in ipairs(list) do
      for _, r in ipairs(recorded(s.dir)) do
        if ours_alive(r.pid) then
          left[#left + 1] = string.format("%d (recorded in %s, scenario %d)", r.pid, r.file, s.index)
        end
      end
    end
    if #left == 0 or core.now() >= deadline then break end
    core.sleep(0.02)
  until false
  if #left > 0 then
    local ctxs = {}
    for _, s in ipairs(list) do ctxs[#ctxs + 1] = s.ctx .. (s.delivered and ("\n  signal: " .. s.delivered) or "") end
    error(string.format("processes outlived the harness%s:\n  %s\nin batch:\n%s", grace > 0 and
      string.format(" (after %g s)", grace) or "", table.concat(left, "\n  "), table.concat(ctxs, "\n")), 0)
  end

  -- no zombie whose parent is us: after a graceful end, before we reap
  -- anything ourselves; after a SIGKILL the orphans came to us (we are a
  -- subreaper) and our own sweep must reap them
  if way == "KILL" then
    for _, s in ipairs(list) do s.host:kill() end
  end
  local held = {}
  for _, s in ipairs(list) do if s.host_pid then held[s.host_pid] = true end end
  local z = our_zombies(held)
  assert(#z == 0, "zombies left whose parent is us: " .. table.concat(z, ", ") .. "\n" .. list[1].ctx)

  -- no cgroup left behind either (the host's, or the guardian's, or the
  -- supervisor's job, however the run ended)
  local leaked = {}
  for _, s in ipairs(list) do
    local cgs = s.run_id and run_cgroups({ s.run_id }) or {}
    if #cgs > 0 then
      leaked[#leaked + 1] = s.ctx .. (s.delivered and ("\n  signal: " .. s.delivered) or "") ..
        "\n  left: " .. table.concat(cgs, "\n        ")
    end
  end
  assert(#leaked == 0, "cgroups left behind by:\n" .. table.concat(leaked, "\n"))

  for _, s in ipairs(list) do
    check_run_dir(s, s.code, s.stderr, s.ctx)
    stats.recorded = stats.recorded + #recorded(s.dir)
  end
end

describe("leak torture #torture #leak", function()
  H.leakcheck()

  for b = 1, BATCHES do
    local way = WAYS[(b - 1) % #WAYS + 1]
    it(string.format("batch %d: %d scenarios ending by %s", b, PER_BATCH, way), function()
      local ok, err = pcall(run_batch, b)
      if not ok then
        local msg = type(err) == "table" and tostring(err.message or err) or tostring(err)
        error(string.format("[MKH_TORTURE_SEED=%d, batch %d] %s", SEED, b, msg), 0)
      end
    end)
  end

  it("covered every way, with and without the cgroup net", function()
    local keys = {}
    for k, n in pairs(stats.by) do keys[#keys + 1] = k .. ": " .. n end
    table.sort(keys)
    local summary = string.format("seed %d: %d scenarios, %d processes recorded\n  %s", SEED,
      stats.scenarios, stats.recorded, table.concat(keys, "\n  "))
    if BATCHES >= #WAYS then
      for _, w in ipairs(WAYS) do
        for _, cg in ipairs { "0", "1" } do
          local seen = false
          for k in pairs(stats.by) do
            if k:find("^" .. w) and k:find("cgroup=" .. cg, 1, true) then seen = true end
          end
          assert(seen, "no scenario ended by " .. w .. " with cgroup=" .. cg .. "\n" .. summary)
        end
      end
    end
    assert(stats.scenarios >= BATCHES * PER_BATCH, summary)
    if os.getenv("MKH_TORTURE_VERBOSE") then io.stderr:write(summary, "\n") end
  end)
end)

---------------------------------------------------------------- hygiene
describe("resource hygiene #torture #hygiene", function()
  H.leakcheck()

  it("1000 start/stop cycles in one host: fd count unchanged, RSS grows < 2 MB", function()
    local r = H.scenario([[
local function rss()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a") f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end
local function fds()
  collectgarbage() collectgarbage()
  local list, targets = mk.core.fds()
  local out = {}
  for _, fd in ipairs(list) do out[#out + 1] = fd .. "->" .. tostring(targets[fd]) end
  return #list, table.concat(out, " ")
end
local P = mk.process { FX, "--forever", name = "p" }
local O = mk.output { FX, "--print", "up", "--forever", name = "o", banner = "up" }
local at = {}
for i = 1, 1000 do
  local k = i % 4
  if k == 0 then
    mk.process { FX, "--forever", name = "np" }:start():stop()
  elseif k == 1 then
    mk.output { FX, "--print", "up", "--forever", name = "no", banner = "up" }:start():stop()
  elseif k == 2 then
    P:start() P:stop()
  else
    O:start() O:stop()
  end
  if i == 1 or i == 100 or i == 1000 then
    local n, list = fds()
    at[i] = { n = n, list = list, rss = rss() }
  end
end
for _, i in ipairs { 1, 100, 1000 } do
  print(string.format("AT %d fds=%d rss=%d list=%s", i, at[i].n, at[i].rss, at[i].list))
end
]], { timeout = 180, env = {
      MKHARNESS_TMPDIR = mk.tmpdir(),
      -- under ASan freed memory waits in a quarantine (256 MB by default),
      -- which would read as growth: measure what is really kept
      ASAN_OPTIONS = os.getenv("MKH_SANITIZER_PRELOAD") and "quarantine_size_mb=0:detect_leaks=0" or nil,
    } })
    assert.equal(0, r.code, r.stderr)
    local at = {}
    for i, n, rss, list in r.stdout:gmatch("AT (%d+) fds=(%d+) rss=(%d+) list=([^\n]*)") do
      at[tonumber(i)] = { n = tonumber(n), rss = tonumber(rss), list = list }
    end
    assert(at[1] and at[100] and at[1000], r.stdout)
    assert(at[1].n == at[1000].n, string.format("fd count %d after cycle 1, %d after cycle 1000:\n  1: %s\n  1000: %s",
      at[1].n, at[1000].n, at[1].list, at[1000].list))
    assert.equal(at[100].list, at[1000].list)
    local grown = at[1000].rss - at[100].rss
    assert(grown < 2048, string.format("RSS grew by %d kB between cycle 100 (%d kB) and 1000 (%d kB)",
      grown, at[100].rss, at[1000].rss))
  end)

  describe("nothing the host opened is inherited", function()
    local function fdinfo_fds(out)
      local set = {}
      for fd in out:gmatch("fd (%d+) %-> [^\n]*") do set[#set + 1] = tonumber(fd) end
      table.sort(set)
      return set
    end

    it("by a service started after files, sockets, watches and an HTTP request", function()
      local dir = mk.tmpdir()
      -- a file opened by Lua (fopen: not close-on-exec)
      local f = assert(io.open(dir .. "/open-file", "w"))
      f:write("x")
      local g = assert(io.open(dir .. "/open-file", "r"))
      -- an HTTP server and a request to it through libcurl
      local port = mk.free_port()
      local _web <close> = mk.http { H.fx, "--listen", port, "--serve-http", 200,
        url = "http://127.0.0.1:" .. port .. "/", name = "web" }:start()
      local res = mk.get("http://127.0.0.1:" .. port .. "/x")
      assert.equal(200, res.status)
      -- a watch (inotify) and a datagram socket
      local w = assert(core.watch())
      assert(w:add(dir, "create"))
      local sock = assert(core.dgram(dir .. "/dgram.sock"))
      -- a service waiting for its banner keeps a scanner and a watch open
      local _banner <close> = mk.output { H.fx, "--print", "ready", "--forever", banner = "ready" }:start()
      finally(function()
        f:close()
        g:close()
        w:close()
        sock:close()
      end)

      local s <close> = mk.process { H.fx, "--fdinfo", "--forever", name = "fdinfo" }:start()
      local out = s:wait_output("^pid %d+", { timeout = 10 }) and s:output()
      assert.same({ 0, 1, 2 }, fdinfo_fds(out), out)

      local sh <close> = mk.process { shell = "exec " .. H.fx .. " --fdinfo --forever", name = "fdinfo-sh" }:start()
      local out2 = sh:wait_output("^pid %d+", { timeout = 10 }) and sh:output()
      assert.same({ 0, 1, 2 }, fdinfo_fds(out2), out2)

      local r = mk.run { H.fx, "--fdinfo" }
      assert.same({ 0, 1, 2 }, fdinfo_fds(r.stdout), r.stdout)

      -- a daemon's grandchild inherits nothing more either
      local pf = dir .. "/daemon.pid"
      local d <close> = mk.pidfile { H.fx, "--daemonize", "--fdinfo", "--pidfile", pf, "--forever",
        file = pf, name = "daemon-fdinfo" }:start()
      local out3 = d:wait_output("^pid %d+", { timeout = 10 }) and d:output()
      assert.same({ 0, 1, 2 }, fdinfo_fds(out3), out3)
    end)

    it("by a service of a fresh host that opened files and sockets first", function()
      local r = H.scenario([[
local dir = mk.tmpdir()
local f = assert(io.open(dir .. "/a", "w"))
local port = mk.free_port()
local web = mk.http { FX, "--listen", port, "--serve-http", 200, url = "http://127.0.0.1:" .. port .. "/" }:start()
assert(mk.get("http://127.0.0.1:" .. port .. "/").status == 200)
local w = mk.core.watch() w:add(dir, "create")
local s = mk.process { FX, "--fdinfo", "--forever" }:start()
s:wait_output("^pid %d+", { timeout = 10 })
io.stdout:write(s:output())
]], { timeout = 60, env = { MKHARNESS_TMPDIR = mk.tmpdir() } })
      assert.equal(0, r.code, r.stderr)
      assert.same({ 0, 1, 2 }, fdinfo_fds(r.stdout), r.stdout)
    end)
  end)
end)
