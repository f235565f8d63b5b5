-- mk.proxy{...}: the TCP fault proxy.
-- Timing assertions are lower bounds only (a fault must cost at least what
-- it says), with generous upper guards against hangs.
local H = require "spec.helpers"
local mk = require "mkharness"
local FX = H.fx

local expect_error = H.expect_error

local function have(prog) return os.execute("command -v " .. prog .. " >/dev/null 2>&1") == true end
local HAVE_CURL, HAVE_BASH, HAVE_PERL = have("curl"), have("bash"), have("perl")

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

-- A raw TCP client (perl, in its own process): connects, writes `req`,
-- reads until the end. Returns { ending = "eof" or "error: ...", total =
-- bytes read, sizes = { bytes per read }, data = what it read }.
local RAW_CLIENT = [[
use IO::Socket::INET; use Socket qw(IPPROTO_TCP TCP_NODELAY);
alarm 20;
my ($port, $req, $out) = @ARGV;
my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port) or die "connect: $!";
setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
syswrite($c, $req) == length($req) or die "write: $!";
my ($b, @sizes, $data); my $end = "eof";
while (1) {
  my $r = sysread($c, $b, 65536);
  if (!defined $r) { $end = "error: $!"; last }
  last if $r == 0;
  push @sizes, $r; $data .= $b;
}
open(my $f, ">", $out) or die; binmode $f; print $f $data // ""; close $f;
print "$end
", join(",", @sizes), "
";
]]
local function need_perl()
  if not HAVE_PERL then pending("needs perl for a raw TCP client") return false end
  return true
end
local function raw(port, req)
  local out = mk.tmpdir() .. "/raw"
  local r = mk.run { "perl", "-e", RAW_CLIENT, port, req, out, timeout = 30 }
  assert.equal(0, r.code, r.stderr)
  local ending, sizes = r.stdout:match("^([^\n]*)\n([%d,]*)")
  local t = { ending = ending, sizes = {}, data = H.slurp(out) or "" }
  for n in sizes:gmatch("%d+") do t.sizes[#t.sizes + 1] = tonumber(n) end
  t.total = #t.data
  return t
end
local GET = "GET /x HTTP/1.0\r\n\r\n"

-- A client's exit code, once it has exited; stop() releases its pidfd
-- (the leak check looks), whatever the code was.
local function finish(c, timeout)
  local code = c:wait_exit { timeout = timeout or 10 }
  c:stop { expected_returncode = code }
  return code
end

-- Wait until the proxy has n open connections.
local function wait_active(p, n)
  mk.wait_until(function() return p:stats().active == n end,
    { timeout = 5, message = "proxy did not reach " .. n .. " open connections" })
end

describe("mk.proxy", function()
  H.leakcheck()

  it("forwards HTTP to the upstream and counts it", function()
    local _svc <close>, port = http_server()
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
    local _svc <close>, port = http_server()
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
    local _huge <close>, hport = http_server { "--http-huge", 20000000 }
    local q <close> = proxy_to(hport)
    r = mk.http_request { url = url(q, "/"), timeout = 30 }
    assert.equal(20000000, #r.body)
    -- body + head, counted once sent (the client may see them first)
    mk.wait_until(function() return q:stats().active == 0 end, { timeout = 5 })
    assert.is_true(q:stats().bytes_down > 20000000)
  end)

  it("keeps forwarding while the scenario is inside os.execute", function()
    if not need_client() then return end
    local _svc <close>, port = http_server()
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
    assert.equal(0, finish(c, 10))
    assert.is_true(tonumber(H.slurp(stamp)) < after, "the request did not complete during the sleep")
    assert.equal("GET /during\n", H.slurp(out2):sub(-#"GET /during\n"))
  end)

  it("latency delays each direction by at least the configured time", function()
    local _svc <close>, port = http_server()
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
    local _svc <close>, port = http_server { "--http-huge", 50000 }
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
    local _svc <close>, port = http_server()
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
    local _svc <close>, port = http_server { "--http-hang" }
    local p <close> = proxy_to(port)
    local out = mk.tmpdir() .. "/out"
    local c = mk.process(client_argv(p.port, "/hang", out)):start()
    wait_active(p, 1)
    p:down()
    finish(c, 5) -- closed: the client does not wait for its 10 s timeout
    assert.equal(0, p:stats().active)
    assert.equal("", H.slurp(out) or "")
    p:up()
  end)

  it("blackhole accepts and passes nothing; clear restores", function()
    local _svc <close>, port = http_server()
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
    local _svc <close>, port = http_server { "--http-hang" }
    local p <close> = proxy_to(port)
    local out = mk.tmpdir() .. "/out"
    local c = mk.process(client_argv(p.port, "/hang", out)):start()
    wait_active(p, 1)
    -- the request is through: the client is reading when the RST comes
    mk.wait_until(function() return p:stats().bytes_up > 0 end, { timeout = 5 })
    assert.equal(p, p:reset())
    local code = finish(c, 5)
    assert.are_not.equal(0, code)
    if HAVE_CURL then assert.matches("reset", c:err_output(), 1, true, c:err_output()) end
    local s = p:stats()
    assert.equal(1, s.resets)
    assert.equal(0, s.active)
    -- one-shot: new connections are accepted
    assert.is_true(mk.core.tcp_probe("127.0.0.1", p.port, 1))
  end)

  it("clear removes every fault at once, down included", function()
    local _svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    p:latency(500):bandwidth(10):blackhole():down()
    p:clear()
    assert.matches("(running)", tostring(p), 1, true)
    local t0 = mk.now()
    assert.equal("GET /ok\n", mk.get(url(p, "/ok"), { timeout = 5 }).body)
    assert.is_true(mk.now() - t0 < 5)
  end)

  it("clear also removes the slicer and limit_data", function()
    local _svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    p:slicer { size = 1, delay = 1000 }:limit_data(0)
    assert.matches("slicer 1±0 B/1000 ms, limit_data 0 B", tostring(p), 1, true)
    p:clear()
    assert.matches("(running)", tostring(p), 1, true)
    assert.equal("GET /ok\n", mk.get(url(p, "/ok"), { timeout = 5 }).body) -- sliced: >= 100 s
    assert.equal(0, p:stats().limited)
  end)

  it("upstream may be a bare port (a number or a string of digits) on 127.0.0.1", function()
    local _svc <close>, port = http_server()
    local p <close> = mk.proxy { upstream = port }:start()
    assert.equal("127.0.0.1:" .. port, p.upstream)
    assert.equal("GET /n\n", mk.get(url(p, "/n")).body)
    local q <close> = mk.proxy { upstream = tostring(port) }:start()
    assert.equal("127.0.0.1:" .. port, q.upstream)
    assert.equal("GET /s\n", mk.get(url(q, "/s")).body)
    local f <close> = mk.proxy { upstream = port + 0.0 }:start()
    assert.equal("127.0.0.1:" .. port, f.upstream)
  end)

  it("latency direction: down delays only what the upstream sends, up only what the client sends", function()
    if not need_client() then return end
    local _svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    local dir = mk.tmpdir()
    p:latency(1000, { direction = "down" })
    local t0 = mk.now()
    local c = mk.process(client_argv(p.port, "/down", dir .. "/a")):start()
    -- the request is not held: it is upstream well within the 1 s
    mk.wait_until(function() return p:stats().bytes_up > 0 end,
      { timeout = 0.8, message = "the request was delayed too" })
    assert.equal(0, p:stats().bytes_down) -- the answer is
    assert.equal(0, finish(c, 10))
    assert.is_true(mk.now() - t0 >= 0.9)
    assert.equal("GET /down\n", H.slurp(dir .. "/a"))

    p:latency(1000, { direction = "up" })
    wait_active(p, 0)
    local base = p:stats()
    t0 = mk.now()
    local c2 = mk.process(client_argv(p.port, "/up", dir .. "/b")):start()
    mk.sleep(0.3)
    assert.equal(base.bytes_up, p:stats().bytes_up) -- the request is held
    mk.wait_until(function() return p:stats().bytes_up > base.bytes_up end, { timeout = 5 })
    mk.wait_until(function() return p:stats().bytes_down > base.bytes_down end,
      { timeout = 0.8, message = "the answer was delayed too" })
    assert.equal(0, finish(c2, 10))
    assert.is_true(mk.now() - t0 >= 0.9)
    assert.matches("latency 1000 ms up", tostring(p), 1, true)
  end)

  it("bandwidth direction: up limits what the client sends, down what the upstream sends", function()
    local _svc <close>, port = http_server { "--http-huge", 50000 }
    local p <close> = proxy_to(port)
    -- a ~60-byte request at 100 B/s takes >= 0.4 s; the 50 KB answer would take 500 s
    p:bandwidth(100, { direction = "up" })
    local t0 = mk.now()
    assert.equal(50000, #mk.http_request { url = url(p, "/"), timeout = 10 }.body)
    assert.is_true(mk.now() - t0 >= 0.4, "the request was not limited")
    p:bandwidth(100000, { direction = "down" })
    t0 = mk.now()
    assert.equal(50000, #mk.http_request { url = url(p, "/"), timeout = 10 }.body)
    assert.is_true(mk.now() - t0 >= 0.45, "the answer was not limited")
    assert.matches("100000 B/s down", tostring(p), 1, true)
  end)

  it("blackhole direction: one way passes, the other does not", function()
    local _svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    p:blackhole { direction = "down" }
    expect_error("ExecutorError", function() mk.http_request { url = url(p, "/void"), timeout = 0.5 } end)
    local s = p:stats()
    assert.is_true(s.bytes_up > 0, "the request should have passed")
    assert.equal(0, s.bytes_down)
    assert.matches("blackhole down", tostring(p), 1, true)
    p:clear()
    wait_active(p, 0)
    -- up: an answer already on its way still arrives
    local _slow <close>, sport = http_server { "--http-delay", 0.5 }
    local q <close> = proxy_to(sport)
    if not need_client() then return end
    local out = mk.tmpdir() .. "/out"
    local c = mk.process(client_argv(q.port, "/late", out)):start()
    mk.wait_until(function() return q:stats().bytes_up > 0 end, { timeout = 5 })
    q:blackhole { direction = "up" }
    assert.equal(0, finish(c, 10))
    assert.equal("GET /late\n", H.slurp(out))
  end)

  it("slicer cuts what passes into pieces with a delay between them", function()
    if not need_perl() then return end
    local _svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    local whole = raw(p.port, GET)
    assert.equal("eof", whole.ending)
    assert.equal(p, p:slicer { size = 10, delay = 40, direction = "down" })
    local t0 = mk.now()
    local r = raw(p.port, GET)
    local dt = mk.now() - t0
    assert.equal("eof", r.ending)
    assert.equal(whole.data, r.data)
    local pieces = math.ceil(#r.data / 10)
    -- each piece is its own read unless the client fell 40 ms behind
    assert.is_true(#r.sizes >= pieces // 2, "only " .. #r.sizes .. " reads for " .. pieces .. " pieces")
    for _, n in ipairs(r.sizes) do assert.is_true(n % 10 == 0 or n < 10 or n == #r.data % 10) end
    assert.is_true(dt >= (pieces - 1) * 0.04 * 0.75, "took " .. dt)
    -- size_variation: pieces of 8-12 bytes
    p:slicer { size = 10, size_variation = 2, delay = 20 }
    r = raw(p.port, GET)
    assert.equal(whole.data, r.data)
    assert.is_true(#r.sizes >= math.ceil(#r.data / 12) // 2)
    assert.matches("slicer 10±2 B/20 ms", tostring(p), 1, true)
    -- up only: the request is sliced (3 pieces, >= 2 pauses), the answer is not
    p:slicer { size = 7, delay = 150, direction = "up" }
    t0 = mk.now()
    r = raw(p.port, GET)
    assert.equal(whole.data, r.data)
    assert.is_true(mk.now() - t0 >= 0.25, "the request was not sliced")
    assert.is_true(#r.sizes <= 3, "the answer was sliced: " .. #r.sizes .. " reads")
  end)

  it("limit_data closes the connection once that many bytes have passed", function()
    if not need_perl() then return end
    local _svc <close>, port = http_server { "--http-huge", 50000 }
    local p <close> = proxy_to(port)
    assert.equal(p, p:limit_data(1000, { direction = "down" }))
    local r = raw(p.port, GET)
    assert.equal("eof", r.ending) -- a close, not a reset
    assert.equal(1000, r.total)
    assert.matches("^HTTP/1.1 200", r.data)
    mk.wait_until(function() return p:stats().limited == 1 end, { timeout = 5 })
    assert.equal(0, p:stats().active)
    assert.equal(1000, p:stats().bytes_down)
    -- up: the upstream gets 10 bytes of the request, the client no answer
    p:limit_data(10, { direction = "up" })
    local up0 = p:stats().bytes_up
    r = raw(p.port, GET)
    assert.equal(0, r.total)
    mk.wait_until(function() return p:stats().limited == 2 end, { timeout = 5 })
    assert.equal(10, p:stats().bytes_up - up0)
    -- both (the default): each direction has its budget
    p:limit_data(1000000)
    assert.equal(50000, #mk.http_request { url = url(p, "/"), timeout = 10 }.body)
    assert.matches("limit_data 1000000 B", tostring(p), 1, true)
    -- latency and limit_data together: the budget holds on the queued path too
    p:latency(5):limit_data(2000, { direction = "down" })
    r = raw(p.port, GET)
    assert.equal(2000, r.total)
  end)

  it("probability: the share of connections a fault applies to, drawn per connection", function()
    local _svc <close>, port = http_server()
    local p <close> = proxy_to(port)
    -- limit_data(0) closes a connection at once: a failed request
    p:limit_data(0, { probability = 0.5 })
    local failed = 0
    for i = 1, 40 do
      if not pcall(mk.get, url(p, "/p" .. i), { timeout = 5 }) then failed = failed + 1 end
    end
    assert.is_true(failed >= 5 and failed <= 35, failed .. " of 40 connections limited at p = 0.5")
    mk.wait_until(function() return p:stats().limited == failed end, { timeout = 5 })
    p:limit_data(0, { probability = 0 })
    for i = 1, 5 do assert.equal(200, mk.get(url(p, "/z" .. i)).status) end
    assert.matches("limit_data 0 B p=0", tostring(p), 1, true)
    -- latency: 16 connections, each delayed 2 x 200 ms or not at all
    p:clear():latency(200, { probability = 0.5 })
    local slow = 0
    for i = 1, 16 do
      local t0 = mk.now()
      assert.equal(200, mk.get(url(p, "/l" .. i), { timeout = 5 }).status)
      if mk.now() - t0 >= 0.3 then slow = slow + 1 end
    end
    assert.is_true(slow >= 1 and slow <= 15, slow .. " of 16 connections delayed at p = 0.5")
  end)

  it("reset{ probability } resets a share of the open connections", function()
    if not need_client() then return end
    local _svc <close>, port = http_server { "--http-hang" }
    local p <close> = proxy_to(port)
    local dir = mk.tmpdir()
    local clients = {}
    for i = 1, 16 do
      local argv = client_argv(p.port, "/hang", dir .. "/o" .. i)
      argv.on_exit = "ignore" -- reset ones end at once, on purpose
      clients[i] = mk.process(argv):start()
    end
    wait_active(p, 16)
    p:reset { probability = 0 }
    assert.equal(0, p:stats().resets)
    assert.equal(16, p:stats().active)
    p:reset { probability = 0.5 }
    local s = p:stats()
    assert.is_true(s.resets >= 1 and s.resets <= 15, s.resets .. " of 16 reset at p = 0.5")
    assert.equal(16 - s.resets, s.active)
    p:reset()
    assert.equal(16, p:stats().resets)
    for _, c in ipairs(clients) do finish(c) end
  end)

  it("each fault is an event, with its direction and probability", function()
    local events = require "mkharness.events"
    local seen, emit = {}, events.emit
    events.emit = function(kind, fields, text)
      if kind == "proxy" then seen[#seen + 1] = { fields = fields, text = text } end
      return emit(kind, fields, text)
    end
    local ok, err = pcall(function()
      local p <close> = mk.proxy { upstream = "127.0.0.1:1", name = "ev" }
      p:latency(10, { direction = "up", probability = 0.25 })
      p:bandwidth(1000, { direction = "down" })
      p:blackhole { direction = "up" }
      p:slicer { size = 5, delay = 1 }
      p:limit_data(100, { direction = "down" })
      p:clear()
    end)
    events.emit = emit
    assert(ok, err)
    local actions = {}
    for i, e in ipairs(seen) do
      actions[i] = e.fields.action
      assert.equal("ev", e.fields.proxy)
    end
    assert.same({ "latency", "bandwidth", "blackhole", "slicer", "limit_data", "clear" }, actions)
    assert.same({ proxy = "ev", action = "latency", ms = 10, jitter = 0, direction = "up", probability = 0.25 },
      seen[1].fields)
    assert.matches("up only %(client to upstream%), 25 %% of connections", seen[1].text)
    assert.equal("down", seen[2].fields.direction)
    assert.equal(1000, seen[2].fields.bytes_per_second)
    assert.equal(5, seen[4].fields.size)
    assert.equal(100, seen[5].fields.bytes)
    assert.equal("down", seen[5].fields.direction)
  end)

  it("cut(fn) is down during fn and up after, even when fn raises", function()
    local _svc <close>, port = http_server()
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
    local _svc <close>, port = http_server()
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
      "127.0.0.1:http", "::1:80", "", 0, 70000, -1, 1.5, "0", "70000", "6379 ", true } do
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
    -- direction and probability, on every fault that takes them
    local faults = {
      latency = function(o) p:latency(10, o) end,
      bandwidth = function(o) p:bandwidth(10, o) end,
      blackhole = function(o) p:blackhole(o) end,
      slicer = function(o) o.size = 10 p:slicer(o) end,
      limit_data = function(o) p:limit_data(10, o) end,
    }
    for name, set in pairs(faults) do
      for _, bad in ipairs { "sideways", "UP", 1, true } do
        e = cfg("direction", function() set { direction = bad } end)
        assert.matches('"up" (client to upstream), "down" (upstream to client) or "both"', e.message, 1, true)
      end
      for _, bad in ipairs { -0.1, 1.5, "half", 0 / 0 } do
        e = cfg("probability", function() set { probability = bad } end)
        assert.matches("proxy:" .. name .. ": option 'probability' must be a number from 0 to 1", e.message, 1, true)
      end
      e = cfg("directon", function() set { directon = "up" } end)
      assert.matches("did you mean 'direction'", e.message, 1, true)
    end
    cfg("probability", function() p:reset { probability = 2 } end)
    cfg("direction", function() p:reset { direction = "up" } end) -- a reset is both ways
    cfg("size", function() p:slicer {} end)
    cfg("size", function() p:slicer { size = 0 } end)
    cfg("size", function() p:slicer { size = 1.5 } end)
    cfg("size_variation", function() p:slicer { size = 10, size_variation = 10 } end)
    cfg("size_variation", function() p:slicer { size = 10, size_variation = -1 } end)
    cfg("delay", function() p:slicer { size = 10, delay = -1 } end)
    cfg("opts", function() p:slicer(10) end)
    for _, bad in ipairs { -1, 1.5, "10", math.huge } do
      cfg("bytes", function() p:limit_data(bad) end)
    end
    -- control before start
    expect_error("ExecutorError", function() p:down() end)
    expect_error("ExecutorError", function() p:reset() end)
    assert.matches("(stopped)", tostring(p), 1, true)
  end)

  it("faults set before start apply; stop and start again keep the port", function()
    local _svc <close>, port = http_server()
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
    local _svc <close>, port = http_server()
    local p <close> = mk.proxy { upstream = "127.0.0.1:1", listen = port }
    local e = expect_error("ExecutorError", function() p:start() end)
    assert.matches("in use", e.message)
    assert.matches("fx_svc", e.message)
  end)

  it("<close> and __gc of a running proxy free its port", function()
    local _svc <close>, port = http_server()
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
    local _after_gc <close> = mk.tcp { FX, "--listen", gport, "--serve-tcp", port = gport, timeout = 10 }:start()
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
