-- The real-service tier: each scenario in examples/real/ (and the chaos
-- scenario on etcd in examples/chaos/) runs in a child
-- host against Debian's own packages (./run test installs them when root).
-- A service that is not installed is reported pending by name, never
-- passed silently.
local H = require "spec.helpers"
local mk = require "mkharness"

local PG = "/usr/lib/postgresql/15/bin/"

-- Each example: the programs it runs, with the Debian package of each,
-- and the line it prints last when it passed.
local EXAMPLES = {
  { name = "redis", needs = { { "redis-server", "redis-server" }, { "redis-cli", "redis-tools" } } },
  { name = "memcached", needs = { { "memcached", "memcached" }, { "bash", "bash" } } },
  { name = "nginx", needs = { { "nginx", "nginx" } } },
  { name = "postgresql", needs = { { PG .. "postgres", "postgresql" }, { PG .. "initdb", "postgresql" },
    { PG .. "pg_ctl", "postgresql" }, { PG .. "psql", "postgresql-client-15" } } },
  { name = "etcd", needs = { { "etcd", "etcd-server" }, { "etcdctl", "etcd-client" } } },
  { name = "etcd_lab", needs = { { "etcd", "etcd-server" }, { "etcdctl", "etcd-client" } } },
  { name = "haproxy", needs = { { "haproxy", "haproxy" }, { "nginx", "nginx" } } },
  { name = "etcd_chaos", dir = "examples/chaos/", needs = { { "etcd", "etcd-server" } } },
}

-- The package of the first missing program, or nil. Daemons live in
-- /usr/sbin, which a non-root PATH may lack.
local function missing(needs)
  for _, n in ipairs(needs) do
    local prog, pkg = n[1], n[2]
    local found
    if prog:find("/", 1, true) then
      found = mk.run({ "test", "-x", prog }).code == 0
    else
      found = mk.run({ "sh", "-c", 'PATH="$PATH:/usr/sbin:/sbin" command -v "$1"', "sh", prog }).code == 0
    end
    if not found then return prog, pkg end
  end
end

describe("real services (examples/real)", function()
  H.leakcheck()

  for _, ex in ipairs(EXAMPLES) do
    it(ex.name, function()
      local prog, pkg = missing(ex.needs)
      if prog then pending(prog .. " not installed: apt-get install " .. pkg) return end
      local path = (ex.dir or "examples/real/") .. ex.name .. ".lua"
      local env = { PATH = (os.getenv("PATH") or "/usr/bin:/bin") .. ":/usr/sbin:/sbin" }
      -- Inner run directories under ours, so nothing is left behind; not
      -- for postgresql, whose server runs as another user and must reach
      -- its data directory (ours is private to us).
      if ex.name ~= "postgresql" then env.MKHARNESS_TMPDIR = mk.tmpdir() end
      -- each example takes seconds; the limit is for a loaded machine
      local r = mk.run { H.host, path, timeout = 180, env = env }
      local skipped = r.stdout:match("[^\n]* scenario skipped: [^\n]*")
      if skipped and r.code == 0 then pending(skipped) return end
      assert.equal(0, r.code, path .. " failed:\n" .. r.stdout .. r.stderr)
      assert.truthy(r.stdout:find(ex.name .. " scenario passed\n", 1, true),
        path .. " did not reach its end:\n" .. r.stdout .. r.stderr)
    end)
  end
end)
