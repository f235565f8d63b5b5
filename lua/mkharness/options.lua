-- Option checking: every constructor's table is validated here, in one
-- place, before anything starts (bad input is a ConfigError naming the
-- option, never a failure later). Unknown keys are errors.
local core = require "mkharness.core"
local Error = require "mkharness.errors"

local O = {}

local function describe(v)
  local t = type(v)
  if t == "string" then
    local s = #v > 40 and v:sub(1, 37) .. "..." or v
    return string.format("string %q", s)
  elseif t == "number" or t == "boolean" then return t .. " " .. tostring(v)
  end
  return t
end
O.describe = describe

local function fail(ctx, key, msg, v)
  local text = string.format("%s: option '%s' %s", ctx, key, msg)
  if v ~= nil or msg:find("got$") then text = text .. ", got " .. describe(v) end
  Error.raise("ConfigError", { message = text, option = key })
end
O.fail = fail

local function distance(a, b)
  if math.abs(#a - #b) > 3 then return 99 end
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- Checkers: each returns the normalized value or calls fail().
local T = {}
O.types = T

function T.string(ctx, k, v)
  if type(v) ~= "string" then fail(ctx, k, "must be a string", v) end
  return v
end
function T.nonempty(ctx, k, v)
  if type(v) ~= "string" or v == "" then fail(ctx, k, "must be a non-empty string", v) end
  if v:find("\0", 1, true) then fail(ctx, k, "must not contain a NUL byte") end
  return v
end
-- A service name becomes part of its log files' names and of the
-- MKHARNESS_SERVICE=<run id>/<name> token the sweep matches exactly, held in
-- 127 bytes in C: 18 + a run id of up to 16 + 1 leave 92, less room for the
-- "-N" that makes a reused name unique.
O.NAME_MAX = 80
function T.service_name(ctx, k, v)
  T.nonempty(ctx, k, v)
  if #v > O.NAME_MAX then
    fail(ctx, k, string.format("is too long: %d bytes, at most %d (it names the log files and the " ..
      "MKHARNESS_SERVICE token, 127 bytes in all)", #v, O.NAME_MAX), v)
  end
  return v
end
-- a checker that only wants a Lua type
local function of_type(tname, msg)
  return function(ctx, k, v)
    if type(v) ~= tname then fail(ctx, k, msg, v) end
    return v
  end
end
T.boolean = of_type("boolean", "must be true or false")
T.table = of_type("table", "must be a table")
T.func = of_type("function", "must be a function")
function T.seconds(ctx, k, v)
  if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then
    fail(ctx, k, "must be a number of seconds >= 0", v)
  end
  return v
end
function T.timeout(ctx, k, v)
  if v == false then return false end
  if type(v) ~= "number" or v ~= v or v <= 0 then
    fail(ctx, k, "must be a positive number of seconds, or false for no limit", v)
  end
  if v == math.huge then return false end
  return v
end
function T.interval(ctx, k, v)
  if type(v) ~= "number" or v ~= v or v <= 0 or v > 3600 then
    fail(ctx, k, "must be a positive number of seconds (at most 3600)", v)
  end
  return v
end
function T.signal(ctx, k, v)
  if type(v) ~= "string" and math.type(v) ~= "integer" then
    fail(ctx, k, "must be a signal name like \"TERM\" or a number", v)
  end
  local n = core.signum(v)
  if not n then fail(ctx, k, "is not a known signal", v) end
  return n
end
function T.returncode(ctx, k, v)
  if math.type(v) ~= "integer" or v < -64 or v > 255 then
    fail(ctx, k, "must be an integer exit code (0-255, or -N for death by signal N)", v)
  end
  return v
end
-- A schema entry that must be given: types.required(types.port), with an
-- optional hint for the message (' ("host:port")').
local Required = { __call = function(self, ctx, k, v) return self.check(ctx, k, v) end }
function T.required(check, hint)
  return setmetatable({ check = check, required = true, hint = hint and (" " .. hint) or "" }, Required)
end
function T.natural(ctx, k, v)
  if math.type(v) ~= "integer" or v < 0 then fail(ctx, k, "must be an integer >= 0", v) end
  return v
end
function T.env(ctx, k, v)
  if type(v) ~= "table" then fail(ctx, k, "must be a table of NAME = value (string) or false", v) end
  local out = {}
  for name, val in pairs(v) do
    if type(name) ~= "string" or name == "" or name:find("[=%z]") then
      fail(ctx, k, "has a bad variable name " .. describe(name) .. " (names are non-empty strings without '=')")
    end
    if type(val) == "number" then val = tostring(val) end
    if val ~= false and (type(val) ~= "string" or val:find("\0", 1, true)) then
      fail(ctx, k .. "." .. name, "must be a string (to set) or false (to remove)", val)
    end
    out[name] = val
  end
  return out
end
-- A user or group: a name, or a number (uid/gid). Whether it exists is
-- O.identity's question.
local function id_checker(what)
  return function(ctx, k, v)
    if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
    if math.type(v) == "integer" then
      if v < 0 or v >= 0xffffffff then fail(ctx, k, "must be a " .. what .. " name or a number 0-4294967294", v) end
      return tostring(v)
    end
    if type(v) ~= "string" or v == "" or v:find("[%z:/\n]") then
      fail(ctx, k, "must be a " .. what .. " name or a number", v)
    end
    return v
  end
end
T.user = id_checker("user")
T.group = id_checker("group")

-- A file mode: an octal string ("755", "0755", "1777") or a number. Lua has
-- no octal literals, so 755 would be the decimal 755 (01363): a number must
-- be a plain permission set (at most 511, i.e. 0777); other bits, by string.
function T.mode(ctx, k, v)
  if type(v) == "string" then
    local digits = v:match("^0?o?([0-7]+)$")
    local n = digits and #digits <= 5 and tonumber(digits, 8)
    if not n or n > 4095 then fail(ctx, k, "must be an octal mode like \"755\" (at most \"7777\")", v) end
    return n
  end
  if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" or v < 0 then
    fail(ctx, k, "must be an octal string like \"755\" or a number", v)
  end
  if v > 511 then
    fail(ctx, k, string.format("is more than 511 (0777): Lua has no octal literals, so %d is decimal; " ..
      "give the mode as a string (mode = \"%d\") or as tonumber(\"%d\", 8)", v, v, v), v)
  end
  return v
end

function T.stream(ctx, k, v)
  if v ~= "capture" and v ~= "inherit" and v ~= "null" then
    fail(ctx, k, 'must be "capture", "inherit" or "null"', v)
  end
  return v
end
function T.port(ctx, k, v)
  if math.type(v) ~= "integer" and type(v) == "number" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" or v < 1 or v > 65535 then
    fail(ctx, k, "must be an integer port 1-65535", v)
  end
  return v
end
function T.count(ctx, k, v)
  if math.type(v) ~= "integer" and type(v) == "number" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" or v < 1 then fail(ctx, k, "must be an integer >= 1", v) end
  return v
end
-- A mark of where a service's output ends (svc:mark()): which service,
-- which of its starts, and the capture files' sizes then.
O.Mark = { __name = "mkharness.mark" }
function O.Mark.__tostring(m)
  return string.format("mkharness.mark of %s (stdout %s, stderr %s)", m.name, m.stdout or "-", m.stderr or "-")
end
function T.since(ctx, k, v)
  if v == "start" or v == "now" or getmetatable(v) == O.Mark then return v end
  fail(ctx, k, 'must be "start", "now" or a mark from svc:mark()', v)
end
-- A mark is only good for the start of the service it was taken of: a
-- restart begins the capture files anew.
function O.own_mark(ctx, k, m, svc, start)
  if m.service ~= svc then
    fail(ctx, k, string.format("is a mark of another service (%s), not of %s", m.name, svc.name))
  end
  if m.start ~= start then
    fail(ctx, k, "is a mark of an earlier start (the service was restarted since); take a new one with mark()")
  end
  return m
end
function T.enum(...)
  local allowed = { ... }
  local set = {}
  for _, a in ipairs(allowed) do set[a] = true end
  return function(ctx, k, v)
    if not set[v] then
      fail(ctx, k, "must be one of " .. '"' .. table.concat(allowed, '", "') .. '"', v)
    end
    return v
  end
end
-- Lua reports a malformed pattern only when matching reaches the bad spot,
-- so walk the whole syntax here (as lstrlib.c's matcher would).
-- The Lua pattern grammar, written once: `p` as a list of items, or nil
-- and why it is not a valid pattern (what string.find would only say when
-- a match reaches that point, or never: '|'). An item is { kind = "start",
-- "end", "char" (lit = the character), "class", "set", "any", "open",
-- "close", "pos", "balance", "frontier" or "backref", quant = "*", "+",
-- "-", "?" or nil }. The output probe reads it for the literal every match
-- must contain and for a final `$`.
local CLASSES = "acdglpsuwxACDGLPSUWX"
local function pattern_items(p)
  local items, i, n = {}, 1, #p
  local caps, stack = {}, {} -- caps[k]: capture k is closed; stack: open ones
  local function set_end(j) -- j at the char after '['; returns the index after ']'
    if p:sub(j, j) == "^" then j = j + 1 end
    repeat
      if j > n then return nil end
      local c = p:sub(j, j)
      j = j + 1
      if c == "%" then
        if j > n then return nil end
        j = j + 1
      end
    until p:sub(j, j) == "]"
    return j + 1
  end
  if p:sub(1, 1) == "^" then items[1] = { kind = "start" } i = 2 end
  while i <= n do
    local c = p:sub(i, i)
    local item
    if c == "(" then
      if p:sub(i + 1, i + 1) == ")" then -- position capture
        caps[#caps + 1] = true
        item, i = { kind = "pos" }, i + 2
      else
        caps[#caps + 1] = false
        stack[#stack + 1] = #caps
        item, i = { kind = "open" }, i + 1
      end
    elseif c == ")" then
      if #stack == 0 then return nil, "invalid pattern capture (unmatched ')')" end
      caps[table.remove(stack)] = true
      item, i = { kind = "close" }, i + 1
    elseif c == "$" and i == n then
      item, i = { kind = "end" }, i + 1
    elseif c == "%" then
      local d = p:sub(i + 1, i + 1)
      if d == "" then return nil, "malformed pattern (ends with '%')" end
      if d == "b" then
        if i + 3 > n then return nil, "missing arguments to '%b'" end
        item, i = { kind = "balance" }, i + 4
      elseif d == "f" then
        if p:sub(i + 2, i + 2) ~= "[" then return nil, "missing '[' after '%f' in pattern" end
        local e = set_end(i + 3)
        if not e then return nil, "malformed pattern (missing ']')" end
        item, i = { kind = "frontier" }, e
      elseif d:match("%d") then
        if not caps[tonumber(d)] then return nil, "invalid capture index %" .. d end
        item, i = { kind = "backref" }, i + 2
      elseif CLASSES:find(d, 1, true) then
        item, i = { kind = "class" }, i + 2
      else
        item, i = { kind = "char", lit = d }, i + 2
      end
    elseif c == "[" then
      local e = set_end(i + 1)
      if not e then return nil, "malformed pattern (missing ']')" end
      item, i = { kind = "set" }, e
    elseif c == "." then
      item, i = { kind = "any" }, i + 1
    elseif c == "|" then
      -- mirakuru's banners are regexes: "a|b" would silently never match
      return nil, "'|' is not alternation in a Lua pattern: use mk.probe.any{ ... } for either of two banners, " ..
        "plain = true for literal text, or '%|' for a literal '|'"
    else
      item, i = { kind = "char", lit = c }, i + 1
    end
    local k = item.kind
    if k == "char" or k == "class" or k == "set" or k == "any" then
      local q = p:sub(i, i)
      if q == "*" or q == "+" or q == "-" or q == "?" then item.quant, i = q, i + 1 end
    end
    items[#items + 1] = item
  end
  if #stack > 0 then return nil, "unfinished capture (missing ')')" end
  if #caps > 32 then return nil, "too many captures (at most 32)" end
  return items
end
O.pattern_items = pattern_items

local function pattern_error(p)
  local _, why = pattern_items(p)
  return why
end
O.pattern_error = pattern_error

function T.pattern(ctx, k, v)
  T.nonempty(ctx, k, v)
  local ok, err = pcall(string.find, "", v)
  local why = not ok and tostring(err):gsub("^.-: ", "") or pattern_error(v)
  if why then fail(ctx, k, "is not a valid Lua pattern (" .. why .. ")", v) end
  return v
end

-- The options argument itself: nil means none given; anything but a plain
-- table is refused here, once, so no caller iterates a number or a string.
-- The error's `option` is "opts": the options argument as a whole.
local function options_table(ctx, t)
  if t == nil then return {} end
  if type(t) ~= "table" then
    Error.raise("ConfigError", { option = "opts",
      message = string.format("%s: takes a table of options, got %s", ctx, describe(t)) })
  end
  return t
end

-- check(ctx, t, schema, skip) -> copy of t's keyed options, validated.
-- schema: name -> checker; `skip` names keys handled elsewhere. t may be nil.
function O.check(ctx, t, schema, skip)
  t = options_table(ctx, t)
  local out = {}
  for k, v in pairs(t) do
    if math.type(k) == "integer" then -- luacheck: ignore 542
      -- array part: handled by the caller (argv)
    elseif type(k) ~= "string" then
      fail(ctx, tostring(k), "is not an option name (keys are strings)")
    elseif schema[k] then
      out[k] = schema[k](ctx, k, v)
    elseif not (skip and skip[k]) then
      local best, bd = nil, 3
      for name in pairs(schema) do
        local d = distance(k, name)
        if d < bd then best, bd = name, d end
      end
      Error.raise("ConfigError", {
        option = k,
        message = string.format("%s: unknown option '%s'%s", ctx, k,
          best and string.format(" (did you mean '%s'?)", best) or ""),
      })
    end
  end
  -- what must be given: named once, in the schema (types.required)
  for name, c in pairs(schema) do
    if type(c) == "table" and c.required and out[name] == nil then fail(ctx, name, "is required" .. c.hint) end
  end
  return out
end

-- The command, given in exactly one of three ways: an argv list, cmd = or shell =.
-- Returns argv (a list of strings) and its display form.
function O.command(ctx, t)
  t = options_table(ctx, t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) == "integer" then
      if k < 1 then fail(ctx, tostring(k), "is not a valid argv index") end
      n = math.max(n, k)
    end
  end
  local given = (n > 0 and 1 or 0) + (t.cmd ~= nil and 1 or 0) + (t.shell ~= nil and 1 or 0)
  if given == 0 then
    Error.raise("ConfigError", { message = ctx .. ": no command given: use { \"prog\", \"arg\", ... }, cmd = \"...\" or shell = \"...\"" })
  elseif given > 1 then
    Error.raise("ConfigError", { message = ctx .. ": give the command in exactly one way: an argv list, cmd = or shell =" })
  end
  if n > 0 then
    local argv = {}
    for i = 1, n do
      local a = t[i]
      if type(a) == "number" then a = math.type(a) == "integer" and tostring(a) or string.format("%.14g", a) end
      if type(a) ~= "string" then fail(ctx, "[" .. i .. "]", "(argv element) must be a string or number", t[i]) end
      if a:find("\0", 1, true) then fail(ctx, "[" .. i .. "]", "(argv element) must not contain a NUL byte") end
      argv[i] = a
    end
    if argv[1] == "" then fail(ctx, "[1]", "(the program) must not be empty") end
    local shown = {}
    for i, a in ipairs(argv) do
      shown[i] = a:find("^[%w%%+,./:=@_-]+$") and a or "'" .. a:gsub("'", "'\\''") .. "'"
    end
    return argv, table.concat(shown, " ")
  elseif t.cmd ~= nil then
    T.nonempty(ctx, "cmd", t.cmd)
    local argv, err = core.split(t.cmd)
    if not argv then fail(ctx, "cmd", "cannot be split into words: " .. err) end
    if #argv == 0 then fail(ctx, "cmd", "has no words", t.cmd) end
    return argv, t.cmd
  else
    T.nonempty(ctx, "shell", t.shell)
    return { "/bin/sh", "-c", t.shell }, t.shell
  end
end

-- Who a service runs as, from the checked `user` and `group` options:
-- nil when neither is given, else core.ids' answer (uid, gid, groups,
-- user, group, home) plus `who` for messages and `user_given`. Looked up
-- now, so a name that does not exist fails at construction. `user_key`
-- names the user's option when it is not "user" (mk.tmpdir's owner).
function O.identity(ctx, user, group, user_key)
  if user == nil and group == nil then return nil end
  local ids, err, which = core.ids(user, group)
  if not ids then fail(ctx, which == "user" and user_key or which, err, which == "user" and user or group) end
  ids.user_given = user ~= nil
  ids.who = user and string.format("user '%s'", ids.user ~= "" and ids.user or user) or ""
  if group then
    local g = string.format("group '%s'", ids.group ~= "" and ids.group or group)
    ids.who = user and (ids.who .. " and " .. g) or g
  end
  return ids
end

-- URL: scheme, host, port (default 80/443), path with query (C parser,
-- fuzzed). Raises a ConfigError naming the option.
function O.url(ctx, k, v)
  T.nonempty(ctx, k, v)
  local u, err = core.parse_url(v)
  if not u then fail(ctx, k, err, v) end
  u.url = v
  return u
end

return O
