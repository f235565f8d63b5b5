-- Trust: the harness never signals a process it cannot prove is its own,
-- every wait is bounded (Ctrl-C reaches Lua in coroutines too, a stop whose
-- signals are all caught still ends), the report survives a run that is out
-- of time or out of memory, and names and zombies are kept in order.
-- Pid reuse is forced through /proc/sys/kernel/ns_last_pid (root only).
local H = require "spec.helpers"
local mk = require "mkharness"
local core = mk.core

local is_root = io.open("/proc/sys/kernel/ns_last_pid", "w") ~= nil
local sanitized = (os.getenv("MKH_SANITIZER_PRELOAD") or "") ~= ""

-- A stranger: a session and group leader outside every run (no marker),
-- born with pid `want` when the machine's other forks allow. Returns its
-- pid and a function that ends it.
local function stranger(want)
  for _ = 1, 50 do
    local before = {}
    for _, c in ipairs(core.children()) do before[c] = true end
    local f = assert(io.open("/proc/sys/kernel/ns_last_pid", "w"))
    f:write(tostring(want - 1))
    f:close()
    local p = assert(io.popen("exec setsid sleep 60"))
    local pid
    for _, c in ipairs(core.children()) do if not before[c] then pid = c end end
    local function finish()
      if pid then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
      p:close()
    end
    if pid == want then return pid, finish end
    finish()
  end
  return nil
end

local function wait_alive_state(pid)
  -- the stranger execs setsid, then sleep: wait until it is sleep
  mk.wait_until(function()
    local s = H.slurp("/proc/" .. pid .. "/cmdline") or ""
    return s:find("sleep", 1, true)
  end, { timeout = 5 })
end

describe("never a stranger", function()
  H.leakcheck()

  for _, how in ipairs { "stop", "kill", "start" } do
    it("a service's pid taken by a stranger after its exit: " .. how .. "() leaves the stranger alone", function()
      if not is_root then pending("needs root for ns_last_pid") return end
      local svc = mk.process { H.fx, "--sleep", "0.05", "--exit", "0", name = "brief" }:start()
      local pid = svc:pid()
      svc:wait_exit { timeout = 10 }
      assert.is_false(svc:running())
      -- the harness still holds the exited leader, so the pid cannot be
      -- given away until the service is swept; if it could, the stranger
      -- gets it and must survive
      local spid, finish = stranger(pid)
      finally(function() if finish then finish() end end)
      if spid then wait_alive_state(spid) end
      if how == "stop" then svc:stop()
      elseif how == "kill" then svc:kill()
      else svc:start() svc:stop() end
      if spid then
        assert.is_true(H.pid_alive(spid), "the stranger with the service's old pid was killed by " .. how .. "()")
      end
    end)
  end

  it("the guardian leaves alone a session that reused a stopped service's session id", function()
    if not is_root then pending("needs root for ns_last_pid") return end
    local dir = mk.tmpdir()
    local host = mk.process { H.host, "-e", [[
      local mk = require "mkharness"
      local a = mk.process { ]] .. string.format("%q", H.fx) .. [[, "--forever", name = "a" }:start()
      io.stdout:write("A ", a:pid(), "\n") io.stdout:flush()
      a:stop()
      KEEP = mk.process { ]] .. string.format("%q", H.fx) .. [[, "--forever", name = "b" }:start()
      io.stdout:write("B ", KEEP:pid(), "\nREADY\n") io.stdout:flush()
      mk.sleep(60)
    ]], name = "host", env = { MKHARNESS_TMPDIR = dir }, on_exit = "ignore" }:start()
    local finish
    -- busted keeps one finally per test: it ends both
    finally(function()
      pcall(host.kill, host)
      if finish then finish() end
    end)
    host:wait_output("READY", { timeout = 20 })
    local a = tonumber(host:output():match("A (%d+)"))
    local b = tonumber(host:output():match("B (%d+)"))
    local spid
    spid, finish = stranger(a)
    if not spid then pending("could not place a stranger at pid " .. a) return end
    wait_alive_state(spid)
    -- SIGKILL the supervisor and the host together: only the guardian acts
    local inner = tonumber((H.slurp("/proc/" .. host:pid() .. "/task/" .. host:pid() .. "/children") or ""):match("%d+"))
    os.execute(string.format("kill -9 %d %d", host:pid(), inner))
    mk.wait_until(function() return not H.pid_alive(b) end, { timeout = 10, message = "the guardian did not end b" })
    assert.is_true(H.pid_alive(spid), "the guardian killed a stranger that reused a stopped service's session id")
  end)
end)

describe("every wait is bounded", function()
  H.leakcheck()

  it("stop() ends a service that catches stop_signal and kill_signal (SIGKILL last), with an ExecutorError", function()
    local svc = mk.output { H.fx, "--ignore", "INT", "--ignore", "TERM", "--print", "up", "--forever",
      banner = "up", stop_signal = "INT", kill_signal = "TERM", stop_timeout = 0.2 }:start()
    local pid = svc:pid()
    local t0 = mk.now()
    local e = H.expect_error("ExecutorError", function() svc:stop() end)
    assert.is_true(mk.now() - t0 < 5, "stop() took " .. (mk.now() - t0) .. " s")
    assert.matches("SIGKILL", e.message, 1, true)
    assert.matches("SIGTERM", e.message, 1, true)
    assert.is_false(H.pid_alive(pid))
    assert.is_false(svc:running())
  end)

  local LOOP = [[
    KEEP = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "svc" }:start()
    io.stdout:write("PID ", KEEP:pid(), "\nREADY\n") io.stdout:flush()
    local co = coroutine.wrap(function() while true do end end)
    co()
  ]]

  local function background(code, env)
    local dir = mk.tmpdir()
    local path = dir .. "/scenario.lua"
    local f = assert(io.open(path, "w"))
    f:write("local mk = require 'mkharness'\nlocal FX = ", string.format("%q", H.fx), "\n", code)
    f:close()
    local e = { MKHARNESS_TMPDIR = mk.tmpdir() }
    for k, v in pairs(env or {}) do e[k] = v end
    local host = mk.process { H.host, path, name = "host", env = e, stop_timeout = 5, on_exit = "ignore" }:start()
    finally(function() pcall(host.kill, host) end)
    host:wait_output("READY", { timeout = 20 })
    return host, tonumber(host:output():match("PID (%d+)"))
  end

  -- Ctrl-C: the host reports it, exits 130 and takes its service along
  local function interrupted(host, svc)
    host:signal("INT")
    assert.equal(130, host:wait_exit { timeout = 10 })
    assert.matches("SIGINT", host:err_output(), 1, true)
    assert.is_false(H.pid_alive(svc))
  end

  it("Ctrl-C reaches a coroutine looping in Lua", function()
    local host, svc = background(LOOP)
    interrupted(host, svc)
  end)

  -- the main thread runs without a count hook until a signal comes: a
  -- thread of the host's sets it then
  it("Ctrl-C reaches the main thread looping in Lua", function()
    local host, svc = background([[
      KEEP = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "svc" }:start()
      io.stdout:write("PID ", KEEP:pid(), "\nREADY\n") io.stdout:flush()
      local x = 0
      while x >= 0 do x = x + 1 end
    ]])
    interrupted(host, svc)
  end)

  -- a chaos client runs without a count hook too: the thread hooks the
  -- client core.resume is running
  it("Ctrl-C reaches a chaos client looping in Lua, which runs without a count hook", function()
    local hook = "unset"
    mk.chaos { seed = 1, duration = 0.05, workload = function() hook = debug.gethook() end }
    assert.is_nil(hook)
    local host, svc = background([[
      KEEP = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "svc" }:start()
      mk.chaos { seed = 1, duration = 60, clients = 2,
        faults = { mk.fault.custom { name = "f", start = function() end, heal = function() end, every = { 30, 40 } } },
        workload = function(ctx)
          if ctx.client == 1 then mk.sleep(30) return end
          io.stdout:write("PID ", KEEP:pid(), "\nREADY\n") io.stdout:flush()
          local x = 0
          while x >= 0 do x = x + 1 end
        end }
    ]])
    interrupted(host, svc)
  end)

  it("SIGKILL of the supervisor ends a host looping in a coroutine, and its service", function()
    local host, svc = background(LOOP)
    local inner = tonumber((H.slurp("/proc/" .. host:pid() .. "/task/" .. host:pid() .. "/children") or ""):match("%d+"))
    host:kill { signal = "KILL" }
    mk.wait_until(function() return not H.pid_alive(inner) and not H.pid_alive(svc) end,
      { timeout = 10, message = "the host or its service outlived the supervisor" })
  end)

  it("SIGKILL of the supervisor ends a host stuck in C (os.execute) within seconds", function()
    local host, svc = background([[
      KEEP = mk.output { FX, "--print", "up", "--forever", banner = "up", name = "svc" }:start()
      io.stdout:write("PID ", KEEP:pid(), "\nREADY\n") io.stdout:flush()
      os.execute("sleep 60")
    ]])
    local inner = tonumber((H.slurp("/proc/" .. host:pid() .. "/task/" .. host:pid() .. "/children") or ""):match("%d+"))
    host:kill { signal = "KILL" }
    mk.wait_until(function() return not H.pid_alive(inner) and not H.pid_alive(svc) end,
      { timeout = 15, message = "the host or its service outlived the supervisor" })
    os.execute("pkill -9 -f '^sleep 60$' 2>/dev/null")
  end)

  -- a service that ignores SIGTERM and has 30 s to stop: a long teardown
  local STUBBORN = [[
      KEEP = mk.output { FX, "--ignore", "TERM", "--print", "up", "--forever", banner = "up",
        name = "svc", stop_timeout = 30 }:start()
      io.stdout:write("PID ", KEEP:pid(), "\nREADY\n") io.stdout:flush()
      mk.sleep(60)
  ]]

  it("teardown after Ctrl-C does not spin, and a second signal cuts its grace", function()
    local host, svc = background(STUBBORN)
    local inner = tonumber((H.slurp("/proc/" .. host:pid() .. "/task/" .. host:pid() .. "/children") or ""):match("%d+"))
    local function cpu()
      local s = H.slurp("/proc/" .. inner .. "/stat") or ""
      local fields = {}
      for w in s:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = w end
      return (tonumber(fields[12]) + tonumber(fields[13])) / 100
    end
    host:signal("INT")
    mk.sleep(0.3)
    local c0, t0 = cpu(), mk.now()
    mk.sleep(1)
    local used = cpu() - c0
    assert.is_true(used < 0.3 * (mk.now() - t0), string.format("teardown used %.2f s of CPU in 1 s", used))
    assert.is_true(H.pid_alive(svc), "the service should still have its grace")
    host:signal("INT") -- a second Ctrl-C: no more grace
    assert.equal(130, host:wait_exit { timeout = 10 })
    assert.is_false(H.pid_alive(svc))
  end)

  it("SIGKILL of the supervisor during a long teardown ends it at once", function()
    local host, svc = background(STUBBORN)
    local inner = tonumber((H.slurp("/proc/" .. host:pid() .. "/task/" .. host:pid() .. "/children") or ""):match("%d+"))
    host:signal("INT")
    mk.sleep(0.3)
    host:kill { signal = "KILL" }
    mk.wait_until(function() return not H.pid_alive(inner) and not H.pid_alive(svc) end,
      { timeout = 5, message = "the host or its service lived on (stop_timeout is 30 s)" })
  end)

  it("--timeout with a service that ignores SIGTERM still reports, keeps the run directory, exits 124", function()
    local t0 = mk.now()
    local r = H.scenario([[
      KEEP = mk.output { FX, "--ignore", "TERM", "--print", "last words", "--forever",
        banner = "last words", name = "stubborn" }:start()
      mk.sleep(60)
    ]], { host_args = { "--timeout", "1" }, env = { MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 30 })
    assert.equal(124, r.code, r.stderr)
    assert.is_true(mk.now() - t0 < 1 + 5, "took " .. (mk.now() - t0) .. " s")
    assert.matches("run timeout", r.stderr, 1, true)
    assert.matches("last words", r.stderr, 1, true)
    local dir = r.stderr:match("run directory kept: (%S+)")
    assert.truthy(dir, r.stderr)
    assert.truthy(H.slurp(dir .. "/stubborn.stdout.log"))
    core.rmtree(dir)
  end)

  it("Lua out of memory is reported as a failure with the services and the run directory", function()
    if sanitized then pending("address limits do not mix with the sanitizers' shadow memory") return end
    local tmp = mk.tmpdir()
    local path = tmp .. "/oom.lua"
    local f = assert(io.open(path, "w"))
    f:write("local mk = require 'mkharness'\n",
      "KEEP = mk.output { ", string.format("%q", H.fx), ", '--print', 'up', '--forever', banner = 'up', name = 'svc' }:start()\n",
      "local t = {} while true do t[#t + 1] = string.rep('x', 1 << 20) .. #t end\n")
    f:close()
    local r = mk.run { shell = "ulimit -v 600000; exec " .. H.host .. " " .. path,
      env = { MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 60 }
    assert.equal(1, r.code, r.stderr)
    assert.matches("not enough memory", r.stderr, 1, true)
    assert.matches("--- svc", r.stderr, 1, true)
    assert.not_matches("internal error", r.stderr, 1, true)
    local dir = r.stderr:match("run directory kept: (%S+)")
    assert.truthy(dir, r.stderr)
    core.rmtree(dir)
  end)
end)

describe("order kept", function()
  H.leakcheck()

  it("names stay unique however they were taken, and so do log files", function()
    local a = mk.process { H.fx, "--print", "A", "--forever", name = "web-2" }
    local b = mk.process { H.fx, "--print", "B", "--forever", name = "web" }
    local c = mk.process { H.fx, "--print", "C", "--forever", name = "web" }
    assert.equal("web-2", a.name)
    assert.equal("web", b.name)
    assert.is_not.equal(a.name, c.name)
    assert.is_not.equal(b.name, c.name)
    local _g <close> = mk.group { a, b, c }:start()
    a:wait_output("A") b:wait_output("B") c:wait_output("C")
    assert.equal("A\n", a:output())
    assert.equal("B\n", b:output())
    assert.equal("C\n", c:output())
  end)

  it("thousands of executors of one name keep unique names without a cost per executor", function()
    local base = "many-" .. mk.free_port() -- a name no other test took
    local first = mk.process { H.fx, "--forever", name = base }
    local taken = mk.process { H.fx, "--forever", name = base .. "-3" }
    -- as many of another name first: tables the run keeps of its executors
    -- (weak ones) grow to their size once, whichever tests ran before
    for _ = 1, 3000 do mk.process { H.fx, "--forever", name = base .. "w" } end
    collectgarbage() collectgarbage()
    local heap = collectgarbage("count")
    do -- the names seen go with the block
      local seen = { [first.name] = true, [taken.name] = true }
      for _ = 1, 3000 do
        local name = mk.process { H.fx, "--forever", name = base }.name
        assert.is_nil(seen[name], "name given twice: " .. name)
        seen[name] = true
      end
      assert.is_true(seen[base .. "-2"] and seen[base .. "-4"] and seen[base .. "-3001"] or false)
    end
    collectgarbage() collectgarbage()
    -- a table entry per name would be ~100 kB here
    assert(collectgarbage("count") - heap < 48, string.format("heap grew by %.1f kB", collectgarbage("count") - heap))
    -- a name given by hand after them is still checked against them
    assert.equal(base .. "-2-2", mk.process { H.fx, "--forever", name = base .. "-2" }.name)
  end)

  local function zombies()
    local n = 0
    for _, pid in ipairs(core.children()) do
      local s = H.slurp("/proc/" .. pid .. "/stat") or ""
      if s:match("%) Z") then n = n + 1 end
    end
    return n
  end

  it("background children of os.execute are reaped during the run", function()
    for _ = 1, 50 do os.execute("true & true") end
    for _ = 1, 20 do os.execute("sleep 0.01 &") end
    mk.sleep(0.2)
    mk.sleep(0)
    assert.equal(0, zombies())
  end)

  it("a child of io.popen stays its own to wait for", function()
    local f = assert(io.popen("echo hello"))
    mk.sleep(0.2) -- it has exited: a zombie only its close may take
    assert.equal("hello\n", f:read("a"))
    local ok, how, code = f:close()
    assert.is_true(ok)
    assert.equal("exit", how)
    assert.equal(0, code)
  end)
end)

describe("without cgroups", function()
  H.leakcheck()

  it("stop() ends a descendant that left the session and scrubbed its environment", function()
    local dir = mk.tmpdir()
    local r = H.scenario([[
      local D = arg[1]
      local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
      local svc = mk.process { FX, "--fork-tree", D, "--touch", D .. "/done", "--forever", name = "tree" }:start()
      mk.wait_until(function() return exists(D .. "/done") end, { timeout = 20 })
      svc:stop()
      local left = {}
      local all = mk.run { shell = "cat " .. D .. "/*.pid" }.stdout
      for pid, kind in all:gmatch("(%d+) (%S+)") do
        left[#left + 1] = kind
        pid = tonumber(pid)
        mk.wait_until(function()
          local s = io.open("/proc/" .. pid .. "/stat")
          local st = s and s:read("a"):match("%) (%a)")
          if s then s:close() end
          return st == nil or st == "Z"
        end, { timeout = 2, message = kind .. " " .. pid .. " outlived stop()" })
      end
      assert(#left == 6, "expected 6 descendants, got " .. table.concat(left, ", "))
      print("ALL GONE")
    ]], { args = { dir }, env = { MKHARNESS_CGROUP = "0", MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("ALL GONE", r.stdout, 1, true)
  end)

  it("kill() of a service that is itself a harness run ends the inner run's daemon at once", function()
    local dir = mk.tmpdir()
    local inner = dir .. "/inner.lua"
    local f = assert(io.open(inner, "w"))
    f:write("local mk = require 'mkharness'\n",
      "KEEP = mk.pidfile { ", string.format("%q", H.fx), ", '--daemonize', '--pidfile', arg[1] .. '/daemon.pid', '--forever',",
      " file = arg[1] .. '/daemon.pid', name = 'daemon' }:start()\n",
      "print('INNER READY') io.stdout:flush()\nmk.sleep(60)\n")
    f:close()
    local r = H.scenario([[
      local D = arg[1]
      local inner = mk.output { ]] .. string.format("%q", H.host) .. [[, D .. "/inner.lua", D,
        banner = "INNER READY", name = "inner" }:start()
      local f = assert(io.open(D .. "/daemon.pid"))
      local pid = tonumber(f:read("a"):match("%d+"))
      f:close()
      inner:kill()
      mk.wait_until(function()
        local s = io.open("/proc/" .. pid .. "/stat")
        local st = s and s:read("a"):match("%) (%a)")
        if s then s:close() end
        return st == nil or st == "Z"
      end, { timeout = 3, message = "the inner run's daemon outlived kill() of the inner run" })
      print("DAEMON GONE")
    ]], { args = { dir }, env = { MKHARNESS_CGROUP = "0", MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("DAEMON GONE", r.stdout, 1, true)
  end)
end)
