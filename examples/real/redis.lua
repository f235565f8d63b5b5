-- Redis (Debian's redis-server): data written with appendonly survives a
-- restart; a paused server makes a client time out, and answers again once
-- resumed.
--   build/mkharness -v examples/real/redis.lua
local mk = require "mkharness"

local port, data = mk.free_port(), mk.tmpdir()

-- A private instance: our port, our data directory, no RDB snapshots (so
-- only the append-only file can bring the keys back), nothing daemonized.
local redis <close> = mk.output {
  "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", data,
  "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
  -- it listens before it has replayed the append-only file: the log line
  -- comes once it has
  banner = "Ready to accept connections", plain = true, timeout = 10,
}:start()
print(string.format("1. redis-server (pid %d) is ready on port %d, data in %s", redis:pid(), port, data))

-- redis-cli for I/O; `timeout` bounds every call (a paused server never answers).
local function cli(timeout, ...)
  local argv = { "redis-cli", "-p", port, "--raw", timeout = timeout }
  for _, a in ipairs { ... } do argv[#argv + 1] = a end
  local r = mk.run(argv)
  assert(r.code == 0, "redis-cli failed: " .. r.stderr)
  return (r.stdout:gsub("\n$", ""))
end

for i = 1, 3 do assert(cli(5, "SET", "key" .. i, "value " .. i) == "OK") end
assert(cli(5, "INCRBY", "counter", "42") == "42")
print("2. wrote key1..key3 and counter = 42")

redis:restart()
print(string.format("3. restarted (pid %d): the append-only file was replayed", redis:pid()))
for i = 1, 3 do
  local v = cli(5, "GET", "key" .. i)
  assert(v == "value " .. i, "key" .. i .. " came back as " .. string.format("%q", v))
end
assert(cli(5, "GET", "counter") == "42")
print("4. key1..key3 and counter read back after the restart")

redis:pause()
print("5. paused redis-server: the kernel still accepts connections, nobody answers")
local t0 = mk.now()
local ok, err = pcall(cli, 1, "PING")
assert(not ok and mk.is_error(err, "TimeoutExpired"), "a paused redis answered: " .. tostring(err))
print(string.format("6. redis-cli PING timed out after %.1f s, as a client of a hung server would", mk.now() - t0))
redis:resume()
assert(cli(5, "PING") == "PONG")
print("7. resumed: PING -> PONG")

redis:stop()
print("redis scenario passed")
