-- PostgreSQL 15 (Debian's postgresql): initdb and postgres as user
-- postgres in a private data directory; stopped with its own pg_ctl; a
-- `kill -9` of the postmaster is a crash, and on restart it recovers from
-- its write-ahead log: committed rows are still there.
--   build/mkharness -v examples/real/postgresql.lua
local mk = require "mkharness"

local BIN = "/usr/lib/postgresql/15/bin/" -- Debian keeps them off PATH
local USER = "postgres" -- the server refuses to run as root

-- Running a service as another user needs root. Without it this scenario
-- cannot run: say so (the spec reports it as skipped, by this line) rather
-- than pass without doing anything.
if mk.run({ "id", "-u" }).stdout ~= "0\n" then
  print("postgresql scenario skipped: running postgres as user " .. USER .. " needs root")
  return
end

local port = mk.free_port()
local data = mk.tmpdir { owner = USER, mode = "700" } -- postgres insists on 0700, its own
local r = mk.run { BIN .. "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync",
  user = USER, timeout = 30 }
assert(r.code == 0, "initdb failed:\n" .. r.stdout .. r.stderr)
print("1. initdb: a new cluster in " .. data)

local pg <close> = mk.output {
  -- TCP on our port only, no unix socket (the system's would be /var/run/postgresql)
  BIN .. "postgres", "-D", data, "-p", port, "-c", "listen_addresses=127.0.0.1",
  "-c", "unix_socket_directories=",
  user = USER,
  banner = "database system is ready to accept connections", plain = true, timeout = 30,
  -- the server's own clean shutdown; pg_ctl refuses to run as root too
  stop_command = { BIN .. "pg_ctl", "stop", "-D", data, "-m", "fast", user = USER },
}:start()
print(string.format("2. postgres (postmaster pid %d) is ready on port %d", pg:pid(), port))

local function psql(sql)
  local res = mk.run { BIN .. "psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "postgres",
    "-v", "ON_ERROR_STOP=1", "-Atc", sql, timeout = 10 }
  assert(res.code == 0, "psql failed: " .. res.stderr)
  return (res.stdout:gsub("\n$", ""))
end

psql("CREATE TABLE orders (id int PRIMARY KEY, item text)")
psql("INSERT INTO orders VALUES (1, 'tea'), (2, 'coffee'), (3, 'cake')")
assert(psql("SELECT count(*) FROM orders") == "3")
print("3. created table orders and committed 3 rows")

local pid = pg:pid()
os.execute("kill -9 " .. pid) -- from outside, as the OOM killer would
local ok, err = pcall(mk.sleep, 5)
assert(not ok and mk.is_error(err, "UnexpectedExit"), "the crash was not reported: " .. tostring(err))
print("4. kill -9 of the postmaster " .. pid .. " is reported as a crash: " .. tostring(err):match("UnexpectedExit: [^\n]*"))

-- restart() sweeps the crashed server's leftover backends first, so the
-- new postmaster finds its shared memory free.
local t0 = mk.now()
pg:restart()
pg:wait_output("automatic recovery in progress", { plain = true, timeout = 1 })
print(string.format("5. restarted (pid %d) in %.1f s: it ran crash recovery from its WAL", pg:pid(), mk.now() - t0))
assert(psql("SELECT string_agg(item, ',' ORDER BY id) FROM orders") == "tea,coffee,cake")
print("6. the 3 committed rows survived: tea, coffee, cake")

pg:stop()
assert(pg:exit_code() == 0)
print("7. stopped by pg_ctl stop -m fast (exit code 0)")
print("postgresql scenario passed")
