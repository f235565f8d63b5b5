-- mk.chaos: seeded fault schedules fired from the wait loop, heal-all,
-- histories (ok/fail/info) and the checkers. Real processes (kvd, the demo
-- store), real proxies and a real lab throughout.
local H = require "spec.helpers"
local mk = require "mkharness"
require "mkharness.busted"

local function start_kvd(extra)
  local port = mk.free_port()
  local t = { H.kvd, "--port", port, "--data", mk.tmpdir() .. "/kvd.log", name = "kvd",
    url = "http://127.0.0.1:" .. port .. "/health", method = "GET", timeout = 10 }
  for _, a in ipairs(extra or {}) do t[#t + 1] = a end
  local svc = mk.http(t):start()
  svc.base = "http://127.0.0.1:" .. port
  return svc
end

local function put(base, key, timeout)
  return mk.http_request { url = base .. "/kv/" .. key, method = "PUT", body = "v", timeout = timeout or 1 }
end

local function fault_entries(run)
  local out = {}
  for _, e in ipairs(run.history) do
    if e.type == "fault" then
      out[#out + 1] = { f = e.f, fault = e.fault, targets = e.targets, t = e.time - run.t0, planned = e.planned }
    end
  end
  return out
end

local quiet = { quiet = true }

describe("mk.chaos", function()
  H.leakcheck()

  describe("options", function()
    local function w() end
    it("refuses unknown keys, naming them", function()
      local e = H.expect_error("ConfigError", function() mk.chaos { duration = 1, workload = w, sead = 1 } end)
      assert.equals("sead", e.option)
      assert.matches("did you mean 'seed'", e.message)
      e = H.expect_error("ConfigError", function() mk.fault.kill { { "x" }, evry = { 1, 2 } } end)
      assert.equals("evry", e.option)
    end)
    it("checks every option's value", function()
      assert.equals("duration", H.expect_error("ConfigError", function() mk.chaos { workload = w } end).option)
      assert.equals("workload", H.expect_error("ConfigError", function() mk.chaos { duration = 1 } end).option)
      assert.equals("duration", H.expect_error("ConfigError", function() mk.chaos { duration = -1, workload = w } end).option)
      assert.equals("seed", H.expect_error("ConfigError", function() mk.chaos { duration = 1, workload = w, seed = 1.5 } end).option)
      assert.equals("clients", H.expect_error("ConfigError", function() mk.chaos { duration = 1, workload = w, clients = 0 } end).option)
      assert.equals("concurrent", H.expect_error("ConfigError", function()
        mk.chaos { duration = 1, workload = w, concurrent = "yes" } end).option)
      assert.equals("faults[1]", H.expect_error("ConfigError", function()
        mk.chaos { duration = 1, workload = w, faults = { 42 } } end).option)
      assert.equals("every", H.expect_error("ConfigError", function() mk.fault.kill { { "x" }, every = { 3, 1 } } end).option)
      assert.equals("lasting", H.expect_error("ConfigError", function() mk.fault.pause { { "x" }, lasting = "long" } end).option)
      assert.equals("pick", H.expect_error("ConfigError", function() mk.fault.stop { { "x" }, pick = "some" } end).option)
      assert.equals("[1]", H.expect_error("ConfigError", function() mk.fault.kill { every = 1 } end).option)
      assert.equals("[2]", H.expect_error("ConfigError", function() mk.fault.proxy { { "p" }, "lag" } end).option)
      assert.equals("[3]", H.expect_error("ConfigError", function() mk.fault.proxy { { "p" }, "latency" } end).option)
      assert.equals("mode", H.expect_error("ConfigError", function()
        mk.fault.partition { { hosts = function() end, heal = function() end }, mode = "thirds" } end).option)
      assert.equals("heal", H.expect_error("ConfigError", function() mk.fault.custom { start = w } end).option)
      assert.equals("max_p99", H.expect_error("ConfigError", function() return mk.check.latency { max_p99 = -1 } end).option)
      assert.equals("quite", H.expect_error("ConfigError", function()
        mk.check.history({}):check(mk.check.set, { quite = true }) end).option)
    end)
    it("refuses a bad MKHARNESS_SEED", function()
      local r = mk.run { H.host, "-e", "require('mkharness').chaos{ duration = 0.1, workload = function() end }",
        env = { MKHARNESS_SEED = "abc" } }
      assert.equals(1, r.code)
      assert.matches("MKHARNESS_SEED must be an integer", r.stderr)
    end)
  end)

  describe("schedule", function()
    it("replays: the same seed gives the same faults, targets, order and offsets", function()
      -- acts that spawn nothing (a freeze, a proxy setting), so that no
      -- fault waits for another's restart and the offsets can be compared
      local a, b, c = start_kvd(), start_kvd(), start_kvd()
      local p1 = mk.proxy { upstream = a.base:match("%d+$"), name = "p1" }:start()
      local p2 = mk.proxy { upstream = b.base:match("%d+$"), name = "p2" }:start()
      local function once(seed)
        return mk.chaos { seed = seed, duration = 1.2, concurrent = 2,
          faults = { mk.fault.pause { { a, b, c }, every = { 0.1, 0.3 }, lasting = { 0.05, 0.15 } },
            mk.fault.proxy { { p1, p2 }, "latency", 50, every = { 0.1, 0.3 }, lasting = { 0.05, 0.1 } } },
          workload = function(ctx) while ctx:running() do mk.sleep(0.01) end end }
      end
      local r1, r2, r3 = once(99), once(99), once(100)
      local f1, f2, f3 = fault_entries(r1), fault_entries(r2), fault_entries(r3)
      assert.is_true(#f1 >= 6)
      assert.equals(#f1, #f2)
      for i = 1, #f1 do
        assert.equals(f1[i].f, f2[i].f)
        assert.equals(f1[i].fault, f2[i].fault)
        assert.equals(f1[i].targets, f2[i].targets)
        assert.equals(f1[i].planned, f2[i].planned) -- the schedule: exactly the same
        assert.is_true(math.abs(f1[i].t - f2[i].t) < 0.01, string.format("offset %d: %.4f vs %.4f", i, f1[i].t, f2[i].t))
      end
      local same = #f1 == #f3
      for i = 1, math.min(#f1, #f3) do same = same and f1[i].targets == f3[i].targets and f1[i].planned == f3[i].planned end
      assert.is_false(same, "another seed gave the same schedule")
      for _, s in ipairs { a, b, c } do assert.running(s) s:stop() end
      p1:stop()
      p2:stop()
    end)

    it("replays kills too: the same faults, targets, order and planned offsets", function()
      local a, b, c = start_kvd(), start_kvd(), start_kvd()
      local function once()
        return mk.chaos { seed = 99, duration = 1, concurrent = 2,
          faults = { mk.fault.kill { { a, b, c }, every = { 0.1, 0.3 }, lasting = { 0.05, 0.15 } },
            mk.fault.stop { { a, b, c }, every = { 0.2, 0.4 }, lasting = { 0.05, 0.1 } } },
          workload = function(ctx) while ctx:running() do mk.sleep(0.01) end end }
      end
      local f1, f2 = fault_entries(once()), fault_entries(once())
      assert.is_true(#f1 >= 4)
      assert.equals(#f1, #f2)
      for i = 1, #f1 do
        assert.same({ f1[i].f, f1[i].fault, f1[i].targets, f1[i].planned }, { f2[i].f, f2[i].fault, f2[i].targets, f2[i].planned })
      end
      for _, s in ipairs { a, b, c } do assert.running(s) s:stop() end
    end)

    it("takes MKHARNESS_SEED over the seed given, and says so", function()
      local code = [[
        local mk = require "mkharness"
        local r = mk.chaos { seed = 1, duration = 0.5, faults = { mk.fault.custom { start = function() end,
          heal = function() end, every = { 0.05, 0.1 }, lasting = 0.01 } }, workload = function(ctx)
          while ctx:running() do mk.sleep(0.01) end end }
        local t = {}
        for _, e in ipairs(r.history) do if e.type == "fault" then t[#t + 1] = string.format("%.2f", e.time - r.t0) end end
        print(r.seed, r.seed_from, #r.schedule, r.schedule[1].start)
      ]]
      local r1 = mk.run { H.host, "-e", code, env = { MKHARNESS_SEED = "12345" } }
      local r2 = mk.run { H.host, "-e", code, env = { MKHARNESS_SEED = "12345" } }
      local r3 = mk.run { H.host, "-e", code, env = { MKHARNESS_SEED = false } }
      assert.equals(0, r1.code, r1.stderr)
      assert.matches("^12345\tMKHARNESS_SEED\t", r1.stdout)
      assert.equals(r1.stdout, r2.stdout)
      assert.matches("^1\tseed\t", r3.stdout)
    end)

    it("keeps the workload's math.random out of the schedule", function()
      local function once(stir)
        local r = mk.chaos { seed = 5, duration = 0.3, faults = { mk.fault.custom { start = function() end,
          heal = function() end, targets = { "a", "b", "c", "d" }, every = { 0.02, 0.05 }, lasting = 0.01 } },
          workload = function(ctx)
            while ctx:running() do
              if stir then math.randomseed(os.time()) for _ = 1, 100 do math.random() end end
              mk.sleep(0.005)
            end
          end }
        local t = {}
        for _, e in ipairs(fault_entries(r)) do t[#t + 1] = e.f .. " " .. e.targets end
        return t
      end
      assert.same(once(false), once(true))
    end)
  end)

  describe("faults", function()
    it("kill: SIGKILL, then started again; fires on time inside mk.run, mk.get and mk.sleep", function()
      local kvd = start_kvd()
      local pid0 = kvd:pid()
      local where = {}
      local run = mk.chaos { seed = 3, duration = 1.2,
        faults = { mk.fault.kill { { kvd }, every = { 0.15, 0.25 }, lasting = { 0.1, 0.2 } } },
        workload = function(ctx)
          while ctx:running() do
            local t = mk.now()
            mk.run { "sleep", "0.3" }       -- a child that outlasts a fault's due time
            where[#where + 1] = mk.now() - t
            pcall(mk.get, kvd.base .. "/health", { timeout = 0.2 })
            mk.sleep(0.05)
          end
        end }
      local starts = 0
      for _, e in ipairs(run.history) do if e.type == "fault" and e.f == "start" then starts = starts + 1 end end
      assert.is_true(starts >= 2)
      -- without the loop's timers a fault would wait for mk.run's 0.3 s child;
      -- inside it, it is late by at most a spawn (ms; more on a loaded machine)
      for _, l in ipairs(run.late) do assert.is_true(l < 0.1, "fired late by " .. l * 1000 .. " ms") end
      assert.running(kvd)
      assert.are_not.equal(pid0, kvd:pid())
      assert.equals(200, mk.get(kvd.base .. "/health").status)
      kvd:stop()
    end)

    it("stop and pause: ops fail or time out (info) meanwhile, and the member is back after", function()
      local a, b = start_kvd(), start_kvd()
      local run = mk.chaos { seed = 8, duration = 1.5, clients = 2, concurrent = true,
        faults = { mk.fault.stop { { a }, every = { 0.2, 0.3 }, lasting = { 0.2, 0.3 } },
          mk.fault.pause { { b }, every = { 0.2, 0.3 }, lasting = { 0.3, 0.4 } } },
        workload = function(ctx)
          local svc = ctx.client == 1 and a or b
          local i = 0
          while ctx:running() do
            i = i + 1
            ctx:invoke("add", ctx.client .. "-" .. i, function(k)
              local r = put(svc.base, k, 0.1)
              if r.status ~= 204 then ctx:fail(r.status) end
            end)
            mk.sleep(0.01)
          end
        end }
      local by = { {}, {} }
      for _, e in ipairs(run:ops("add")) do by[e.process][e.type] = (by[e.process][e.type] or 0) + 1 end
      assert.is_true((by[1].fail or 0) > 0, "stopped member: some ops fail (refused)")
      assert.is_true((by[2].info or 0) > 0, "paused member: some ops time out (info)")
      assert.is_true(by[1].ok > 0 and by[2].ok > 0)
      assert.running(a)
      assert.running(b)
      assert.equals(200, mk.get(b.base .. "/health", { timeout = 2 }).status)
      a:stop()
      b:stop()
    end)

    it("fires on time while a probe's TCP connect hangs (a lab address nobody answers)", function()
      local built, lab = pcall(mk.lab, { hosts = { "n1" } })
      if not built then pending("no lab on this machine: " .. tostring(lab)) return end
      local _lab <close> = lab
      -- on the lab's network, but no host has it: the SYN waits for an ARP
      -- answer that never comes, for seconds
      local nobody = lab.control_ip:gsub("%.1$", ".200")
      local fired = 0
      local run = mk.chaos { seed = 5, duration = 1.2,
        faults = { mk.fault.custom { name = "tick", start = function() fired = fired + 1 end, heal = function() end,
          every = { 0.05, 0.1 }, lasting = 0.01 } },
        workload = function(ctx)
          while ctx:running() do
            local svc = mk.tcp { H.fx, "--forever", host = nobody, port = 9, timeout = 1, name = "unreachable" }
            local ok, e = pcall(svc.start, svc)
            assert(not ok and mk.is_error(e, "TimeoutExpired"), tostring(e))
          end
        end }
      assert.is_true(fired >= 5)
      table.sort(run.late)
      -- a connect that blocked would hold a due fault for up to 1 s
      assert.is_true(run.late[#run.late] < 0.2, "a fault fired " .. run.late[#run.late] .. " s late")
    end)

    it("partition: halves, majority, isolate and one-way on a real lab, healed at the end", function()
      local built, lab = pcall(mk.lab, { hosts = { "n1", "n2", "n3" } })
      if not built then pending("no lab on this machine: " .. tostring(lab)) return end
      local _lab <close> = lab
      local faults = {}
      for _, mode in ipairs { "halves", "majority", "isolate", "oneway" } do
        faults[#faults + 1] = mk.fault.partition { lab, mode = mode, every = { 0.05, 0.1 }, lasting = 0.02 }
      end
      -- what the lab had cut once each fault's call returned (a workload
      -- sampling lab:cuts() can miss a 20 ms cut on a slow machine)
      local cut_seen = {}
      for _, m in ipairs { "partition", "isolate", "drop" } do
        local method = getmetatable(lab)[m]
        lab[m] = function(self, ...)
          local r1, r2 = method(self, ...)
          cut_seen[table.concat(self:cuts(), " ")] = true
          return r1, r2
        end
      end
      local run = mk.chaos { seed = 2, duration = 0.6, faults = faults,
        workload = function(ctx)
          while ctx:running() do mk.sleep(0.002) end
        end }
      local seen = {}
      for _, e in ipairs(run.history) do if e.type == "fault" then seen[e.fault] = true end end
      for _, m in ipairs { "halves", "majority", "isolate", "oneway" } do assert.is_true(seen["partition " .. m], m) end
      assert.is_truthy(next(cut_seen), "no cut was ever in force")
      -- a one-way cut: one link only; a partition of 3 hosts: both ways
      local one_way, both = false, false
      for cuts in pairs(cut_seen) do
        local n = select(2, cuts:gsub("%->", ""))
        one_way = one_way or n == 1
        both = both or n >= 4
      end
      assert.is_true(one_way and both)
      assert.same({}, lab:cuts()) -- every cut healed
    end)

    it("proxy: latency and blackhole on a real proxy, cleared at the end", function()
      local kvd = start_kvd()
      local p = mk.proxy { upstream = kvd.base:match("%d+$") }:start()
      local base = "http://127.0.0.1:" .. p.port
      local run = mk.chaos { seed = 4, duration = 1.2, concurrent = 1,
        faults = { mk.fault.proxy { { p }, "latency", 150, every = { 0.1, 0.2 }, lasting = { 0.2, 0.3 } },
          mk.fault.proxy { { p }, "blackhole", every = { 0.2, 0.3 }, lasting = { 0.2, 0.3 } } },
        workload = function(ctx)
          while ctx:running() do
            ctx:invoke("read", nil, function() return mk.get(base .. "/health", { timeout = 0.4 }).status end)
          end
        end }
      local res = run:check(mk.check.latency, quiet)
      assert.is_true(res.in_force.n > 0)
      local slow = false
      for _, ph in ipairs(res.phases) do
        if ph.fault == "proxy latency" and ph.during.p50 and ph.during.p50 > 140 then slow = true end
      end
      assert.is_true(slow, "latency in force: requests take >= 150 ms")
      assert.matches("%(running%)", tostring(p)) -- cleared: no fault left
      assert.equals(200, mk.get(base .. "/health", { timeout = 1 }).status)
      p:stop()
      kvd:stop()
    end)

    it("custom: start and heal get the chosen targets; a user pick chooses them", function()
      local log = {}
      mk.chaos { seed = 6, duration = 0.5,
        faults = { { start = function(t) log[#log + 1] = "start " .. t[1] return t[1] end,
          heal = function(state) log[#log + 1] = "heal " .. state end,
          targets = { "leader", "f1", "f2" }, pick = function(list) return list[1] end,
          every = { 0.05, 0.1 }, lasting = 0.02 } },
        workload = function(ctx) while ctx:running() do mk.sleep(0.01) end end }
      assert.is_true(#log >= 4)
      for i, l in ipairs(log) do assert.equals(i % 2 == 1 and "start leader" or "heal leader", l) end
    end)
  end)

  describe("heal-all", function()
    it("heals what is in force when the run ends, and a heal that fails is a FaultError naming the fault", function()
      local kvd = start_kvd()
      local healed = false
      local e = H.expect_error("FaultError", function()
        mk.chaos { seed = 1, duration = 0.4, concurrent = true,
          faults = {
            mk.fault.pause { { kvd }, every = 0.1, lasting = 10 },  -- still in force at the end
            mk.fault.custom { name = "broken switch", start = function() end,
              heal = function() error("the switch is on fire") end, every = 0.1, lasting = 10 },
            mk.fault.custom { name = "fine", start = function() end, heal = function() healed = true end,
              every = 0.1, lasting = 10 },
          },
          workload = function(ctx) while ctx:running() do mk.sleep(0.01) end end }
      end)
      assert.matches("broken switch could not heal", e.message)
      assert.matches("the switch is on fire", e.message)
      assert.matches("seed 1", e.message)
      assert.is_true(healed)
      assert.equals(200, mk.get(kvd.base .. "/health", { timeout = 1 }).status) -- resumed
      kvd:stop()
    end)

    it("heals when the workload raises, and re-raises its error with the seed", function()
      local kvd = start_kvd()
      local e = H.expect_error("ExecutorError", function()
        mk.chaos { seed = 77, duration = 5,
          faults = { mk.fault.pause { { kvd }, every = 0.05, lasting = 10 } },
          workload = function() mk.sleep(0.2) error(mk.Error.new("ExecutorError", { message = "boom" })) end }
      end)
      assert.matches("boom %(seed 77", e.message)
      assert.equals(200, mk.get(kvd.base .. "/health", { timeout = 1 }).status)
      kvd:stop()
    end)
  end)

  describe("history", function()
    it("records ok, fail and info with times and client ids, and the faults and marks", function()
      local kvd = start_kvd()
      local p = mk.proxy { upstream = kvd.base:match("%d+$") }:start():blackhole()
      local dead = "http://127.0.0.1:" .. mk.free_port()
      local run = mk.chaos { seed = 1, duration = 0.3, clients = 2,
        workload = function(ctx)
          ctx:mark("client " .. ctx.client)
          if ctx.client == 1 then
            ctx:invoke("write", "a", function(k) assert(put(kvd.base, k).status == 204) end)
            ctx:invoke("write", "b", function() ctx:fail("refused by policy") end)
            ctx:invoke("read", nil, function() return mk.get(kvd.base .. "/kv/a").body end)
          else
            -- a timeout is indeterminate; a refused connection is a fail
            ctx:invoke("write", "c", function() mk.get("http://127.0.0.1:" .. p.port .. "/", { timeout = 0.1 }) end)
            ctx:invoke("write", "d", function() mk.get(dead .. "/", { timeout = 0.5 }) end)
            ctx:invoke("write", "e", function() ctx:info("unknown") end)
          end
        end }
      local got = {}
      for _, e in ipairs(run.history) do
        if e.type ~= "invoke" and e.type ~= "mark" and e.type ~= "fault" then
          got[#got + 1] = string.format("%s %s %s %s", e.process, e.type, e.f, tostring(e.value))
          assert.is_true(e.time >= e.invoke_time)
        end
      end
      table.sort(got)
      assert.same({ "1 fail write b", "1 ok read v", "1 ok write a", "2 fail write d", "2 info write c", "2 info write e" }, got)
      local marks = 0
      for _, e in ipairs(run.history) do if e.type == "mark" then marks = marks + 1 end end
      assert.equals(2, marks)
      p:stop()
      kvd:stop()
    end)

    it("keeps every entry, numbered in order, across a long history", function()
      local run = mk.chaos { seed = 1, duration = 60,
        workload = function(ctx)
          for i = 1, 5000 do
            ctx:invoke("add", i, function() end)
            if i % 1000 == 0 then ctx:mark("at " .. i) end
          end
        end }
      local h = run.history
      assert.equals(10005, #h)
      local marks = 0
      for i, e in ipairs(h) do
        assert.equals(i, e.index)
        if e.type == "ok" then
          assert.equals(e.value, h[e.invoke].value)
          assert.equals("invoke", h[e.invoke].type)
        elseif e.type == "mark" then
          marks = marks + 1
          assert.equals("at " .. h[i - 1].value, e.value)
        end
      end
      assert.equals(5, marks)
      assert.equals("at 5000", h[#h].value)
    end)

    it("paces the collector while faults are scheduled, and gives it back as it was", function()
      -- the basic steps one cycle takes over the same heap: many more
      -- while held, each step being small
      local heap = {}
      for i = 1, 50000 do heap[i] = { i } end
      local function steps()
        collectgarbage("collect")
        local n = 1
        while not collectgarbage("step", 0) do n = n + 1 end
        return n
      end
      local before, during, mode_during = steps(), nil, nil
      local peak = 0
      collectgarbage("generational")
      local ok, err = pcall(mk.chaos, { seed = 1, duration = 60,
        -- scheduled, never reached: the workload ends first
        faults = { mk.fault.custom { name = "later", start = function() end, heal = function() end,
          every = { 40, 50 } } },
        workload = function(ctx)
          mode_during = collectgarbage("incremental") -- returns the mode it was in
          during = steps()
          for i = 1, 5000 do
            -- 100 kB of garbage per operation, 500 MB in all: the
            -- collector keeps up with a workload that never waits
            ctx:invoke("add", i, function() return #string.rep("x", 100000) end)
            if i % 250 == 0 then peak = math.max(peak, collectgarbage("count")) end
          end
          error("the workload's own error")
        end })
      local mode_after = collectgarbage("incremental")
      assert.is_false(ok)
      assert.matches("the workload's own error", tostring(err))
      assert.equals("incremental", mode_during)
      assert.equals("generational", mode_after) -- given back as it was, even on an error
      assert.is_true(during > 10 * before, before .. " steps before, " .. during .. " during")
      assert.is_true(steps() < 2 * before)
      assert.is_true(peak < 64 * 1024, "heap peaked at " .. math.floor(peak) .. " kB")
      assert.equals(50000, #heap) -- kept until here: the heap the steps were counted over
    end)

    it("runs clients concurrently: one stuck in a wait does not stop the others", function()
      local n = { 0, 0 }
      mk.chaos { seed = 1, duration = 0.5, clients = 2,
        workload = function(ctx)
          while ctx:running() do
            if ctx.client == 1 then mk.run { "sleep", "0.4" } else mk.sleep(0.01) end
            n[ctx.client] = n[ctx.client] + 1
          end
        end }
      assert.is_true(n[1] <= 2)
      assert.is_true(n[2] >= 20, "client 2 ran " .. n[2] .. " times")
    end)

    it("writes faults and operations to events.jsonl, in time order", function()
      local run = mk.chaos { seed = 1, duration = 0.3,
        faults = { mk.fault.custom { start = function() end, heal = function() end, every = 0.05, lasting = 0.02 } },
        workload = function(ctx) while ctx:running() do ctx:invoke("add", 1, function() mk.sleep(0.01) end) end end }
      require("mkharness.events").persist()
      local path = mk.core.run_dir() .. "/events.jsonl"
      local ops, faults, last = 0, 0, 0
      local ordered = true
      for line in io.lines(path) do
        local ev = mk.json.decode(line)
        if ev.t >= run.t0 - 1 then
          if ev.event == "op" then ops = ops + 1 ordered = ordered and ev.t >= last - 1e-9 last = ev.t end
          if ev.event == "fault" then faults = faults + 1 ordered = ordered and ev.t >= last - 1e-9 last = ev.t end
        end
      end
      assert.is_true(ops >= 20)
      assert.is_true(faults >= 4)
      assert.is_true(ordered)
      -- the timeline draws them: a band per fault, an ops row, and the page has both
      local r = mk.run { H.host, "report", path }
      assert.equals(0, r.code, r.stderr)
      assert.matches("\nfault custom +|[ #]*#+", r.stdout)
      assert.matches("\nops +|[ o?f]*o", r.stdout)
      assert.matches("ops: o ok  ? info (indeterminate)  f fail", r.stdout, 1, true)
      local html = mk.tmpdir() .. "/t.html"
      assert.equals(0, mk.run { H.host, "report", path, "--html", html }.code)
      local page = H.slurp(html)
      assert.matches('"ops":[{"class":"ok"', page, 1, true)
      assert.matches('"label":"fault custom"', page, 1, true)
    end)
  end)

  describe("op lines", function()
    local chaos = require "mkharness.chaos"
    local events = require "mkharness.events"
    -- the line as string.format writes it: what the file has always held
    local function reference(c)
      local jstr, mtype = chaos.jstr, math.type
      local v = c.value
      local tv = mtype(v)
      v = tv == "integer" and tostring(v) or (tv == "float" and v == v and v ~= math.huge and v ~= -math.huge)
        and string.format("%.17g", v) or jstr(chaos.short(v))
      return string.format('{"client":%s,%s"event":"op","f":%s,"index":%d,"t":%.9f,"t0":%.9f,"type":"%s","value":%s}',
        mtype(c.process) == "integer" and tostring(c.process) or jstr(c.process),
        c.error and ('"error":' .. jstr(tostring(c.error):sub(1, 200)) .. ",") or "", jstr(c.f), c.index,
        c.time, c.invoke_time, c.type, v)
    end
    local function flushed(pending)
      local got
      local prev = events.write_lines
      events.write_lines = function(items)
        got = {}
        for _, text in ipairs(items) do
          for l in (text .. "\n"):gmatch("(.-)\n") do got[#got + 1] = l end
        end
      end
      local run = setmetatable({ _pending = pending }, chaos.Run)
      local ok, err = pcall(run._flush, run)
      events.write_lines = prev
      assert(ok, err)
      return got
    end

    it("writes the times as %.9f does, ties to even, every kind of value and error", function()
      -- halves of a nanosecond (exact in binary: 1/1024 s is 976562.5 ns),
      -- fractions that carry into the next second, 0, -0, negatives, huge
      local times = { 0, -0.0, 1 / 1024, 3 / 1024, 7 + 5 / 1024, 12345 + 1023 / 1024, 0.9999999995,
        41 + (1 - 2 ^ -40), 2 ^ -31, 1e15 + 0.5, 1e300, -2.5, 1 / 0, 0 / 0, 86400.000000001, 3 }
      local values = { 1, -7, 2.5, 0.1, 1 / 0, 0 / 0, "x", 'q"uote\n\tend', { 1, "a" }, true, "\255bad", nil,
        math.mininteger, string.rep("long", 40) }
      local pending = {}
      local rng = chaos.rng(5)
      for i = 1, 2000 do
        local t = times[i] or (rng:random() * 2 ^ rng:random(0, 40))
        if i > #times and i % 3 == 0 then t = rng:random(0, 1e6) + rng:random(0, 1023) / 1024 end
        pending[i] = { index = i, type = ({ "ok", "fail", "info" })[i % 3 + 1], f = ({ "add", "read", 'we"ird', 7 })[i % 4 + 1],
          process = ({ 1, 2, "final" })[i % 3 + 1], time = t, invoke_time = t - (i % 5) * 1e-4,
          value = values[i % (#values + 1) + 1], error = i % 7 == 0 and ("boom \"" .. string.rep("y", i % 300) .. "\"") or nil }
      end
      local lines = flushed(pending)
      assert.equals(#pending, #lines)
      for i, c in ipairs(pending) do assert.equals(reference(c), lines[i]) end
      for _, t in ipairs(times) do assert.equals(string.format("%.9f", t), mk.core.fixed9(t)) end
    end)

    it("writes each operation of a run once, its line as before, its entries whole", function()
      local run = mk.chaos { seed = 3, duration = 0.2, clients = 2,
        workload = function(ctx)
          local n = 0
          while ctx:running() and n < 300 do
            n = n + 1
            if n % 10 == 0 then
              ctx:invoke("write", n, function() ctx:fail("no " .. n) end)
            elseif n % 10 == 1 then
              ctx:invoke("read", nil, function() return "v" .. n end)
            else
              ctx:invoke("add", n, function() end)
            end
          end
        end }
      require("mkharness.events").persist()
      local lines = {}
      for line in io.lines(mk.core.run_dir() .. "/events.jsonl") do
        -- this run's lines (the file may hold earlier runs' too)
        local i = tonumber(line:match('^{"client":[^}]*"event":"op".-"index":(%d+),'))
        local e = i and run.history[i]
        if e and e.invoke_time and line:find('"t0":' .. string.format("%.9f", e.invoke_time), 1, true) then
          assert.is_nil(lines[i], "written twice: " .. line)
          lines[i] = line
        end
      end
      local n = 0
      for i, e in ipairs(run.history) do
        assert.equals(i, e.index)
        if e.type == "ok" or e.type == "fail" then
          n = n + 1
          local inv = run.history[e.invoke]
          assert.equals("invoke", inv.type)
          assert.equals(inv.time, e.invoke_time)
          assert.equals(inv.f, e.f)
          assert.equals(inv.process, e.process)
          assert.is_true(e.time >= e.invoke_time)
          assert.equals(e.type == "fail", e.error ~= nil)
          if e.f == "read" then assert.matches("^v%d+$", e.value) else assert.equals(inv.value, e.value) end
          assert.equals(reference(e), lines[i])
        end
      end
      assert.is_true(n >= 100, n .. " operations")
    end)
  end)

  describe("checkers", function()
    local function hist(list) return mk.check.history(list, { seed = 42 }) end
    local function op(p, f, v, ty, rv)
      return { type = "invoke", process = p, f = f, value = v }, { type = ty, process = p, f = f, value = rv ~= nil and rv or v }
    end
    local function build(spec)
      local list = {}
      for _, s in ipairs(spec) do
        if s.fault then
          list[#list + 1] = { type = "fault", f = s.fault, fault = "kill", targets = "n1", occurrence = 1 }
        else
          local a, b = op(table.unpack(s))
          list[#list + 1] = a
          list[#list + 1] = b
        end
      end
      return list
    end

    it("set: passes when every acknowledged write is read; fails naming the lost ones, the seed and the faults", function()
      local good = build { { 1, "add", 1, "ok" }, { 1, "add", 2, "info" }, { 1, "add", 3, "fail" }, { fault = "start" },
        { fault = "heal" }, { 1, "read", nil, "ok", { 1, 2 } } }
      local res = hist(good):check(mk.check.set, quiet)
      assert.equals(1, res.recovered)
      assert.equals(0, res.lost)
      local bad = build { { 1, "add", 1, "ok" }, { 2, "add", 2, "ok" }, { fault = "start" }, { fault = "heal" },
        { 1, "read", nil, "ok", { 2, 9 } } }
      local e = H.expect_error("CheckFailed", function() hist(bad):check(mk.check.set) end)
      assert.matches("seed 42", e.message)
      assert.matches("acknowledged write 1 is missing", e.message)
      assert.matches("value 9 is in the final read but was never written", e.message)
      assert.matches("kill on n1", e.message)
      assert.matches("> .* ok +add 1", e.message) -- the excerpt points at the op
      assert.equals(2, #e.result.bad)
    end)

    it("counter: passes within the indeterminate slack; fails when it goes backwards or loses acks", function()
      local good = build { { 1, "add", 1, "ok" }, { 1, "read", nil, "ok", 1 }, { 2, "add", 1, "info" },
        { 1, "read", nil, "ok", 2 }, { 1, "read", nil, "ok", 2 } }
      assert.is_true(hist(good):check(mk.check.counter, quiet).valid)
      local back = build { { 1, "add", 1, "ok" }, { 1, "add", 1, "ok" }, { 1, "read", nil, "ok", 2 },
        { 1, "read", nil, "ok", 1 } }
      local e = H.expect_error("CheckFailed", function() hist(back):check(mk.check.counter) end)
      assert.matches("went backwards", e.message)
      local over = build { { 1, "add", 1, "ok" }, { 1, "read", nil, "ok", 5 } }
      assert.matches("more than the 1 ever attempted", H.expect_error("CheckFailed", function()
        hist(over):check(mk.check.counter) end).message)
    end)

    it("register: a read returns only values written (ok or info)", function()
      local good = build { { 1, "write", "x", "ok" }, { 2, "write", "y", "info" }, { 1, "read", nil, "ok", "y" },
        { 1, "read", nil, "ok", "x" } }
      assert.is_true(hist(good):check(mk.check.register, quiet).valid)
      local bad = build { { 1, "write", "x", "ok" }, { 1, "write", "z", "fail" }, { 1, "read", nil, "ok", "q" },
        { 1, "read", nil, "ok", "z" } }
      local e = H.expect_error("CheckFailed", function() hist(bad):check(mk.check.register) end)
      assert.matches("read q, which was never written", e.message)
      assert.matches("read z, whose write failed", e.message)
    end)

    it("set and register compare values by their text, whatever their kinds", function()
      -- integers written, text read back (a store over HTTP), and the same
      -- with all of one kind: the same answers either way
      local mixed = build { { 1, "add", 1, "ok" }, { 1, "add", 2, "ok" }, { 1, "add", 3, "fail" },
        { 1, "read", nil, "ok", { "1", "2" } } }
      assert.is_true(hist(mixed):check(mk.check.set, quiet).valid)
      local lost = build { { 1, "add", 1, "ok" }, { 1, "add", 2, "ok" }, { 1, "read", nil, "ok", { "2", "3" } } }
      local e = H.expect_error("CheckFailed", function() hist(lost):check(mk.check.set) end)
      assert.matches("acknowledged write 1 is missing", e.message)
      assert.matches("value 3 is in the final read but was never written", e.message)
      local same = build { { 1, "add", 1, "ok" }, { 1, "add", 2, "ok" }, { 1, "read", nil, "ok", { 2, 3 } } }
      assert.same({ 2 }, { #H.expect_error("CheckFailed", function() hist(same):check(mk.check.set) end).result.bad })
      -- a set read as a table of element -> true
      local keyed = build { { 1, "add", "a", "ok" }, { 1, "read", nil, "ok", { a = true, b = false } } }
      assert.is_true(hist(keyed):check(mk.check.set, quiet).valid)

      local reg = build { { 1, "write", 7, "ok" }, { 1, "write", 8, "fail" }, { 1, "read", nil, "ok", "7" },
        { 1, "read", nil, "ok", 0 } }
      assert.is_true(hist(reg):check(mk.check.register { initial = "0" }, quiet).valid)
      e = H.expect_error("CheckFailed", function() hist(reg):check(mk.check.register) end)
      assert.matches("read 0, which was never written", e.message)
      local reg2 = build { { 1, "write", 7, "ok" }, { 1, "write", 8, "fail" }, { 1, "read", nil, "ok", 8 } }
      assert.matches("read 8, whose write failed", H.expect_error("CheckFailed", function()
        hist(reg2):check(mk.check.register) end).message)
      -- a write that never completed may have applied
      local open = build { { 1, "read", nil, "ok", 5 } }
      table.insert(open, 1, { type = "invoke", process = 2, f = "write", value = 5 })
      assert.is_true(hist(open):check(mk.check.register, quiet).valid)
    end)

    it("latency: an operation is in force when any fault is, across overlapping occurrences", function()
      local list, t = {}, 0
      local function read(dur)
        list[#list + 1] = { type = "invoke", process = 1, f = "read", time = t }
        list[#list + 1] = { type = "ok", process = 1, f = "read", time = t + dur }
        t = t + dur
      end
      local function fault(f, occ)
        t = t + 0.5 -- off the operations' edges
        list[#list + 1] = { type = "fault", f = f, fault = "f" .. occ, occurrence = occ, time = t }
        t = t + 0.5
      end
      read(1)              -- calm
      fault("start", 1)
      read(1)              -- in force (1)
      fault("start", 2)
      read(1)              -- in force (1, 2)
      fault("heal", 1)
      read(1)              -- in force (2)
      fault("heal", 2)
      read(1) read(1)      -- calm
      fault("start", 3)
      read(1)              -- in force (3, never healed)
      local res = hist(list):check(mk.check.latency, quiet)
      assert.equals(4, res.in_force.n)
      assert.equals(3, res.calm.n)
      assert.equals(3, #res.phases)
      -- before and after stop at the neighbouring faults
      assert.same({ 1, 3 }, { res.phases[1].before.n, res.phases[1].after.n })
      assert.same({ 2, 2 }, { res.phases[2].before.n, res.phases[2].after.n }) -- not the read under f3
      assert.same({ 1, 0 }, { res.phases[3].before.n, res.phases[3].after.n })
    end)

    it("latency: draws the first 20 occurrences, and judges them all", function()
      local list, t = {}, 0
      for i = 1, 30 do
        list[#list + 1] = { type = "invoke", process = 1, f = "read", time = t }
        list[#list + 1] = { type = "ok", process = 1, f = "read", time = t + (i == 30 and 0.5 or 0.001) }
        list[#list + 1] = { type = "fault", f = "start", fault = "f", occurrence = i, time = t }
        list[#list + 1] = { type = "fault", f = "heal", fault = "f", occurrence = i, time = t + 1 }
        t = t + 2
      end
      local res = hist(list):check(mk.check.latency, quiet)
      assert.equals(30, #res.phases)
      assert.equals(2 + 20 * 4 + 1, #res.table)
      assert.matches("and 10 more occurrences", res.table[#res.table])
      local e = H.expect_error("CheckFailed", function() hist(list):check(mk.check.latency { max_p99 = 100 }) end)
      assert.matches("during f: p99 500.0 ms", e.message) -- the 30th, not drawn
    end)

    it("latency: by phase before, during and after each fault; thresholds fail it", function()
      local list = {}
      local t = 0
      local function add(ty, dur)
        list[#list + 1] = { type = "invoke", process = 1, f = "read", time = t }
        list[#list + 1] = { type = ty, process = 1, f = "read", time = t + dur }
        t = t + dur + 0.01
      end
      for _ = 1, 20 do add("ok", 0.001) end
      list[#list + 1] = { type = "fault", f = "start", fault = "pause", targets = "n2", occurrence = 1, time = t }
      for _ = 1, 10 do add("info", 0.05) end
      for _ = 1, 10 do add("ok", 0.2) end
      list[#list + 1] = { type = "fault", f = "heal", fault = "pause", targets = "n2", occurrence = 1, time = t }
      for _ = 1, 20 do add("ok", 0.001) end
      local res = hist(list):check(mk.check.latency, quiet)
      local ph = res.phases[1]
      assert.equals(1, ph.before.availability)
      assert.equals(0.5, ph.during.availability)
      assert.is_true(ph.during.p50 > 150 and ph.before.p99 < 2)
      local e = H.expect_error("CheckFailed", function() hist(list):check(mk.check.latency { max_p99 = 100 }) end)
      assert.matches("during pause: p99 200.0 ms > max_p99 100 ms", e.message)
    end)
  end)

  describe("examples", function()
    it("kvd_lost_writes finds lost acknowledged writes with --unsafe-ack and passes in the safe mode", function()
      local env = { MKH_BUILD_DIR = H.build }
      local unsafe = mk.run { H.host, "examples/chaos/kvd_lost_writes.lua", "unsafe", env = env, timeout = 30 }
      assert.equals(1, unsafe.code)
      assert.matches("CheckFailed: check set failed %(seed 1%)", unsafe.stderr)
      assert.matches("acknowledged write c%d+%-%d+ is missing from the final read", unsafe.stderr)
      local safe = mk.run { H.host, "examples/chaos/kvd_lost_writes.lua", "safe", env = env, timeout = 30 }
      assert.equals(0, safe.code, safe.stderr)
      assert.matches("check set passed %(seed 1%)", safe.stderr)
    end)
  end)
end)
