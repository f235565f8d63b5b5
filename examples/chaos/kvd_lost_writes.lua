-- Lost acknowledged writes, found by a kill nemesis.
--
-- kvd (the bundled demo store) has a deliberate bug behind --unsafe-ack: it
-- answers 204 before the write reaches its log, and writes the log up to
-- 200 ms later. Four clients add keys while kvd is killed with SIGKILL and
-- restarted on a fixed schedule; after healing, one read lists every key
-- kvd holds, and the set checker looks for acknowledged keys it lost.
--
--   build/mkharness examples/chaos/kvd_lost_writes.lua          # unsafe: fails, naming the lost writes
--   build/mkharness examples/chaos/kvd_lost_writes.lua safe     # kvd writes before it acks: passes
--   (or KVD_MODE=safe; MKHARNESS_SEED=N replays another schedule)
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = os.getenv("MKH_BUILD_DIR") and (os.getenv("MKH_BUILD_DIR") .. "/kvd") or (here .. "../../build/kvd")

local mode = arg[1] or os.getenv("KVD_MODE") or "unsafe"
assert(mode == "safe" or mode == "unsafe", "mode must be safe or unsafe, got " .. mode)

local port = mk.free_port()
local base = "http://127.0.0.1:" .. port
local argv = { KVD, "--port", port, "--data", mk.tmpdir() .. "/kvd.log" }
if mode == "unsafe" then argv[#argv + 1] = "--unsafe-ack" end
argv.name, argv.url, argv.method, argv.timeout = "kvd", base .. "/health", "GET", 10
local kvd <close> = mk.http(argv):start()

local run = mk.chaos {
  seed = 1,
  duration = 6,
  clients = 4,
  faults = {
    mk.fault.kill { { kvd }, every = { 0.6, 1.2 }, lasting = { 0.1, 0.3 } },
  },
  workload = function(ctx)
    local i = 0
    while ctx:running() do
      i = i + 1
      local key = string.format("c%d-%d", ctx.client, i)
      ctx:invoke("add", key, function()
        local r = mk.http_request { url = base .. "/kv/" .. key, method = "PUT", body = "v", timeout = 1 }
        if r.status ~= 204 then ctx:fail("HTTP " .. r.status) end
      end)
      mk.sleep(0.002)
    end
  end,
  -- after every fault is healed: what does kvd hold?
  final = function(ctx)
    ctx:invoke("read", nil, function()
      local keys = {}
      for k in mk.get(base .. "/kv", { timeout = 5 }).body:gmatch("[^\n]+") do keys[#keys + 1] = k end
      return keys
    end)
  end,
}
run:check(mk.check.set)
print(string.format("kvd (%s): no acknowledged write lost in %d operations", mode, run.counts.ok + run.counts.fail + run.counts.info))
