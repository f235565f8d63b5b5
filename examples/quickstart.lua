-- Quickstart: the bundled demo service `kvd` is a tiny HTTP key-value store
-- that replays an append-only log when it starts. This scenario starts it,
-- waits until it really listens, stores a key, takes it down inside a
-- stopped() block (the service is restarted afterwards, even on error), and
-- checks that the data came back from the log.
--   ./run quickstart        (or: ./build/mkharness -v examples/quickstart.lua)
local mk = require "mkharness"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local kvd = here .. "/../build/kvd"
local data = mk.tmpdir() .. "/kv.log"

-- Port 0: kvd picks a free port and prints it; the banner's capture reads it back.
local svc <close> = mk.output {
  kvd, "--port", 0, "--data", data, "--delay", 0.2,
  banner = "listening on 127.0.0.1:(%d+)", name = "kvd", timeout = 10,
}
local t0 = mk.now()
svc:start()
local function base() return "http://127.0.0.1:" .. svc.ready_match[1] end
print(string.format("1. kvd (pid %d) is ready on %s, %.0f ms after spawn (it warms up for 200 ms)",
  svc:pid(), base(), (mk.now() - t0) * 1000))

local put = mk.http_request { url = base() .. "/kv/greeting", method = "PUT", body = "hello, world" }
assert(put.status == 204, "PUT answered " .. put.status)
print("2. PUT /kv/greeting -> " .. put.status)

local old = base()
svc:stopped(function()
  local ok, err = pcall(mk.get, old .. "/health")
  assert(not ok and mk.is_error(err), "kvd should be down inside stopped()")
  print("3. inside stopped(): kvd is down, GET /health fails: " .. err.message:match("[^\n]*"))
end)

local got = mk.get(base() .. "/kv/greeting")
assert(got.status == 200 and got.body == "hello, world",
  string.format("after the restart GET answered %d %q", got.status, got.body))
print(string.format("4. restarted (pid %d, %s): GET /kv/greeting -> %d %q, replayed from the log",
  svc:pid(), base(), got.status, got.body))
print("quickstart passed")
