-- Chaos runs: how late faults fire while the workload calls the harness
-- (target p99 <= 2 ms), what the history and a checker cost per recorded
-- operation (target <= 5 µs), and checking 100,000 operations (< 1 s).
-- Standalone:  ./build/mkharness bench/chaos.lua [--quick]
-- Prints tables; never fails on speed.
--
-- What is measured:
--   fault lateness   a custom fault (its act takes no time) due every 5-15 ms,
--                    while the clients spend their time inside one kind of
--                    harness call; late = the instant taken just before the
--                    act minus the planned instant. "mixed" adds kvd killed
--                    and restarted (SIGKILL, then start() waiting for HTTP
--                    readiness) beside it, 4 clients doing PUTs.
--   record / op      ctx:invoke of a function that returns at once, minus
--                    the same pcall without recording: the history entries,
--                    the op event kept for events.jsonl, and its batch write
--                    (every 4096 ops and at the end) included.
--   check / op       each checker over that history (with 500 fault
--                    occurrences added), divided by its ops.
--   100,000 ops      each checker over a history of 100,000 operations.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local L = require "lib"

local quick = false
for _, a in ipairs(arg) do if a == "--quick" then quick = true end end
local build = os.getenv("MKH_BUILD_DIR") or (here .. "../build")
local DUR = quick and 2 or 6

local rows = {}
local function row(what, st, unit, target)
  rows[#rows + 1] = { what, L.fmt(st.n, "count"), L.fmt(st.median, unit), L.fmt(st.p90, unit),
    L.fmt(st.p99, unit), L.fmt(st.max, unit), target or "" }
end
local function stats(samples)
  local st = L.stats(samples)
  local s = {}
  for i, v in ipairs(samples) do s[i] = v end
  table.sort(s)
  st.p99 = s[math.max(1, math.min(#s, math.ceil(0.99 * #s)))]
  return st
end

local function quick_fault()
  return mk.fault.custom { name = "tick", start = function() end, heal = function() end,
    every = { 0.005, 0.015 }, lasting = { 0.001, 0.003 } }
end

local port = mk.free_port()
local base = "http://127.0.0.1:" .. port
local kvd = mk.http { build .. "/kvd", "--port", port, "--data", mk.tmpdir() .. "/kvd.log", name = "kvd",
  url = base .. "/health", method = "GET", timeout = 10 }:start()

local workloads = {
  { "inside mk.sleep(1 ms)", function() mk.sleep(0.001) end },
  { "inside mk.sleep(50 ms)", function() mk.sleep(0.05) end },
  { "inside mk.run{ sleep 0.05 }", function() mk.run { "sleep", "0.05" } end },
  { "inside mk.get (kvd)", function() mk.get(base .. "/health", { timeout = 2 }) end },
  { "inside mk.wait_until", function()
    local t = mk.now() + 0.03
    mk.wait_until(function() return mk.now() > t end, { interval = 0.01 })
  end },
}
for i, w in ipairs(workloads) do
  local run = mk.chaos { seed = i, duration = DUR, faults = { quick_fault() },
    workload = function(ctx) while ctx:running() do w[2]() end end }
  row("late, " .. w[1], stats(run.late), "s", "p99 ≤ 2 ms")
end
do
  local run = mk.chaos { seed = 9, duration = DUR, clients = 4, concurrent = true,
    faults = { quick_fault(), mk.fault.kill { { kvd }, every = { 0.3, 0.6 }, lasting = { 0.05, 0.2 } } },
    workload = function(ctx)
      local n = 0
      while ctx:running() do
        n = n + 1
        ctx:invoke("add", ctx.client .. "-" .. n, function(k)
          local r = mk.http_request { url = base .. "/kv/" .. k, method = "PUT", body = "v", timeout = 1 }
          if r.status ~= 204 then ctx:fail(r.status) end
        end)
      end
    end }
  row("late, mixed: 4 clients PUT, kvd killed", stats(run.late), "s", "p99 ≤ 2 ms")
end
kvd:stop()

io.write("\nfault lateness (instant before the act - planned instant), " .. DUR .. " s per row\n")
io.write(L.table({ "what", "n", "median", "p90", "p99", "max", "target" }, rows,
  { false, true, true, true, true, true, false }))

-- the cost of recording, then of checking
local N = quick and 20000 or 100000
local function plain() return nil end
local cost_rows = {}
local rec, base_t = {}, {}
local history_run
for round = 1, quick and 3 or 5 do
  local run = mk.chaos { seed = round, duration = 3600, workload = function(ctx)
    local t0 = mk.now()
    local sum = 0
    local function read() return sum end
    for i = 1, N do
      if i % 2 == 0 then
        ctx:invoke("add", i, plain)
        sum = sum + i
      else
        ctx:invoke("read", nil, read)
      end
    end
    ctx._run:_flush() -- the last batch of op lines too
    rec[#rec + 1] = (mk.now() - t0) / N
    local t1 = mk.now()
    for i = 1, N do pcall(plain, i, ctx) end
    base_t[#base_t + 1] = (mk.now() - t1) / N
  end }
  history_run = run
end
local per = {}
for i = 1, #rec do per[i] = rec[i] - base_t[i] end
local st = stats(per)
cost_rows[#cost_rows + 1] = { "record an operation (invoke + ok + event)", L.fmt(st.n, "count"), L.fmt(st.median, "s"),
  L.fmt(st.max, "s"), "≤ 5 µs" }

-- the last round's history for the checkers: adds of i (a set of them, a
-- counter adding i) and reads of the running sum; a final read lists the set
local h = history_run.history
local nops = 0
for _, e in ipairs(h) do if e.type == "ok" then nops = nops + 1 end end
local final = { type = "invoke", f = "read", process = 1, time = mk.now(), index = #h + 1 }
local list = {}
for i = 2, N, 2 do list[#list + 1] = i end
h[#h + 1] = final
h[#h + 1] = { type = "ok", f = "read", process = 1, time = mk.now(), index = #h + 1, invoke = final.index,
  invoke_time = final.time, value = list }
-- and 500 fault occurrences over the run, for the latency checker's phases
local t_first, t_last = h[1].time, h[#h].time
for i = 1, 500 do
  local a = t_first + (t_last - t_first) * (i - 1) / 500
  h[#h + 1] = { type = "fault", f = "start", fault = "tick", occurrence = i, time = a, index = #h + 1 }
  h[#h + 1] = { type = "fault", f = "heal", fault = "tick", occurrence = i, time = a + (t_last - t_first) / 2000,
    index = #h + 1 }
end
local checks = {
  { "set", mk.check.set },
  { "counter", mk.check.counter },
  { "register (reads checked against the adds)", mk.check.register { write = "add" } },
  { "latency", mk.check.latency },
}
for _, c in ipairs(checks) do
  local times = {}
  for _ = 1, quick and 2 or 5 do
    history_run._prepared = nil
    local t0 = mk.now()
    pcall(history_run.check, history_run, c[2], { quiet = true })
    times[#times + 1] = mk.now() - t0
  end
  local s = stats(times)
  cost_rows[#cost_rows + 1] = { "check " .. c[1] .. ", " .. nops .. " ops: whole", L.fmt(s.n, "count"),
    L.fmt(s.median, "s"), L.fmt(s.max, "s"), "< 1 s" }
  cost_rows[#cost_rows + 1] = { "  per operation", "", L.fmt(s.median / nops, "s"), L.fmt(s.max / nops, "s"), "" }
end
io.write("\nhistory and checkers (" .. N .. " operations per round)\n")
io.write(L.table({ "what", "n", "median", "max", "target" }, cost_rows, { false, true, true, true, false }))
