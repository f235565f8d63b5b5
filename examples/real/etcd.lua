-- etcd (Debian's etcd-server and etcd-client): a 3-member cluster on
-- 127.0.0.1, each member's peer traffic through a fault proxy. The leader
-- is stopped while a client keeps writing; a follower is killed and
-- rejoins; a follower's peer link is slowed, then blackholed, and the
-- cluster keeps its quorum throughout.
--   build/mkharness -v examples/real/etcd.lua
local mk = require "mkharness"

-- Members: client and peer ports of our own. Peers reach a member through
-- its proxy (the URL it advertises), so a fault on that proxy hits every
-- connection the others open to it. etcd's peer streams are opened by
-- their receiver: these connections carry what the member tells the others
-- (its acknowledgements, its votes).
local members, cluster, endpoints = {}, {}, {}
for i = 1, 3 do
  local m = { name = "etcd" .. i, client = "http://127.0.0.1:" .. mk.free_port(), peer_port = mk.free_port() }
  m.proxy = mk.proxy { upstream = "127.0.0.1:" .. m.peer_port, name = m.name .. "-peer" }:start()
  m.advertised = "http://127.0.0.1:" .. m.proxy.port
  members[i] = m
  cluster[i] = m.name .. "=" .. m.advertised
  endpoints[i] = m.client
end
cluster, endpoints = table.concat(cluster, ","), table.concat(endpoints, ",")

for _, m in ipairs(members) do
  m.svc = mk.http {
    "etcd", "--name", m.name, "--data-dir", mk.tmpdir(),
    "--listen-client-urls", m.client, "--advertise-client-urls", m.client,
    "--listen-peer-urls", "http://127.0.0.1:" .. m.peer_port, "--initial-advertise-peer-urls", m.advertised,
    "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "mkharness",
    -- elections in about half a second, not the default's seconds
    "--heartbeat-interval", "50", "--election-timeout", "500",
    "--logger", "zap", "--log-outputs", "stderr",
    name = m.name,
    -- /health answers 200 once the member sees a leader: the cluster formed
    url = m.client .. "/health", method = "GET", timeout = 10,
  }
end

local g <close> = mk.group { members[1].svc, members[2].svc, members[3].svc }:start()
print("1. three etcd members formed a cluster: " .. cluster)

-- etcdctl against some endpoints, every call bounded.
local function etcdctl(eps, ...)
  local argv = { "etcdctl", "--endpoints", eps, "--command-timeout", "3s", timeout = 10 }
  for _, a in ipairs { ... } do argv[#argv + 1] = a end
  return mk.run(argv)
end
local function put(eps, k, v)
  local r = etcdctl(eps, "put", k, v)
  assert(r.code == 0 and r.stdout == "OK\n", "put " .. k .. " failed: " .. r.stderr)
end
-- A member's own copy, without asking the leader (serializable read).
local function local_value(m, k)
  local r = etcdctl(m.client, "get", k, "--consistency", "s", "--print-value-only")
  return r.code == 0 and r.stdout:gsub("\n$", "") or nil
end

-- Who leads, by the v3 HTTP gateway: each running member reports its own id
-- and the leader's (ids are strings there: they are 64-bit).
local function find_leader()
  return mk.wait_until(function()
    for _, m in ipairs(members) do
      if m.svc:running() then
        local ok, res = pcall(mk.http_request, { url = m.client .. "/v3/maintenance/status",
          method = "POST", body = "{}", timeout = 1 })
        local st = ok and res.status == 200 and res:json()
        if st and st.leader and st.header and st.leader == st.header.member_id then return m end
      end
    end
  end, { timeout = 10, message = "no member reports itself leader" })
end

local leader = find_leader()
print("2. " .. leader.name .. " leads")

-- A client that keeps writing, one key after another, to all endpoints
-- (etcdctl fails over between them).
local writer <close> = mk.process {
  "sh", "-c", [[i=0; while :; do i=$((i+1));
    if etcdctl --endpoints "$1" --command-timeout 2s put "w$i" "$i" >/dev/null 2>&1; then echo "ok $i"; else echo "fail $i"; fi
  done]], "writer", endpoints,
  name = "writer",
}:start()
writer:wait_output("^ok 3$", { timeout = 10 })
print("3. a client writes w1, w2, w3 ... in a loop")

leader.svc:stop()
print("4. stopped the leader " .. leader.name .. " (SIGTERM) while the client writes")
local new_leader = find_leader()
-- marked once the new leader is known: a write seen after it was
-- committed without the old leader
local elected = writer:mark()
local line = writer:wait_output("^ok %d+$", { since = elected, timeout = 10 })
print(string.format("5. %s was elected; the client's writes go on: %q", new_leader.name, line))

leader.svc:start()
print("6. " .. leader.name .. " started again and rejoined (its /health is 200)")
writer:stop()
local oks, fails = 0, 0
for l in writer:output():gmatch("[^\n]+") do
  if l:find("^ok") then oks = oks + 1 else fails = fails + 1 end
end
print(string.format("7. the client wrote %d keys; %d attempts failed during the election", oks, fails))

-- A follower killed (SIGKILL: no clean shutdown) misses writes, then
-- catches up from the leader when it comes back.
leader = find_leader()
local follower
for _, m in ipairs(members) do if m ~= leader then follower = m break end end
follower.svc:kill()
print("8. killed follower " .. follower.name .. " with SIGKILL")
put(leader.client, "while-down", "written with 2 of 3 members")
print("9. put while-down: the 2 members left are a quorum")
follower.svc:start()
local v = mk.wait_until(function() return local_value(follower, "while-down") end,
  { timeout = 10, message = follower.name .. " never caught up with while-down" })
print(string.format("10. %s restarted from its data directory and caught up: while-down = %q", follower.name, v))

-- Its peer link slowed: the leader hears its acknowledgements 200 ms late,
-- the other follower makes the quorum, and it still gets every write.
follower.proxy:latency(200)
put(endpoints, "slow", "1")
v = mk.wait_until(function() return local_value(follower, "slow") end,
  { timeout = 10, message = follower.name .. " never got slow=1 through the slowed link" })
print(string.format("11. 200 ms latency on %s's peer link: writes go on, it has slow = %q", follower.name, v))

-- Blackholed: its acknowledgements vanish (connections stay open, nothing
-- passes); the other two still commit. Once cleared, it is in sync.
follower.proxy:clear():blackhole()
for i = 1, 5 do put(leader.client, "dark" .. i, tostring(i)) end
print("12. " .. follower.name .. "'s peer link blackholed: dark1..dark5 committed without it")
follower.proxy:clear()
v = mk.wait_until(function() return local_value(follower, "dark5") end,
  { timeout = 10, message = follower.name .. " never got dark5 after the blackhole was cleared" })
assert(v == "5")
print(string.format("13. link cleared: %s has dark5 = %q", follower.name, v))

local r = etcdctl(endpoints, "get", "w1", "--print-value-only")
assert(r.code == 0 and r.stdout == "1\n", r.stderr)
-- On SIGTERM a leader hands over leadership first; stopped all at once, it
-- would wait seconds for followers that are leaving too. One at a time,
-- the leader first, each hand-over is quick.
leader = find_leader()
local order = { leader.svc }
for _, m in ipairs(members) do if m ~= leader then order[#order + 1] = m.svc end end
g:stop { order = order }
for _, m in ipairs(members) do m.proxy:stop() end
print("etcd scenario passed")
