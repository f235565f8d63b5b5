-- Nothing outlives the harness, for every way a run
-- can end. Each scenario starts the same hard-to-kill population:
--   plain     a --forever service
--   stubborn  a service that ignores SIGTERM
--   daemon    a double-forked daemon in a new session that ignores SIGTERM
--   tree      six descendants of different kinds (own pgrp, setsid
--             grandchild, scrubbed environment, double-fork daemon, ...),
--             each ignoring TERM/INT/HUP
-- Every process writes its pid to a directory the spec owns; once the host
-- has gone, every recorded pid must be dead.
local H = require "spec.helpers"
local mk = require "mkharness"

local STUBBORN_STOP = 1 -- keeps each teardown short; escalation is still needed

-- The scenario: arg[1] is the pid directory; what follows READY is `tail`.
local function scenario_code(tail)
  return [[
local D = arg[1]
local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
KEEP = { -- referenced, so the collector does not stop them early
  mk.process { FX, "--pidfile", D .. "/plain.pid", "--forever", name = "plain" }:start(),
  mk.process { FX, "--ignore", "TERM", "--pidfile", D .. "/stubborn.pid", "--forever",
    name = "stubborn", stop_timeout = ]] .. STUBBORN_STOP .. [[ }:start(),
  mk.process { FX, "--daemonize", "--ignore", "TERM", "--pidfile", D .. "/daemon.pid", "--forever",
    name = "daemon" }:start(),
  mk.process { FX, "--pidfile", D .. "/treeroot.pid", "--fork-tree", D .. "/tree",
    "--touch", D .. "/tree.done", "--forever", name = "tree" }:start(),
}
mk.wait_until(function()
  return exists(D .. "/plain.pid") and exists(D .. "/stubborn.pid") and exists(D .. "/daemon.pid")
    and exists(D .. "/tree.done")
end, { timeout = 30, message = "the services did not write their pid files" })
local f = assert(io.open(D .. "/ready", "w")) f:close()
io.stdout:write("READY\n") io.stdout:flush()
]] .. tail .. "\n"
end

local function exists(p)
  local f = io.open(p)
  if f then f:close() return true end
  return false
end

-- { {pid=, kind=}, ... } from the pid directory
local function recorded(dir)
  local list = {}
  for _, k in ipairs { "plain", "stubborn", "daemon", "treeroot" } do
    local s = H.slurp(dir .. "/" .. k .. ".pid")
    local pid = s and tonumber(s:match("%d+"))
    if pid then list[#list + 1] = { pid = pid, kind = k } end
  end
  local ls = mk.run { "ls", dir .. "/tree" }
  for name in ls.stdout:gmatch("[^\n]+") do
    local s = name:match("%.pid$") and H.slurp(dir .. "/tree/" .. name)
    local pid, kind = (s or ""):match("^(%d+) (%S+)")
    if pid then list[#list + 1] = { pid = tonumber(pid), kind = "tree " .. kind } end
  end
  return list
end

-- alive, and still one of ours (guards against pid reuse)
local function ours_alive(pid)
  if not H.pid_alive(pid) then return false end
  local s = H.slurp("/proc/" .. pid .. "/stat") or ""
  local comm = s:match("%((.-)%)")
  return comm == "fx_svc" or comm == "exe"
end

local function survivors(list)
  local left = {}
  for _, p in ipairs(list) do
    if ours_alive(p.pid) then left[#left + 1] = p.pid .. " (" .. p.kind .. ")" end
  end
  return left
end

-- kill whatever a failed test leaves, so the next one starts clean
local function kill_all(list)
  for _, p in ipairs(list) do
    if ours_alive(p.pid) then mk.run { "kill", "-KILL", tostring(p.pid) } end
  end
end

local function check_population(dir, list)
  assert.is_true(exists(dir .. "/ready"), "the scenario never got ready")
  -- plain, stubborn, the daemon (after its double fork), the tree root + 6 tree members
  assert.equal(10, #list, "expected 10 recorded pids, got " .. #list)
end

-- After the host has exited: every pid dead (within `grace` seconds).
local function assert_all_dead(list, grace)
  local left
  if grace and grace > 0 then
    pcall(mk.wait_until, function()
      left = survivors(list)
      return #left == 0
    end, { timeout = grace, interval = 0.02 })
  end
  left = survivors(list)
  assert(#left == 0, "processes outlived the harness: " .. table.concat(left, ", "))
end

-- Every case runs twice: with the cgroup net (where cgroup v2 is writable)
-- and without it, where the supervisor, the subreaper and the guardian
-- must hold on their own.
local CGROUP = "1"

local function new_dir()
  local dir = mk.tmpdir()
  return dir, { MKHARNESS_TMPDIR = mk.tmpdir(), MKHARNESS_CGROUP = CGROUP }
end

-- The Lua host process under the supervisor (the pid the user started).
local function inner_host(pid)
  local s = H.slurp("/proc/" .. pid .. "/task/" .. pid .. "/children") or ""
  return tonumber(s:match("%d+"))
end

-- Run to completion in the foreground.
local function run_scenario(tail, host_args)
  local dir, env = new_dir()
  finally(function() kill_all(recorded(dir)) end)
  local r = H.scenario(scenario_code(tail), { args = { dir }, host_args = host_args, env = env, timeout = 60 })
  local list = recorded(dir)
  return r, dir, list
end

-- Start the host in the background, wait for READY, hand it to `act`.
local function background_scenario(tail, act)
  local dir, env = new_dir()
  local path = mk.tmpdir() .. "/scenario.lua"
  local f = assert(io.open(path, "w"))
  f:write("local mk = require 'mkharness'\nlocal FX = " .. string.format("%q", H.fx) .. "\n", scenario_code(tail))
  f:close()
  local host = mk.process { H.host, path, dir, name = "host", env = env, stop_timeout = 5, on_exit = "ignore" }
  finally(function()
    if host:running() then pcall(host.stop, host) end
    pcall(host.kill, host) -- marks it done and sweeps what we own
    kill_all(recorded(dir))
  end)
  host:start()
  local ok, err = pcall(host.wait_output, host, "READY", { timeout = 30 })
  if not ok then
    error("scenario did not get ready: " .. tostring(err) .. "\nhost stderr:\n" .. host:err_output(), 0)
  end
  local code = act(host)
  return code, host, dir, recorded(dir)
end

for _, cg in ipairs { "1", "0" } do
describe("nothing outlives the harness (cgroup net " .. (cg == "1" and "allowed" or "off") .. ")", function()
  H.leakcheck()
  setup(function() CGROUP = cg end)

  it("normal end with forgotten stop()s", function()
    local r, dir, list = run_scenario("-- no stop(): the host must clean up")
    assert.equal(0, r.code, r.stderr)
    check_population(dir, list)
    assert_all_dead(list)
  end)

  it("a Lua error in the scenario", function()
    local r, dir, list = run_scenario("error('scenario failed on purpose')")
    assert.equal(1, r.code, r.stderr)
    assert.matches("scenario failed on purpose", r.stderr, 1, true)
    check_population(dir, list)
    assert_all_dead(list)
  end)

  it("--timeout expiring (exit 124)", function()
    local r, dir, list = run_scenario("mk.sleep(120)", { "--timeout", "5" })
    assert.equal(124, r.code, r.stderr)
    check_population(dir, list)
    assert_all_dead(list)
  end)

  for _, case in ipairs { { "INT", 130 }, { "TERM", 143 }, { "HUP", 129 } } do
    local sig, expected = case[1], case[2]
    it("SIG" .. sig .. " to the host: teardown, then exit " .. expected, function()
      local code, host, dir, list = background_scenario("mk.sleep(120)", function(host)
        host:signal(sig)
        return host:wait_exit { timeout = 30 }
      end)
      assert.equal(expected, code, host:err_output())
      assert.matches("SIG" .. sig, host:err_output(), 1, true)
      check_population(dir, list)
      assert_all_dead(list)
    end)
  end

  it("SIG" .. "INT while the scenario runs a pure-Lua loop", function()
    local code, host, dir, list = background_scenario("while true do end", function(host)
      host:signal("INT")
      return host:wait_exit { timeout = 30 }
    end)
    assert.equal(130, code, host:err_output())
    check_population(dir, list)
    assert_all_dead(list)
  end)

  it("SIGKILL of the host (the pid that was started): the host tears down", function()
    local code, _, dir, list = background_scenario("mk.sleep(120)", function(host)
      mk.run { "kill", "-KILL", tostring(host:pid()) }
      return host:wait_exit { timeout = 30 }
    end)
    assert.equal(-9, code)
    check_population(dir, list)
    assert_all_dead(list, 3)
  end)

  it("SIGKILL of the Lua host process: the supervisor reaps what it left", function()
    local _, _, dir, list = background_scenario("mk.sleep(120)", function(host)
      local inner = inner_host(host:pid())
      assert.is_number(inner, "no host process under the supervisor")
      mk.run { "kill", "-KILL", tostring(inner) }
      return host:wait_exit { timeout = 30 }
    end)
    check_population(dir, list)
    assert_all_dead(list, 3)
  end)

  it("SIGKILL of the host's whole process group: the guardian cleans up", function()
    local code, _, dir, list = background_scenario("mk.sleep(120)", function(host)
      host:kill { signal = "KILL", wait = false }
      return host:wait_exit { timeout = 30 }
    end)
    assert.equal(-9, code)
    check_population(dir, list)
    -- without a cgroup, a descendant that left every session and scrubbed its
    -- environment cannot be found once both host processes are dead
    if CGROUP == "0" then
      local kept = {}
      for _, p in ipairs(list) do if p.kind ~= "tree scrubbed" then kept[#kept + 1] = p end end
      list = kept
    end
    assert_all_dead(list, 3)
  end)
end)
end
