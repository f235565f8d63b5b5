-- mk.proxy: a TCP fault proxy between the scenario and a service, in the
-- spirit of toxiproxy, without root. The client talks to proxy.port; the
-- scenario injects latency, a bandwidth limit, a blackhole, a slicer, a data
-- limit, resets or an outage while it runs, each one way or both, on all
-- connections or a share of them (forwarding has its own thread, so it goes on even
-- inside os.execute).
--   ./build/mkharness examples/proxy.lua     (-v shows each fault as it is set)
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = here .. "../build/kvd"

local port = mk.free_port()
local _kvd <close> = mk.http {
  KVD, "--port", port, "--data", mk.tmpdir() .. "/kvd.log",
  url = "http://127.0.0.1:" .. port .. "/health", method = "GET", timeout = 10,
}:start()

local proxy <close> = mk.proxy { upstream = port }:start() -- a bare port: 127.0.0.1
local base = "http://127.0.0.1:" .. proxy.port
print(tostring(proxy))

local function timed(what, fn)
  local t0 = mk.now()
  local ok, r = pcall(fn)
  local ms = (mk.now() - t0) * 1000
  if ok then
    print(string.format("%-38s -> %d in %.1f ms", what, r.status, ms))
  else
    print(string.format("%-38s -> %s after %.1f ms", what, mk.is_error(r) and r.kind or tostring(r), ms))
  end
  return ok, r
end

assert(mk.http_request { url = base .. "/kv/k", method = "PUT", body = "v" }.status == 204)
timed("GET, no fault", function() return mk.get(base .. "/kv/k") end)

proxy:latency(50, { jitter = 10 })
timed("GET, latency 50±10 ms each way", function() return mk.get(base .. "/kv/k") end)

proxy:latency(100, { direction = "down" })
timed("GET, answers delayed 100 ms", function() return mk.get(base .. "/kv/k") end)

proxy:clear():bandwidth(20000)
local big = string.rep("x", 40000)
timed("PUT 40 KB at 20 KB/s", function()
  return mk.http_request { url = base .. "/kv/big", method = "PUT", body = big }
end)

proxy:clear():slicer { size = 16, delay = 10 }
timed("GET, sent in 16-byte pieces 10 ms apart", function() return mk.get(base .. "/kv/k") end)

proxy:clear():limit_data(100, { direction = "down" })
timed("GET, connection closed after 100 bytes", function() return mk.get(base .. "/kv/big") end)

proxy:clear():latency(200, { probability = 0.5 })
for i = 1, 4 do timed("GET, half the connections delayed, #" .. i, function() return mk.get(base .. "/kv/k") end) end

proxy:clear():blackhole()
local ok = timed("GET into a blackhole (timeout 0.3 s)", function()
  return mk.http_request { url = base .. "/kv/k", timeout = 0.3 }
end)
assert(not ok)
proxy:clear()

-- down for the duration of a function; up again afterwards, even on error
proxy:cut(function()
  local cut_ok = timed("GET while cut", function() return mk.get(base .. "/kv/k") end)
  assert(not cut_ok)
end)
timed("GET after the cut", function() return mk.get(base .. "/kv/k") end)

local s = proxy:stats()
print(string.format("stats: %d connections (%d open), %d bytes up, %d bytes down, %d upstream errors, %d closed by limit_data",
  s.connections, s.active, s.bytes_up, s.bytes_down, s.upstream_errors, s.limited))
