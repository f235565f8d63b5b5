-- mk.executor{ ready = {...} }: any probes, all of which must pass.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = here .. "../build/kvd"

local port = mk.free_port()
local base = "http://127.0.0.1:" .. port
print("starting kvd on port " .. port .. ", ready when: banner printed, TCP accepts, /health is 200, and a custom check passes ...")
local kvd <close> = mk.executor {
  KVD, "--port", port, "--data", mk.tmpdir() .. "/kvd.log",
  timeout = 10,
  ready = {
    mk.probe.output { banner = "listening on" },
    mk.probe.tcp { port = port },
    mk.probe.http { url = base .. "/health", method = "GET", status = 200 },
    function() -- a Lua function probe: the store answers a real request
      local ok, r = pcall(mk.get, base .. "/kv") -- refused while kvd is still starting
      return ok and r.status == 200
    end,
  },
}:start()
print("ready: " .. kvd.ready_match.line)
assert(mk.get(base .. "/health").body == "ok\n")
print("GET /health -> ok")
