-- mk.tcp (mirakuru's TCPExecutor): ready when a TCP connect succeeds.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = here .. "../build/kvd"

local port = mk.free_port()
print("starting kvd on port " .. port .. ", waiting until it accepts TCP ...")
local kvd <close> = mk.tcp {
  KVD, "--port", port, "--data", mk.tmpdir() .. "/kvd.log",
  port = port, timeout = 10,
}:start()
print(string.format("ready: %s (%s:%d)", tostring(kvd), kvd.host, kvd.port))

local base = "http://127.0.0.1:" .. port
assert(mk.http_request { url = base .. "/kv/colour", method = "PUT", body = "blue" }.status == 204)
local got = mk.get(base .. "/kv/colour").body
assert(got == "blue", "read back " .. got)
print("PUT /kv/colour blue, GET -> " .. got)

-- mirakuru's pre-start check: a second kvd on the same port is refused
local ok, err = pcall(function()
  mk.tcp { KVD, "--port", port, port = port }:start()
end)
assert(not ok and mk.is_error(err, "AlreadyRunning"))
print("a second one is refused: " .. err.message)
