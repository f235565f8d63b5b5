-- A 3-member etcd (Debian's etcd-server) under a nemesis that kills members
-- with SIGKILL and pauses them (SIGSTOP or the cgroup freezer), while four
-- clients add to a set and write and read a register through etcd's v3
-- HTTP API. After healing, the set checker wants every acknowledged add,
-- the register checker wants every read to return a written value.
--   build/mkharness examples/chaos/etcd_chaos.lua          (about 20 s)
--   MKHARNESS_SEED=N replays another schedule.
-- Where this machine can build a lab (mk.lab: user namespaces allowed), the
-- members run on their own hosts and the nemesis also partitions the
-- network; elsewhere they share 127.0.0.1 and the partitions are left out.
local mk = require "mkharness"

local DURATION = tonumber(os.getenv("ETCD_CHAOS_DURATION") or "") or 15

-- base64, for the v3 API's keys and values
local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return ((s:gsub(".", function(c)
    local b, bits = c:byte(), ""
    for i = 8, 1, -1 do bits = bits .. ((b >> (i - 1)) & 1) end
    return bits
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local n = tonumber(x, 2)
    return B:sub(n + 1, n + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end
local function unb64(s)
  local bits = s:gsub("[^%w+/]", ""):gsub(".", function(c)
    local n, b = B:find(c, 1, true) - 1, ""
    for i = 6, 1, -1 do b = b .. ((n >> (i - 1)) & 1) end
    return b
  end)
  bits = bits:sub(1, #bits - #bits % 8) -- the padding's bits are no byte
  return (bits:gsub("%d%d%d%d%d%d%d%d", function(x) return string.char(tonumber(x, 2)) end))
end

-- The members: with a lab, one host each (the same ports, each its own
-- address); without, ports of our own on 127.0.0.1.
local built, lab = pcall(mk.lab, { hosts = { "n1", "n2", "n3" } })
if not built then
  print("no lab here, so no partitions: " .. tostring(lab):match("[^\n]*"))
  lab = nil
end
local _lab <close> = lab
local members, cluster = {}, {}
for i = 1, 3 do
  local name = "etcd" .. i
  local ip = lab and lab:ip("n" .. i) or "127.0.0.1"
  local cport = lab and 2379 or mk.free_port()
  local pport = lab and 2380 or mk.free_port()
  members[i] = { name = name, host = lab and lab["n" .. i] or nil, client = "http://" .. ip .. ":" .. cport,
    peer = "http://" .. ip .. ":" .. pport }
  cluster[i] = name .. "=" .. members[i].peer
end
cluster = table.concat(cluster, ",")
local svcs = {}
for i, m in ipairs(members) do
  m.svc = mk.http {
    "etcd", "--name", m.name, "--data-dir", mk.tmpdir(),
    "--listen-client-urls", m.client, "--advertise-client-urls", m.client,
    "--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
    "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "mkharness-chaos",
    "--heartbeat-interval", "50", "--election-timeout", "500",
    "--logger", "zap", "--log-outputs", "stderr",
    name = m.name, host = m.host, url = m.client .. "/health", method = "GET", timeout = 20,
  }
  svcs[i] = m.svc
end
local _ <close> = mk.group(svcs):start()

-- One v3 call, bounded; a reply without a 200 is a definite failure only
-- when etcd says so in its body (an error code), else indeterminate.
local function v3(m, path, body, ctx)
  local r = mk.http_request { url = m.client .. "/v3/" .. path, method = "POST", body = mk.json.encode(body),
    headers = { ["Content-Type"] = "application/json" }, timeout = 1 }
  if r.status ~= 200 then ctx:info("HTTP " .. r.status .. ": " .. r.body:sub(1, 100)) end
  return r:json()
end

local faults = {
  mk.fault.kill { svcs, every = { 1.5, 3 }, lasting = { 0.5, 1.5 } },
  mk.fault.pause { svcs, every = { 1.5, 3 }, lasting = { 0.5, 1.5 } },
}
if lab then faults[#faults + 1] = mk.fault.partition { lab, mode = "majority", every = { 2, 4 }, lasting = { 1, 2 } } end

local run = mk.chaos {
  seed = 2024, duration = DURATION, clients = 4, concurrent = 1, faults = faults,
  workload = function(ctx)
    local i = 0
    while ctx:running() do
      i = i + 1
      local m = members[(ctx.client + i) % 3 + 1] -- spread over the members
      if ctx.client <= 2 then
        local key = string.format("set/c%d-%d", ctx.client, i)
        ctx:invoke("add", key, function() v3(m, "kv/put", { key = b64(key), value = b64("1") }, ctx) end)
      elseif i % 2 == 0 then
        local v = string.format("c%d-%d", ctx.client, i)
        ctx:invoke("write", v, function() v3(m, "kv/put", { key = b64("register"), value = b64(v) }, ctx) end)
      else
        ctx:invoke("read", nil, function()
          local res = v3(m, "kv/range", { key = b64("register") }, ctx)
          local kv = res.kvs and res.kvs[1]
          return kv and unb64(kv.value) or mk.json.null
        end)
      end
      mk.sleep(0.01)
    end
  end,
  final = function(ctx)
    mk.wait_until(function() return mk.get(members[1].client .. "/health", { timeout = 1 }).status == 200 end,
      { timeout = 10 })
    ctx:invoke("read set", nil, function()
      local res = v3(members[1], "kv/range", { key = b64("set/"), range_end = b64("set0"), keys_only = true }, ctx)
      local keys = {}
      for _, kv in ipairs(res.kvs or {}) do keys[#keys + 1] = unb64(kv.key) end
      return keys
    end)
  end,
}
run:check(mk.check.set { add = "add", read = "read set" })
run:check(mk.check.register { initial = mk.json.null })
run:check(mk.check.latency)
print("etcd_chaos scenario passed")
