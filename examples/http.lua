-- mk.http (mirakuru's HTTPExecutor): ready when an HTTP request answers the expected status.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = here .. "../build/kvd"

local port = mk.free_port()
local url = "http://127.0.0.1:" .. port .. "/health"
print("starting kvd (listening only after 0.3 s), waiting for GET " .. url .. " -> 2xx ...")
local kvd <close> = mk.http {
  KVD, "--port", port, "--delay", 0.3, "--data", mk.tmpdir() .. "/kvd.log",
  url = url, method = "GET", status = "2xx", timeout = 10,
}:start()
print(string.format("ready: %s (port %d)", kvd.url, kvd.port))

local base = "http://127.0.0.1:" .. port
local put = mk.http_request { url = base .. "/kv/greeting", method = "PUT", body = "hello" }
assert(put.status == 204, "PUT answered " .. put.status)
local r = mk.get(base .. "/kv/greeting")
assert(r.status == 200 and r.body == "hello")
print("PUT /kv/greeting hello -> " .. put.status .. "; GET -> " .. r.status .. " " .. r.body)
assert(mk.get(base .. "/kv/nope").status == 404)
print("GET /kv/nope -> 404")
