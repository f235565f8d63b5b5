-- Spawning while timers are pending (a chaos run): the clone and the wait
-- for the child's exec run on the spawn thread, so faults due meanwhile
-- fire on time; the result, errors included, is the synchronous path's,
-- and a launch given up or collected leaves no process and no fd.
--
-- A slow spawn on demand: the child tries every PATH candidate in turn
-- before its exec, and a candidate that is a script whose interpreter
-- does not exist costs the kernel a full exec attempt (it opens the
-- script, copies argv and environment, then fails to find the
-- interpreter: ENOENT, so the search goes on). With a few hundred KB of
-- environment and a few thousand such candidates (relative PATH entries,
-- so PATH stays far under the kernel's 128 KB for one string), the child
-- spends tenths of a second before its exec, every time, whatever the
-- machine caches; the harness's side of the spawn blocks for all of it.
local H = require "spec.helpers"
local mk = require "mkharness"
local loop = require "mkharness.loop"
local core = mk.core
require "mkharness.busted"

-- opts for a spawn of `name` (a real command further on PATH) that spends
-- a while in the child before its exec: { env =, cwd = }
local function slow(name, n)
  local dir = mk.tmpdir()
  assert(core.mkdir(dir .. "/d"))
  H.write_file(dir .. "/d/" .. name, "#!/nonexistent/mkharness-interpreter\n")
  assert(core.chmod(dir .. "/d/" .. name, 493)) -- 0755
  local env = { PATH = string.rep("d:", n or 2000) .. os.getenv("PATH") }
  for i = 1, 4 do env["MKH_PAD" .. i] = string.rep("x", 100000) end
  return { env = env, cwd = dir }
end

local function with(t, o)
  for k, v in pairs(o) do t[k] = v end
  return t
end

-- pids of live processes whose command line has `word` as an argument
local function running_with(word)
  local found = {}
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    if pid:match("^%d+$") then
      local f = io.open("/proc/" .. pid .. "/cmdline")
      local cmd = f and f:read("a") or ""
      if f then f:close() end
      if ("\0" .. cmd):find("\0" .. word .. "\0", 1, true) then found[#found + 1] = tonumber(pid) end
    end
  end
  p:close()
  return found
end

-- count the launches that went to the spawn thread
local function counting()
  local orig = core.spawn_start
  local n = { 0 }
  core.spawn_start = function(...)
    n[1] = n[1] + 1
    return orig(...)
  end
  finally(function() core.spawn_start = orig end)
  return n
end

-- a timer far off: loop.active() while it is pending
local function keep_active()
  local tm = loop.at(core.now() + 3600, function() end)
  finally(function() loop.cancel(tm) end)
end

-- core.spawn's fields for argv, marked as this run's
local function fields(argv, o)
  o = o or {}
  local path = o.path or os.getenv("PATH")
  local env = { "PATH=" .. path, "MKHARNESS_RUN=" .. core.run_id(), "MKHARNESS_SERVICE=" .. core.run_id() .. "/spec57" }
  for k, v in pairs(o.env or {}) do if k ~= "PATH" then env[#env + 1] = k .. "=" .. v end end
  return { argv = argv, env = env, path = path, cwd = o.cwd, stdout = "null", stderr = "null",
    stop_signal = 15, kill_signal = 9, stop_timeout = 1, token = "MKHARNESS_SERVICE=" .. core.run_id() .. "/spec57" }
end

describe("spawning while timers are pending", function()
  H.leakcheck()

  it("a fault due while a slow spawn is under way fires on time (mk.run inside mk.chaos)", function()
    local opts = slow("true")
    local took = {}
    local launches = counting()
    local run = mk.chaos { seed = 3, duration = 0.6,
      faults = { mk.fault.custom { name = "tick", start = function() end, heal = function() end,
        every = { 0.005, 0.015 }, lasting = { 0.001, 0.003 } } },
      workload = function(ctx)
        while ctx:running() do
          local t0 = mk.now()
          local r = mk.run(with({ "true" }, opts))
          took[#took + 1] = mk.now() - t0
          assert.equal(0, r.code)
        end
      end }
    table.sort(took)
    table.sort(run.late)
    local worst = run.late[#run.late]
    -- the spawn is slow enough to tell: a fault held behind it would be
    -- late by about as long
    assert.is_true(took[1] > 0.1, string.format("the spawn took only %.1f ms", took[1] * 1000))
    assert.is_true(#run.late >= 10, "only " .. #run.late .. " faults fired")
    assert.is_true(worst < took[1] / 4 and worst < 0.1,
      string.format("a fault fired %.1f ms late; a spawn took %.1f ms", worst * 1000, took[1] * 1000))
    assert.is_true(launches[1] >= 1 and launches[1] == #took, "the spawns did not go to the spawn thread")
  end)

  it("a process started from a timer while a spawn is under way: queued behind it, or at once", function()
    local opts = slow("echo")
    for _, queued in ipairs { true, false } do
      -- with another timer pending, the inner start takes the spawn thread
      -- too (and waits for the outer launch); without, it is synchronous
      -- on the Lua thread while the spawn thread runs the outer one
      local far = queued and loop.at(core.now() + 3600, function() end)
      local inner, fired, t_end
      loop.at(core.now() + 0.02, function()
        fired = core.now()
        inner = mk.run { "echo", "inner" }
      end)
      local outer = mk.run(with({ "echo", "outer" }, opts))
      t_end = core.now()
      if far then loop.cancel(far) end
      assert.equal("outer\n", outer.stdout)
      assert.is_truthy(inner, "the timer did not run")
      assert.equal("inner\n", inner.stdout)
      assert.is_true(fired < t_end - 0.05, "the timer fired only after the spawn")
    end
  end)

  it("start() of the service being spawned, from a timer, is a no-op", function()
    local opts = slow("sleep")
    keep_active()
    local svc = mk.process(with({ "sleep", "30.5701", name = "twice" }, opts))
    local again
    loop.at(core.now() + 0.02, function() again = pcall(svc.start, svc) end)
    svc:start()
    assert.is_true(again, "the second start() failed")
    assert.is_true(svc:running())
    assert.same({ svc:pid() }, running_with("30.5701"))
    svc:stop()
    assert.same({}, running_with("30.5701"))
  end)

  it("reports a command that cannot run as the synchronous path does", function()
    local dir = mk.tmpdir()
    H.write_file(dir .. "/plain", "not executable\n")
    H.write_file(dir .. "/noformat", "no interpreter line\n")
    assert(core.chmod(dir .. "/noformat", 493))
    local cases = {
      { "mkharness-no-such-command" },
      { dir .. "/nothing-here" },
      { "true", cwd = dir .. "/missing" },
      { dir .. "/plain" },
      { dir .. "/noformat" },
      { dir },
    }
    local function messages()
      local out = {}
      for i, c in ipairs(cases) do
        local e = H.expect_error("SpawnError", function() mk.run(with({}, c)) end)
        out[i] = e.message
      end
      return out
    end
    local sync = messages()
    local launches = counting()
    keep_active()
    local pending = messages()
    assert.equal(#cases, launches[1])
    assert.same(sync, pending)
    assert.matches("command not found", pending[1], 1, true)
    assert.matches("no such file", pending[2], 1, true)
    assert.matches("cannot change directory", pending[3], 1, true)
    assert.matches("permission denied", pending[4], 1, true)
    assert.matches("not an executable format", pending[5], 1, true)
    -- and a service's start says the same
    local e = H.expect_error("SpawnError", function() mk.process { "mkharness-no-such-command" }:start() end)
    assert.matches("command not found", e.message, 1, true)
  end)

  it("a fault that fails while a spawn is under way is the chaos run's error; the spawn goes on", function()
    local opts = slow("echo")
    local got
    local ok, e = pcall(mk.chaos, { seed = 1, duration = 0.3,
      faults = { mk.fault.custom { name = "broken", start = function() error("broken on purpose") end,
        heal = function() end, every = { 0.01, 0.02 }, lasting = 0.005 } },
      workload = function()
        got = mk.run(with({ "echo", "through" }, opts))
      end })
    assert.is_false(ok)
    assert.is_true(mk.is_error(e, "FaultError"), tostring(e))
    assert.matches("broken on purpose", e.message, 1, true)
    assert.equal("through\n", got and got.stdout)
  end)

  -- a chaos run whose one client is in mk.run(argv) when the run's grace
  -- runs out: the client is closed, and its command must go with it
  local function given_up(argv, word)
    local started = false
    mk.chaos { seed = 1, duration = 0.05, grace = 0.01,
      faults = { mk.fault.custom { name = "tick", start = function() end, heal = function() end,
        every = { 0.01, 0.02 }, lasting = 0.005 } },
      workload = function()
        started = true
        mk.run(argv)
        error("mk.run returned: it should have been given up")
      end }
    assert.is_true(started)
    assert.same({}, running_with(word))
  end

  it("a client given up while its spawn is under way (the run's grace ran out) leaves no process", function()
    given_up(with({ "sleep", "30.5702" }, slow("sleep", 4000)), "30.5702")
  end)

  it("a client given up while its command runs (after the spawn) leaves no process either", function()
    given_up({ "sleep", "30.5706" }, "30.5706")
  end)

  it("a launch collected while under way: its process is killed; one closed while queued never runs", function()
    local opts = slow("sleep")
    -- collected while the child is still before its exec
    do
      local s = assert(core.spawn_start(fields({ "sleep", "30.5703" }, { env = opts.env, cwd = opts.cwd, path = opts.env.PATH })))
      assert.is_false(s:done())
    end
    collectgarbage()
    collectgarbage()
    assert.same({}, running_with("30.5703"))

    -- a launch behind a slow one, closed: it never runs
    local dir = mk.tmpdir()
    local first = assert(core.spawn_start(fields({ "sleep", "30.5704" }, { env = opts.env, cwd = opts.cwd, path = opts.env.PATH })))
    local second = assert(core.spawn_start(fields({ "sh", "-c", "touch " .. dir .. "/ran" })))
    assert.is_false(second:done())
    second:close()
    assert.is_nil(second:fd())
    assert.equal(nil, (second:take()))
    while not first:done() do core.poll({ first:fd() }, 5) end
    local p = assert(first:take())
    assert.equal(nil, (first:take()))
    assert.same({ p:pid() }, running_with("30.5704"))
    p:signal(9)
    p:wait(5)
    p:sweep()
    core.sleep(0.1)
    assert.is_false(H.file_exists(dir .. "/ran"))
    -- an error from the launch comes back from take()
    local bad = assert(core.spawn_start(fields({ "mkharness-no-such-command" })))
    while not bad:done() do core.poll({ bad:fd() }, 5) end
    local none, err = bad:take()
    assert.is_nil(none)
    assert.matches("command not found", err, 1, true)
  end)

  for _, case in ipairs {
    { "Ctrl-C", 130, [[
        local me = io.open("/proc/self/stat"):read("l"):match("^%d+")
        loop.at(mk.now() + 0.05, function()
          io.stderr:write(spawning and "signal while spawning\n" or "signal after the spawn\n")
          io.popen("kill -INT " .. me):close() -- os.execute would ignore SIGINT until kill ends
        end)]] },
    { "--timeout", 124, [[
        loop.at(mk.now() + 3600, function() end)]], { "--timeout", "0.4" } },
  } do
    it(case[1] .. " while a spawn is under way: exit " .. case[2] .. ", nothing left", function()
      local opts = slow("sleep", 8000)
      local r = H.scenario(string.format([[
        local loop = require "mkharness.loop"
        local opts = %s
        local spawning = true
        %s
        local svc = mk.process { "sleep", "30.5705", env = opts.env, cwd = opts.cwd }
        io.stderr:write("spawning\n")
        svc:start()
        spawning = false
        io.stderr:write("spawned\n")
        mk.sleep(30)
      ]], string.format("{ env = { PATH = %q, MKH_PAD1 = %q, MKH_PAD2 = %q, MKH_PAD3 = %q, MKH_PAD4 = %q }, cwd = %q }",
        opts.env.PATH, opts.env.MKH_PAD1, opts.env.MKH_PAD2, opts.env.MKH_PAD3, opts.env.MKH_PAD4, opts.cwd),
        case[3]), { host_args = case[4] })
      assert.equal(case[2], r.code, r.stderr)
      assert.matches("spawning", r.stderr, 1, true)
      assert.is_nil(r.stderr:find("spawned\n", 1, true), "the signal came after the spawn: " .. r.stderr)
      if case[2] == 130 then assert.matches("signal while spawning", r.stderr, 1, true) end
      assert.same({}, running_with("30.5705"))
    end)
  end
end)
