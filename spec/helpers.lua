-- Shared helpers for the specs (loaded with busted --helper).
-- Every spec file calls H.leakcheck() in its top describe: after each test,
-- no process the run started may be left (children, zombies, marked
-- processes) and no file descriptor may have leaked, as luv's tests fail on
-- an unclosed handle.
local mk = require "mkharness"
local core = mk.core

local H = {}
H.build = os.getenv("MKH_BUILD_DIR") or "build"
H.fx = H.build .. "/fixtures/fx_svc"
H.kvd = H.build .. "/kvd"
H.host = H.build .. "/mkharness"

local function fd_set()
  local s = {}
  local list, targets = core.fds()
  for _, fd in ipairs(list) do s[fd] = true end
  return s, targets
end

function H.leftovers()
  -- killed processes take a moment to vanish from /proc
  local deadline = core.now() + 2
  local left
  repeat
    left = core.leftovers()
    if #left == 0 then return left end
    core.sleep(0.01)
  until core.now() > deadline
  return left
end

function H.describe_pids(pids)
  local out = {}
  for _, pid in ipairs(pids) do
    local f = io.open("/proc/" .. pid .. "/cmdline")
    local cmd = f and f:read("a"):gsub("%z", " ") or "?"
    if f then f:close() end
    out[#out + 1] = pid .. " " .. cmd
  end
  return table.concat(out, "; ")
end

-- The harness's permanent fds (the guardian's pipe, the echo thread's) exist
-- from their first use on, and libcurl is loaded on the first HTTP request: make both
-- happen before any test measures.
mk.run { "true" }
do -- the echo thread's inotify and wake-up fds: with the first echoing service
  local s = mk.process { "true", echo = true, name = "warm-echo" }:start()
  s:wait_exit()
  s:stop()
end
pcall(mk.get, "http://127.0.0.1:1/", { timeout = 1 })

-- Run fn, expect a harness error of `kind`; return it.
function H.expect_error(kind, fn)
  local ok, e = pcall(fn)
  assert(not ok, "expected " .. kind .. ", but it succeeded")
  assert(mk.is_error(e, kind), "expected " .. kind .. ", got: " .. tostring(e))
  return e
end

function H.leakcheck()
  local busted = require "busted"
  local before_each, after_each = busted.before_each, busted.after_each
  local before
  before_each(function()
    collectgarbage()
    before = fd_set()
  end)
  after_each(function()
    local left = H.leftovers()
    if #left > 0 then
      local desc = H.describe_pids(left)
      for _, pid in ipairs(left) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
      error("processes left behind: " .. desc, 0)
    end
    collectgarbage()
    collectgarbage()
    local now, targets = fd_set()
    local leaked = {}
    for fd in pairs(now) do
      if not before[fd] then leaked[#leaked + 1] = fd .. " -> " .. tostring(targets[fd]) end
    end
    if #leaked > 0 then
      table.sort(leaked)
      error("file descriptors leaked: " .. table.concat(leaked, ", "), 0)
    end
  end)
end

-- A fresh directory for one test.
function H.tmpdir() return mk.tmpdir() end

-- Write a scenario to a file and run it in a fresh host process.
-- Returns { code=, stdout=, stderr= }.
function H.scenario(code, opts)
  opts = opts or {}
  local dir = mk.tmpdir()
  local path = dir .. "/scenario.lua"
  local f = assert(io.open(path, "w"))
  f:write("local mk = require 'mkharness'\nlocal FX = " .. string.format("%q", H.fx) .. "\n", code)
  f:close()
  local argv = { H.host }
  for _, a in ipairs(opts.host_args or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = path
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  argv.timeout = opts.timeout or 60
  argv.env = opts.env
  return mk.run(argv), path
end

-- Read a file, or nil.
function H.slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.pid_alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local s = f:read("a")
  f:close()
  local state = s:match("%) (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- For the process specs (10-14): expectations and process states.

-- Call fn, expect it to raise; return the error.
function H.catch(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return e
end

-- Expect fn(...) to raise a harness error of `kind`; return it.
function H.raises(kind, fn, ...)
  local e = H.catch(fn, ...)
  assert(mk.is_error(e, kind), "expected a " .. kind .. ", got: " .. tostring(e))
  return e
end

-- Expect a ConfigError whose message names every string in `names`.
function H.config_error(names, fn, ...)
  local e = H.raises("ConfigError", fn, ...)
  if type(names) == "string" then names = { names } end
  for _, n in ipairs(names) do
    assert(e.message:find(n, 1, true), "expected the message to name " .. n .. ": " .. e.message)
  end
  return e
end

function H.lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- /proc/PID/stat state letter (R, S, T, Z, ...) or nil.
function H.proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("%) (%a)")
end

-- Whether pid's cgroup (v2) is frozen; nil when it has no freezer (the
-- root cgroup, or no cgroup v2 mounted).
function H.cg_frozen(pid)
  local mnt
  for line in io.lines("/proc/self/mountinfo") do
    local m, fstype = line:match("^%S+ %S+ %S+ %S+ (%S+) .- %- (%S+) ")
    if fstype == "cgroup2" then mnt = m break end
  end
  local f = io.open("/proc/" .. pid .. "/cgroup")
  local cg = f and f:read("a"):match("0::([^\n]*)")
  if f then f:close() end
  if not mnt or not cg or cg == "/" then return nil end
  local ev = io.open(mnt .. cg .. "/cgroup.events")
  local frozen = ev and ev:read("a"):match("frozen (%d)")
  if ev then ev:close() end
  if frozen then return frozen == "1" end
end

-- Paused: frozen by the cgroup freezer (the state stays S), or stopped (T).
-- A shell caught inside vfork() waits for its stopped child
-- uninterruptibly (D) and stops only once the child execs or dies.
function H.is_paused(pid)
  local st = H.proc_state(pid)
  return st == "T" or st == "t" or st == "D" or H.cg_frozen(pid) == true
end

-- Running again: neither stopped nor frozen.
function H.is_resumed(pid)
  local st = H.proc_state(pid)
  return st ~= nil and st ~= "T" and st ~= "t" and H.cg_frozen(pid) ~= true
end

-- pause() returns once the service is paused: no waiting here
function H.wait_paused(pid)
  assert(H.is_paused(pid), "pid " .. pid .. " not paused (state " .. tostring(H.proc_state(pid)) .. ")")
end

function H.file_exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

function H.write_file(path, data)
  local f = assert(io.open(path, "w"))
  f:write(data)
  f:close()
end

-- A shell loop printing a counter every 20 ms.
H.COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"

return H
