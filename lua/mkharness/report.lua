-- `mkharness report [FILE] [--html OUT]`: draws a run's events.jsonl as a
-- timeline, one lane per service and per proxy, in the terminal (100
-- columns) or as one self-contained HTML file (inline SVG, CSS and JS: it
-- must open anywhere, offline, attached to a bug report).
-- Both drawings come from one model (lanes of state segments and point
-- events) so they cannot disagree.
local json = require "mkharness.json"

local R = {}

local WIDTH = 100

local USAGE = [[
usage: mkharness report [FILE] [--html OUT]
  FILE        an events.jsonl (a run directory's, or a --report file), or a
              run directory; default: the newest kept run's under
              $MKHARNESS_TMPDIR, $TMPDIR or /tmp
  --html OUT  write one self-contained HTML file (zoom, hover) instead of
              drawing in the terminal
exit status: 0 drawn, 1 unreadable or not a run's events, 2 usage
]]

-- What a report cannot do is said in one line, never as a traceback.
local Fail = {}
local function fail(code, msg) error(setmetatable({ code = code, msg = msg }, Fail), 0) end

-- ---- reading ----------------------------------------------------------

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The newest run directory's events.jsonl: kept runs are the only ones
-- with a directory left after they end, and the file's mtime is its last event.
local function newest_run()
  local base = os.getenv("MKHARNESS_TMPDIR")
  if not base or base == "" then base = os.getenv("TMPDIR") end
  if not base or base == "" then base = "/tmp" end
  local p = io.popen("ls -1t -- " .. shell_quote(base) .. "/mkharness-*/events.jsonl 2>/dev/null")
  local first = p and p:read("l")
  if p then p:close() end
  if not first or first == "" then
    fail(1, "no kept run in " .. base .. " (run with --keep, or name an events.jsonl)")
  end
  return first
end

function R.read(path)
  local f, err = io.open(path, "r")
  if not f then fail(1, "cannot read " .. tostring(err)) end
  -- a directory opens, and only reading says it is one
  local _, rerr = f:read(0)
  if rerr then f:close() fail(1, "cannot read " .. path .. ": " .. tostring(rerr)) end
  local list, n = {}, 0
  for line in f:lines() do
    n = n + 1
    if line:find("%S") then
      local ok, ev = pcall(json.decode, line, "line " .. n)
      if not ok then
        f:close()
        local why = type(ev) == "table" and ev.message or tostring(ev)
        fail(1, string.format("%s:%d: not an events.jsonl line (%s)", path, n, tostring(why)))
      end
      if type(ev) ~= "table" or type(ev.event) ~= "string" or type(ev.t) ~= "number" then
        f:close()
        fail(1, string.format("%s:%d: not an event (no \"event\" name and \"t\" time)", path, n))
      end
      ev._line = n
      list[#list + 1] = ev
    end
  end
  f:close()
  if #list == 0 then fail(1, path .. ": empty run: no events to draw") end
  if list[1].event ~= "start" or list[1].schema == nil then
    fail(1, string.format("%s:%d: not an events.jsonl: the first event is %q, not the \"start\" header",
      path, list[1]._line, list[1].event))
  end
  return list
end

-- ---- the model --------------------------------------------------------

-- state -> glyph, and which wins when several share one terminal column
-- (the rare and short ones: a 5 ms start must not vanish in a 30 ms column)
local GLYPH = {
  starting = ".", running = "=", paused = "~",
  forwarding = "-", fault = "#", down = "_",
}
local PRIO = { ["-"] = 1, ["="] = 2, ["."] = 3, ["#"] = 3, ["~"] = 4, ["_"] = 4,
  ["x"] = 5, ["K"] = 5, ["!"] = 5, ["R"] = 6, ["X"] = 7, ["^"] = 1, ["E"] = 3, ["F"] = 2 }

local SERVICE_STATE = {
  spawned = "starting", ready = "running", adopted = "running", adopted_daemon = "running",
  paused = "paused", resumed = "running",
  stopped = false, killed = false, torn_down = false, cleaned = false, exited = false, crashed = false,
}
local SERVICE_POINT = { crashed = "X", restarting = "R", killed = "K", exited = "x" }

local function fault_names(faults)
  local names = {}
  for k in pairs(faults) do names[#names + 1] = k end
  table.sort(names)
  return table.concat(names, ", ")
end

-- Does the service spawned at list[i] have a "ready" (or adoption) next?
local function awaits_ready(list, i)
  local name = list[i].service
  for j = i + 1, #list do
    local ev = list[j]
    if ev.service == name and SERVICE_STATE[ev.event] ~= nil then
      return ev.event == "ready" or ev.event == "adopted" or ev.event == "adopted_daemon"
    end
  end
  return false
end

function R.model(list)
  local start = list[1]
  local t0 = start.t
  local last = t0
  for _, ev in ipairs(list) do if ev.t > last then last = ev.t end end
  local m = { start = start, events = list, dur = math.max(last - t0, 1e-3), lanes = {}, ticks = {}, ops = {} }
  local by_name, labs = {}, {}
  local function lane(kind, name)
    local key = kind .. "\0" .. name
    local l = by_name[key]
    if not l then
      local label = (kind == "proxy" and not name:match("^proxy")) and ("proxy " .. name) or name
      if kind == "host" then label = "host " .. name:gsub("^lab/", "") end
      l = { kind = kind, name = name, label = label,
        segs = {}, points = {}, cur = nil, since = 0, faults = {}, on = false, isdown = false }
      by_name[key] = l
      m.lanes[#m.lanes + 1] = l
    end
    return l
  end
  local function set(l, t, state, label)
    if l.cur and t >= l.since then
      l.segs[#l.segs + 1] = { a = l.since, b = t, state = l.cur, label = l.curlabel }
    end
    l.cur, l.curlabel, l.since = state or nil, label, t
  end
  for i, ev in ipairs(list) do
    local t = ev.t - t0
    local e = ev.event
    if type(ev.service) == "string" and (SERVICE_STATE[e] ~= nil or SERVICE_POINT[e]) then
      local l = lane("service", ev.service)
      if SERVICE_STATE[e] ~= nil then set(l, t, SERVICE_STATE[e] or nil) end
      -- a service without probes is ready when spawned and has no "ready"
      -- event: its start is a zero-length "starting", still drawn
      if e == "spawned" and not awaits_ready(list, i) then set(l, t, "running") end
      if SERVICE_POINT[e] then l.points[#l.points + 1] = { t = t, glyph = SERVICE_POINT[e], ev = i } end
      l.events = l.events or {}
      l.events[#l.events + 1] = i
    elseif e == "proxy" and type(ev.proxy) == "string" then
      local l = lane("proxy", ev.proxy)
      local a = ev.action
      if a == "start" then l.on = true
      elseif a == "stop" then l.on = false
      elseif a == "down" then l.isdown = true
      elseif a == "up" then l.isdown = false
      elseif a == "clear" then l.faults = {}
      elseif a == "reset" then l.points[#l.points + 1] = { t = t, glyph = "!", ev = i }
      elseif a == "latency" then
        l.faults.latency = ((tonumber(ev.ms) or 0) > 0 or (tonumber(ev.jitter) or 0) > 0) or nil
      elseif type(a) == "string" then l.faults[a] = true
      end
      local state = not l.on and nil or l.isdown and "down" or next(l.faults) and "fault" or "forwarding"
      local label = state == "fault" and fault_names(l.faults) or nil
      if state ~= l.cur or label ~= l.curlabel then set(l, t, state, label) end
      l.events = l.events or {}
      l.events[#l.events + 1] = i
    elseif e == "lab" and type(ev.lab) == "string" then
      -- one lane per lab host: up, or cut off (from some host, either way) or slowed (netem)
      local hosts = labs[ev.lab]
      if ev.action == "up" and type(ev.hosts) == "table" then
        hosts = {}
        labs[ev.lab] = hosts
        for _, h in ipairs(ev.hosts) do
          hosts[#hosts + 1] = { name = tostring(h), lane = lane("host", ev.lab .. "/" .. tostring(h)) }
        end
      end
      for _, h in ipairs(hosts or {}) do
        local l = h.lane
        if ev.action == "close" then l.off = true end
        if type(ev.cuts) == "table" or ev.action == "heal" then
          l.cut = nil
          for _, c in ipairs(type(ev.cuts) == "table" and ev.cuts or {}) do
            local a, b = tostring(c):match("^(.-)%->(.*)$")
            if a == h.name or b == h.name then l.cut = true end
          end
        end
        if ev.action == "heal" and not ev.partial then l.netem = nil end
        if (ev.action == "latency" or ev.action == "loss") and ev.host == h.name then
          l.netem = ((tonumber(ev.ms) or 0) > 0 or (tonumber(ev.jitter) or 0) > 0 or (tonumber(ev.percent) or 0) > 0) or nil
        end
        local state = not l.off and ((l.cut or l.netem) and "fault" or "forwarding") or nil
        local label = state == "fault" and ((l.cut and "cut" or "") .. (l.cut and l.netem and ", " or "") ..
          (l.netem and "netem" or "")) or nil
        if state ~= l.cur or label ~= l.curlabel then set(l, t, state, label) end
        l.events = l.events or {}
        l.events[#l.events + 1] = i
      end
    elseif e == "fault" and type(ev.fault) == "string" and (ev.action == "start" or ev.action == "heal") then
      -- a chaos fault: a band while in force (occurrences of one fault may overlap)
      local l = lane("fault", ev.fault)
      l.label = "fault " .. ev.fault
      l.count = math.max(0, (l.count or 0) + (ev.action == "start" and 1 or -1))
      if ev.action == "start" then l.targets = type(ev.targets) == "string" and ev.targets or nil end
      local state = l.count > 0 and "fault" or nil
      if state ~= l.cur or (state and l.targets ~= l.curlabel) then set(l, t, state, state and l.targets or nil) end
      if ev.error then l.points[#l.points + 1] = { t = t, glyph = "E", ev = i } end
      l.events = l.events or {}
      l.events[#l.events + 1] = i
    elseif e == "op" and (ev.type == "ok" or ev.type == "fail" or ev.type == "info") then
      m.ops[#m.ops + 1] = { t = t, class = ev.type, ev = i }
    elseif e == "mark" then
      m.ticks[#m.ticks + 1] = { t = t, glyph = "^", class = "info", ev = i }
    elseif e == "test_end" then
      local bad = ev.status == "failure" or ev.status == "error"
      m.ticks[#m.ticks + 1] = { t = t, glyph = bad and "F" or nil,
        class = bad and "fail" or ev.status == "success" and "ok" or "info", ev = i }
    elseif e == "error" or e == "cleanup_error" then
      m.ticks[#m.ticks + 1] = { t = t, glyph = "E", class = "fail", ev = i }
    end
  end
  for _, l in ipairs(m.lanes) do set(l, m.dur, nil) end
  return m
end

-- ---- the terminal -----------------------------------------------------

local function secs(t) return string.format("+%.3fs", t) end

-- cut to n characters (UTF-8 aware: user text may hold any)
local function cut(s, n)
  s = json.fix_utf8(s):gsub("[%c]", " ")
  if utf8.len(s) <= n then return s end
  return s:sub(1, utf8.offset(s, n) - 1) .. "…"
end

local function describe(ev)
  local e = ev.event
  if e == "mark" then
    local extra = {}
    for k, v in pairs(type(ev.fields) == "table" and ev.fields or {}) do extra[#extra + 1] = k .. "=" .. tostring(v) end
    table.sort(extra)
    return "mark: " .. tostring(ev.text) .. (#extra > 0 and (" (" .. table.concat(extra, ", ") .. ")") or "")
  elseif e == "test_end" then return "test " .. tostring(ev.status) .. ": " .. tostring(ev.test)
  elseif e == "error" then return "error (" .. tostring(ev.kind) .. "): " .. tostring(ev.message)
  elseif e == "cleanup_error" then return "cleanup error: " .. tostring(ev.message)
  elseif e == "proxy" then
    local f = {}
    for k, v in pairs(ev) do
      if k ~= "event" and k ~= "t" and k ~= "proxy" and k ~= "action" and k ~= "_line" and type(v) ~= "table" then
        f[#f + 1] = k .. "=" .. tostring(v)
      end
    end
    table.sort(f)
    return "proxy " .. ev.proxy .. ": " .. tostring(ev.action) .. (#f > 0 and (" (" .. table.concat(f, ", ") .. ")") or "")
  elseif e == "lab" then
    local what = tostring(ev.action)
    if type(ev.groups) == "table" then
      local g = {}
      for i, side in ipairs(ev.groups) do g[i] = type(side) == "table" and table.concat(side, " ") or tostring(side) end
      what = what .. " " .. table.concat(g, " | ")
    elseif ev.action == "isolate" then what = what .. " " .. tostring(ev.host)
    elseif ev.action == "drop" and type(ev.from) == "table" and type(ev.to) == "table" then
      what = what .. " " .. table.concat(ev.from, " ") .. " -> " .. table.concat(ev.to, " ")
    elseif ev.action == "latency" or ev.action == "loss" then
      what = string.format("%s on %s (%s ms, jitter %s ms, loss %s %%)", what, tostring(ev.host), tostring(ev.ms),
        tostring(ev.jitter), tostring(ev.percent))
    end
    return "lab " .. ev.lab .. ": " .. what
  elseif e == "crashed" or e == "exited" or e == "killed" then
    return ev.service .. " " .. e .. " (exit code " .. tostring(ev.exit_code) .. ")"
  elseif e == "restarting" then return ev.service .. " restarting (#" .. tostring(ev.restarts) .. ")"
  elseif e == "fault" then
    return "fault " .. tostring(ev.action) .. ": " .. tostring(ev.fault) ..
      (type(ev.targets) == "string" and (" on " .. ev.targets) or "") .. (ev.error and (" FAILED: " .. tostring(ev.error)) or "")
  end
  return e
end

local function draw_row(points, segs, cols, dt)
  local cells, prio = {}, {}
  for c = 1, cols do cells[c], prio[c] = " ", 0 end
  local function put(c, g)
    c = math.max(1, math.min(cols, c))
    if (PRIO[g] or 0) > prio[c] then cells[c], prio[c] = g, PRIO[g] or 0 end
  end
  for _, s in ipairs(segs) do
    local g = GLYPH[s.state]
    local ca = math.floor(s.a / dt) + 1
    -- a segment ending exactly on a column's edge does not reach into it
    local cb = math.ceil(s.b / dt)
    if cb < ca then cb = ca end
    for c = ca, cb do put(c, g) end
  end
  -- two point events in one column (a crash and its restart) take
  -- neighbouring columns, in their order, rather than hide one another
  local taken = {}
  for _, p in ipairs(points) do
    if p.glyph then
      local c = math.max(1, math.min(cols, math.floor(p.t / dt) + 1))
      while taken[c] and c < cols do c = c + 1 end
      taken[c] = true
      cells[c], prio[c] = p.glyph, 99
    end
  end
  return table.concat(cells)
end

function R.terminal(m, path)
  local out = {}
  local function say(s) out[#out + 1] = cut(s, WIDTH) end
  local s = m.start
  local status
  for _, ev in ipairs(m.events) do if ev.event == "end" then status = ev.status end end
  say(string.format("mkharness run %s  %s  mode %s  %s  %.3f s", tostring(s.run or "?"), tostring(s.time or "?"),
    tostring(s.mode or "?"), status and ("status " .. tostring(status)) or "no end event (still running?)", m.dur))
  say(path)
  local labelw = 5
  for _, l in ipairs(m.lanes) do labelw = math.max(labelw, utf8.len(l.label) or #l.label) end
  labelw = math.min(labelw, 20)
  local cols = WIDTH - labelw - 3
  local dt = m.dur / cols
  -- time axis: ticks at fifths, the seconds under them
  local axis, nums = {}, {}
  for c = 1, cols do axis[c], nums[c] = "-", " " end
  for k = 0, 4 do
    local c = math.floor(k * (cols - 1) / 4) + 1
    axis[c] = "+"
    local txt = string.format("%.2fs", (c - 1) * dt)
    local at = math.min(c, cols - #txt + 1)
    for j = 1, #txt do nums[at + j - 1] = txt:sub(j, j) end
  end
  local pad = string.rep(" ", labelw)
  say(pad .. "  " .. table.concat(nums))
  say(pad .. " |" .. table.concat(axis) .. "|")
  for _, l in ipairs(m.lanes) do
    local name = cut(l.label, labelw)
    say(name .. string.rep(" ", labelw - utf8.len(name)) .. " |" .. draw_row(l.points, l.segs, cols, dt) .. "|")
  end
  if #m.ops > 0 then
    -- one cell per column: the worst outcome in it (fail, then info, then ok)
    local rank, glyph = { ok = 1, info = 2, fail = 3 }, { ok = "o", info = "?", fail = "f" }
    local col = {}
    for _, o in ipairs(m.ops) do
      local c = math.max(1, math.min(cols, math.floor(o.t / dt) + 1))
      if not col[c] or rank[o.class] > rank[col[c]] then col[c] = o.class end
    end
    local paint = R.color and { ok = "\27[32m", info = "\27[34m", fail = "\27[31m" }
    local cells = {}
    for c = 1, cols do
      local k = col[c]
      cells[c] = not k and " " or paint and (paint[k] .. glyph[k] .. "\27[0m") or glyph[k]
    end
    local name = cut("ops", labelw)
    -- not cut(): the colour codes would count as characters
    out[#out + 1] = name .. string.rep(" ", labelw - utf8.len(name)) .. " |" .. table.concat(cells) .. "|"
  end
  if #m.ticks > 0 then
    local shown = {}
    for _, k in ipairs(m.ticks) do if k.glyph then shown[#shown + 1] = k end end
    local name = cut("marks", labelw)
    say(name .. string.rep(" ", labelw - utf8.len(name)) .. " |" .. draw_row(shown, {}, cols, dt) .. "|")
  end
  -- what the glyphs stand for, with times: faults, crashes, marks, failures
  local notes = {}
  for i, ev in ipairs(m.events) do
    local e = ev.event
    local failing_test = e == "test_end" and (ev.status == "failure" or ev.status == "error")
    if e == "mark" or failing_test or e == "error" or e == "cleanup_error" or e == "crashed" or e == "restarting"
      or e == "killed" or e == "exited" or (e == "proxy" and ev.action ~= "start" and ev.action ~= "stop")
      or (e == "lab" and ev.action ~= "up" and ev.action ~= "close")
      or (e == "fault" and (ev.action == "start" or ev.action == "heal")) then
      notes[#notes + 1] = i
    end
  end
  if #notes > 0 then
    say("")
    local limit = 40
    for n, i in ipairs(notes) do
      if n > limit then say(string.format("  ... and %d more (--html shows them all)", #notes - limit)) break end
      local ev = m.events[i]
      say(string.format("  %9s  %s", secs(ev.t - s.t), describe(ev)))
    end
  end
  say("")
  say("legend: services: . starting  = ready/running  ~ paused  X crashed  R restarting  K killed")
  say("                   x exited as expected  (blank: not running)")
  say("        proxies: - forwarding  # fault  _ down  ! reset     marks: ^ mark  F failing test  E error")
  say("        lab hosts: - up  # cut off or slowed")
  local chaos = #m.ops > 0
  for _, l in ipairs(m.lanes) do chaos = chaos or l.kind == "fault" end
  if chaos then
    say("        chaos: fault lanes # in force     ops: o ok  ? info (indeterminate)  f fail")
  end
  return table.concat(out, "\n") .. "\n"
end

-- ---- HTML -------------------------------------------------------------

local function html_escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local PAGE = [=[<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>mkharness timeline</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:12px;color:#222;background:#fff}
h1{font-size:16px;margin:0 0 4px}
#bar{margin:6px 0}#bar button{font:inherit;min-width:2.2em}
#wrap{overflow-x:auto;border:1px solid #ccc}
#tip{position:fixed;display:none;background:#fffbe6;border:1px solid #aa8;padding:4px 6px;
 font:12px monospace;white-space:pre;pointer-events:none;max-width:600px;overflow:hidden}
.legend span{display:inline-block;margin-right:12px}
.sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
</style></head><body>
<h1 id="head"></h1><div id="sub"></div>
<div id="bar"><button id="zin" title="zoom in (or mouse wheel)">+</button>
<button id="zout" title="zoom out">&minus;</button><button id="zfit">fit</button> <span id="zl"></span></div>
<div id="wrap"></div><div id="tip"></div>
<p class="legend">
<span><i class="sw" style="background:#f2d36b"></i>starting</span>
<span><i class="sw" style="background:#5cb85c"></i>ready/running</span>
<span><i class="sw" style="background:#9aa7c7"></i>paused</span>
<span><i class="sw" style="background:#8ecae6"></i>proxy forwarding, lab host up</span>
<span><i class="sw" style="background:#f0883e"></i>fault (proxy, lab host)</span>
<span><i class="sw" style="background:#555"></i>proxy down</span>
<span style="color:#d9534f">X crashed</span><span style="color:#7b3fb5">R restarting</span>
<span>ticks (tests, operations): <b style="color:#2e9e44">pass/ok</b> <b style="color:#d9534f">fail</b> <b style="color:#3a7bd5">info</b></span>
<span><i class="sw" style="background:#f0883e"></i>chaos fault in force</span>
</p>
<script>
var D = @DATA@;
(function () {
  var LABEL = 170, LANE = 30, TOP = 28, zoom = 1;
  var FILL = {starting:"#f2d36b", running:"#5cb85c", paused:"#9aa7c7",
    forwarding:"#8ecae6", fault:"#f0883e", down:"#555"};
  var PT = {X:"#d9534f", x:"#777", R:"#7b3fb5", K:"#b52", "!":"#b52"};
  var TICK = {ok:"#2e9e44", fail:"#d9534f", info:"#3a7bd5"};
  var wrap = document.getElementById("wrap"), tip = document.getElementById("tip");
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) {
    return {"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]; }); }
  function fields(i) {
    var e = D.events[i], out = [];
    for (var k in e) out.push(k + ": " + (typeof e[k] === "object" ? JSON.stringify(e[k]) : e[k]));
    return out.join("\n");
  }
  document.getElementById("head").textContent = "mkharness run " + (D.start.run || "?");
  document.getElementById("sub").textContent = (D.start.time || "") + "  mode " + (D.start.mode || "?") +
    "  " + D.dur.toFixed(3) + " s  " + D.path;
  function draw() {
    var cw = Math.max(200, (wrap.clientWidth - LABEL - 20)) * zoom, x = function (t) { return LABEL + t / D.dur * cw; };
    var h = TOP + (D.lanes.length + (D.ops.length ? 2 : 1)) * LANE + 10, s = [];
    s.push('<svg width="' + (LABEL + cw + 10) + '" height="' + h + '" font-family="monospace" font-size="12">');
    var step = Math.pow(10, Math.floor(Math.log10(D.dur / 8 / zoom) || 0));
    [1, 2, 5, 10].some(function (m) { if (D.dur / zoom / (step * m) <= 10) { step *= m; return true; } });
    s.push('<g class="axis">');
    for (var t = 0; t <= D.dur + 1e-9; t += step) {
      s.push('<line x1="' + x(t) + '" x2="' + x(t) + '" y1="' + (TOP - 6) + '" y2="' + (h - 6) + '" stroke="#eee"/>');
      s.push('<text x="' + (x(t) + 2) + '" y="' + (TOP - 10) + '" fill="#666">' + (+t.toFixed(6)) + 's</text>');
    }
    s.push('</g>');
    D.lanes.forEach(function (l, n) {
      var y = TOP + n * LANE;
      s.push('<g class="lane" data-lane="' + esc(l.label) + '">');
      s.push('<text x="4" y="' + (y + 19) + '">' + esc(l.label) + '</text>');
      s.push('<line x1="' + LABEL + '" x2="' + (LABEL + cw) + '" y1="' + (y + 15) + '" y2="' + (y + 15) + '" stroke="#ddd"/>');
      l.segs.forEach(function (g) {
        var w = Math.max(1, x(g.b) - x(g.a));
        s.push('<rect x="' + x(g.a) + '" y="' + (y + 5) + '" width="' + w + '" height="20" fill="' + FILL[g.state] +
          '" data-tip="' + esc(g.state + (g.label ? " (" + g.label + ")" : "") + "\n+" + g.a.toFixed(3) + "s .. +" +
          g.b.toFixed(3) + "s") + '"/>');
      });
      (l.events || []).forEach(function (i) {
        var e = D.events[i], tx = x(e.t - D.start.t);
        s.push('<rect x="' + (tx - 1) + '" y="' + (y + 3) + '" width="3" height="24" fill="#0003" data-ev="' + i + '"/>');
      });
      var last = -1e9;
      l.points.forEach(function (p) {
        // a crash and its restart at one instant: side by side, in order
        var px = Math.max(x(p.t) - 4, last + 9); last = px;
        s.push('<text x="' + px + '" y="' + (y + 20) + '" font-weight="bold" fill="' + (PT[p.glyph] || "#000") +
          '" data-ev="' + p.ev + '">' + esc(p.glyph) + '</text>');
      });
      s.push('</g>');
    });
    var y = TOP + D.lanes.length * LANE;
    s.push('<g class="ticks"><text x="4" y="' + (y + 19) + '">marks, tests</text>');
    D.ticks.forEach(function (k) {
      s.push('<rect x="' + (x(k.t) - 2) + '" y="' + (y + 4) + '" width="4" height="22" fill="' + TICK[k.class] +
        '" data-ev="' + k.ev + '"/>');
    });
    s.push('</g>');
    if (D.ops.length) {
      y += LANE;
      s.push('<g class="ops"><text x="4" y="' + (y + 19) + '">operations</text>');
      D.ops.forEach(function (k) {
        var dy = k.class === "ok" ? 14 : 4; // fail and info stand taller than the many oks
        s.push('<rect x="' + (x(k.t) - 1) + '" y="' + (y + dy) + '" width="2" height="' + (26 - dy) + '" fill="' +
          TICK[k.class] + '" data-ev="' + k.ev + '"/>');
      });
      s.push('</g>');
    }
    s.push('</svg>');
    wrap.innerHTML = s.join("");
    document.getElementById("zl").textContent = "zoom " + zoom.toFixed(2) + "x";
  }
  function setZoom(z, at) {
    var old = zoom; zoom = Math.min(1000, Math.max(1, z));
    var sx = wrap.scrollLeft + (at || 0);
    draw();
    wrap.scrollLeft = sx * zoom / old - (at || 0);
  }
  document.getElementById("zin").onclick = function () { setZoom(zoom * 1.5); };
  document.getElementById("zout").onclick = function () { setZoom(zoom / 1.5); };
  document.getElementById("zfit").onclick = function () { setZoom(1); };
  wrap.addEventListener("wheel", function (ev) {
    if (ev.shiftKey) return; // shift+wheel scrolls sideways
    ev.preventDefault();
    setZoom(zoom * (ev.deltaY < 0 ? 1.25 : 0.8), ev.clientX - wrap.getBoundingClientRect().left);
  }, {passive: false});
  wrap.addEventListener("mousemove", function (ev) {
    var el = ev.target, txt = el.getAttribute && (el.getAttribute("data-ev") !== null ?
      fields(+el.getAttribute("data-ev")) : el.getAttribute("data-tip"));
    if (!txt) { tip.style.display = "none"; return; }
    tip.textContent = txt; tip.style.display = "block";
    tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  });
  wrap.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  window.addEventListener("resize", draw);
  draw();
  // lets a headless browser (and the specs) tell that drawing finished
  document.title = "mkharness timeline: " + D.lanes.length + " lanes drawn";
})();
</script>
</body></html>
]=]

function R.html(m, path)
  local lanes = {}
  for _, l in ipairs(m.lanes) do
    local segs, points = {}, {}
    for _, s in ipairs(l.segs) do segs[#segs + 1] = { a = s.a, b = s.b, state = s.state, label = s.label } end
    for _, p in ipairs(l.points) do points[#points + 1] = { t = p.t, glyph = p.glyph, ev = p.ev - 1 } end
    local evs = {}
    for _, i in ipairs(l.events or {}) do evs[#evs + 1] = i - 1 end
    lanes[#lanes + 1] = { label = l.label, kind = l.kind, segs = segs, points = points, events = evs }
  end
  local ticks, ops = {}, {}
  for _, k in ipairs(m.ticks) do ticks[#ticks + 1] = { t = k.t, class = k.class, ev = k.ev - 1 } end
  for _, k in ipairs(m.ops) do ops[#ops + 1] = { t = k.t, class = k.class, ev = k.ev - 1 } end
  local evs = {}
  for i, ev in ipairs(m.events) do
    local c = {}
    for k, v in pairs(ev) do if k ~= "_line" then c[k] = v end end
    evs[i] = c
  end
  local data = json.encode { start = { run = m.start.run, time = m.start.time, mode = m.start.mode, t = m.start.t },
    dur = m.dur, path = path, lanes = lanes, ticks = ticks, ops = ops, events = evs }
  -- every "/" escaped: no "</script>" can end the block early, and no URL
  -- in the data (a probe's http:// address) reads as a reference to load
  data = data:gsub("/", "\\/")
  local page = PAGE:gsub("@DATA@", function() return data end)
  page = page:gsub("<title>mkharness timeline</title>",
    function() return "<title>mkharness timeline " .. html_escape(m.start.run or "") .. "</title>" end)
  return page
end

-- ---- command ----------------------------------------------------------

local function run(argv)
  local file, html
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "-h" or a == "--help" then io.stdout:write(USAGE) return 0
    elseif a == "--html" then
      html = argv[i + 1]
      if not html or html == "" then fail(2, "--html needs a file name") end
      i = i + 1
    elseif a:match("^%-%-html=") then
      html = a:sub(8)
      if html == "" then fail(2, "--html needs a file name") end
    elseif a:match("^%-.") then fail(2, "unknown option " .. a)
    elseif file then fail(2, "one events file at a time, got " .. file .. " and " .. a)
    else file = a end
    i = i + 1
  end
  file = file or newest_run()
  -- a run directory stands for its events.jsonl
  local inner = file:gsub("/+$", "") .. "/events.jsonl"
  local probe = io.open(inner, "r")
  if probe then
    probe:close()
    file = inner
  end
  local m = R.model(R.read(file))
  if html then
    local f, err = io.open(html, "w")
    if not f then fail(1, "cannot write " .. tostring(err)) end
    f:write(R.html(m, file))
    f:close()
    io.stderr:write("mkharness report: wrote ", html, "\n")
  else
    local core = package.loaded["mkharness.core"] or select(2, pcall(require, "mkharness.core"))
    local no = os.getenv("NO_COLOR")
    R.color = type(core) == "table" and core.isatty and core.isatty(1) and not (no and no ~= "") or false
    io.stdout:write(R.terminal(m, file))
  end
  return 0
end

-- argv as the host builds it: [0] = "report", then the arguments.
function R.main(argv)
  local ok, r = pcall(run, argv)
  if ok then io.stdout:flush() return r end
  if getmetatable(r) == Fail then
    io.stderr:write("mkharness report: ", r.msg, "\n")
    if r.code == 2 then io.stderr:write(USAGE) end
    return r.code
  end
  -- a bug of ours: still one message, not a traceback
  io.stderr:write("mkharness report: internal error: ", tostring(r), "\n")
  return 1
end

return R
