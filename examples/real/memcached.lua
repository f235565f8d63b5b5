-- memcached (Debian's memcached): a `kill -9` from outside the harness is
-- reported as a crash, not mistaken for a stop; restart() brings it back and
-- it serves again (empty: memcached keeps nothing across a restart).
--   build/mkharness -v examples/real/memcached.lua
local mk = require "mkharness"

local port = mk.free_port()
-- memcached refuses to run as root without -u; -U 0: no UDP listener.
local mc <close> = mk.tcp {
  "memcached", "-l", "127.0.0.1", "-p", port, "-U", "0", "-u", "nobody", "-m", "16",
  port = port, timeout = 10,
}:start()
print(string.format("1. memcached (pid %d) is listening on port %d", mc:pid(), port))

-- The text protocol through bash's /dev/tcp: send the commands, then read
-- until the server closes after "quit".
local function talk(commands)
  local r = mk.run {
    "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/$1 && cat >&3 && cat <&3", "talk", port,
    stdin = table.concat(commands, "\r\n") .. "\r\nquit\r\n", timeout = 5,
  }
  assert(r.code == 0, "talking to memcached failed: " .. r.stderr)
  return r.stdout
end

local out = talk { "set greeting 0 0 5", "hello", "get greeting" }
assert(out:find("STORED\r\nVALUE greeting 0 5\r\nhello\r\nEND", 1, true), out)
print("2. set greeting = hello, get greeting -> hello")

local pid = mc:pid()
os.execute("kill -9 " .. pid) -- from outside, as the OOM killer would
print("3. kill -9 " .. pid .. " from outside the harness")

-- The next harness call reports the crash; a sleep returns at once with it.
local ok, err = pcall(mk.sleep, 5)
assert(not ok and mk.is_error(err, "UnexpectedExit"), "the crash was not reported: " .. tostring(err))
assert(not mc:running() and mc:exit_code() == -9)
print("4. reported as a crash: " .. tostring(err):match("[^\n]+"))

mc:restart()
print(string.format("5. restarted (pid %d)", mc:pid()))
out = talk { "get greeting", "set greeting 0 0 5", "again", "get greeting" }
assert(out:find("^END\r\nSTORED\r\nVALUE greeting 0 5\r\nagain\r\nEND"), out)
print("6. it serves again: greeting was gone (memory only), set and read back")

mc:stop()
print("memcached scenario passed")
