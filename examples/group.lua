-- mk.group: start several services at once; the total is about the slowest, not the sum.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local KVD = here .. "../build/kvd"

local members, delay = {}, 0.3
for i = 1, 5 do
  local port = mk.free_port()
  members[i] = mk.http {
    KVD, "--port", port, "--delay", delay, "--data", mk.tmpdir() .. "/kvd.log",
    name = "kvd" .. i, url = "http://127.0.0.1:" .. port .. "/health", method = "GET", timeout = 10,
  }
end

print(string.format("starting %d kvd instances that each take %.1f s to listen ...", #members, delay))
local t0 = mk.now()
local g <close> = mk.group(members):start()
local took = mk.now() - t0
print(string.format("all ready in %.2f s (one after another: at least %.1f s)", took, #members * delay))
assert(took < #members * delay, "the group did not start in parallel")
for _, s in ipairs(members) do
  assert(s:running() and mk.get(s.url).status == 200)
end
g:stop()
for _, s in ipairs(members) do assert(not s:running()) end
print("all stopped")
