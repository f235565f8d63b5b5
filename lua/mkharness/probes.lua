-- Readiness probes (docs/api.md, "Probes"). A probe is a plain description; each
-- start() attaches it to a service, which gives it per-start state:
--   probe:attach(svc)        -> st   (before spawn: watches, sockets, env)
--   probe:check(st, svc, deadline) -> ok, detail, answered, busy, soon
--       (answered: a polling probe's service answered "not yet", back off;
--        busy: an attempt is in flight, check again on its fds or wake;
--        soon: try again within that many seconds, whatever the pace)
--   probe:fds(st)            -> fds that wake the wait loop (events)
--   probe:wake(st)           -> when the loop must wake for it at the latest
--   probe:paced_by_cpu()     -> true: an attempt is the harness's own work, so
--                            its pace follows the CPU it cost, not its time
--   probe:detach(st)
--   probe.poll               true: check at the polling pace (and at once
--                            when one of its fds wakes the loop)
--   probe:precheck(svc)      -> true, who  when it already passes (AlreadyRunning)
local core = require "mkharness.core"
local options = require "mkharness.options"
local Error = require "mkharness.errors"
local defaults = require "mkharness.defaults"
local types = options.types

local P = {}
-- the pause after a polling attempt that cost `cost` seconds (init.lua's)
P.pause_for = function(_, interval) return interval end
local Probe = {}
Probe.__index = Probe
Probe.__name = "mkharness.probe"
function Probe:__tostring() return "mkharness.probe " .. self:describe() end
function Probe:attach() return {} end
function Probe:detach() end
function Probe:fds() return nil end
P.Probe = Probe

local function is_probe(v) return getmetatable(v) == Probe end
P.is_probe = is_probe

local function new(kind, fields)
  fields.kind = kind
  return setmetatable(fields, Probe)
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- Watch a directory for entries appearing; nil when it cannot be watched
-- yet (missing directory): the probe then falls back to polling.
local function dir_watch(path)
  local w = core.watch()
  if not w then return nil end
  local dir = dirname(path)
  if dir == "" then dir = "/" end
  if not w:add(dir, "create") then w:close() return nil end
  return w
end

---------------------------------------------------------------- output
-- The longest literal run that every match must contain, so the C scanner
-- can skip non-candidate lines at memchr speed (50 MB before a banner).
-- A character repeated by '+' still must appear once; '*', '-' and '?' may
-- drop it.
local function needle_of(pat)
  local best, cur = "", {}
  local function flush()
    local s = table.concat(cur)
    if #s > #best then best = s end
    cur = {}
  end
  for _, it in ipairs(options.pattern_items(pat) or {}) do
    if it.kind == "char" and (it.quant == nil or it.quant == "+") then
      cur[#cur + 1] = it.lit
      if it.quant == "+" then flush() end
    else
      flush()
    end
  end
  flush()
  return best
end
P.needle_of = needle_of

-- Does the pattern end with a `$` anchor (not an escaped `%$`)?
local function ends_anchored(pat)
  local items = options.pattern_items(pat) or {}
  return #items > 0 and items[#items].kind == "end"
end

-- `text` is a line, or a piece of a line too long to keep (README, output
-- probe): `^` means the line's start and `$` its end, so an anchored
-- pattern is not tried on a piece without that end. A piece that does not
-- start the line begins with bytes the previous piece covered; its first
-- byte is only there as context (for %f). Returns false when matching gave
-- up at the deadline: the pattern backtracks too much.
local function line_matches(p, text, at_start, at_end, deadline)
  local r
  if p.plain then
    r = table.pack(string.find(text, p.banner, at_start and 1 or 2, true))
  else
    if (not at_start and p.banner:sub(1, 1) == "^") or (not at_end and p.dollar) then return nil end
    r = table.pack(core.find(text, p.banner, at_start and 1 or 2, deadline))
    if r[1] == false then return false end
  end
  if not r[1] then return nil end
  local m = { line = text }
  for k = 3, r.n do m[#m + 1] = r[k] end
  return m
end

local OUTPUT = {
  banner = types.required(types.nonempty), stream = types.enum("any", "stdout", "stderr"), plain = types.boolean, times = types.count,
}

function P.output(t, ctx)
  ctx = ctx or "mk.probe.output"
  local o = options.check(ctx, t, OUTPUT)
  o.stream = o.stream or "any"
  o.plain = o.plain or false
  o.times = o.times or 1
  if not o.plain then types.pattern(ctx, "banner", o.banner) end
  o.needle = o.plain and o.banner or needle_of(o.banner)
  o.dollar = not o.plain and ends_anchored(o.banner)
  return new("output", o)
end

-- attach: `from` true starts at the current end of the capture
-- (since="now"), a table at its offset per stream (since=MARK)
local function output_attach(p, svc, from)
  local st = { scanners = {}, watch = core.watch(), count = 0 }
  for _, s in ipairs { "stdout", "stderr" } do
    local path = svc._logs[s]
    if (p.stream == "any" or p.stream == s) and path then
      local at = from
      if type(from) == "table" then at = from[s] or 0 end
      st.scanners[#st.scanners + 1] = core.scanner(path, at)
      if st.watch then st.watch:add(path, "modify") end
    end
  end
  return st
end
P.output_attach = output_attach

local function too_costly(p, text)
  return string.format("the pattern %q backtracks too much on a line of %d bytes (matching it did not "
    .. "finish before the deadline); use plain = true or a simpler pattern", p.banner, #text)
end

-- With `times`, ready at the N-th matching line: st.count counts the
-- lines that matched so far. A line too long to keep comes in pieces
-- (overlapping): st.counted[i] says the line scanner i is in has counted.
local function output_check(p, st, svc, deadline)
  if st.watch then st.watch:drain() end
  st.counted = st.counted or {}
  for i, sc in ipairs(st.scanners) do
    while true do
      local line, at_start, at_end = sc:next(p.needle)
      if not line then break end
      local m = line_matches(p, line, at_start, at_end, deadline)
      if m == false then return false, too_costly(p, line) end
      if at_start then st.counted[i] = nil end
      if m and not st.counted[i] then
        st.count = st.count + 1
        st.counted[i] = true
        if st.count >= p.times then svc.ready_match = m return true, m end
      end
      if at_end then st.counted[i] = nil end
    end
    -- the unfinished last line is looked at again on every wake-up and
    -- counted once complete: it can only be the last match needed
    local partial, cut = sc:partial()
    -- the same prefilter as complete lines get: a pattern on a long
    -- unfinished line at every wake-up could cost quadratic time
    if st.count + (st.counted[i] and 0 or 1) >= p.times and partial ~= ""
        and (p.needle == "" or partial:find(p.needle, 1, true)) then
      local m = line_matches(p, partial, not cut, true, deadline)
      if m == false then return false, too_costly(p, partial) end
      if m then svc.ready_match = m return true, m end
    end
  end
  if p.times > 1 then
    return false, string.format("%d of %d matching lines so far", st.count, p.times)
  end
  return false, "no matching line yet"
end

-------------------------------------------------------------- the kinds
local KINDS = {}

KINDS.output = {
  describe = function(p)
    return string.format("output %q on %s%s", p.banner, p.stream, p.times > 1 and (" (" .. p.times .. " times)") or "")
  end,
  attach = function(p, svc) return output_attach(p, svc, false) end,
  check = output_check,
  fds = function(_, st) return st.watch and { st.watch:fd() } end,
  detach = function(_, st)
    if st.watch then st.watch:close() end
    for _, sc in ipairs(st.scanners) do sc:close() end
  end,
}

local TCP = { host = types.nonempty, port = types.required(types.port) }
function P.tcp(t)
  local o = options.check("mk.probe.tcp", t, TCP)
  o.host = o.host or "127.0.0.1"
  o.poll = true
  return new("tcp", o)
end
-- One TCP connect driven by the wait loop: true, false + why, or nil while
-- in flight (its socket in st.tcp, given up at st.tcp_until: at most 1 s,
-- or the deadline). A connect the network is slow to answer (a SYN a lab
-- partition drops) no longer holds the other waiters and due timers.
-- With `keep`, a connect that succeeded also returns its socket (an fd,
-- the caller's to hand on or close).
local function tcp_attempt(st, host, port, deadline, keep)
  local a = st.tcp
  if not a then
    local budget = deadline and math.max(0.001, math.min(1, deadline - core.now())) or 1
    local r, err = core.tcp_start(host, port, budget, keep)
    if r == true or not r then return r or false, err end
    a, st.tcp, st.tcp_until = r, r, core.now() + budget
  end
  local ok, err = a:result()
  if ok == nil then
    if core.now() < st.tcp_until then return nil end
    ok, err = false, string.format("connect to %s:%d: Connection timed out", host, port)
  end
  local fd = ok and keep and a:take() or nil
  a:close()
  st.tcp, st.tcp_until = nil, nil
  return ok, err, fd
end

local function tcp_release(st)
  if st.tcp then st.tcp:close() st.tcp = nil end
end

-- Is something listening on host:port? A whole connect (at most 1 s),
-- waited for in the loop, so that due timers fire meanwhile.
local function tcp_listening(host, port)
  local loop = require "mkharness.loop"
  local st = {}
  while true do
    local ok = tcp_attempt(st, host, port, nil)
    if ok ~= nil then return ok end
    loop.block({ st.tcp:fd() }, math.max(0, st.tcp_until - core.now()))
  end
end

KINDS.tcp = {
  paced_by_cpu = true, -- an attempt is our own work: its CPU sets the pace
  describe = function(p) return string.format("tcp %s:%d", p.host, p.port) end,
  check = function(p, st, _, deadline)
    local ok, err = tcp_attempt(st, p.host, p.port, deadline)
    if ok == nil then return false, string.format("connecting to %s:%d", p.host, p.port), nil, true end
    return ok, err
  end,
  fds = function(_, st) return st.tcp and { st.tcp:fd() } end,
  wake = function(_, st) return st.tcp and st.tcp_until end,
  detach = function(_, st) tcp_release(st) end,
  precheck = function(p)
    if tcp_listening(p.host, p.port) then
      local pid, cmd = core.port_owner(p.port)
      return true, pid and string.format("port %d is held by pid %d (%s)", p.port, pid, cmd)
        or string.format("something already answers on %s:%d", p.host, p.port)
    end
  end,
}

local UNIX = { socket = types.required(types.nonempty) }
function P.unix(t)
  local o = options.check("mk.probe.unix", t, UNIX)
  if #o.socket > 107 then options.fail("mk.probe.unix", "socket", "is too long for a unix socket path (at most 107 bytes)", o.socket) end
  o.poll = true
  return new("unix", o)
end
KINDS.unix = {
  paced_by_cpu = true, -- an attempt is our own work: its CPU sets the pace
  describe = function(p) return "unix " .. p.socket end,
  attach = function(p) return { watch = dir_watch(p.socket) } end,
  check = function(p, st)
    if st.watch then st.watch:drain() end
    local size, kind = core.size(p.socket)
    if size and kind ~= "socket" then return false, p.socket .. " exists but is a " .. kind .. ", not a socket" end
    local ok, err = core.unix_probe(p.socket)
    if ok or not size then st.soon = nil return ok, err end
    -- bound, not listening yet: listen() usually follows within
    -- microseconds, so try again soon (doubling), not at the polling pace
    st.soon = math.min(defaults.min_pause, (st.soon or 0.00005) * 2)
    return ok, err, nil, nil, st.soon
  end,
  fds = function(_, st) return st.watch and { st.watch:fd() } end,
  detach = function(_, st) if st.watch then st.watch:close() end end,
  precheck = function(p)
    if core.unix_probe(p.socket) then return true, "something already listens on " .. p.socket end
  end,
}

-- Why `path` cannot be looked at when it is not simply missing (say a
-- directory on the way the harness may not search), naming the first such
-- directory; nil when it is just not there (yet).
local function unreachable(path)
  local _, _, why = core.size(path)
  if not why then return nil end
  local dir, prefix = dirname(path), path:sub(1, 1) == "/" and "" or "."
  for part in dirname(path):gmatch("[^/]+") do
    prefix = prefix .. "/" .. part
    if select(3, core.size(prefix .. "/.")) == why then dir = prefix break end
  end
  return string.format("cannot look for %s: %s (directory %s)", path, why:lower(), dir)
end

local FILE = { path = types.required(types.nonempty) }
function P.file(t)
  local o = options.check("mk.probe.file", t, FILE)
  return new("file", o)
end
KINDS.file = {
  describe = function(p) return "file " .. p.path end,
  attach = function(p) return { watch = dir_watch(p.path) } end,
  check = function(p, st)
    if st.watch then st.watch:drain() end
    if core.size(p.path) then return true end
    return false, unreachable(p.path) or (p.path .. " does not exist yet")
  end,
  fds = function(_, st) return st.watch and { st.watch:fd() } end,
  detach = function(_, st) if st.watch then st.watch:close() end end,
  precheck = function(p)
    if core.size(p.path) then return true, p.path .. " already exists" end
  end,
}

function P.notify(t)
  options.check("mk.probe.notify", t, {})
  return new("notify", {})
end
KINDS.notify = {
  describe = function() return "notify READY=1" end,
  attach = function(_, svc)
    local dir = assert(core.run_dir())
    local path = string.format("%s/%s.notify", dir, svc.name)
    local sock, err = core.dgram(path)
    if not sock then error(err, 0) end
    -- sending to a unix socket needs write permission on it: a service
    -- running as another user gets it as its own. Refused (not root), the
    -- spawn says why, better than this would.
    local ids = svc._ids
    if ids then
      local ok, e2, errno = core.chown(path, ids.uid, ids.gid)
      if not ok and errno ~= 1 then
        sock:close()
        error("cannot give the notify socket to " .. ids.who .. ": " .. e2, 0)
      end
    end
    return { sock = sock, env = { NOTIFY_SOCKET = path } }
  end,
  check = function(_, st, svc)
    while true do
      local msg = st.sock:recv()
      if not msg then break end
      local n = core.parse_notify(msg)
      if n.status then svc.notify_status = n.status end
      if n.errno then return false, "the service reported ERRNO=" .. n.errno end
      if n.ready then return true end
    end
    return false, "no READY=1 received yet"
  end,
  fds = function(_, st) return { st.sock:fd() } end,
  detach = function(_, st) st.sock:close() end,
}

function P.exec(t)
  local argv, shown = options.command("mk.probe.exec", t)
  options.check("mk.probe.exec", t, { cmd = types.string, shell = types.string })
  return new("exec", { argv = argv, shown = shown, poll = true })
end
KINDS.exec = {
  describe = function(p) return "exec " .. p.shown end,
  check = function(p, _, _, deadline)
    -- mk.run lives in run.lua, which builds on the executors that use
    -- these probes: looked up when an attempt runs, not when this loads
    local run = require("mkharness.run").run
    local t = { table.unpack(p.argv) }
    t.timeout = deadline and math.max(0.01, deadline - core.now()) or nil
    local ok, res = pcall(run, t)
    if not ok then return false, tostring(res) end
    if res.code == 0 then return true end
    local why = (res.stderr ~= "" and res.stderr or res.stdout):match("[^\n]*")
    return false, string.format("exited %d%s", res.code, why ~= "" and (": " .. why) or "")
  end,
}

function P.fn(f)
  return new("function", { f = f, poll = true })
end
KINDS["function"] = {
  describe = function(p)
    local info = debug.getinfo(p.f, "S")
    return "function at " .. info.short_src .. ":" .. (info.linedefined or "?")
  end,
  check = function(p, _, svc)
    local ok, v = pcall(p.f, svc)
    if not ok then
      -- a mistake in the scenario surfaces; anything else (a refused
      -- mk.get, a failed assert) just means "not ready yet"
      if Error.is(v, "ConfigError") then error(v, 0) end
      return false, "raised: " .. tostring(v)
    end
    if v then return true, v end
    return false, "returned " .. tostring(v)
  end,
}

-- any{ p1, p2, ... }: ready when the first of its members passes. To the
-- wait loop it is an event probe (checked on every wake-up) that also
-- says when it wants the next one (probe:wake): its event members' fds
-- wake the loop, and its polling members are each tried at their own
-- pace, as the loop would try them (P.pause_for, set by init.lua).
function P.any(t)
  local ctx = "mk.probe.any"
  if type(t) ~= "table" or getmetatable(t) ~= nil then
    options.fail(ctx, "probes", "must be a list of probes (mk.probe.*) or functions", t)
  end
  options.check(ctx, t, {})
  local members = {}
  for i, x in ipairs(t) do
    if is_probe(x) then members[i] = x
    elseif type(x) == "function" then members[i] = P.fn(x)
    else options.fail(ctx, "[" .. i .. "]", "must be a probe (mk.probe.*) or a function", x) end
  end
  for k in pairs(t) do
    if math.type(k) == "integer" and not members[k] then
      options.fail(ctx, "[" .. k .. "]", "leaves a hole in the list")
    end
  end
  if #members == 0 then options.fail(ctx, "probes", "is an empty list: give at least one probe") end
  return new("any", { members = members })
end

local function any_interval(svc)
  return svc and svc.interval or 0.1
end

KINDS.any = {
  describe = function(p)
    local parts = {}
    for i, m in ipairs(p.members) do parts[i] = m:describe() end
    return "any of (" .. table.concat(parts, ", ") .. ")"
  end,
  attach = function(p, svc)
    local st = { sub = {}, next_at = {}, busy = {}, interval = any_interval(svc), env = {} }
    for i, m in ipairs(p.members) do
      local ok, sub = pcall(m.attach, m, svc)
      if not ok then
        for j = 1, i - 1 do p.members[j]:detach(st.sub[j]) end
        error(sub, 0)
      end
      st.sub[i], st.next_at[i] = sub, 0
      for k, v in pairs(sub.env or {}) do st.env[k] = v end
    end
    return st
  end,
  check = function(p, st, svc, deadline)
    local why = {}
    local now = core.now()
    for i, m in ipairs(p.members) do
      if not m.poll or st.busy[i] or now >= st.next_at[i] then
        local t0 = core.now()
        local ok, detail, _, busy = m:check(st.sub[i], svc, deadline)
        local after = core.now()
        if ok then return true, detail end
        st.last = st.last or {}
        if busy then -- a request in flight: paced when it ends, by what it cost
          if not st.busy[i] then st.busy[i], st.last[i] = t0, st.last[i] or detail end
        else
          if m.poll then st.next_at[i] = after + P.pause_for(after - (st.busy[i] or t0), st.interval) end
          st.busy[i] = nil
          st.last[i] = detail
        end
      end
      why[#why + 1] = m.kind .. ": " .. tostring(st.last and st.last[i] or "not tried yet")
    end
    return false, table.concat(why, "; ")
  end,
  fds = function(p, st)
    local fds = {}
    for i, m in ipairs(p.members) do
      for _, fd in ipairs(m:fds(st.sub[i]) or {}) do fds[#fds + 1] = fd end
    end
    return fds
  end,
  wake = function(p, st)
    local at
    for i, m in ipairs(p.members) do
      if m.poll and not st.busy[i] then at = math.min(at or math.huge, st.next_at[i]) end
      local w = m:wake(st.sub[i])
      if w then at = math.min(at or math.huge, w) end
    end
    return at
  end,
  detach = function(p, st)
    for i, m in ipairs(p.members) do m:detach(st.sub[i]) end
  end,
  precheck = function(p, svc)
    for _, m in ipairs(p.members) do
      local yes, who = m:precheck(svc)
      if yes then return true, who end
    end
  end,
}

local function status_matcher(ctx, v)
  local function code(x)
    if math.type(x) ~= "integer" or x < 100 or x > 599 then
      options.fail(ctx, "status", "must be an HTTP status 100-599, a list of them, a class like \"2xx\", or a function", x)
    end
    return x
  end
  if v == nil then v = "2xx" end
  if type(v) == "function" then return v, "status accepted by a function" end
  if type(v) == "string" then
    local kind, c = core.parse_status(v)
    if kind == "code" then return status_matcher(ctx, c) end
    if not kind then
      options.fail(ctx, "status", "must be an HTTP status 100-599, a list of them, a class like \"2xx\", or a function", v)
    end
    return function(s) return s // 100 == c end, "status " .. c .. "xx"
  end
  if type(v) == "table" then
    if #v == 0 then options.fail(ctx, "status", "is an empty list") end
    local set = {}
    for _, x in ipairs(v) do set[code(x)] = true end
    return function(s) return set[s] == true end, "status in {" .. table.concat(v, ",") .. "}"
  end
  local c = code(v)
  return function(s) return s == c end, "status " .. c
end
P.status_matcher = status_matcher

local function header_list(ctx, h)
  local list = {}
  for k, v in pairs(h) do
    if math.type(k) == "integer" then
      if type(v) ~= "string" or not v:find(":") then options.fail(ctx, "headers", "list entries must be \"Name: value\" strings", v) end
      list[#list + 1] = v
    elseif type(k) == "string" and (type(v) == "string" or type(v) == "number") then
      if k:find("[%s:%c]") then options.fail(ctx, "headers", "has a bad header name", k) end
      if tostring(v):find("[\r\n]") then options.fail(ctx, "headers." .. k, "must not contain a line break", v) end
      list[#list + 1] = k .. ": " .. tostring(v)
    else
      options.fail(ctx, "headers", "must map names to string values", v)
    end
  end
  table.sort(list)
  return list
end
P.header_list = header_list

local HTTP = {
  url = types.required(types.nonempty), status = function(_, _, v) return v end, method = types.nonempty,
  headers = types.table, body = types.string, insecure = types.boolean,
}
function P.http(t, ctx)
  ctx = ctx or "mk.probe.http"
  local o = options.check(ctx, t, HTTP)
  o.parsed = options.url(ctx, "url", o.url)
  o.match, o.status_desc = status_matcher(ctx, o.status)
  o.method = (o.method or "HEAD"):upper()
  if not o.method:match("^[A-Z]+$") then options.fail(ctx, "method", "must be an HTTP method name like \"GET\"", o.method) end
  o.header_list = header_list(ctx, o.headers or {})
  o.insecure = o.insecure or false
  o.poll = true
  return new("http", o)
end
-- An attempt is a request in flight (core.http_start): check() starts one
-- and returns at once; until the answer, check() says busy (its fourth
-- result) and the wait loop checks again when its fd (curl's sockets) is
-- readable or its wake time (curl's timer) has come. A slow endpoint thus
-- holds no other waiter.
KINDS.http = {
  paced_by_cpu = true, -- an attempt is our own work: its CPU sets the pace
  describe = function(p) return string.format("http %s %s (%s)", p.method, p.url, p.status_desc) end,
  check = function(p, st, _, deadline)
    local a = st.attempt
    if not a then
      -- TCP first: refused connections are answered in microseconds this
      -- way. The connected socket carries the request: the service sees
      -- one connection per attempt, not an empty one and then another.
      local ok, err, sock = tcp_attempt(st, p.parsed.host, p.parsed.port, deadline, true)
      if ok == nil then return false, string.format("connecting to %s:%d", p.parsed.host, p.parsed.port), nil, true end
      if not ok then return false, err end
      local left = deadline and math.max(0.001, deadline - core.now()) or 30
      local herr
      a, herr = core.http_start {
        url = p.url, method = p.method, headers = p.header_list, body = p.body,
        insecure = p.insecure, timeout = math.min(left, 30), socket = sock,
      }
      if not a then return false, herr end
      st.attempt = a
    end
    local status, herr = a:perform()
    if status == nil then return false, "no answer yet to " .. p.method .. " " .. p.url, nil, true end
    a:close()
    st.attempt = nil
    if not status then return false, herr end
    if p.match(status) then return true, "status " .. status end
    return false, "answered status " .. status, true -- answered: back off
  end,
  fds = function(_, st)
    if st.attempt then return { st.attempt:fd() } end
    return st.tcp and { st.tcp:fd() }
  end,
  wake = function(_, st)
    if st.attempt then return st.attempt:wake() end
    return st.tcp and st.tcp_until
  end,
  detach = function(_, st)
    if st.attempt then st.attempt:close() st.attempt = nil end
    tcp_release(st)
  end,
  precheck = function(p)
    if not tcp_listening(p.parsed.host, p.parsed.port) then return false end
    local res = core.http_request { url = p.url, method = p.method, headers = p.header_list,
      body = p.body, insecure = p.insecure, timeout = 2, max_body = 0 }
    if res and p.match(res.status) then
      local pid, cmd = core.port_owner(p.parsed.port)
      return true, string.format("%s already answers %d%s", p.url, res.status,
        pid and string.format(" (port %d held by pid %d: %s)", p.parsed.port, pid, cmd) or "")
    end
  end,
}

for kind, impl in pairs(KINDS) do
  impl.kind = kind
end

function Probe:describe() return KINDS[self.kind].describe(self) end
function Probe:attach(svc) local f = KINDS[self.kind].attach return f and f(self, svc) or {} end
function Probe:check(st, svc, deadline) return KINDS[self.kind].check(self, st, svc, deadline) end
function Probe:fds(st) local f = KINDS[self.kind].fds return f and f(self, st) end
function Probe:detach(st) local f = KINDS[self.kind].detach if f then f(self, st) end end
-- when the wait loop must wake for this probe at the latest (nil: events only)
function Probe:wake(st) local f = KINDS[self.kind].wake return f and f(self, st) end
function Probe:paced_by_cpu() return KINDS[self.kind].paced_by_cpu or false end
function Probe:precheck(svc)
  local f = KINDS[self.kind].precheck
  if f then return f(self, svc) end
end

-- The probes in a list, with the members of any{} in place of it.
function P.leaves(list, out)
  out = out or {}
  for _, p in ipairs(list) do
    if p.kind == "any" then P.leaves(p.members, out) else out[#out + 1] = p end
  end
  return out
end

-- Normalize a `ready` value: a probe, a function, or a list of them.
function P.list(ctx, v)
  if v == nil then return {} end
  if is_probe(v) then return { v } end
  if type(v) == "function" then return { P.fn(v) } end
  if type(v) == "table" and getmetatable(v) == nil then
    local out = {}
    for i, x in ipairs(v) do
      if is_probe(x) then out[i] = x
      elseif type(x) == "function" then out[i] = P.fn(x)
      else options.fail(ctx, "ready[" .. i .. "]", "must be a probe (mk.probe.*) or a function", x) end
    end
    if #out == 0 then options.fail(ctx, "ready", "is an empty list") end
    return out
  end
  options.fail(ctx, "ready", "must be a probe (mk.probe.*), a function, or a list of them", v)
end

return P
