-- mkharness benchmarks (method and results: bench/README.md). Run inside the host:
--   ./run bench [--quick] [--only SECTION[,SECTION]] [--json PATH] [--list]
-- Prints one table and writes the same figures as JSON (default
-- bench/results.json). Never fails on speed: exit 0 unless something crashed.
-- See bench/README.md for what each row measures and how.
local mk = require "mkharness"
local core = mk.core

local HERE = (arg and arg[0] or "bench/run.lua"):match("^(.*)/[^/]*$") or "."
local L = dofile(HERE .. "/lib.lua")

---------------------------------------------------------------- options
local SECTIONS = { "readiness", "stop", "drain", "overhead", "scale", "cpu", "groups", "features", "lab" }
local opts = { json = HERE .. "/results.json" }
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--quick" then opts.quick = true
    elseif a == "--only" then i = i + 1 opts.only = arg[i]
    elseif a:match("^%-%-only=") then opts.only = a:match("=(.*)")
    elseif a == "--json" then i = i + 1 opts.json = arg[i]
    elseif a:match("^%-%-json=") then opts.json = a:match("=(.*)")
    elseif a == "--list" then print(table.concat(SECTIONS, "\n")) os.exit(0)
    elseif a == "-h" or a == "--help" then
      print("usage: ./run bench [--quick] [--only SECTION[,SECTION...]] [--json PATH] [--list]\n" ..
        "sections: " .. table.concat(SECTIONS, ", "))
      os.exit(0)
    else
      io.stderr:write("bench: unknown argument '", a, "' (try --help)\n")
      os.exit(2)
    end
    i = i + 1
  end
  if opts.only then
    local want = {}
    for name in opts.only:gmatch("[^,%s]+") do
      local found
      for _, s in ipairs(SECTIONS) do if s == name or s:sub(1, #name) == name then found = s end end
      if not found then
        io.stderr:write("bench: no section '", name, "'; sections: ", table.concat(SECTIONS, ", "), "\n")
        os.exit(2)
      end
      want[found] = true
    end
    opts.want = want
  end
end
local Q = opts.quick

-- iteration counts: full / --quick. Sampled rows run adaptively (L.enough):
-- at least the first figure, at most the second, stopping once the median's
-- 95 % interval is within ±10 % (see bench/README.md "How n is chosen").
local N = {
  ready = Q and { 6, 6 } or { 30, 80 }, ready_base = Q and { 3, 3 } or { 30, 50 },
  stop = Q and { 10, 10 } or { 30, 150 }, stop_base = Q and { 4, 4 } or { 20, 30 },
  mixed = Q and 2 or 10, file_group = Q and { 1, 1 } or { 6, 3 },
  feature = Q and { 10, 10 } or { 40, 200 },
  ready_beside = Q and 3 or 20,
  wake_floor = Q and 6 or 40,
  drain = Q and 2 or 5,
  overhead = Q and 5 or 20, rss = Q and 2 or 5,
  group_reps = Q and 1 or 3,
  cycles = Q and 100 or 1000,
  cpu_wait = Q and 3 or 10,
  lab_build = Q and { l3 = { 3, 3 }, l10 = { 3, 3 }, l50 = { 1, 1 }, base = { 3, 3 } }
    or { l3 = { 10, 40 }, l10 = { 10, 30 }, l50 = { 5, 5 }, base = { 20, 50 } },
  lab_fault = Q and { 5, 5 } or { 30, 150 }, lab_check = Q and 2 or 5, lab_nft = Q and { 3, 3 } or { 20, 50 },
  lab_get = Q and { 30, 30 } or { 200, 1000 }, lab_attempt = Q and 100 or 1000, lab_run = Q and { 10, 10 } or { 40, 200 },
}

---------------------------------------------------------------- paths
local ROOT = mk.run { "sh", "-c", "cd \"$1\"/.. && pwd", "sh", HERE }.stdout:gsub("%s+$", "")
local FX = ROOT .. "/build/fixtures/fx_svc"
local HOST = ROOT .. "/build/mkharness"
for _, p in ipairs { FX, HOST } do
  if not core.size(p) then
    io.stderr:write("bench: ", p, " is missing: build first (./run build)\n")
    os.exit(2)
  end
end
local TIME = core.size("/usr/bin/time") and "/usr/bin/time" or nil
local CLK_TCK = tonumber(mk.run { "getconf", "CLK_TCK" }.stdout) or 100

local function have(cmd)
  return mk.run { "sh", "-c", "command -v " .. cmd .. " >/dev/null" }.code == 0
end
local HAVE_CURL = have("curl")

local function q(s) -- shell quote
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

---------------------------------------------------------------- rows
local rows = {}       -- in table order
local by_key = {}
local crashed = false

local function progress(...)
  io.stderr:write("bench: ", string.format(...), "\n")
end

-- row = { key, what, unit, samples | value | text, target = { value=, text=, on= }, base = key,
--         compare = "faster" | "ratio", note }
local function add(row)
  if row.samples then
    local s = L.stats(row.samples)
    row.n, row.median, row.p90, row.max, row.min, row.mean = s.n, s.median, s.p90, s.max, s.min, s.mean
    row.ci = s.ci
  end
  rows[#rows + 1] = row
  if row.key then by_key[row.key] = row end
  progress("%-44s %s", row.what, row.text or (row.median and (L.fmt(row.median, row.unit) ..
    (row.p90 and ("  p90 " .. L.fmt(row.p90, row.unit)) or "")) or ""))
  return row
end

local function heading(text) rows[#rows + 1] = { heading = text } end

-- samples of fn() until L.enough (n = { min, max })
local function collect(n, fn)
  local t = {}
  repeat t[#t + 1] = fn() until L.enough(t, n[1], n[2], 0.10)
  return t
end

---------------------------------------------------------------- helpers
local function rm(path) os.remove(path) end

-- The fixture writes its stamp (--stamp-before) right after the ready act
-- (tmp + rename): it may land after start() returned, so wait for it.
local function read_stamp(path)
  local deadline = mk.now() + 5
  while true do
    local f = io.open(path, "r")
    if f then
      local s = f:read("a")
      f:close()
      local v = tonumber(s:match("^%s*(%S+)"))
      if v then return v end
    end
    if mk.now() > deadline then error("the fixture never wrote its stamp " .. path, 0) end
    mk.sleep(0.0002)
  end
end

local function append(t, ...)
  for _, v in ipairs { ... } do t[#t + 1] = v end
  return t
end

local function argv_of(...)
  local t = { FX }
  for _, v in ipairs { ... } do
    if type(v) == "table" then for _, x in ipairs(v) do t[#t + 1] = tostring(x) end
    else t[#t + 1] = tostring(v) end
  end
  return t
end

local function with(t, fields)
  for k, v in pairs(fields) do t[k] = v end
  return t
end

local function shell_line(argv)
  local out = {}
  for i, a in ipairs(argv) do out[i] = q(a) end
  return table.concat(out, " ")
end

local function run_ok(t)
  local r = mk.run(t)
  if r.code ~= 0 then
    error(string.format("command failed (%s): %s\n%s%s", tostring(r.code),
      t.shell or table.concat(t, " "), r.stdout, r.stderr), 0)
  end
  return r
end

local RANDOM = { "--sleep-random", "0.15", "0.25" }

---------------------------------------------------------------- 1. readiness
-- Each probe: the fixture becomes ready 150-250 ms after spawn; its stamp is
-- CLOCK_MONOTONIC read just before the ready act (--stamp-before), so a
-- latency cannot come out negative; latency = (instant start() returned) - stamp.
-- The baseline runs the same fixture as a plain process and a classic
-- shell wait loop (sleep 0.1) beside it; latency = loop exit seen - stamp.
local READY = {
  { id = "output", what = "output (mk.output)", target = 0.0002,
    actions = function(c) return { "--stamp-before", c.stamp, "--print", "READY", "--forever" } end,
    make = function(argv) return mk.output(with(argv, { banner = "^READY$" })) end,
    base_shell = true,
    loop = function(c) return "until grep -q READY " .. q(c.log) .. " 2>/dev/null; do sleep 0.1; done" end,
    loop_doc = "sh: grep -q READY log; sleep 0.1" },
  { id = "file", what = "file (mk.pidfile)", target = 0.0002,
    actions = function(c) return { "--stamp-before", c.stamp, "--pidfile", c.file, "--forever" } end,
    make = function(argv, c) return mk.pidfile(with(argv, { file = c.file })) end,
    loop = function(c) return "until test -e " .. q(c.file) .. "; do sleep 0.1; done" end,
    loop_doc = "sh: test -e pidfile; sleep 0.1" },
  { id = "notify", what = "notify (mk.notify)", target = 0.0002,
    actions = function(c) return { "--stamp-before", c.stamp, "--notify", "--forever" } end,
    make = function(argv) return mk.notify(argv) end,
    notify_sock = true,
    loop = function(c) return "until test -e " .. q(c.stamp) .. "; do sleep 0.1; done" end,
    loop_doc = "sh: test -e stamp; sleep 0.1 (note 3)" },
  { id = "tcp", what = "tcp (mk.tcp)", target = 0.001,
    actions = function(c) return { "--stamp-before", c.stamp, "--listen", c.port, "--serve-tcp" } end,
    make = function(argv, c) return mk.tcp(with(argv, { port = c.port })) end,
    loop = function(c) return "until (: </dev/tcp/127.0.0.1/" .. c.port .. ") 2>/dev/null; do sleep 0.1; done" end,
    loop_doc = "bash: </dev/tcp/127.0.0.1/P; sleep 0.1" },
  { id = "unix", what = "unix (mk.unix)", target = 0.001,
    actions = function(c) return { "--stamp-before", c.stamp, "--unix", c.sock, "--serve-unix" } end,
    make = function(argv, c) return mk.unix(with(argv, { socket = c.sock })) end,
    loop = function(c) return "until test -S " .. q(c.sock) .. "; do sleep 0.1; done" end,
    loop_doc = "sh: test -S sock; sleep 0.1" },
  { id = "http", what = "http (mk.http)", target = 0.001,
    actions = function(c) return { "--listen", c.port, "--stamp-before", c.stamp, "--serve-http", "200" } end,
    make = function(argv, c) return mk.http(with(argv, { url = "http://127.0.0.1:" .. c.port .. "/" })) end,
    loop = function(c)
      if HAVE_CURL then
        return "until curl -sfI -o /dev/null http://127.0.0.1:" .. c.port .. "/; do sleep 0.1; done"
      end
      return "until (exec 3<>/dev/tcp/127.0.0.1/" .. c.port ..
        " && printf 'HEAD / HTTP/1.0\\r\\n\\r\\n' >&3 && read -r l <&3 && case $l in *' 200 '*) ;; *) false;; esac) 2>/dev/null; do sleep 0.1; done"
    end,
    loop_doc = HAVE_CURL and "sh: curl -sfI url; sleep 0.1" or "bash: HEAD via /dev/tcp; sleep 0.1" },
}

local function ready_ctx(dir)
  local c = { stamp = dir .. "/stamp", file = dir .. "/svc.pid", sock = dir .. "/svc.sock",
    log = dir .. "/out.log", nsock = dir .. "/notify.sock", port = mk.free_port() }
  for _, p in ipairs { c.stamp, c.file, c.sock, c.log, c.nsock } do rm(p) end
  return c
end

local function bench_readiness()
  heading("1. readiness latency: fixture's own ready instant -> start() returned (ready 150-250 ms after spawn)")
  for _, d in ipairs(READY) do
    local dir = mk.tmpdir()
    -- mkharness
    local samples = collect(N.ready, function()
      local c = ready_ctx(dir)
      local argv = argv_of(RANDOM, d.actions(c))
      argv.name = "ready-" .. d.id
      local svc <close> = d.make(argv, c)
      svc:start()
      local t = mk.now()
      local st = read_stamp(c.stamp) -- before stop(): the stamp is written after the ready act
      svc:stop()
      return t - st
    end)
    local mkrow = add { key = "ready." .. d.id, what = "ready: " .. d.what, unit = "s", samples = samples,
      target = { value = d.target, text = "≤ " .. L.fmt_target(d.target) }, base = "ready." .. d.id .. ".sh",
      compare = "faster" }
    -- baseline: same fixture as a plain process + a shell wait loop
    local base = collect(N.ready_base, function()
      local c = ready_ctx(dir)
      local argv = argv_of(RANDOM, d.actions(c))
      local spec
      if d.base_shell then
        spec = { shell = "exec " .. shell_line(argv) .. " > " .. q(c.log), name = "base-" .. d.id }
      else
        spec = with(argv, { name = "base-" .. d.id })
      end
      local nsock
      if d.notify_sock then
        nsock = assert(core.dgram(c.nsock))
        spec.env = { NOTIFY_SOCKET = c.nsock }
      end
      local svc <close> = mk.process(spec)
      svc:start()
      run_ok { "bash", "-c", d.loop(c), timeout = 10 }
      local t = mk.now()
      local st = read_stamp(c.stamp)
      svc:stop()
      if nsock then nsock:close() end
      return t - st
    end)
    add { key = "ready." .. d.id .. ".sh", what = "  baseline " .. d.loop_doc, unit = "s", samples = base,
      target = { text = "mirakuru 46-64 ms" }, is_baseline = true }
    local _ = mkrow
  end
  -- The machine's own floor under the event probes: a line written to a
  -- file, seen through inotify by another process that waited in poll()
  -- (C, fx_svc --wake-floor), after the same 150-250 ms of idle; the
  -- clock is read just before the write, as --stamp-before does.
  local fdir = mk.tmpdir()
  local fr = run_ok { FX, "--wake-floor", N.wake_floor, fdir .. "/floor.log", timeout = 120 }
  local floor = {}
  for v in fr.stdout:gmatch("wake (%S+)") do floor[#floor + 1] = tonumber(v) end
  add { key = "ready.floor", what = "  floor: a write seen via inotify (C, 2 processes)", unit = "s",
    samples = floor, is_baseline = true }
  -- A tcp member in a group beside an HTTP member whose endpoint answers
  -- 0.5 s after spawn: the tcp member's latency must not include that wait
  -- (a blocking request held the whole loop until the answer came).
  local dir = mk.tmpdir()
  local samples = {}
  for _ = 1, N.ready_beside do
    local c = ready_ctx(dir)
    local hport = mk.free_port()
    local slow = mk.http(with(argv_of("--listen", hport, "--http-delay", "0.5", "--serve-http", "200"),
      { url = "http://127.0.0.1:" .. hport .. "/", name = "ready-slow-http" }))
    local fast = mk.tcp(with(argv_of(RANDOM, "--stamp-before", c.stamp, "--listen", c.port, "--serve-tcp"),
      { port = c.port, name = "ready-tcp-beside" }))
    local g <close> = mk.group { slow, fast }
    g:start()
    samples[#samples + 1] = fast._ready_at - read_stamp(c.stamp)
    g:stop()
  end
  add { key = "ready.tcp_beside_http", what = "ready: tcp beside a slow http (mk.group)", unit = "s",
    samples = samples, target = { value = 0.001, text = "≤ 1 ms" } }
end

---------------------------------------------------------------- 2. stop, start+stop
local function sh_stamps(script, s1, s2)
  rm(s1) rm(s2)
  run_ok { "bash", "-c", script, timeout = 20 }
  return read_stamp(s2) - read_stamp(s1)
end

local function bench_stop()
  heading("2. stop and start+stop")
  local TERM0 = { "--on-signal", "TERM", "0" }
  local svc = mk.output(with(argv_of(TERM0, "--print", "READY", "--forever"), { banner = "^READY$", name = "stopper" }))
  local stop = collect(N.stop, function()
    svc:start()
    local t0 = mk.now()
    svc:stop()
    return mk.now() - t0
  end)
  local cycle = collect(N.stop, function()
    local t0 = mk.now()
    svc:start()
    svc:stop()
    return mk.now() - t0
  end)
  local psvc = mk.process(with(argv_of(TERM0, "--forever"), { name = "cycler" }))
  local pcycle = collect(N.stop, function()
    local t0 = mk.now()
    psvc:start()
    psvc:stop()
    return mk.now() - t0
  end)
  -- baselines in bash; the interval is taken by two `fx_svc --stamp` runs,
  -- so it includes about one fixture exec (~1 ms) on the baseline's side
  local dir = mk.tmpdir()
  local s1, s2, log = dir .. "/s1", dir .. "/s2", dir .. "/log"
  local fx = q(FX)
  local run_bg = fx .. " --on-signal TERM 0 --print READY --forever > " .. q(log) .. " & pid=$!; "
  local until_ready = "until grep -q READY " .. q(log) .. " 2>/dev/null; do sleep 0.1; done; "
  local kill_loop = "kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done; "
  local bstop = collect(N.stop_base, function()
    rm(log)
    return sh_stamps(run_bg .. until_ready .. fx .. " --stamp " .. q(s1) .. "; " .. kill_loop ..
      fx .. " --stamp " .. q(s2), s1, s2)
  end)
  local bcycle = collect(N.stop_base, function()
    rm(log)
    return sh_stamps(fx .. " --stamp " .. q(s1) .. "; " .. run_bg .. until_ready .. kill_loop ..
      fx .. " --stamp " .. q(s2), s1, s2)
  end)
  add { key = "stop", what = "stop(): exits at once on SIGTERM", unit = "s", samples = stop,
    target = { value = 0.002, text = "≤ 2 ms" }, base = "stop.sh", compare = "faster" }
  add { key = "stop.sh", what = "  baseline sh: kill; kill -0 loop, sleep 0.1", unit = "s", samples = bstop,
    target = { text = "mirakuru 107 ms" }, is_baseline = true }
  add { key = "cycle.output", what = "start+stop: mk.output, banner at once", unit = "s", samples = cycle,
    target = { value = 0.005, text = "≤ 5 ms" }, base = "cycle.sh", compare = "faster" }
  add { key = "cycle.process", what = "start+stop: mk.process", unit = "s", samples = pcycle,
    target = { value = 0.005, text = "≤ 5 ms" }, base = "cycle.sh", compare = "faster" }
  add { key = "cycle.sh", what = "  baseline sh: &, grep loop, kill loop", unit = "s", samples = bcycle,
    target = { text = "mirakuru 220 ms" }, is_baseline = true }
end

---------------------------------------------------------------- 3. drain
local function bench_drain()
  heading("3. drain: 50 MB of output before the banner")
  local BYTES = 50000000
  local svc = mk.output(with(argv_of("--flood", BYTES, "--print", "READY", "--forever"),
    { banner = "^READY$", name = "flood" }))
  local cat_line = shell_line(argv_of("--flood", BYTES)) .. " | cat > /dev/null"
  local ready, base = {}, {}
  for _ = 1, N.drain do
    local t0 = mk.now()
    run_ok { shell = cat_line, timeout = 60 }
    base[#base + 1] = mk.now() - t0
    t0 = mk.now()
    svc:start()
    ready[#ready + 1] = mk.now() - t0
    svc:stop()
  end
  add { key = "drain", what = "time to ready: mk.output after 50 MB", unit = "s", samples = ready,
    target = { value = 1.5, text = "≤ 1.5× cat", on = "ratio" }, base = "drain.cat", compare = "ratio" }
  add { key = "drain.cat", what = "  baseline: fx_svc --flood | cat >/dev/null", unit = "s", samples = base,
    target = { text = "mirakuru 7.6 s" }, is_baseline = true }
end

---------------------------------------------------------------- 4. host overhead
-- Wall time of N runs of argv, each timed by bash around the command
-- ($EPOCHREALTIME, µs resolution): the harness is idle meanwhile.
local function bash_times(argv, n)
  local loop = "for ((i = 0; i < " .. n .. "; i++)); do s=$EPOCHREALTIME; \"$@\" >/dev/null 2>&1; " ..
    "e=$EPOCHREALTIME; echo \"$s $e\"; done"
  local r = run_ok(append({ "bash", "-c", loop, "bash", timeout = 300, env = { LC_ALL = "C" } }, table.unpack(argv)))
  local t = {}
  for a, b in r.stdout:gmatch("(%S+) (%S+)") do t[#t + 1] = tonumber(b) - tonumber(a) end
  if #t ~= n then
    -- bash without $EPOCHREALTIME (< 5.0): time each run from here instead
    t = {}
    for _ = 1, n do
      local t0 = mk.now()
      mk.run(argv)
      t[#t + 1] = mk.now() - t0
    end
  end
  return t
end

local function bench_overhead()
  heading("4. host overhead (wall: bash $EPOCHREALTIME around each run, fork+exec included: see /bin/true)")
  local dir = mk.tmpdir()
  local empty, one = dir .. "/empty.lua", dir .. "/one.lua"
  assert(io.open(empty, "w")):close()
  local f = assert(io.open(one, "w"))
  f:write("local mk = require 'mkharness'\n",
    "local svc <close> = mk.output{ ", string.format("%q", FX),
    ", '--print', 'READY', '--forever', banner = '^READY$' }:start()\n")
  f:close()
  local cases = {
    { key = "host.empty", what = "mkharness empty.lua", argv = { HOST, empty },
      wall = 0.010, rss = 8, base = "lua.empty" },
    { key = "host.one", what = "mkharness: start+stop one service", argv = { HOST, one },
      wall = 0.005, wall_p90 = 0.010, base = "lua.empty" },
    { key = "lua.empty", what = "  baseline lua5.4 empty.lua", argv = { "lua5.4", empty }, is_baseline = true },
    { key = "true", what = "  floor: /bin/true, timed the same way", argv = { "/bin/true" }, is_baseline = true },
  }
  for _, c in ipairs(cases) do
    run_ok(c.argv) -- warm the page cache; fail loudly if it does not run
    local wall = bash_times(c.argv, N.overhead)
    c.wall_samples = wall
    if TIME then
      local rss = {}
      for _ = 1, N.rss do
        local r = run_ok(append({ TIME, "-f", "%M" }, table.unpack(c.argv)))
        rss[#rss + 1] = tonumber(r.stderr:match("(%d+)%s*$")) / 1024
      end
      c.rss_samples = rss
    end
  end
  for _, c in ipairs(cases) do
    add { key = c.key .. ".wall", what = c.what .. ": wall", unit = "s", samples = c.wall_samples,
      target = c.wall and { value = c.wall, p90 = c.wall_p90, text = "≤ " .. L.fmt_target(c.wall) ..
          (c.wall_p90 and (" p50, ≤ " .. L.fmt_target(c.wall_p90) .. " p90") or "") } or
        (c.key == "lua.empty" and { text = "import mirakuru 102 ms" } or nil),
      base = c.base and (c.base .. ".wall"), compare = "ratio", is_baseline = c.is_baseline }
    if c.key ~= "true" then
      add { key = c.key .. ".rss", what = c.what .. ": peak RSS", unit = "MB", samples = c.rss_samples,
        text = not c.rss_samples and "n/a (no /usr/bin/time)" or nil,
        target = c.rss and { value = c.rss, text = "≤ " .. c.rss .. " MB", on = "max" } or
          (c.key == "lua.empty" and { text = "import mirakuru 20 MB" } or nil),
        base = c.base and (c.base .. ".rss"), compare = "ratio", is_baseline = c.is_baseline }
    end
  end
end

---------------------------------------------------------------- 5. scale
local function bench_scale()
  heading("5. scale")
  for _, g in ipairs { { n = 50, sleep = 0.1, target = 0.3, ref = "sequential 8.4 s" },
                       { n = 100, sleep = 0.2, target = 0.6, ref = "-" } } do
    local list = {}
    for i = 1, g.n do
      list[i] = mk.output(with(argv_of("--sleep", g.sleep, "--print", "READY", "--forever"),
        { banner = "^READY$", name = string.format("g%d-%d", g.n, i) }))
    end
    local group <close> = mk.group(list)
    local up, down = {}, {}
    for _ = 1, N.group_reps do
      local t0 = mk.now()
      group:start()
      local t1 = mk.now()
      group:stop()
      local t2 = mk.now()
      up[#up + 1], down[#down + 1] = t1 - t0, t2 - t1
    end
    -- baseline: the same fixtures started by bash in the background, then a
    -- loop polling every 0.1 s until every log shows READY
    local dir = mk.tmpdir()
    local s1, s2 = dir .. "/s1", dir .. "/s2"
    local fx = q(FX)
    local script = fx .. " --stamp " .. q(s1) .. "; cd " .. q(dir) .. " && for i in $(seq " .. g.n .. "); do " ..
      fx .. " --sleep " .. g.sleep .. " --print READY --forever > $i.log & done; " ..
      "until [ \"$(grep -l READY *.log 2>/dev/null | wc -l)\" -eq " .. g.n .. " ]; do sleep 0.1; done; " ..
      fx .. " --stamp " .. q(s2) .. "; kill $(jobs -p); wait"
    local base = {}
    for _ = 1, N.group_reps do
      mk.run { "sh", "-c", "rm -f \"$1\"/*.log", "sh", dir }
      base[#base + 1] = sh_stamps(script, s1, s2)
    end
    -- the group of 100 is held to the shell's time of the same run
    local rel = g.n == 100
    add { key = "group" .. g.n .. ".ready", what = string.format("mk.group of %d x %g s: all ready", g.n, g.sleep),
      unit = "s", samples = up,
      target = rel and { value = 1.1, on = "ratio", text = "≤ 1.1× sh" }
        or { value = g.target, text = "≤ " .. L.fmt_target(g.target) },
      base = "group" .. g.n .. ".sh", compare = rel and "ratio" or "faster" }
    add { key = "group" .. g.n .. ".stop", what = string.format("mk.group of %d: all stopped", g.n),
      unit = "s", samples = down }
    add { key = "group" .. g.n .. ".sh", what = "  baseline sh: N x &, grep all; sleep 0.1",
      unit = "s", samples = base, target = { text = "mirakuru " .. g.ref }, is_baseline = true }
  end

  -- sequential cycles: a fresh executor each time (as a test suite does)
  local function cycle()
    local svc <close> = mk.output(with(argv_of("--print", "READY", "--forever"), { banner = "^READY$", name = "cycle" }))
    svc:start()
  end
  for _ = 1, 5 do cycle() end -- warm up
  collectgarbage("collect")
  local fds0, rss0, heap0 = #core.fds(), L.rss_kb(), collectgarbage("count")
  local per = {}
  for _ = 1, N.cycles do
    local t0 = mk.now()
    cycle()
    per[#per + 1] = mk.now() - t0
  end
  collectgarbage("collect")
  collectgarbage("collect")
  local fds1, rss1, heap1 = #core.fds(), L.rss_kb(), collectgarbage("count")
  add { key = "cycles", what = string.format("%d sequential start/stop: per cycle", N.cycles), unit = "s",
    samples = per, target = { value = 0.005, text = "≤ 5 ms" } }
  add { key = "cycles.fds", what = "  host fds before -> after", unit = "count", before = fds0, after = fds1,
    text = string.format("%d -> %d", fds0, fds1), target = { text = "no growth" },
    verdict = fds1 <= fds0 and "OK" or string.format("MISS +%d", fds1 - fds0) }
  add { key = "cycles.rss", what = "  host RSS before -> after", unit = "MB", before = rss0 / 1024, after = rss1 / 1024,
    text = string.format("%.1f -> %.1f MB", rss0 / 1024, rss1 / 1024), target = { text = "no growth" },
    verdict = (rss1 - rss0) <= 512 and "OK" or string.format("grew +%.1f MB", (rss1 - rss0) / 1024) }
  add { key = "cycles.heap", what = "  Lua heap before -> after", unit = "MB", before = heap0 / 1024, after = heap1 / 1024,
    text = string.format("%.2f -> %.2f MB", heap0 / 1024, heap1 / 1024), target = { text = "no growth" },
    verdict = (heap1 - heap0) <= 64 and "OK" or string.format("grew +%.0f kB", heap1 - heap0) }
end

---------------------------------------------------------------- groups
-- distinct free ports (free_port may hand out the same port twice)
local function ports(n)
  local seen, out = {}, {}
  while #out < n do
    local p = mk.free_port()
    if not seen[p] then seen[p], out[#out + 1] = true, p end
  end
  return out
end

local NFAST, NSLOW, HTTP_DELAY = 4, 2, 0.1

-- One mk.group start: NFAST tcp members ready 150-250 ms after spawn, plus
-- (slow = true) NSLOW http members that answer 503 for 1 s, each answer
-- HTTP_DELAY s late. Per fast member: when the harness saw it ready
-- (svc._ready_at, the instant its probe succeeded), from the group's
-- start() and from the fixture's own ready instant.
local function mixed_once(slow, from_start, lag)
  local dir = mk.tmpdir()
  local p = ports(NFAST + NSLOW)
  local list, fast = {}, {}
  for i = 1, NFAST do
    local stamp = dir .. "/fast" .. i
    rm(stamp)
    local svc = mk.tcp(with(argv_of(RANDOM, "--stamp-before", stamp, "--listen", p[i], "--serve-tcp"),
      { port = p[i], name = "fast" .. i }))
    list[#list + 1], fast[#fast + 1] = svc, { svc = svc, stamp = stamp }
  end
  if slow then
    for i = 1, NSLOW do
      local port = p[NFAST + i]
      list[#list + 1] = mk.http(with(argv_of("--listen", port, "--http-delay", HTTP_DELAY,
        "--http-status-after", 1, 200, "--serve-http", 200),
        { url = "http://127.0.0.1:" .. port .. "/", name = "slow" .. i }))
    end
  end
  local g <close> = mk.group(list)
  local t0 = mk.now()
  g:start()
  for _, f in ipairs(fast) do
    from_start[#from_start + 1] = f.svc._ready_at - t0
    lag[#lag + 1] = f.svc._ready_at - read_stamp(f.stamp)
  end
  g:stop()
end

local function bench_groups()
  heading(string.format("7. groups: %d fast tcp members beside %d http members answering %g s late (503 for 1 s)",
    NFAST, NSLOW, HTTP_DELAY))
  local mf, ml, bf, bl = {}, {}, {}, {}
  for _ = 1, N.mixed do -- alternated, so load changes hit both alike
    mixed_once(true, mf, ml)
    mixed_once(false, bf, bl)
  end
  add { key = "mixed.lag", what = "fast member seen ready after its ready instant", unit = "s", samples = ml,
    base = "tcponly.lag", compare = "ratio",
    target = { text = "≈ base: the http requests run inside the loop" } }
  add { key = "mixed.from_start", what = "fast member ready, from group start()", unit = "s", samples = mf,
    base = "tcponly.from_start", compare = "ratio" }
  add { key = "tcponly.lag", what = "  baseline: same tcp members alone: lag", unit = "s", samples = bl,
    is_baseline = true }
  add { key = "tcponly.from_start", what = "  baseline: same tcp members alone: from start()", unit = "s", samples = bf,
    is_baseline = true }

  heading("   groups of file-probe services (mk.pidfile): cost per service, 100 vs 1000 (alternated)")
  local G = {}
  for gi, n in ipairs { 100, 1000 } do
    local dir = mk.tmpdir()
    local list, files = {}, {}
    for i = 1, n do
      files[i] = dir .. "/" .. i .. ".pid"
      list[i] = mk.pidfile(with(argv_of("--pidfile", files[i], "--forever"), { file = files[i], name = "f" .. i }))
    end
    G[gi] = { n = n, files = files, group = mk.group(list), up = {}, down = {}, reps = N.file_group[gi] }
  end
  -- alternated rep by rep, so a change of the machine's load hits both sizes
  for rep = 1, math.max(G[1].reps, G[2].reps) do
    for _, g in ipairs(G) do
      if rep <= g.reps then
        for i = 1, g.n do rm(g.files[i]) end
        collectgarbage("collect")
        local t0 = mk.now()
        g.group:start()
        local t1 = mk.now()
        g.group:stop()
        g.up[#g.up + 1], g.down[#g.down + 1] = (t1 - t0) / g.n, (mk.now() - t1) / g.n
      end
    end
  end
  for _, g in ipairs(G) do
    local n = g.n
    local base = n ~= 100 and "files100" or nil
    add { key = "files" .. n .. ".start", what = string.format("group of %d: start() per service", n), unit = "s",
      samples = g.up, base = base and (base .. ".start"), compare = "ratio", is_baseline = not base or nil,
      target = base and { text = "linear: ratio ≈ 1" } or nil }
    add { key = "files" .. n .. ".stop", what = string.format("group of %d: stop() per service", n), unit = "s",
      samples = g.down, base = base and (base .. ".stop"), compare = "ratio", is_baseline = not base or nil,
      target = base and { text = "linear: ratio ≈ 1" } or nil }
  end
end

---------------------------------------------------------------- features
-- The cost of crash detection and of live echo: the same start+stop cycle
-- with the feature off and on, alternated sample by sample.
local function bench_features()
  heading("8. cost of crash detection and live echo: start+stop cycle, off vs on (alternated)")
  local TERM0 = { "--on-signal", "TERM", "0" }
  local function pair(make_off, make_on)
    local off_svc, on_svc = make_off(), make_on()
    local off, on = {}, {}
    local function once(svc)
      local t0 = mk.now()
      svc:start()
      svc:stop()
      return mk.now() - t0
    end
    repeat
      off[#off + 1] = once(off_svc)
      on[#on + 1] = once(on_svc)
    until L.enough(off, N.feature[1], N.feature[2], 0.10) and L.enough(on, N.feature[1], N.feature[2], 0.10)
    return off, on
  end
  local off, on = pair(
    function() return mk.process(with(argv_of(TERM0, "--forever"), { name = "ign", on_exit = "ignore" })) end,
    function() return mk.process(with(argv_of(TERM0, "--forever"), { name = "fail" })) end)
  add { key = "crash.ignore", what = "  baseline mk.process, on_exit = \"ignore\"", unit = "s", samples = off,
    is_baseline = true }
  add { key = "crash.fail", what = "mk.process, on_exit = \"fail\" (default)", unit = "s", samples = on,
    base = "crash.ignore", compare = "ratio" }
  off, on = pair(
    function() return mk.output(with(argv_of(TERM0, "--print", "READY", "--forever"),
      { banner = "^READY$", name = "quiet", echo = false })) end,
    function() return mk.output(with(argv_of(TERM0, "--print", "READY", "--forever"),
      { banner = "^READY$", name = "echoed", echo = true })) end)
  add { key = "echo.off", what = "  baseline mk.output, echo = false", unit = "s", samples = off, is_baseline = true }
  add { key = "echo.on", what = "mk.output, echo = true (1 line echoed)", unit = "s", samples = on,
    base = "echo.off", compare = "ratio" }
end

---------------------------------------------------------------- 6. CPU while waiting
local function bench_cpu()
  local W = N.cpu_wait
  heading(string.format("6. host CPU while waiting %g s for a slow service (default interval)", W))
  local dir = mk.tmpdir()
  local flag = dir .. "/flag"
  local kinds = {
    { id = "tcp", make = function(c)
        return mk.tcp(with(argv_of("--sleep", W, "--listen", c.port, "--serve-tcp"), { port = c.port })) end },
    { id = "unix", make = function(c)
        return mk.unix(with(argv_of("--sleep", W, "--unix", c.sock, "--serve-unix"), { socket = c.sock })) end },
    { id = "http", make = function(c)
        return mk.http(with(argv_of("--sleep", W, "--listen", c.port, "--serve-http", 200),
          { url = "http://127.0.0.1:" .. c.port .. "/" })) end },
    { id = "exec", make = function()
        return mk.executor(with(argv_of("--sleep", W, "--touch", flag, "--forever"),
          { ready = mk.probe.exec { "test", "-e", flag } })) end },
    { id = "function", make = function()
        return mk.executor(with(argv_of("--sleep", W, "--touch", flag, "--forever"),
          { ready = function()
              local f = io.open(flag, "r")
              if f then f:close() return true end
              return false
            end })) end },
  }
  for _, k in ipairs(kinds) do
    rm(flag)
    local c = { port = mk.free_port(), sock = dir .. "/" .. k.id .. ".sock" }
    rm(c.sock)
    local svc <close> = k.make(c)
    collectgarbage("collect")
    local self0, kids0 = L.cpu_times(CLK_TCK)
    local ns0 = L.schedstat_ns()
    local t0 = mk.now()
    svc:start()
    local wall = mk.now() - t0
    local self1, kids1 = L.cpu_times(CLK_TCK)
    local ns1 = L.schedstat_ns()
    svc:stop()
    local pct = (self1 - self0) / wall * 100
    local kids = (kids1 - kids0) / wall * 100
    local main = ns0 and ns1 and (ns1 - ns0) / 1e9 / wall * 100 or nil
    add { key = "cpu." .. k.id, what = "CPU waiting: " .. k.id .. " probe", unit = "%", value = pct,
      text = string.format("%.2f %%", pct), wall = wall, children_pct = kids, main_thread_pct = main,
      target = { value = 2, text = "≤ 2 % of a core", on = "value" },
      note = string.format("children %.2f %%", kids) }
  end
end

---------------------------------------------------------------- 9. lab
-- mk.lab: hosts with network namespaces of their own on a bridge, built by
-- a keeper process in a user namespace. Every row beside a baseline taken
-- in the same run, alternated with it sample by sample where both are cheap.
local KVD = ROOT .. "/build/kvd"

local function lab_of(n)
  local hosts = {}
  for i = 1, n do hosts[i] = "n" .. i end
  return mk.lab { hosts = hosts, name = "bench" .. n }
end

local function bench_lab()
  heading("9. lab: hosts with their own network namespaces (mk.lab), built without root by a keeper process")
  local ok, why = pcall(function() mk.lab { hosts = { "probe" } }:close() end)
  if not ok then
    add { key = "lab.skipped", what = "lab: no lab on this machine", text = "skipped", note = tostring(why) }
    return
  end

  -- 9a. build + close, alternated size by size; baseline: one namespace, one
  -- process, so the ratio reads as "so many unshare -Urn true's worth"
  heading("   lab build + close: mk.lab{} call -> close() returned; ratio = how many unshare -Urn true's worth")
  local sizes = { 3, 10, 50 }
  local built, only_build, only_close = {}, {}, {}
  for _, n in ipairs(sizes) do built[n], only_build[n], only_close[n] = {}, {}, {} end
  local ushare = {}
  local function build_close(n)
    local t0 = mk.now()
    local lab = lab_of(n)
    local t1 = mk.now()
    lab:close()
    local t2 = mk.now()
    built[n][#built[n] + 1] = t2 - t0
    only_build[n][#only_build[n] + 1], only_close[n][#only_close[n] + 1] = t1 - t0, t2 - t1
  end
  repeat
    for _, n in ipairs(sizes) do
      local want = N.lab_build["l" .. n]
      if not L.enough(built[n], want[1], want[2], 0.10) then build_close(n) end
    end
    if not L.enough(ushare, N.lab_build.base[1], N.lab_build.base[2], 0.10) then
      local t0 = mk.now()
      run_ok { "unshare", "-Urn", "true", host = false, timeout = 10 }
      ushare[#ushare + 1] = mk.now() - t0
    end
    local done = L.enough(ushare, N.lab_build.base[1], N.lab_build.base[2], 0.10)
    for _, n in ipairs(sizes) do
      local want = N.lab_build["l" .. n]
      done = done and L.enough(built[n], want[1], want[2], 0.10)
    end
  until done
  for _, n in ipairs(sizes) do
    local r = add { key = "lab.build" .. n, what = string.format("mk.lab of %d hosts, then close()", n), unit = "s",
      samples = built[n], base = "lab.unshare", compare = "ratio" }
    local b, c = L.stats(only_build[n]), L.stats(only_close[n])
    r.extra = { build_median = b.median, close_median = c.median, build_samples = only_build[n],
      close_samples = only_close[n] }
    r.note = string.format("build %s + close %s", L.fmt(b.median, "s"), L.fmt(c.median, "s"))
  end
  local per = (L.stats(built[50]).median - L.stats(built[3]).median) / 47
  add { key = "lab.per_host", what = "  cost per host: (lab of 50 - lab of 3) / 47", unit = "s", value = per,
    text = L.fmt(per, "s"), note = "medians" }
  add { key = "lab.unshare", what = "  baseline mk.run{unshare -Urn true}, host = false", unit = "s",
    samples = ushare, is_baseline = true }

  -- 9b. faults: from the call to its return (the rules are in force on return)
  heading("   lab faults: isolate(\"n1\") and heal(), call -> return")
  local P = 9000 -- a listener on n1, for the check that the cut is in force
  for _, n in ipairs { 3, 10 } do
    local lab <close> = lab_of(n)
    local iso, heal = {}, {}
    for _ = 1, 3 do lab:isolate("n1") lab:heal() end -- warm up (the keeper's first nft runs)
    repeat
      local t0 = mk.now()
      lab:isolate("n1")
      iso[#iso + 1] = mk.now() - t0
      t0 = mk.now()
      lab:heal()
      heal[#heal + 1] = mk.now() - t0
    until L.enough(iso, N.lab_fault[1], N.lab_fault[2], 0.10) and L.enough(heal, N.lab_fault[1], N.lab_fault[2], 0.10)
    -- in force on return, as traffic sees it: a connection n2 -> n1 opened
    -- right after isolate() returned fails, and right after heal() returns succeeds
    local cut, healed, tries = 0, 0, N.lab_check
    if tries > 0 then
      local _svc <close> = mk.tcp { FX, "--listen-any", P, "--serve-tcp", host = lab.n1, port = P, name = "lab-listener" }
        :start()
      local function connects()
        return mk.run { "timeout", "0.5", "bash", "-c", "exec 3<>/dev/tcp/" .. lab.n1.ip .. "/" .. P,
          host = lab.n2, timeout = 5 }.code == 0
      end
      for _ = 1, tries do
        lab:isolate("n1")
        if not connects() then cut = cut + 1 end
        lab:heal()
        if connects() then healed = healed + 1 end
      end
    end
    add { key = "lab.isolate" .. n, what = string.format("lab of %d: isolate(\"n1\")", n), unit = "s", samples = iso,
      base = "lab.nft", compare = "ratio",
      note = tries > 0 and string.format("n2->n1 refused after return %d/%d", cut, tries) or nil }
    add { key = "lab.heal" .. n, what = string.format("lab of %d: heal()", n), unit = "s", samples = heal,
      base = "lab.nft", compare = "ratio",
      note = tries > 0 and string.format("n2->n1 connects after return %d/%d", healed, tries) or nil }
    by_key["lab.isolate" .. n].extra = { tries = tries, refused_after_isolate = cut, connected_after_heal = healed }
  end
  -- baseline: a shell test's way to change one namespace's filter: one
  -- nft run in a namespace of its own (so it also pays for the namespace)
  local NFT = "add table inet t; add chain inet t input { type filter hook input priority 0; policy accept; }; " ..
    "add rule inet t input ip saddr { 198.18.1.3, 198.18.1.4 } drop"
  local nft_t = {}
  if have("nft") then
    nft_t = collect(N.lab_nft, function()
      local t0 = mk.now()
      run_ok { "unshare", "-Urn", "nft", NFT, host = false, timeout = 10 }
      return mk.now() - t0
    end)
  end
  add { key = "lab.nft", what = "  baseline mk.run{unshare -Urn nft RULES}, host = false", unit = "s",
    samples = #nft_t > 0 and nft_t or nil, text = #nft_t == 0 and "no nft" or nil, is_baseline = true }

  -- 9c-e. one lab of 3 for the rest
  local lab <close> = lab_of(3)
  local dir = mk.tmpdir()

  -- readiness of a TCP service in n1 vs on 127.0.0.1, alternated; the
  -- fixture's stamp is read just before listen() (--stamp-before)
  heading("   lab readiness (mk.tcp): fixture's own ready instant -> start() returned (ready 150-250 ms after spawn)")
  local R = { lab = {}, out = {}, lab5 = {}, out5 = {} }
  local function ready_once(inside, interval, into)
    local stamp = dir .. "/stamp"
    rm(stamp)
    local port = mk.free_port()
    local svc <close> = mk.tcp(with(argv_of(RANDOM, "--stamp-before", stamp, inside and "--listen-any" or "--listen",
      port, "--serve-tcp"), { port = port, host = inside and lab.n1 or false, interval = interval, name = "lab-ready" }))
    svc:start()
    local t = mk.now()
    local st = read_stamp(stamp)
    svc:stop()
    into[#into + 1] = t - st
  end
  -- the same again with interval = 0.005: the probe's pause is 50x an
  -- attempt's cost, at most `interval`; capped at 5 ms, a costlier attempt
  -- (the keeper's round trip for the socket) cannot stretch it
  local function enough(t) return L.enough(t, N.ready[1], N.ready[2], 0.10) end
  repeat
    ready_once(true, nil, R.lab)
    ready_once(false, nil, R.out)
    ready_once(true, 0.005, R.lab5)
    ready_once(false, 0.005, R.out5)
  until enough(R.lab) and enough(R.out) and enough(R.lab5) and enough(R.out5)
  add { key = "lab.ready", what = "ready: tcp in lab host n1 (--listen-any)", unit = "s", samples = R.lab,
    base = "lab.ready.local", compare = "ratio" }
  add { key = "lab.ready.local", what = "  baseline: same, on 127.0.0.1, host = false", unit = "s", samples = R.out,
    is_baseline = true }
  add { key = "lab.ready.i5", what = "ready: tcp in lab host n1, interval = 0.005", unit = "s", samples = R.lab5,
    base = "lab.ready.local.i5", compare = "ratio" }
  add { key = "lab.ready.local.i5", what = "  baseline: same, on 127.0.0.1, interval = 0.005", unit = "s",
    samples = R.out5, is_baseline = true }
  -- what one attempt costs (connection refused: nothing listens on port 9):
  -- in the lab it includes the keeper's round trip for the socket
  local pin, pout = {}, {}
  for _ = 1, N.lab_attempt do
    local t0 = mk.now()
    core.tcp_probe(lab.n1.ip, 9, 1)
    pin[#pin + 1] = mk.now() - t0
    t0 = mk.now()
    core.tcp_probe("127.0.0.1", 9, 1)
    pout[#pout + 1] = mk.now() - t0
  end
  add { key = "lab.attempt", what = "one tcp probe attempt to n1, refused", unit = "s", samples = pin,
    base = "lab.attempt.local", compare = "ratio" }
  add { key = "lab.attempt.local", what = "  baseline: the same to 127.0.0.1", unit = "s", samples = pout,
    is_baseline = true }

  -- mk.get round trip to kvd in n1 vs kvd on 127.0.0.1, alternated
  heading("   lab mk.get: GET /health to kvd, a new connection each")
  local kp = ports(2)
  local kin <close> = mk.http { KVD, "--port", kp[1], "--bind", "0.0.0.0", "--data", dir .. "/kv-in.log",
    url = "http://" .. lab.n1.ip .. ":" .. kp[1] .. "/health", method = "GET", host = lab.n1, name = "kvd-n1",
    timeout = 10 }
  local kout <close> = mk.http { KVD, "--port", kp[2], "--data", dir .. "/kv-out.log",
    url = "http://127.0.0.1:" .. kp[2] .. "/health", method = "GET", host = false, name = "kvd-local", timeout = 10 }
  kin:start()
  kout:start()
  local function get(url, into)
    local t0 = mk.now()
    local r = mk.get(url)
    local dt = mk.now() - t0
    if r.status ~= 200 then error("GET " .. url .. ": status " .. tostring(r.status), 0) end
    if into then into[#into + 1] = dt end
  end
  local gin, gout = {}, {}
  for _ = 1, 10 do get(kin.url) get(kout.url) end -- warm up
  repeat
    get(kin.url, gin)
    get(kout.url, gout)
  until L.enough(gin, N.lab_get[1], N.lab_get[2], 0.10) and L.enough(gout, N.lab_get[1], N.lab_get[2], 0.10)
  local gi, go = L.stats(gin), L.stats(gout)
  add { key = "lab.get", what = "mk.get to kvd in lab host n1", unit = "s", samples = gin,
    base = "lab.get.local", compare = "ratio",
    note = string.format("+%s p50, +%s p90", L.fmt(gi.median - go.median, "s"), L.fmt(gi.p90 - go.p90, "s")) }
  add { key = "lab.get.local", what = "  baseline: mk.get to kvd on 127.0.0.1", unit = "s", samples = gout,
    is_baseline = true }
  kin:stop()
  kout:stop()

  -- spawning: mk.run{"true"} into n1, on the control node, outside; alternated
  heading("   lab spawn: mk.run{\"true\"}, call -> return")
  local sin, sctl, sout = {}, {}, {}
  local function run_true(host, into)
    local t0 = mk.now()
    local r = mk.run { "true", host = host }
    into[#into + 1] = mk.now() - t0
    if r.code ~= 0 then error("true exited " .. tostring(r.code), 0) end
  end
  for _ = 1, 3 do run_true(lab.n1, {}) run_true(false, {}) end -- warm up
  repeat
    run_true(lab.n1, sin)
    run_true(nil, sctl)
    run_true(false, sout)
  until L.enough(sin, N.lab_run[1], N.lab_run[2], 0.10) and L.enough(sout, N.lab_run[1], N.lab_run[2], 0.10)
    and L.enough(sctl, N.lab_run[1], N.lab_run[2], 0.10)
  add { key = "lab.run", what = "mk.run{\"true\", host = lab.n1}", unit = "s", samples = sin,
    base = "lab.run.outside", compare = "ratio" }
  add { key = "lab.run.control", what = "mk.run{\"true\"} (the lab's control node)", unit = "s", samples = sctl,
    base = "lab.run.outside", compare = "ratio" }
  add { key = "lab.run.outside", what = "  baseline: mk.run{\"true\", host = false}", unit = "s", samples = sout,
    is_baseline = true }
end

---------------------------------------------------------------- run
local RUNNERS = { readiness = bench_readiness, stop = bench_stop, drain = bench_drain,
  overhead = bench_overhead, scale = bench_scale, groups = bench_groups, features = bench_features,
  cpu = bench_cpu, lab = bench_lab }

local t_start = mk.now()
for _, name in ipairs(SECTIONS) do
  if not opts.want or opts.want[name] then
    progress("== %s", name)
    local ok, err = xpcall(RUNNERS[name], function(e) return debug.traceback(tostring(e), 2) end)
    if not ok then
      crashed = true
      io.stderr:write("bench: section ", name, " crashed:\n", err, "\n")
      rows[#rows + 1] = { key = name .. ".error", what = name .. ": CRASHED (see stderr)", error = tostring(err):match("[^\n]*") }
    end
  end
end
local elapsed = mk.now() - t_start

---------------------------------------------------------------- verdicts and output
local function verdict(r)
  if r.error then return "ERROR", nil end
  local ratio_text, ratio
  local b = r.base and by_key[r.base]
  if b and b.median and r.median and r.median > 0 then
    if r.compare == "faster" then
      ratio = b.median / r.median
      if ratio >= 1 then
        ratio_text = ratio >= 10 and string.format("%.0f× faster", ratio) or string.format("%.1f× faster", ratio)
      else
        ratio_text = string.format("%.1f× slower", 1 / ratio)
      end
    else
      ratio = r.median / b.median
      ratio_text = string.format("%.3g× base", ratio)
    end
  end
  r.ratio = ratio
  local t = r.target
  local v = r.verdict
  if not v and t and t.value then
    local x
    if t.on == "ratio" then x = ratio
    elseif t.on == "max" then x = r.max
    elseif t.on == "value" then x = r.value
    else x = r.median end
    -- a p90 bound beside the main one: both must hold
    if x then v = x <= t.value and (not t.p90 or (r.p90 ~= nil and r.p90 <= t.p90)) and "OK" or "MISS" end
  end
  r.verdict = v
  if v and ratio_text then return v .. " · " .. ratio_text end
  return v or ratio_text or ""
end

local out = {}
for _, r in ipairs(rows) do
  if r.heading then
    out[#out + 1] = { section = r.heading }
  else
    local tgt = r.target and r.target.text or ""
    local b = r.base and by_key[r.base]
    if b and b.median then
      tgt = tgt .. (tgt ~= "" and " · " or "") .. "base " .. L.fmt(b.median, b.unit)
    end
    local v = verdict(r)
    if r.note then v = v .. (v ~= "" and " · " or "") .. r.note end
    out[#out + 1] = {
      r.what, r.n and tostring(r.n) or (r.text and "1" or ""),
      r.text or (r.error and "-") or L.fmt(r.median, r.unit),
      r.text and "" or L.fmt(r.p90, r.unit), r.text and "" or L.fmt(r.max, r.unit),
      r.ci and string.format("±%.0f%%", r.ci * 100) or "",
      tgt, v,
    }
  end
end

local uname = mk.run { "uname", "-srm" }.stdout:gsub("%s+$", "")
local load = (L.slurp("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)") or "?"
io.stdout:write("\n", string.format("mkharness benchmarks%s — %s, %d CPUs, load %s, %.0f s\n\n",
  Q and " (--quick)" or "", uname, tonumber(mk.run { "nproc" }.stdout) or 0, load, elapsed))
io.stdout:write(L.table({ "what", "n", "median", "p90", "max", "med 95%", "baseline/target", "ratio/verdict" }, out,
  { false, true, true, true, true, true, false, false }))
io.stdout:flush()

-- JSON
local json_rows = {}
for _, r in ipairs(rows) do
  if not r.heading then
    json_rows[#json_rows + 1] = {
      key = r.key, what = (r.what:gsub("^%s+", "")), unit = r.unit, n = r.n, median = r.median, p90 = r.p90,
      max = r.max, min = r.min, mean = r.mean, value = r.value, before = r.before, after = r.after,
      target = r.target and r.target.value, target_text = r.target and r.target.text,
      target_on = r.target and r.target.value and (r.target.on or "median") or nil,
      baseline = r.base, ratio = r.ratio, verdict = r.verdict, is_baseline = r.is_baseline or nil,
      text = r.text, note = r.note, error = r.error, wall = r.wall, children_pct = r.children_pct,
      main_thread_pct = r.main_thread_pct, median_ci = r.ci, samples = r.samples, extra = r.extra,
    }
  end
end
local doc = {
  generated_by = "bench/run.lua", quick = Q or false, sections = opts.only or "all",
  system = { uname = uname, nproc = tonumber(mk.run { "nproc" }.stdout), loadavg_at_end = load, clk_tck = CLK_TCK },
  version = mk._VERSION, elapsed_s = elapsed, iterations = N, rows = json_rows,
}
local f, err = io.open(opts.json, "w")
if f then
  f:write(L.json(doc), "\n")
  f:close()
  io.stdout:write("\nJSON: ", opts.json, "\n")
else
  io.stderr:write("bench: cannot write ", opts.json, ": ", tostring(err), "\n")
  crashed = true
end
os.exit(crashed and 1 or 0)
