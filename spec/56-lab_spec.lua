-- mk.lab{...}: hosts with their own network, real packet filtering, no root.
-- Clients inside the lab are bash's /dev/tcp and /dev/udp (bash is in every
-- Debian), bounded by coreutils' timeout.
local H = require "spec.helpers"
local mk = require "mkharness"
local core = require "mkharness.core"
local FX, KVD = H.fx, H.kvd

local function is_root() return mk.run { "id", "-u", host = false }.stdout:match("^0%s") ~= nil end
local function have(prog) return os.execute("command -v " .. prog .. " >/dev/null 2>&1") == true end

-- Can this machine build a lab at all? (user namespaces allowed, libnftables)
local LAB_OK, LAB_WHY = pcall(function() mk.lab { hosts = { "probe" } }:close() end)
local function need_lab()
  if not LAB_OK then pending("no lab on this machine: " .. tostring(LAB_WHY)) return false end
  return true
end

-- kvd on every host, all on port 8080, ready by name through the lab
local function kvds(lab)
  local svcs = {}
  for _, h in ipairs(lab:hosts()) do
    svcs[#svcs + 1] = mk.http { KVD, "--port", "8080", "--bind", "0.0.0.0", "--data", mk.tmpdir() .. "/kv.log",
      url = "http://" .. h .. ":8080/health", method = "GET", host = lab[h], name = "kvd-" .. h, timeout = 10 }
  end
  return mk.group(svcs):start()
end

-- Can `from` open a TCP connection to to:port? (within 1 s)
local function tcp_ok(lab, from, to, port)
  return mk.run { "timeout", "1", "bash", "-c", "exec 3<>/dev/tcp/" .. to .. "/" .. (port or 8080),
    host = from and lab[from] or nil, timeout = 5 }.code == 0
end

describe("mk.lab", function()
  H.leakcheck()

  it("gives each host its own network: the same port on every host, reached by name and address", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1", "n2", "n3" } }
    local _g <close> = kvds(lab)
    assert.equal("198.18.", lab:ip("n1"):sub(1, 7))
    assert.are_not.equal(lab:ip("n1"), lab:ip("n2"))
    assert.equal(lab:ip("n2"), lab.n2.ip)
    -- the harness's own client, by address and by name
    assert.equal(200, mk.get("http://" .. lab:ip("n3") .. ":8080/health").status)
    assert.equal("ok\n", mk.get("http://n2:8080/health").body)
    -- the same inside a chaos run (driven by the wait loop, on reused
    -- handles): each name and address reaches its own host
    mk.chaos { seed = 1, duration = 0.05, workload = function()
      assert.equal(204, mk.http_request { url = "http://n2:8080/kv/where", method = "PUT", body = "n2" }.status)
      for _, h in ipairs { "n1", "n3", "n2", "n1" } do
        local want = h == "n2" and 200 or 404
        assert.equal(want, mk.get("http://" .. h .. ":8080/kv/where").status, h)
        assert.equal(want, mk.get("http://" .. lab:ip(h) .. ":8080/kv/where").status, h)
      end
      assert.equal("n2", mk.get("http://n2:8080/kv/where").body)
    end }
    -- mk.tcp with a lab host: runs there, probes its address
    local t <close> = mk.tcp { KVD, "--port", "8081", "--bind", "0.0.0.0", "--data", mk.tmpdir() .. "/kv.log",
      host = lab.n1, port = 8081, timeout = 5 }
    t:start()
    assert.equal(lab:ip("n1"), t.host)
  end)

  it("runs mk.run on the control node by default, in a host with host =, outside with host = false", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1", "n2" } }
    local _g <close> = kvds(lab)
    -- /etc/hosts names the hosts inside the lab, not outside it
    assert.matches("\tn1\n", mk.run { "cat", "/etc/hosts" }.stdout, 1, true)
    assert.matches("\tn2\n", mk.run { "cat", "/etc/hosts", host = lab.n1 }.stdout, 1, true)
    assert.is_nil(mk.run { "cat", "/etc/hosts", host = false }.stdout:find("\tn1\n", 1, true))
    -- each host sees its own address; the control node reaches every host
    assert.equal(lab:ip("n2"), mk.run { "hostname", "-I", host = lab.n2 }.stdout:match("%S+"))
    assert.equal(lab.control_ip, mk.run { "hostname", "-I" }.stdout:match("%S+"))
    assert.is_true(tcp_ok(lab, nil, "n1"))
    assert.is_true(tcp_ok(lab, "n1", "n2"))
    -- an exec probe runs where mk.run does
    local e <close> = mk.executor { FX, "--forever", ready = mk.probe.exec { "bash", "-c", "exec 3<>/dev/tcp/n2/8080" },
      timeout = 5 }
    e:start()
  end)

  it("lets a proxy forward to a lab host", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1" } }
    local _g <close> = kvds(lab)
    local p <close> = mk.proxy { upstream = "n1:8080" }:start()
    assert.equal("ok\n", mk.get("http://127.0.0.1:" .. p.port .. "/health").body)
  end)

  it("puts a proxy in the lab with host = lab: hosts reach it on the control node, its faults apply", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1", "n2" } }
    local _g <close> = kvds(lab)
    local p <close> = mk.proxy { upstream = "n2:8080", host = lab }:start()
    assert.equal(lab.control_ip, p.host)
    -- n1 asks n2 through the proxy; the harness reaches it too
    local via = "http://" .. lab.control_ip .. ":" .. p.port .. "/health"
    local r = mk.run { "timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/" .. lab.control_ip .. "/" .. p.port ..
      " && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3", host = lab.n1, timeout = 5 }
    assert.equal(0, r.code, r.stderr)
    assert.matches("\r\n\r\nok\n$", r.stdout)
    assert.equal("ok\n", mk.get(via).body)
    assert.is_true(p:stats().connections >= 2)
    -- a fault of the proxy holds n1's requests to n2, not n1's direct ones
    p:blackhole()
    assert.is_false(mk.run { "timeout", "0.5", "bash", "-c", "exec 3<>/dev/tcp/" .. lab.control_ip .. "/" ..
      p.port .. " && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ok <&3", host = lab.n1 }.code == 0)
    assert.is_true(tcp_ok(lab, "n1", "n2"))
    p:clear()
    -- in a lab host it cannot listen, and a closed lab is named
    local e = H.expect_error("ConfigError", function() mk.proxy { upstream = "n2:8080", host = lab.n1 } end)
    assert.matches("control node", e.message, 1, true)
    local other = mk.lab { hosts = { "x" }, name = "gone" }
    other:close()
    e = H.expect_error("ConfigError", function() mk.proxy { upstream = 8080, host = other } end)
    assert.matches("gone, which is closed", e.message, 1, true)
  end)

  it("isolates a host both ways and heals; the control node is never cut", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1", "n2", "n3" } }
    local _g <close> = kvds(lab)
    assert.is_true(tcp_ok(lab, "n1", "n2"))
    lab:isolate("n2")
    assert.same({ "n1->n2", "n2->n1", "n2->n3", "n3->n2" }, lab:cuts())
    assert.is_false(tcp_ok(lab, "n1", "n2"))
    assert.is_false(tcp_ok(lab, "n2", "n3"))
    assert.is_true(tcp_ok(lab, "n1", "n3"))
    assert.equal(200, mk.get("http://n2:8080/health").status) -- the control node
    lab:heal()
    assert.same({}, lab:cuts())
    assert.is_true(tcp_ok(lab, "n1", "n2"))
    assert.is_true(tcp_ok(lab, "n2", "n3"))
  end)

  it("partitions into groups; hosts in no group form one more", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "a", "b", "c", "d" } }
    local _g <close> = kvds(lab)
    lab:partition { { "a" }, { lab.b, "c" } }
    assert.is_true(tcp_ok(lab, "b", "c"))
    assert.is_false(tcp_ok(lab, "a", "b"))
    assert.is_false(tcp_ok(lab, "c", "d"))
    assert.same({ "a->b", "a->c", "a->d", "b->a", "b->d", "c->a", "c->d", "d->a", "d->b", "d->c" }, lab:cuts())
    lab:heal()
    assert.is_true(tcp_ok(lab, "a", "d"))
  end)

  it("heals one fault's cuts with its handle; a link two faults cut stays cut", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1", "n2", "n3" } }
    local _, iso = lab:isolate("n1")
    local _, drop = lab:drop { from = "n2", to = { "n1", "n3" } }
    assert.same({ "n1->n2", "n1->n3", "n2->n1", "n2->n3", "n3->n1" }, lab:cuts())
    lab:heal(iso)
    assert.same({ "n2->n1", "n2->n3" }, lab:cuts()) -- n2->n1 was the drop's too
    lab:heal(iso)                                    -- twice: nothing more
    assert.same({ "n2->n1", "n2->n3" }, lab:cuts())
    lab:heal(drop)
    assert.same({}, lab:cuts())
    H.config_error({ "handle" }, lab.heal, lab, {})
    local other <close> = mk.lab { hosts = { "m1", "m2" } }
    local _, foreign = other:isolate("m1")
    H.config_error({ "handle" }, lab.heal, lab, foreign)
  end)

  it("cuts UDP too, and drop{} cuts one way only", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1", "n2" } }
    local port = 9999
    local r1 <close> = mk.output { FX, "--udp-recv", port, banner = "udp " .. port, host = lab.n1, name = "udp-n1" }
    local r2 <close> = mk.output { FX, "--udp-recv", port, banner = "udp " .. port, host = lab.n2, name = "udp-n2" }
    mk.group { r1, r2 }:start()
    local function send(from, to, text)
      assert.equal(0, mk.run { "bash", "-c", "echo " .. text .. " >/dev/udp/" .. to .. "/" .. port,
        host = lab[from] }.code)
    end
    local function got(svc, text)
      return pcall(mk.wait_until, function() return svc:output():find("got " .. text, 1, true) end,
        { timeout = 0.5 })
    end
    send("n1", "n2", "first")
    assert.is_true(got(r2, "first"))
    lab:drop { from = "n1", to = "n2" }
    assert.same({ "n1->n2" }, lab:cuts())
    send("n1", "n2", "second")
    send("n2", "n1", "back")
    assert.is_true(got(r1, "back"))     -- the other way still flows
    assert.is_false(got(r2, "second"))  -- lost
    lab:heal()
    send("n1", "n2", "third")
    assert.is_true(got(r2, "third"))
    assert.is_nil(r2:output():find("second", 1, true))
  end)

  it("does not hang on a keeper that stops answering: the fault fails, bounded, and the hosts still run services", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1", "n2" } }
    local keeper = lab:keeper()
    assert.equal(0, mk.run { "kill", "-STOP", tostring(keeper), host = false }.code)
    local t0 = mk.now()
    local e = H.catch(lab.isolate, lab, "n1")
    mk.run { "kill", "-CONT", tostring(keeper), host = false }
    assert.equal("ExecutorError", e.kind)
    assert.matches("did not answer within 5 s", tostring(e), 1, true)
    assert.is_true(mk.now() - t0 < 8)
    assert.equal(0, mk.run { "true", host = lab.n1 }.code)
  end)

  it("names netem where the kernel has it, and says so where it does not", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1" } }
    local ok, e = pcall(lab.latency, lab, { host = "n1", ms = 5, jitter = 1 })
    if ok then
      lab:loss { host = lab.n1, percent = 1 }
      lab:heal()
    else
      assert.equal("ExecutorError", e.kind)
      assert.matches("netem (delay and loss) is missing from this kernel", tostring(e), 1, true)
    end
  end)

  it("supervises services inside hosts as any other: crash, pause, stop", function()
    if not need_lab() then return end
    local lab <close> = mk.lab { hosts = { "n1" } }
    local svc <close> = mk.output { FX, "--print", "up", "--forever", banner = "up", host = lab.n1 }
    svc:start()
    svc:pause()
    assert.is_true(H.is_paused(svc:pid()))
    svc:resume()
    svc:stop()
    svc:start()
    local pid = svc:pid()
    core.sleep(0.05)
    os.execute("kill -9 " .. pid)
    local e = H.catch(mk.sleep, 2)
    assert.equal("UnexpectedExit", e.kind)
  end)

  it("runs a service as another user inside a host, as root", function()
    if not need_lab() then return end
    if not is_root() then pending("needs root: only root can run a service as another user") return end
    local lab <close> = mk.lab { hosts = { "n1" } }
    local r = mk.run { "id", "-un", user = "nobody", host = lab.n1 }
    assert.equal(0, r.code, r.stderr)
    assert.equal("nobody\n", r.stdout)
  end)

  it("writes its faults to the run's events", function()
    if not need_lab() then return end
    local r = H.scenario([[
local lab <close> = mk.lab { hosts = { "n1", "n2" }, name = "net" }
mk.sleep(0.2)
lab:isolate("n1")
mk.sleep(0.2)
lab:heal()
mk.sleep(0.2)
]], { host_args = { "--keep" } })
    assert.equal(0, r.code, r.stderr)
    local dir = r.stderr:match("run directory kept: (%S+)")
    local events = H.slurp(dir .. "/events.jsonl")
    -- the timeline draws one lane per host, cut while isolated
    local drawn = mk.run { H.host, "report", dir .. "/events.jsonl" }.stdout
    mk.run { "rm", "-rf", dir }
    assert.matches("\nhost net/n1 +|[ -]*%-#+%-+", drawn)
    assert.matches("lab net: isolate n1", drawn, 1, true)
    for _, a in ipairs { "up", "isolate", "heal", "close" } do
      assert.matches('"action":"' .. a .. '"', events, 1, true)
    end
    assert.matches('"cuts":["n1->n2","n2->n1"]', events, 1, true)
  end)

  describe("leaves nothing behind", function()
    -- a scenario that prints its keeper's pid and user namespace, then ends as told
    local function left_after(ending, host_args)
      local r = H.scenario([[
local lab = mk.lab { hosts = { "n1", "n2" } }
local s = mk.output { FX, "--print", "up", "--forever", banner = "up", host = lab.n1 }:start()
lab:partition { { "n1" }, { "n2" } }
local pid, ino = lab:keeper()
print("lab " .. pid .. " " .. ino .. " " .. s:pid())
io.stdout:flush()
]] .. ending, { host_args = host_args, timeout = 30 })
      local keeper, ino, svc = r.stdout:match("lab (%d+) (%d+) (%d+)")
      assert.is_truthy(keeper, r.stdout .. r.stderr)
      -- no process is left in the lab's user namespace, the keeper included
      local deadline = core.now() + 3
      local inside
      repeat
        inside = mk.run { "sh", "-c", "for p in /proc/[0-9]*; do [ \"$(stat -L -c %i $p/ns/user 2>/dev/null)\" = " ..
          ino .. " ] && echo ${p#/proc/}; done; true", host = false }.stdout
        if inside == "" then break end
        core.sleep(0.05)
      until core.now() > deadline
      assert.equal("", inside, "processes left in the lab: " .. inside)
      assert.is_false(H.pid_alive(tonumber(keeper)))
      assert.is_false(H.pid_alive(tonumber(svc)))
      return r
    end

    it("at a normal end", function()
      if not need_lab() then return end
      assert.equal(0, left_after("").code)
    end)
    it("after an error", function()
      if not need_lab() then return end
      assert.equal(1, left_after("error('boom')").code)
    end)
    it("after --timeout", function()
      if not need_lab() then return end
      assert.equal(124, left_after("mk.sleep(30)", { "--timeout", "1" }).code)
    end)
    it("after SIGTERM and SIGKILL of the harness", function()
      if not need_lab() then return end
      -- os.execute's shell is a child of the Lua host process
      assert.equal(143, left_after("os.execute('kill -TERM $PPID') mk.sleep(5)").code)
      left_after("os.execute('kill -KILL $PPID') mk.sleep(5)")
    end)
    it("after lab:close(), at once", function()
      if not need_lab() then return end
      local lab = mk.lab { hosts = { "n1" } }
      local pid = lab:keeper()
      lab:close()
      assert.is_false(H.pid_alive(pid))
      assert.equal(0, #H.leftovers())
      H.config_error({ "host" }, mk.process, { "true", host = lab.n1 })
      assert.equal("ExecutorError", H.catch(lab.isolate, lab, "n1").kind)
    end)
  end)

  it("needs no root: a lab with a partition, as nobody", function()
    if not need_lab() then return end
    if not is_root() then pending("needs root to become nobody (as anyone else, every other test shows it)") return end
    if not have("setpriv") then pending("needs setpriv (util-linux)") return end
    if mk.run { "test", "-x", KVD, user = "nobody", host = false }.code ~= 0 then
      pending("the build tree is not reachable by nobody") return
    end
    local dir = mk.tmpdir { owner = "nobody" }
    local path = dir .. "/scenario.lua"
    local f = assert(io.open(path, "w"))
    f:write(string.format("local mk = require 'mkharness'\nlocal KVD = %q\n", KVD), [[
local lab <close> = mk.lab { hosts = { "n1", "n2" } }
-- a port below 1024: any user may bind one in a lab host
local a <close> = mk.http { KVD, "--port", "80", "--bind", "0.0.0.0", "--data", "/tmp/kv-n1-" .. mk.free_port(),
  url = "http://n1:80/health", method = "GET", host = lab.n1, timeout = 10 }
a:start()
local function reach() return mk.run { "timeout", "1", "bash", "-c", "exec 3<>/dev/tcp/n1/80", host = lab.n2 }.code == 0 end
assert(reach(), "n2 reaches n1")
lab:isolate("n1")
assert(not reach(), "n1 is cut off")
lab:heal()
assert(reach(), "healed")
print("uid " .. mk.run { "id", "-u", host = false }.stdout)
]])
    f:close()
    core.chmod(path, tonumber("644", 8))
    local r = mk.run { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
      H.host, path, timeout = 60, host = false }
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("uid 65534", r.stdout, 1, true)
  end)

  it("names the setting to change where user namespaces are not allowed", function()
    if not need_lab() then return end
    if not have("unshare") then pending("needs unshare (util-linux)") return end
    -- inside a user namespace of our own, allow no more of them
    local r = mk.run { "unshare", "-Ur", "sh", "-c", 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh",
      H.host, "-e", "require('mkharness').lab { hosts = { 'n1' } }", timeout = 30, host = false }
    if r.stderr:find("max_user_namespaces: ", 1, true) and r.code ~= 1 then
      pending("cannot lower user.max_user_namespaces here: " .. r.stderr) return
    end
    assert.equal(1, r.code, r.stderr)
    assert.matches("ExecutorError", r.stderr, 1, true)
    assert.matches("user.max_user_namespaces", r.stderr, 1, true)
  end)

  describe("bad input is a ConfigError naming the option", function()
    it("in mk.lab", function()
      H.config_error({ "hosts" }, mk.lab, {})
      H.config_error({ "hosts" }, mk.lab, { hosts = {} })
      H.config_error({ "hosts" }, mk.lab, { hosts = "n1" })
      H.config_error({ "hosts[2]" }, mk.lab, { hosts = { "n1", "n1" } })
      H.config_error({ "hosts[1]" }, mk.lab, { hosts = { "N1" } })
      H.config_error({ "hosts[1]" }, mk.lab, { hosts = { "a b" } })
      H.config_error({ "hosts[1]" }, mk.lab, { hosts = { string.rep("a", 32) } })
      H.config_error({ "hosts[1]" }, mk.lab, { hosts = { "partition" } })
      H.config_error({ "hosts[2]", "loopback" }, mk.lab, { hosts = { "n1", "localhost" } })
      H.config_error({ "hosts[1]" }, mk.lab, { hosts = { 7 } })
      local many = {}
      for i = 1, 254 do many[i] = "h" .. i end
      H.config_error({ "hosts" }, mk.lab, { hosts = many })
      H.config_error({ "hostz" }, mk.lab, { hostz = { "n1" } })
      H.config_error({ "[1]" }, mk.lab, { "n1" })
    end)
    it("in host = and the faults", function()
      if not need_lab() then return end
      H.config_error({ "host" }, mk.process, { "true", host = "n1" })
      H.config_error({ "host" }, mk.run, { "true", host = {} })
      H.config_error({ "host" }, mk.tcp, { "true", host = 5, port = 1 })
      local lab <close> = mk.lab { hosts = { "n1", "n2" } }
      H.config_error({ "host" }, lab.ip, lab, "n3")
      H.config_error({ "host" }, lab.isolate, lab, "n3")
      H.config_error({ "groups" }, lab.partition, lab, {})
      H.config_error({ "groups[1][1]" }, lab.partition, lab, { { "zz" } })
      H.config_error({ "groups[2]" }, lab.partition, lab, { { "n1" }, { "n1" } })
      H.config_error({ "to" }, lab.drop, lab, { from = "n1" })
      H.config_error({ "ms" }, lab.latency, lab, { host = "n1", ms = -1 })
      H.config_error({ "percent" }, lab.loss, lab, { host = "n1", percent = 101 })
      assert.same({}, lab:cuts()) -- nothing was half-applied
    end)
  end)
end)
