-- mk.proxy{...}: the TCP fault proxy (DESIGN 2.6, 2.8).
-- Timing assertions are lower bounds only (a fault must cost at least what
-- it says), with generous upper guards against hangs.
local H = require "spec.helpers"
local mk = require "mkharness"
local FX = H.fx

local expect_error = H.expect_error

local function have(prog) return os.execute("command -v " .. prog .. " >/dev/null 2>&1") == true end
local HAVE_CURL, HAVE_BASH = have("curl"), have("bash")

local function http_server(extra)
  local port = mk.free_port()
  local argv = { FX, "--listen", port }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = "--serve-http"
  argv[#argv + 1] = 200
  argv.port, argv.timeout = port, 10
  return mk.tcp(argv):start(), port
end

local function proxy_to(port, extra)
  local t = { upstream = "127.0.0.1:" .. port }
  for k, v in pairs(extra or {}) do t[k] = v end
  return mk.proxy(t):start()
end

local function url(p, path) return "http://127.0.0.1:" .. p.port .. (path or "/") end

-- An HTTP client in its own process (the scenario stays free to block):
-- writes what it received to `out`; exits non-zero on a reset.
-- (a client is a task, not a service: its failing exit is what the tests
-- look at, not a crash)
local function client_argv(port, path, out)
  if HAVE_CURL then
    return { "curl", "-sS", "-m", "10", "-o", out, "http://127.0.0.1:" .. port .. path, on_exit = "ignore" }
  end
  return { "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/" .. port .. " || exit 7; " ..
    "printf 'GET " .. path .. " HTTP/1.0\\r\\n\\r\\n' >&3; exec cat <&3 > '" .. out .. "'", on_exit = "ignore" }
end
local function shell_words(argv)
  local out = {}
  for i, a in ipairs(argv) do out[i] = "'" .. tostring(a):gsub("'", "'\\''") .. "'" end
  return table.concat(out, " ")
end
local function need_client()
  if not (HAVE_CURL or HAVE_BASH) then pending("needs curl or bash as an HTTP client") return false end
  return true
end

-- Wait until the proxy has n open connections.
local function wait_active(p, n)
  mk.wait_until(function() return p:stats().active == n end,
    { timeout = 5, message = "proxy did not reach " .. n .. " open connections" })
end

describe("mk.proxy", function()
  H.leakcheck()

  it("forwards HTTP to the upstream and counts it", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    assert.is_true(math.type(p.port) == "integer" and p.port > 0 and p.port ~= port)
    assert.equal("127.0.0.1:" .. port, p.upstream)
    local r = mk.get(url(p, "/x"))
    assert.equal(200, r.status)
    assert.equal("GET /x\n", r.body)
    -- the proxy thread counts after its send: the client can see the
    -- bytes a moment before the counters do
    mk.wait_until(function() return p:stats().active == 0 end, { timeout = 5 })
    local s = p:stats()
    assert.equal(1, s.connections)
    assert.is_true(s.bytes_up > 0 and s.bytes_down > #r.body)
    assert.equal(0, p:stats().upstream_errors)
    assert.matches("mkharness.proxy 127.0.0.1:" .. p.port .. " -> 127.0.0.1:" .. port .. " (running)", tostring(p), 1, true)
  end)

  it("moves large bodies intact both ways, with and without latency", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    local body = {}
    for i = 1, 60000 do body[i] = string.format("%07d\n", i) end -- 480 KB, position-dependent
    body = table.concat(body)
    local r = mk.http_request { url = url(p, "/big"), method = "POST", body = body, timeout = 20 }
    assert.equal("POST /big\n" .. body, r.body)
    p:latency(2, { jitter = 2 }) -- chunks queued with due times, order kept
    r = mk.http_request { url = url(p, "/big2"), method = "POST", body = body, timeout = 20 }
    assert.equal("POST /big2\n" .. body, r.body)
    p:clear()
    local huge <close>, hport = http_server { "--http-huge", 20000000 }
    local q <close> = proxy_to(hport)
    r = mk.http_request { url = url(q, "/"), timeout = 30 }
    assert.equal(20000000, #r.body)
    -- body + head, counted once sent (the client may see them first)
    mk.wait_until(function() return q:stats().active == 0 end, { timeout = 5 })
    assert.is_true(q:stats().bytes_down > 20000000)
  end)

  it("keeps forwarding while the scenario is inside os.execute", function()
    if not need_client() then return end
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    local dir = mk.tmpdir()
    -- the whole request happens while the Lua thread is blocked in os.execute
    local out = dir .. "/body"
    assert.is_true(os.execute(shell_words(client_argv(p.port, "/blocked", out))) == true)
    local got = H.slurp(out)
    assert.equal("GET /blocked\n", got:sub(-#"GET /blocked\n"))
    -- and a background client completes during a sleep Lua cannot interrupt
    local out2, stamp = dir .. "/body2", dir .. "/stamp"
    local c = mk.process { shell = shell_words(client_argv(p.port, "/during", out2)) ..
      " && " .. shell_words { FX, "--stamp", stamp } }:start()
    os.execute("sleep 1")
    local after = mk.now()
    assert.equal(0, c:wait_exit { timeout = 10 })
    assert.is_true(tonumber(H.slurp(stamp)) < after, "the request did not complete during the sleep")
    assert.equal("GET /during\n", H.slurp(out2):sub(-#"GET /during\n"))
  end)

  it("latency delays each direction by at least the configured time", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    assert.equal(p, p:latency(100))
    local t0 = mk.now()
    assert.equal(200, mk.get(url(p, "/slow"), { timeout = 5 }).status)
    local dt = mk.now() - t0
    assert.is_true(dt >= 0.2, "request + response should take >= 200 ms, took " .. dt) -- 100 ms each way
    assert.is_true(dt < 5)
    p:latency(60, { jitter = 40 })
    t0 = mk.now()
    assert.equal(200, mk.get(url(p, "/jitter"), { timeout = 5 }).status)
    dt = mk.now() - t0
    assert.is_true(dt >= 0.04, "took " .. dt) -- (60 - 40) ms each way
    assert.matches("latency 60±40 ms", tostring(p), 1, true)
  end)

  it("bandwidth limits throughput", function()
    local svc <close>, port = http_server { "--http-huge", 50000 }
    local p <close> = proxy_to(port)
    assert.equal(p, p:bandwidth(100000))
    local t0 = mk.now()
    local r = mk.http_request { url = url(p, "/"), timeout = 10 }
    local dt = mk.now() - t0
    assert.equal(50000, #r.body)
    -- 50 KB at 100 KB/s, minus the bucket's 2 KB burst
    assert.is_true(dt >= 0.45, "50 KB at 100 KB/s took only " .. dt .. " s")
    p:clear()
    assert.equal(50000, #mk.http_request { url = url(p, "/"), timeout = 10 }.body)
  end)

  it("down refuses connections, up restores them", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    assert.equal(200, mk.get(url(p)).status)
    assert.equal(p, p:down())
    assert.is_false(p:listening())
    assert.matches("(down)", tostring(p), 1, true)
    local e = expect_error("ExecutorError", function() mk.get(url(p), { timeout = 2 }) end)
    assert.matches("onnect", e.message)
    assert.is_nil(mk.core.tcp_probe("127.0.0.1", p.port, 1))
    assert.equal(p, p:up())
    assert.is_true(p:listening())
    assert.equal(200, mk.get(url(p)).status)
  end)

  it("down closes the connections already open", function()
    if not need_client() then return end
    local svc <close>, port = http_server { "--http-hang" }
    local p <close> = proxy_to(port)
    local out = mk.tmpdir() .. "/out"
    local c = mk.process(client_argv(p.port, "/hang", out)):start()
    wait_active(p, 1)
    p:down()
    c:wait_exit { timeout = 5 } -- closed: the client does not wait for its 10 s timeout
    assert.equal(0, p:stats().active)
    assert.equal("", H.slurp(out) or "")
    p:up()
  end)

  it("blackhole accepts and passes nothing; clear restores", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    assert.equal(p, p:blackhole())
    local e = expect_error("ExecutorError", function()
      mk.http_request { url = url(p, "/void"), timeout = 0.3 }
    end)
    assert.matches("timed out", e.message)
    wait_active(p, 1) -- accepted and still held open
    local s = p:stats()
    assert.equal(1, s.connections)
    assert.equal(0, s.bytes_up)
    assert.equal(0, s.bytes_down)
    assert.matches("blackhole", tostring(p))
    assert.equal(p, p:clear())
    assert.equal(200, mk.get(url(p, "/back")).status)
  end)

  it("reset sends an RST on every open connection", function()
    if not need_client() then return end
    local svc <close>, port = http_server { "--http-hang" }
    local p <close> = proxy_to(port)
    local out = mk.tmpdir() .. "/out"
    local c = mk.process(client_argv(p.port, "/hang", out)):start()
    wait_active(p, 1)
    assert.equal(p, p:reset())
    local code = c:wait_exit { timeout = 5 }
    assert.are_not.equal(0, code)
    if HAVE_CURL then assert.matches("reset", c:err_output()) end
    local s = p:stats()
    assert.equal(1, s.resets)
    assert.equal(0, s.active)
    -- one-shot: new connections are accepted
    assert.is_true(mk.core.tcp_probe("127.0.0.1", p.port, 1))
  end)

  it("clear removes every fault at once, down included", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    p:latency(500):bandwidth(10):blackhole():down()
    p:clear()
    assert.matches("(running)", tostring(p), 1, true)
    local t0 = mk.now()
    assert.equal("GET /ok\n", mk.get(url(p, "/ok"), { timeout = 5 }).body)
    assert.is_true(mk.now() - t0 < 5)
  end)

  it("cut(fn) is down during fn and up after, even when fn raises", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    local a, b = p:cut(function(self)
      assert.equal(p, self)
      assert.is_false(p:listening())
      assert.is_false(pcall(mk.get, url(p), { timeout = 2 }))
      return 1, 2
    end)
    assert.same({ 1, 2 }, { a, b })
    assert.equal(200, mk.get(url(p)).status)
    local ok, err = pcall(p.cut, p, function() error("boom", 0) end)
    assert.is_false(ok)
    assert.equal("boom", err)
    assert.is_true(p:listening())
    assert.equal(200, mk.get(url(p)).status)
    do
      local _ <close> = p:cut()
      assert.is_nil(mk.core.tcp_probe("127.0.0.1", p.port, 1))
    end
    assert.equal(200, mk.get(url(p)).status)
  end)

  it("stats count connections, bytes each way and upstream errors", function()
    local svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    local down = 0
    for i = 1, 3 do down = down + #mk.get(url(p, "/n" .. i)).body end
    mk.wait_until(function() return p:stats().active == 0 end, { timeout = 5 })
    local s = p:stats()
    assert.equal(3, s.connections)
    assert.is_true(s.bytes_up >= 3 * #"GET /n1 HTTP/1.1\r\n\r\n")
    assert.is_true(s.bytes_down > down)
    assert.equal(0, s.upstream_errors)
    -- an upstream that refuses: the client's connection is closed
    local dead <close> = proxy_to(mk.free_port())
    expect_error("ExecutorError", function() mk.get(url(dead), { timeout = 5 }) end)
    mk.wait_until(function() return dead:stats().upstream_errors == 1 end, { timeout = 5 })
    assert.equal(0, dead:stats().active)
  end)

  it("bad options are ConfigErrors naming the option", function()
    local function cfg(option, fn)
      local e = expect_error("ConfigError", fn)
      assert.equal(option, e.option, tostring(e))
      return e
    end
    cfg("upstream", function() mk.proxy {} end)
    for _, bad in ipairs { "localhost", "127.0.0.1:", ":80", "127.0.0.1:0", "127.0.0.1:70000",
      "127.0.0.1:http", "::1:80", "", 6379 } do
      cfg("upstream", function() mk.proxy { upstream = bad } end)
    end
    for _, bad in ipairs { -1, 65536, 1.5, "80", true } do
      cfg("listen", function() mk.proxy { upstream = "127.0.0.1:1", listen = bad } end)
    end
    cfg("host", function() mk.proxy { upstream = "127.0.0.1:1", host = "" } end)
    local e = cfg("listne", function() mk.proxy { upstream = "127.0.0.1:1", listne = 0 } end)
    assert.matches("did you mean 'listen'", e.message, 1, true)
    cfg("[1]", function() mk.proxy { "127.0.0.1:1" } end)
    expect_error("ConfigError", function() mk.proxy "127.0.0.1:1" end)
    local p = mk.proxy { upstream = "127.0.0.1:1" } -- never started: nothing to clean
    cfg("ms", function() p:latency(-1) end)
    cfg("ms", function() p:latency("10") end)
    cfg("ms", function() p:latency(0 / 0) end)
    cfg("ms", function() p:latency(math.huge) end)
    cfg("jitter", function() p:latency(10, { jitter = -1 }) end)
    e = cfg("jiter", function() p:latency(10, { jiter = 1 }) end)
    assert.matches("did you mean 'jitter'", e.message, 1, true)
    cfg("opts", function() p:latency(10, 5) end)
    for _, bad in ipairs { 0, -5, "fast", math.huge } do
      cfg("bytes_per_second", function() p:bandwidth(bad) end)
    end
    cfg("fn", function() p:cut("nope") end)
    -- control before start
    expect_error("ExecutorError", function() p:down() end)
    expect_error("ExecutorError", function() p:reset() end)
    assert.matches("(stopped)", tostring(p), 1, true)
  end)

  it("faults set before start apply; stop and start again keep the port", function()
    local svc <close>, port = http_server()
    local p <close> = mk.proxy { upstream = "127.0.0.1:" .. port }
    assert.is_nil(p.port)
    p:latency(50)
    p:start()
    local first = p.port
    local t0 = mk.now()
    assert.equal(200, mk.get(url(p)).status)
    assert.is_true(mk.now() - t0 >= 0.1)
    p:stop()
    assert.is_false(p:running())
    assert.is_nil(mk.core.tcp_probe("127.0.0.1", first, 1))
    p:clear():start()
    assert.equal(first, p.port)
    assert.equal(200, mk.get(url(p)).status)
    assert.equal(p, p:start()) -- running: no-op
  end)

  it("a port in use is an ExecutorError naming who holds it", function()
    local svc <close>, port = http_server()
    local p <close> = mk.proxy { upstream = "127.0.0.1:1", listen = port }
    local e = expect_error("ExecutorError", function() p:start() end)
    assert.matches("in use", e.message)
    assert.matches("fx_svc", e.message)
  end)

  it("<close> and __gc of a running proxy free its port", function()
    local svc <close>, port = http_server()
    local lport = mk.free_port()
    do
      local p <close> = proxy_to(port, { listen = lport })
      assert.equal(lport, p.port)
      assert.equal(200, mk.get(url(p)).status)
    end
    local again <close> = mk.tcp { FX, "--listen", lport, "--serve-tcp", port = lport, timeout = 10 }:start()
    again:stop()
    local gport = mk.free_port()
    do
      local p = proxy_to(port, { listen = gport })
      assert.equal(200, mk.get(url(p)).status)
      p = nil -- luacheck: ignore
    end
    collectgarbage()
    collectgarbage()
    local after_gc <close> = mk.tcp { FX, "--listen", gport, "--serve-tcp", port = gport, timeout = 10 }:start()
  end)

  it("a proxy left running does not keep the host from exiting", function()
    local r = H.scenario([[
      local port = mk.free_port()
      local svc = mk.tcp{ FX, "--listen", port, "--serve-http", 200, port = port }:start()
      P = mk.proxy{ upstream = "127.0.0.1:" .. port }:start()
      P:latency(10000)
      local ok = pcall(mk.http_request, { url = "http://127.0.0.1:" .. P.port .. "/", timeout = 0.2 })
      print("left running", ok, P:stats().active)
    ]], { timeout = 20 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("left running\tfalse\t1", r.stdout)
  end)
end)
