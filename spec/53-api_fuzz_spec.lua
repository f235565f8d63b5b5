-- A random API fuzzer: every public function and method called with odd
-- argument types and values from a fixed seed (in the test's name, so a
-- failure replays; MKH_FUZZ_SEED picks another). What must hold: no crash,
-- and every error raised by mk.* is a harness error (mk.is_error) or the
-- fuzzer's own callback error passed through; a raw Lua error ("attempt to
-- index", "bad argument") fails and prints the call. mk.core is internal:
-- there only "no crash" holds (its argument errors are plain Lua errors).
local H = require "spec.helpers"
local mk = require "mkharness"
local core = mk.core
local FX = H.fx

local SEED = tonumber(os.getenv("MKH_FUZZ_SEED") or "") or 20261129
local CALLS = 3000
local MARK = "fuzz-callback-error" -- raised by the fuzzer's own callbacks

local function len_of(n) return setmetatable({}, { __len = function() return n end }) end

-- Values of every type, with the odd ones weighted in.
local VALUES = {
  nil, true, false, 0, 1, -1, 5, 0.5, 2 ^ 53, math.maxinteger, math.mininteger,
  0 / 0, 1 / 0, -1 / 0, 1e-300, -0.0,
  "", "x", "ready", "%", "[", "(", "%b", "%f", "a\0b", "TERM", "KILL", "2xx", "GET",
  "http://127.0.0.1:1/", ("x"):rep(100000), ("%"):rep(1001),
  {}, { 1, 2, 3 }, { "a", "b" }, { timeout = 0.01 }, { x = 1 }, { timeout = -1 },
  len_of(-1), len_of(math.maxinteger), len_of(0),
  setmetatable({}, { __index = function() error(MARK, 0) end }),
  setmetatable({ 1 }, { __len = function() return 2 ^ 60 end, __index = function(_, k) return k end }),
  -- option tables that pass the first checks and probe the deeper ones
  { timeout = 0 / 0 }, { timeout = 2 ^ 53 }, { signal = "NOPE" }, { signal = 2 ^ 40 }, { stream = 1 },
  { banner = "(" }, { banner = "x", plain = true, stream = "stderr" }, { port = 2 ^ 53 }, { port = 0 / 0 },
  { url = "http://127.0.0.1:1/", status = {} }, { url = "http://127.0.0.1:1/", status = { 99 } },
  { url = "http://[::1", timeout = 0.01 }, { "x", cmd = "y" }, { cmd = "'unterminated" }, { shell = "" },
  { headers = { 1 }, url = "http://127.0.0.1:1/", timeout = 0.01 }, { env = { [1] = "x" } }, { env = { A = {} } },
  { FX, name = ("n"):rep(300) }, { FX, ready = {} }, { FX, ready = { 1 } }, { FX, cwd = "/nonexistent", timeout = 0.01 },
  { upstream = "127.0.0.1:1", listen = 0 / 0 }, { upstream = ("h"):rep(300) .. ":1" }, { jitter = 1e300 },
  { socket = ("s"):rep(200) }, { path = "" }, { file = "\0" }, { expected_returncode = 2 ^ 53 }, { [0] = "x" },
  { [-1] = "x" }, { [1.5] = "x" }, { [true] = 1 }, { FX, stdout = "null", ready = mk.probe.output { banner = "x" } },
  tostring, function() return true end, function() return false end, function() error(MARK, 0) end,
  function() error({ MARK }) end,
  coroutine.create(function() end), io.stdout,
}
local NVALUES = 1 -- the list has a hole (nil): # would not do
while VALUES[NVALUES] ~= io.stdout do NVALUES = NVALUES + 1 end

local function show(v)
  if type(v) == "string" then
    return #v > 30 and string.format("string(%d bytes) %q...", #v, v:sub(1, 10)) or string.format("%q", v)
  elseif type(v) == "table" then
    local mt = getmetatable(v)
    return mt and "table with metatable" or "table"
  end
  return tostring(v)
end

describe("API fuzz", function()
  H.leakcheck()

  it(string.format("random calls from seed %d (MKH_FUZZ_SEED=%d replays)", SEED, SEED), function()
    math.randomseed(SEED)
    local rnd = math.random
    local function value()
      return VALUES[rnd(NVALUES)]
    end
    -- a small timeout where one matters, so no call waits long
    local function opts_small(v)
      if v == nil or (type(v) == "table" and next(v) == nil) then return { timeout = 0.02 } end
      if type(v) == "table" and getmetatable(v) == nil and type(v.timeout) == "number" and v.timeout > 0.02 then
        return { timeout = 0.02 }
      end
      return v
    end

    -- the objects methods are called on
    local started = mk.output { FX, "--print", "ready", "--forever", banner = "ready", stop_timeout = 1 }
    local fresh = mk.process { FX, "--forever", stop_timeout = 1 }
    local g1, g2 = mk.process { FX, "--forever" }, mk.process { FX, "--forever" }
    local group = mk.group { g1, g2 }
    local proxy = mk.proxy { upstream = "127.0.0.1:1" }
    local lab_ok, lab = pcall(mk.lab, { hosts = { "n1", "n2" } }) -- a machine without user namespaces fuzzes the rest
    if not lab_ok then lab = nil end
    local objects = { started, fresh, g1, g2 }
    local function restore()
      for _, s in ipairs { fresh, g1, g2 } do
        if s:running() then s:kill() end
      end
      if not started:running() then
        started.timeout = 10
        started:start()
      end
      pcall(started.resume, started)
      started.timeout = 0.02
    end
    started.timeout = 10
    started:start()
    started.timeout = 0.02

    local function svc_method(name, shape)
      return { "svc:" .. name, function(s, ...) return s[name](s, ...) end, shape, self = true }
    end
    -- { label, fn, argument shaper, self = calls on an executor, core = internal }
    local targets = {
      svc_method("start"), svc_method("stop"), svc_method("kill"), svc_method("restart"),
      svc_method("running"), svc_method("pid"), svc_method("exit_code"), svc_method("signal"),
      svc_method("pause"), svc_method("resume"), svc_method("stopped"), svc_method("paused"),
      svc_method("wait_exit", function(a) return opts_small(a) end),
      svc_method("output"), svc_method("err_output"),
      svc_method("wait_output", function(a, b) return a, opts_small(b) end),
      svc_method("wait_for"),
      { "tostring(svc)", function(s) return tostring(s) end, self = true },
      { "group:start", function() return group:start() end },
      { "group:stop", function() return group:stop() end },
      { "mk.group", mk.group },
      { "mk.wait_until", mk.wait_until, function(a, b) return a, opts_small(b) end },
      { "mk.sleep", mk.sleep, function(a) if type(a) == "number" and a > 0.01 then a = 0.001 end return a end },
      { "mk.now", mk.now }, { "mk.free_port", mk.free_port }, { "mk.is_error", mk.is_error },
      { "mk.run", mk.run }, { "mk.get", mk.get }, { "mk.http_request", mk.http_request },
      { "mk.proxy", function(t) local p = mk.proxy(t) p:stop() return p end },
    }
    for _, kind in ipairs { "process", "executor", "output", "tcp", "unix", "http", "pidfile", "notify" } do
      targets[#targets + 1] = { "mk." .. kind, mk[kind] }
    end
    for _, kind in ipairs { "output", "tcp", "unix", "http", "file", "notify", "exec" } do
      targets[#targets + 1] = { "mk.probe." .. kind, mk.probe[kind] }
    end
    for _, m in ipairs { "start", "stop", "running", "listening", "latency", "bandwidth", "blackhole", "slicer", "limit_data",
      "down", "up", "reset", "clear", "cut", "stats" } do
      targets[#targets + 1] = { "proxy:" .. m, function(...) return proxy[m](proxy, ...) end }
    end
    targets[#targets + 1] = { "tostring(proxy)", function() return tostring(proxy) end }
    targets[#targets + 1] = { "mk.lab", function(t) local l = mk.lab(t) l:close() return l end }
    if lab then
      for _, m in ipairs { "ip", "hosts", "partition", "isolate", "drop", "latency", "loss", "heal", "cuts", "keeper" } do
        targets[#targets + 1] = { "lab:" .. m, function(...) return lab[m](lab, ...) end }
      end
      targets[#targets + 1] = { "tostring(lab)", function() return tostring(lab) end }
    end
    -- mk.core: all but what is destructive by design (teardown, rmtree,
    -- mkdir, keep, run_dir, dgram's unlink) or resolves host names
    local small = function(a, b) if type(b) ~= "number" or b ~= b or b > 0.01 or b < 0 then b = 0 end return a, b end
    for _, f in ipairs { "signum", "signame", "split", "parse_url", "parse_status", "parse_notify",
      "environ", "run_id", "now", "tail", "read", "size", "leftovers", "fds", "interrupted",
      "port_owner", "unix_probe", "scanner", "watch", "http_request", "spawn" } do
      targets[#targets + 1] = { "core." .. f, core[f], core = true }
    end
    targets[#targets + 1] = { "core.poll", core.poll, small, core = true }
    targets[#targets + 1] = { "core.sleep", core.sleep, function(a) return select(2, small(nil, a)) end, core = true }

    local calls, raised = 0, 0
    local function fuzz()
    for _ = 1, CALLS do
      local t = targets[rnd(#targets)]
      local args = { n = rnd(0, 3) }
      for i = 1, args.n do args[i] = value() end
      if t[3] then
        local shaped = table.pack(t[3](table.unpack(args, 1, args.n)))
        args = shaped
        args.n = math.max(shaped.n, args.n)
      end
      local on = ""
      local call_args = args
      if t.self then
        local obj = objects[rnd(#objects)]
        on = " on " .. (obj == started and "a started service" or "a never-started service")
        call_args = table.pack(obj, table.unpack(args, 1, args.n))
      end
      local shown = {}
      for i = 1, args.n do shown[i] = show(args[i]) end
      local desc = string.format("%s(%s)%s", t[1], table.concat(shown, ", "), on)
      calls = calls + 1
      -- a call that loops (in Lua) is cut off and reported
      local deadline = core.now() + 5
      debug.sethook(function()
        if core.now() > deadline then error("fuzz: still running after 5 s", 0) end
      end, "", 100000)
      local ok, err = pcall(t[2], table.unpack(call_args, 1, call_args.n))
      debug.sethook()
      if not ok then
        raised = raised + 1
        local fine = mk.is_error(err)
          or (type(err) == "string" and err:find(MARK, 1, true))
          or (type(err) == "table" and err[1] == MARK)
          or (t.core and type(err) == "string")
        assert(fine, "seed " .. SEED .. ": " .. desc .. " raised a non-harness error: " .. tostring(err))
      end
      restore()
    end
    end
    -- stop what it started even when a call failed the test
    local ok, err = pcall(fuzz)
    debug.sethook()
    group:stop()
    for _, s in ipairs(objects) do s:kill() end
    proxy:stop()
    if lab then lab:close() end
    if not ok then error(err, 0) end
    assert(calls == CALLS and raised > 0)
  end)
end)
