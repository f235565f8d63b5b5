-- The fault proxy with no fault, against a direct connection (the targets:
-- >= 1 GB/s on loopback, <= 100 µs added p50 latency); then with a fault set
-- that lets every byte through (limit_data never reached, slicer without a
-- delay), against the same proxy with no fault. Standalone:
--   ./build/mkharness bench/proxy.lua [--quick] [--mb N] [--rounds N]
-- Prints one table; never fails on speed (exit 0 unless something crashed).
--
-- What is measured (the same clients for the direct and the proxied runs,
-- interleaved, so the difference is the proxy):
--   throughput up    `dd if=/dev/zero bs=1M` written by bash into
--                    /dev/tcp/127.0.0.1/PORT (1 MiB writes, no client-side
--                    copy loop to speak of) -> [proxy] -> `fx_svc --serve-tcp`
--                    (reads and discards 64 KiB at a time). Time: spawn until
--                    the proxy has delivered every byte upstream (direct: until
--                    dd exits; the socket buffers it may leave are < 0.5 % of it).
--   throughput down  `fx_svc --http-huge N --serve-http` -> [proxy] -> bash
--                    /dev/tcp + `dd of=/dev/null bs=1M`: the other direction.
--   proxy CPU        CPU time of this process during the proxied runs (the
--                    main thread sleeps in a wait): bytes per CPU-second of
--                    the forwarding thread, i.e. what one core could move.
--   echo round trip  one TCP connection, 64-byte message, write then read it
--                    back (perl client and perl echo server, TCP_NODELAY);
--                    added latency = proxied - direct.
--   HTTP request     mk.get (libcurl, a new connection each time) against
--                    `fx_svc --serve-http`: what a scenario sees per request,
--                    upstream connect included.
--   with a fault     the throughput client→upstream run and the echo round
--                    trip again, interleaved: the proxy with no fault, with
--                    limit_data (a budget never reached: still the splice
--                    path, plus the count) and with slicer (pieces of 16 KiB
--                    for throughput, 64 B for the echo, no delay: the copying
--                    path, one send() per piece).
-- Throughput columns are GB/s (1e9 bytes/s) computed from run times: median,
-- p90 and max run time, so "p90" and "max" are the slow tail.
local mk = require "mkharness"

local HERE = (arg and arg[0] or "bench/proxy.lua"):match("^(.*)/[^/]*$") or "."
local L = dofile(HERE .. "/lib.lua")
local BUILD = os.getenv("MKH_BUILD_DIR") or (HERE .. "/../build")
local FX = BUILD .. "/fixtures/fx_svc"

local opts = { mb = 1024, rounds = 5, echo = 2000, http = 300 }
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--quick" then opts.mb, opts.rounds, opts.echo, opts.http = 256, 2, 300, 50
    elseif a == "--mb" then i = i + 1 opts.mb = assert(math.tointeger(tonumber(arg[i])), "--mb N")
    elseif a == "--rounds" then i = i + 1 opts.rounds = assert(math.tointeger(tonumber(arg[i])), "--rounds N")
    elseif a == "-h" or a == "--help" then
      print("usage: ./build/mkharness bench/proxy.lua [--quick] [--mb N (per run, default 1024)] [--rounds N]")
      os.exit(0)
    else
      io.stderr:write("bench/proxy: unknown argument '", a, "'\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local function have(prog) return os.execute("command -v " .. prog .. " >/dev/null 2>&1") == true end
local function say(...) io.stderr:write(string.format(...), "\n") end

local TCK
do
  local r = mk.run { "getconf", "CLK_TCK" }
  TCK = tonumber(r.stdout) or 100
end

local rows, fault_rows = {}, {}
local function row(what, unit, proxied, direct, note)
  rows[#rows + 1] = { what = what, unit = unit, proxied = proxied, direct = direct, note = note }
end

local function tcp_service(argv)
  local port = mk.free_port()
  local t = { FX, "--listen", port }
  for _, a in ipairs(argv) do t[#t + 1] = a end
  t.port, t.timeout = port, 10
  return mk.tcp(t):start(), port
end

---------------------------------------------------------------- throughput
local function throughput()
  if not have("bash") or not have("dd") then
    say("throughput: skipped (needs bash and dd)")
    return
  end
  local bytes = opts.mb * 1048576
  -- client -> upstream
  local sink <close>, sport = tcp_service { "--serve-tcp" }
  local p <close> = mk.proxy { upstream = "127.0.0.1:" .. sport }:start()
  local times = { direct = {}, proxied = {} }
  local cpu, moved = 0, 0
  local function up_run(target, proxied)
    local base = proxied and p:stats().bytes_up or 0
    local c0 = L.cpu_times(TCK)
    local t0 = mk.now()
    local r = mk.run { "bash", "-c", string.format("dd if=/dev/zero bs=1M count=%d 2>/dev/null > /dev/tcp/127.0.0.1/%d",
      opts.mb, target), timeout = 600 }
    assert(r.code == 0, "dd failed: " .. r.stderr)
    if proxied then
      mk.wait_until(function() return p:stats().bytes_up - base >= bytes end, { timeout = 60, interval = 0.001 })
    end
    local dt = mk.now() - t0
    if proxied then
      cpu = cpu + (L.cpu_times(TCK) - c0)
      moved = moved + bytes
    end
    return dt
  end
  for i = 1, opts.rounds do
    local d = up_run(sport, false)
    local q = up_run(p.port, true)
    times.direct[#times.direct + 1] = d
    times.proxied[#times.proxied + 1] = q
    say("throughput up   round %d: direct %.2f GB/s, proxied %.2f GB/s", i, bytes / d / 1e9, bytes / q / 1e9)
  end
  row(string.format("throughput client→upstream (%d MiB runs)", opts.mb), "GB/s",
    L.stats(times.proxied), L.stats(times.direct), { bytes = bytes })
  p:stop()
  sink:stop()

  -- upstream -> client
  local _src <close>, hport = tcp_service { "--http-huge", bytes, "--serve-http", 200 }
  local q <close> = mk.proxy { upstream = "127.0.0.1:" .. hport }:start()
  local dtimes = { direct = {}, proxied = {} }
  local function down_run(target, proxied)
    local c0 = L.cpu_times(TCK)
    local t0 = mk.now()
    local r = mk.run { "bash", "-c", string.format("exec 3<>/dev/tcp/127.0.0.1/%d || exit 7; " ..
      "printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; dd of=/dev/null bs=1M <&3 2>&1 | tail -n 1", target), timeout = 600 }
    local dt = mk.now() - t0
    assert(r.code == 0, "client failed: " .. r.stdout .. r.stderr)
    local got = tonumber(r.stdout:match("^(%d+) bytes"))
    assert(got and got >= bytes, "short download: " .. r.stdout)
    if proxied then
      cpu = cpu + (L.cpu_times(TCK) - c0)
      moved = moved + bytes
    end
    return dt
  end
  for i = 1, opts.rounds do
    local d = down_run(hport, false)
    local x = down_run(q.port, true)
    dtimes.direct[#dtimes.direct + 1] = d
    dtimes.proxied[#dtimes.proxied + 1] = x
    say("throughput down round %d: direct %.2f GB/s, proxied %.2f GB/s", i, bytes / d / 1e9, bytes / x / 1e9)
  end
  row(string.format("throughput upstream→client (%d MiB runs)", opts.mb), "GB/s",
    L.stats(dtimes.proxied), L.stats(dtimes.direct), { bytes = bytes })
  if cpu > 0 then
    row("forwarding per CPU-second of the proxy thread", "cpu", { n = 1, median = moved / cpu / 1e9 }, nil)
  end
end

---------------------------------------------------------------- latency
local ECHO_SERVER = [[
use IO::Socket::INET; use Socket qw(IPPROTO_TCP TCP_NODELAY);
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Listen => 16, ReuseAddr => 1) or die "listen: $!";
$| = 1; print "port ", $s->sockport, "\n";
while (my $c = $s->accept) {
  setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1); my $b;
  while (sysread($c, $b, 65536)) { syswrite($c, $b) }
  close $c;
}
]]
local ECHO_CLIENT = [[
use IO::Socket::INET; use Socket qw(IPPROTO_TCP TCP_NODELAY); use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);
my ($port, $n) = @ARGV;
my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port) or die "connect: $!";
setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
my $msg = "x" x 64; my $b; my @out;
for my $i (1 .. $n + 50) {
  my $t = clock_gettime(CLOCK_MONOTONIC);
  syswrite($c, $msg) == 64 or die "write: $!";
  my $got = 0;
  while ($got < 64) { my $r = sysread($c, $b, 64 - $got); die "read: $!" unless $r; $got += $r }
  my $dt = clock_gettime(CLOCK_MONOTONIC) - $t;
  push @out, int($dt * 1e9) if $i > 50;
}
print join("\n", @out), "\n";
]]

local function echo_latency()
  if not have("perl") then
    say("echo round trip: skipped (needs perl)")
    return
  end
  local port = mk.free_port()
  local _srv <close> = mk.tcp { "perl", "-e", ECHO_SERVER, port, port = port, timeout = 10, name = "echo" }:start()
  local p <close> = mk.proxy { upstream = "127.0.0.1:" .. port }:start()
  local per = math.max(1, opts.echo // opts.rounds)
  local s = { direct = {}, proxied = {} }
  for i = 1, opts.rounds do
    for _, mode in ipairs { "direct", "proxied" } do
      local r = mk.run { "perl", "-e", ECHO_CLIENT, mode == "direct" and port or p.port, per, timeout = 120 }
      assert(r.code == 0, "echo client failed: " .. r.stderr)
      for ns in r.stdout:gmatch("%d+") do s[mode][#s[mode] + 1] = tonumber(ns) / 1e9 end
    end
    say("echo round trip round %d: %d samples each", i, per)
  end
  row("echo round trip, one connection (64 B)", "s", L.stats(s.proxied), L.stats(s.direct))
end

local function http_latency()
  local _srv <close>, port = tcp_service { "--serve-http", 200 }
  local p <close> = mk.proxy { upstream = "127.0.0.1:" .. port }:start()
  local direct, proxied = "http://127.0.0.1:" .. port .. "/x", "http://127.0.0.1:" .. p.port .. "/x"
  for _ = 1, 20 do mk.get(direct) mk.get(proxied) end -- warm up
  local s = { direct = {}, proxied = {} }
  for _ = 1, opts.http do
    local t0 = mk.now()
    mk.get(direct)
    local t1 = mk.now()
    mk.get(proxied)
    local t2 = mk.now()
    s.direct[#s.direct + 1] = t1 - t0
    s.proxied[#s.proxied + 1] = t2 - t1
  end
  say("HTTP request: %d each", opts.http)
  row("HTTP request, new connection each (mk.get)", "s", L.stats(s.proxied), L.stats(s.direct))
end

---------------------------------------------------------------- with a fault
-- Faults that let everything through, so each run moves the same bytes.
local FAULTS = {
  { name = "no fault", set = function(p) p:clear() end },
  { name = "limit_data, not reached", set = function(p, bytes) p:clear():limit_data(bytes * 1000) end },
  { name = "slicer", set = function(p, _, piece) p:clear():slicer { size = piece } end },
}

local function fault_throughput()
  if not have("bash") or not have("dd") then return end
  local bytes = opts.mb * 1048576
  local _sink <close>, sport = tcp_service { "--serve-tcp" }
  local p <close> = mk.proxy { upstream = sport }:start()
  local times = {}
  for _, f in ipairs(FAULTS) do times[f.name] = {} end
  for i = 1, opts.rounds do
    local line = {}
    for _, f in ipairs(FAULTS) do
      f.set(p, bytes, 16384)
      local base = p:stats().bytes_up
      local t0 = mk.now()
      local r = mk.run { "bash", "-c", string.format("dd if=/dev/zero bs=1M count=%d 2>/dev/null > /dev/tcp/127.0.0.1/%d",
        opts.mb, p.port), timeout = 600 }
      assert(r.code == 0, "dd failed: " .. r.stderr)
      mk.wait_until(function() return p:stats().bytes_up - base >= bytes end, { timeout = 120, interval = 0.001 })
      local dt = mk.now() - t0
      local t = times[f.name]
      t[#t + 1] = dt
      line[#line + 1] = string.format("%s %.2f GB/s", f.name, bytes / dt / 1e9)
    end
    say("with a fault, throughput up round %d: %s", i, table.concat(line, ", "))
  end
  local none = L.stats(times["no fault"])
  for k = 2, #FAULTS do
    local f = FAULTS[k]
    local what = f.name == "slicer" and "slicer{ size = 16384 }" or "limit_data(" .. bytes * 1000 .. ")"
    fault_rows[#fault_rows + 1] = { what = string.format("throughput client→upstream, %s", what), unit = "GB/s",
      proxied = L.stats(times[f.name]), direct = none, note = { bytes = bytes } }
  end
end

local function fault_echo()
  if not have("perl") then return end
  local port = mk.free_port()
  local _srv <close> = mk.tcp { "perl", "-e", ECHO_SERVER, port, port = port, timeout = 10, name = "echo" }:start()
  local p <close> = mk.proxy { upstream = port }:start()
  local per = math.max(1, opts.echo // opts.rounds)
  local s = {}
  for _, f in ipairs(FAULTS) do s[f.name] = {} end
  for i = 1, opts.rounds do
    for _, f in ipairs(FAULTS) do
      f.set(p, 1e9, 64)
      local r = mk.run { "perl", "-e", ECHO_CLIENT, p.port, per, timeout = 120 }
      assert(r.code == 0, "echo client failed: " .. r.stderr)
      local t = s[f.name]
      for ns in r.stdout:gmatch("%d+") do t[#t + 1] = tonumber(ns) / 1e9 end
    end
    say("with a fault, echo round trip round %d: %d samples each", i, per)
  end
  local none = L.stats(s["no fault"])
  for k = 2, #FAULTS do
    local f = FAULTS[k]
    local what = f.name == "slicer" and "slicer{ size = 64 }" or "limit_data(1e12)"
    fault_rows[#fault_rows + 1] = { what = string.format("echo round trip (64 B), %s", what), unit = "s",
      proxied = L.stats(s[f.name]), direct = none }
  end
end

---------------------------------------------------------------- run + table
local sections = { throughput, echo_latency, http_latency, fault_throughput, fault_echo }
for _, fn in ipairs(sections) do
  local ok, err = pcall(fn)
  if not ok then say("section failed: %s", tostring(err)) end
end

local function gbps(bytes, t) return t and string.format("%.2f", bytes / t / 1e9) or "-" end
local function signed(v) return (v < 0 and "-" or "+") .. L.fmt(math.abs(v), "s") end
local function table_of(list)
  local out = {}
  for _, r in ipairs(list) do
    local p, d = r.proxied, r.direct
    if r.unit == "GB/s" then
      local b = r.note.bytes
      out[#out + 1] = { r.what, tostring(p.n), gbps(b, p.median), gbps(b, p.p90), gbps(b, p.max),
        gbps(b, d.median), string.format("%.0f %%", d.median / p.median * 100), "≥ 1 GB/s" }
    elseif r.unit == "cpu" then
      out[#out + 1] = { r.what, "-", string.format("%.2f", p.median), "", "", "", "", "GB/s per core" }
    else
      out[#out + 1] = { r.what, tostring(p.n), L.fmt(p.median, "s"), L.fmt(p.p90, "s"), L.fmt(p.max, "s"),
        L.fmt(d.median, "s"), signed(p.median - d.median) .. " p50, " ..
        signed(p.p90 - d.p90) .. " p90", "≤ 100 µs added p50" }
    end
  end
  return out
end
local out = table_of(rows)
io.write(string.format("\nmkharness fault proxy, no fault, vs a direct connection (%s, %s CPUs)\n",
  "loopback", (mk.run { "nproc" }.stdout:gsub("%s+", ""))))
io.write(L.table({ "what", "n", "median", "p90", "max", "direct median", "proxied vs direct", "target" }, out,
  { false, true, true, true, true, true, true, false }))
io.write("throughput in GB/s (1e9 B/s) from run times: p90/max are the slow runs\n")
if #fault_rows > 0 then
  for _, r in ipairs(fault_rows) do r.note = r.note or {} end
  out = table_of(fault_rows)
  for _, o in ipairs(out) do o[#o] = "" end
  io.write("\nwith a fault that lets every byte through, vs the same proxy with no fault\n")
  io.write(L.table({ "what", "n", "median", "p90", "max", "no-fault median", "vs no fault", "" }, out,
    { false, true, true, true, true, true, true, false }))
end
