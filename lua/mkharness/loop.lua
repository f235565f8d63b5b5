-- Due timers and the one place every harness wait sleeps.
--
-- A chaos run's faults are timers: they must fire on time inside whatever
-- harness call the workload is in (mk.sleep, mk.get, mk.run, a start, a
-- wait). So every wait loop sleeps through L.block(), which bounds each
-- sleep by the next timer's due time and fires what is due; and the waits
-- that used to block in C (a process's exit, an HTTP request, a spawn
-- until the child execs) take a path through L.block() while timers are
-- pending.
--
-- A scheduler (the chaos run's logical clients, coroutines) may own the
-- current coroutine: then L.block() yields to it instead of sleeping, so a
-- client stuck in a wait does not stop the others.
local core = require "mkharness.core"

local L = { timers = {}, firing = 0 }

-- Work that must be done, but not before the harness call that made it
-- returns: a start()'s bookkeeping once its service is ready (closing the
-- probes' watches and sockets, writing its events) would otherwise count
-- in every readiness latency, and runs slowly just after a wake-up, with
-- the caches cold. It is done at the next harness call or wait, and at
-- the end of the run. Kept in the registry:
-- busted reloads this module for each spec file, and a reload must not
-- drop what is owed.
local reg = debug.getregistry()
local owed = reg["mkharness.deferred"]
if not owed then
  owed = { list = {} }
  reg["mkharness.deferred"] = owed
end

function L.defer(fn)
  local list = owed.list
  list[#list + 1] = fn
end

-- Do what is owed, in order (what it defers in turn too). A failing item
-- does not stop the others; the first error is raised once all are done.
function L.run_deferred()
  local first
  while owed.list[1] do
    local list = owed.list
    owed.list = {}
    for _, fn in ipairs(list) do
      local ok, err = pcall(fn)
      if not ok and first == nil then first = err end
    end
  end
  if first ~= nil then error(first, 0) end
end

-- L.at(t, fn): fn(timer) runs once core.now() >= t, from inside a wait.
-- Timers are few (one per fault), so a sorted list is enough.
function L.at(t, fn)
  local tm = { at = t, fn = fn }
  local list = L.timers
  local i = #list
  while i > 0 and list[i].at > t do list[i + 1] = list[i] i = i - 1 end
  list[i + 1] = tm
  return tm
end

function L.cancel(tm)
  for i, x in ipairs(L.timers) do
    if x == tm then table.remove(L.timers, i) return end
  end
end

function L.clear() L.timers = {} end

-- Pending timers, or a scheduler running: the waits then take their
-- sliced paths. Without either, nothing changes for anyone.
function L.active() return L.timers[1] ~= nil or L.sched ~= nil end

-- The next due time, nil when none.
function L.next_due()
  local tm = L.timers[1]
  return tm and tm.at
end

-- Fire what is due. A timer's own harness calls (a restart's start())
-- wait through here too, so another timer due meanwhile fires inside it,
-- on time: each is taken off the list before it runs, so none runs twice
-- and the nesting is at most as deep as the timers are many. A timer's
-- error is its owner's to handle (the chaos run records it); here it must
-- not unwind some unrelated wait.
function L.run_due()
  local list = L.timers
  while list[1] and list[1].at <= core.now() do
    local tm = table.remove(list, 1)
    L.firing = L.firing + 1
    local ok, err = pcall(tm.fn, tm)
    L.firing = L.firing - 1
    if not ok and L.on_error then L.on_error(err, tm) end
  end
end

-- ---- the collector, while timers are pending ------------------------------
-- Lua 5.4's collector works in steps taken inside allocations, each doing
-- work in proportion to the bytes allocated since the last, times its
-- step multiplier (100 by default). After one big allocation (a table's
-- array doubling, a long string) a step traversed or swept much of the
-- heap: 5-20 ms on this kind of machine, during which no timer could
-- fire. So while a chaos run's faults are scheduled (L.hold_gc() ..
-- L.release_gc()):
-- - the multiplier is 4: a step is small whatever was allocated, and
--   the collector still runs by itself, so memory stays bounded whatever
--   the workload does between two harness calls;
-- - the loop does the bulk of the collecting itself, in slices of basic
--   steps between waits, never into a timer about to be due.
-- The history is kept in chunks for the same reason (chaos.lua).
local GC_STEPMUL = 4       -- while held
local GC_STEPMUL_LUA = 100 -- Lua 5.4's default, put back after
local GC_SLICE = 0.0003    -- seconds of collecting per slice
local GC_MARGIN = 0.001    -- no slice begins closer than this to a due timer
local GC_GROWTH = 1.5      -- slices run once the heap has grown this much since a cycle ended
local gc = { depth = 0 }

function L.hold_gc()
  gc.depth = gc.depth + 1
  if gc.depth > 1 then return end
  gc.mode = collectgarbage("incremental", 0, GC_STEPMUL, 0)
  gc.base = collectgarbage("count")
end

function L.release_gc()
  if gc.depth == 0 then return end
  gc.depth = gc.depth - 1
  if gc.depth > 0 then return end
  collectgarbage("incremental", 0, GC_STEPMUL_LUA, 0)
  if gc.mode == "generational" then collectgarbage("generational") end
end

-- One slice of collecting, when the heap has grown, ended before `limit`
-- (core.now() time; nil: the next due timer's) less the margin.
function L.collect(limit)
  if gc.depth == 0 or collectgarbage("count") < gc.base * GC_GROWTH then return end
  local now = core.now()
  local stop = now + GC_SLICE
  limit = limit or L.next_due()
  -- a timer already due fires at the next wait, whatever is done here
  if limit and limit > now and limit - GC_MARGIN < stop then stop = limit - GC_MARGIN end
  while now < stop do
    if collectgarbage("step", 0) then -- a cycle ended
      gc.base = collectgarbage("count")
      return
    end
    now = core.now()
  end
end

-- Sleep until one of fds is readable or `left` seconds passed (-1: no
-- limit), firing due timers. May return early: every caller re-checks.
-- Returns what the poll saw ({ [fd] = true }), or nil when unknown (a
-- client coroutine that yielded): then the caller re-checks everything.
function L.block(fds, left)
  L.run_deferred()
  L.run_due()
  local s = L.sched
  if s and L.firing == 0 and s.owns(coroutine.running()) and coroutine.isyieldable() then
    s.yield(fds, left) -- the scheduler collects before it sleeps
    return nil
  end
  L.collect()
  local due = L.next_due()
  if due then
    local d = math.max(0, due - core.now())
    if left < 0 or d < left then left = d end
  end
  local ready = core.poll(fds, left)
  L.run_due()
  return ready
end

-- proc:wait(timeout) that lets timers fire and clients run: it waits on
-- the process's pidfd (or the SIGCHLD pipe) through L.block.
function L.proc_wait(proc, timeout)
  if not L.active() then return proc:wait(timeout) end
  local deadline = timeout and (core.now() + math.max(0, timeout))
  while true do
    local code = proc:poll()
    if code then return code end
    local now = core.now()
    if deadline and now >= deadline then return nil end
    local fd = proc:fd()
    L.block(fd and { fd } or {}, deadline and (deadline - now) or -1)
  end
end

-- core.spawn(t) that lets timers fire and clients run while the child
-- starts: its launch (the clone and the wait for its exec, which blocks
-- the thread making it for as long as the child's steps before the exec
-- take) runs on the spawn thread (src/launch.c), and the wait for it goes
-- through L.block. Without timers or a scheduler it is core.spawn: the
-- hand-off to a thread would cost every ordinary start. A spawn asked for
-- while another is under way (a timer's restart) queues behind it. Left
-- by an error or a closed coroutine, the launch is given up: a child
-- already started is killed.
function L.spawn(t)
  if not L.active() then return core.spawn(t) end
  local s, err = core.spawn_start(t)
  if s == false then return core.spawn(t) end -- no thread to be had
  if not s then return nil, err end
  local _ <close> = s
  local fd = s:fd()
  while not s:done() do L.block({ fd }, -1) end
  return s:take()
end

return L
