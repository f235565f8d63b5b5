-- A crash is reported when it happens, and cleanup never hides the error
-- that caused the unwind.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = here .. "../build/kvd"

local function start_kvd(opts)
  local port = mk.free_port()
  local t = { KVD, "--port", port, "--data", mk.tmpdir() .. "/kvd.log", port = port, name = "kvd" }
  for k, v in pairs(opts or {}) do t[k] = v end
  return mk.tcp(t):start(), port
end

-- 1. kvd dies from outside (kill -9) while the scenario sleeps: the sleep
--    itself raises UnexpectedExit at once, with the exit and the log tail.
local kvd <close> = start_kvd()
os.execute("kill -9 " .. kvd:pid()) -- from outside the harness
local t0 = mk.now()
local ok, err = pcall(mk.sleep, 5)
assert(not ok and mk.is_error(err, "UnexpectedExit"), tostring(err))
print(string.format("caught after %.0f ms of a 5 s sleep:\n  %s", (mk.now() - t0) * 1000,
  tostring(err):match("[^\n]+")))

-- 2. restart() starts a crashed service again.
kvd:restart()
assert(mk.get("http://127.0.0.1:" .. kvd.port .. "/health").status == 200)
print("restarted: /health answers again")

-- 3. A stopped() block that fails: the block's own message survives, and
--    the service is started again all the same.
ok, err = pcall(kvd.stopped, kvd, function()
  error("the client should have retried while kvd was down")
end)
assert(not ok and tostring(err):find("should have retried", 1, true))
assert(kvd:running())
print("stopped() block failed with its own message, kvd running again:\n  " .. tostring(err))

-- 4. on_exit = "restart": a service that keeps dying is started again,
--    up to max_restarts times, each an event (-v shows them).
local flaky <close> = start_kvd { name = "flaky", on_exit = "restart", max_restarts = 3 }
os.execute("kill -9 " .. flaky:pid())
mk.sleep(0.5)
assert(flaky:running())
print("flaky was killed and restarted on its own")
