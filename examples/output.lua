-- mk.output (mirakuru's OutputExecutor): ready when a line of output matches.
-- kvd picks its own port (--port 0) and prints it; the banner's capture reads it back.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = here .. "../build/kvd"

print("starting kvd on a port the OS picks, waiting for its banner ...")
local kvd <close> = mk.output {
  KVD, "--port", 0, "--data", mk.tmpdir() .. "/kvd.log",
  banner = "listening on 127%.0%.0%.1:(%d+)", timeout = 10,
}:start()

local port = assert(tonumber(kvd.ready_match[1]))
print(string.format("ready: %q -> port %d", kvd.ready_match.line, port))

local r = mk.get("http://127.0.0.1:" .. port .. "/health")
assert(r.status == 200, "health answered " .. r.status)
print("GET /health -> " .. r.status .. " " .. r.body:gsub("\n$", ""))
