-- The busted integration: luassert extensions, failing tests' context, scoping.
local H = require "spec.helpers"
local mk = require "mkharness.busted"

describe("mkharness.busted assertions", function()
  H.leakcheck()

  it("assert.running / assert.not_running follow the service", function()
    local svc <close> = mk.process { H.fx, "--forever" }
    assert.not_running(svc)
    svc:start()
    assert.running(svc)
    assert.is_not.running(mk.process { H.fx })
    local ok, err = pcall(assert.not_running, svc)
    assert.is_false(ok)
    assert.matches("not to be running", tostring(err), 1, true)
    svc:stop()
    assert.not_running(svc)
  end)

  it("assert.running rejects what is not an executor", function()
    assert.has_error(function() assert.running({}) end)
  end)

  it("assert.error_kind checks the kind of a harness error", function()
    assert.error_kind("ConfigError", function() mk.process { H.fx, bogus = 1 } end)
    assert.error_kind("TimeoutExpired", function() mk.wait_until(function() return false end, { timeout = 0.05 }) end)
    local ok, err = pcall(assert.error_kind, "SpawnError", function() mk.process { H.fx, bogus = 1 } end)
    assert.is_false(ok)
    assert.matches("ConfigError", tostring(err), 1, true)
    ok = pcall(assert.error_kind, "SpawnError", function() end)
    assert.is_false(ok)
    -- a plain Lua error is not a harness error
    ok = pcall(assert.error_kind, "ExecutorError", function() error("boom") end)
    assert.is_false(ok)
  end)

  it("assert.eventually waits for a condition", function()
    local t0 = mk.now()
    assert.eventually(function() return mk.now() - t0 > 0.05 end, { timeout = 5 })
    local ok, err = pcall(assert.eventually, function() return false end, { timeout = 0.05, message = "never true" })
    assert.is_false(ok)
    assert.matches("never true", tostring(err), 1, true)
  end)

  it("assert.eventually reports the first and the last error fn raised", function()
    local n = 0
    local ok, err = pcall(assert.eventually, function()
      n = n + 1
      error(n == 1 and "connection refused" or ("still warming up, try " .. n))
    end, { timeout = 0.2, interval = 0.01 })
    assert.is_false(ok)
    err = tostring(err)
    assert.is_true(n >= 3)
    assert.matches("first error %(attempt 1 of %d+%): [^\n]*connection refused", err)
    assert.matches("last error %(attempt %d+ of %d+%): [^\n]*still warming up, try %d+", err)
    -- an error then success passes: errors only mean "not yet"
    n = 0
    assert.eventually(function()
      n = n + 1
      if n < 3 then error("not yet") end
      return "done"
    end, { timeout = 5, interval = 0.001 })
    -- one error only: said once
    ok, err = pcall(assert.eventually, function()
      n = n + 1
      if n == 4 then error("the one failure") end
      return false
    end, { timeout = 0.1, interval = 0.01 })
    assert.is_false(ok)
    assert.matches("first error (attempt 1 of", tostring(err), 1, true)
    assert.is_nil(tostring(err):find("last error", 1, true))
  end)

  it("assert.eventually{ falsy = true } waits for a falsy value", function()
    local t0 = mk.now()
    assert.eventually(function() return mk.now() - t0 < 0.05 end, { falsy = true, timeout = 5 })
    assert.is_true(mk.now() - t0 >= 0.05)
    local ok, err = pcall(assert.eventually, function() return "still here" end, { falsy = true, timeout = 0.05 })
    assert.is_false(ok)
    assert.matches("falsy", tostring(err), 1, true)
    -- nil and false both count; an error does not
    assert.eventually(function() return nil end, { falsy = true })
    ok = pcall(assert.eventually, function() error("boom") end, { falsy = true, timeout = 0.05 })
    assert.is_false(ok)
  end)

  it("assert.eventually{ no_error = true } waits until fn stops raising", function()
    local n = 0
    assert.eventually(function()
      n = n + 1
      assert.is_true(n >= 3, "attempt " .. n)
      return false -- the value does not matter in this mode
    end, { no_error = true, timeout = 5, interval = 0.001 })
    assert.equal(3, n)
    local ok, err = pcall(assert.eventually, function() error("refused") end, { no_error = true, timeout = 0.05 })
    assert.is_false(ok)
    assert.matches("stop raising", tostring(err), 1, true)
    assert.matches("first error (attempt 1 of", tostring(err), 1, true)
    assert.has_error(function() assert.eventually(function() end, { no_error = true, falsy = true }) end)
    -- a mistake in the test is not retried for the whole timeout
    local t0 = mk.now()
    assert.error_kind("ConfigError", function()
      assert.eventually(function() mk.process { H.fx, bogus = 1 } end, { no_error = true, timeout = 10 })
    end)
    assert.is_true(mk.now() - t0 < 5)
  end)

  it("assert.status shows the body and headers of a wrong response", function()
    local res = { status = 500, headers = { ["content-type"] = "text/plain", ["x-request-id"] = "r-17" },
      body = "database is locked\nretry later" }
    assert.status(500, res)
    assert.is_not.status(200, res)
    local ok, err = pcall(assert.status, 200, res)
    assert.is_false(ok)
    err = tostring(err)
    assert.matches("Expected HTTP status 200", err, 1, true)
    assert.matches("HTTP 500", err, 1, true)
    assert.matches("content-type: text/plain", err, 1, true)
    assert.matches("x-request-id: r-17", err, 1, true)
    assert.matches("database is locked\n  retry later", err, 1, true)
    -- long bodies are cut
    ok, err = pcall(assert.status, 200, { status = 404, headers = {}, body = ("x"):rep(10000) })
    assert.is_false(ok)
    assert.matches("more bytes", tostring(err), 1, true)
    assert.is_true(#tostring(err) < 6000)
    assert.has_error(function() assert.status(200, nil) end)
    assert.has_error(function() assert.status("200", res) end)
  end)

  it("assert.status on a real response", function()
    local port = mk.free_port()
    local _svc <close> = mk.tcp { H.fx, "--listen", port, "--serve-http", 503, port = port, timeout = 10 }:start()
    local res = mk.get("http://127.0.0.1:" .. port .. "/health")
    assert.status(503, res)
    local ok, err = pcall(assert.status, 200, res)
    assert.is_false(ok)
    assert.matches("x-path: /health", tostring(err), 1, true)
    assert.matches("GET /health", tostring(err), 1, true)
  end)
end)

-- The busted integration, seen from outside: a child `mkharness test` (or
-- stock busted) runs a generated spec file and we read what it printed.
describe("busted integration", function()
  H.leakcheck()

  local function write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    return path
  end

  -- A spec file whose services run FX; %s in `body` stands for nothing.
  local function spec_file(dir, name, body)
    return write(dir .. "/" .. name, "local mk = require 'mkharness'\nlocal FX = "
      .. string.format("%q", H.fx) .. "\nlocal DIR = " .. string.format("%q", dir) .. "\n" .. body)
  end

  local function run_test(args, dir)
    local argv = { H.host, "test" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv.cwd, argv.timeout = dir, 120
    argv.env = { MKHARNESS_TMPDIR = mk.tmpdir() }
    return mk.run(argv)
  end

  -- Stock busted under lua5.4, the module found through LUA_PATH/LUA_CPATH.
  local function run_stock(args, dir)
    local init = package.searchpath("mkharness", package.path)
    local core = package.searchpath("mkharness.core", package.cpath)
    local lua_dir = init:match("^(.*)/mkharness/init%.lua$")
    local argv = { "lua5.4", "/usr/bin/busted" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv.cwd, argv.timeout = dir, 120
    argv.env = {
      MKHARNESS_TMPDIR = mk.tmpdir(),
      LUA_PATH = lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;;",
      LUA_CPATH = core:match("^(.*)/mkharness/core%.so$") .. "/?.so;;",
      LD_PRELOAD = os.getenv("MKH_SANITIZER_PRELOAD"),
      ASAN_OPTIONS = os.getenv("MKH_SANITIZER_PRELOAD") and "detect_leaks=0" or nil,
    }
    return mk.run(argv)
  end

  local function count(hay, needle)
    local n, at = 0, 1
    while true do
      local s, e = hay:find(needle, at, true)
      if not s then return n end
      n, at = n + 1, e + 1
    end
  end

  -- One failing test with services in every state.
  local CONTEXT_SPEC = [[
local talker, crasher, idle, never
describe("ctx", function()
  setup(function()
    -- prints once before the test, once when the test lets it
    talker = mk.process { shell = "echo before-$((1000+1)); while [ ! -e " .. DIR .. "/go ]; do sleep 0.01; done; "
      .. "echo during-$((2000+2)); echo on-stderr-$((3000+3)) >&2; exec sleep 1000", name = "talker" }:start()
    talker:wait_output("before")
    -- ready once its handler is in place: a signal before would kill it
    crasher = mk.output { FX, "--on-signal", "USR1", "3", "--print", "armed", "--forever", banner = "armed",
      name = "crasher" }:start()
    idle = mk.process { FX, "--forever", name = "idle" }:start()
    never = mk.process { FX, name = "never" }
  end)
  it("breaks", function()
    io.open(DIR .. "/go", "w"):close()
    talker:wait_output("during")
    talker:wait_output("on%-stderr", { stream = "stderr" })
    local many = mk.process { shell = "for i in $(seq 30); do echo many-$i; done; exec sleep 1000", name = "many" }:start()
    many:wait_output("^many%-30$")
    crasher:signal("USR1")
    for _ = 1, 3000 do if not crasher:running() then break end mk.core.sleep(0.01) end
    assert.equal("expected", "actual")
  end)
end)
]]

  it("a failing test shows each service's state and its output since the test began", function()
    local dir = mk.tmpdir()
    spec_file(dir, "ctx_spec.lua", CONTEXT_SPEC)
    local r = run_test({ "ctx_spec.lua" }, dir)
    local out = r.stdout .. r.stderr
    assert.equal(1, r.code, out)
    assert.matches("mkharness: services at this failure:", r.stdout, 1, true)
    -- output since the test began, per stream; not what came before
    assert.matches("talker: running %(pid %d+%)\n    stdout since the test began:\n      | during%-2002\n", r.stdout)
    assert.matches("stderr since the test began:\n      | on-stderr-3003\n", r.stdout, 1, true)
    assert.not_matches("before-1001", out, 1, true)
    -- the last 20 lines only
    assert.matches("many: running %(pid %d+%), started during the test\n    stdout since the test began %(last 20 of 30 lines%):\n", r.stdout)
    assert.matches("| many-11\n", r.stdout, 1, true)
    assert.matches("| many-30\n", r.stdout, 1, true)
    assert.not_matches("| many-10\n", r.stdout, 1, true)
    -- a crash says what
    assert.matches("crasher: crashed: exit code 3, during the test", r.stdout, 1, true)
    -- silent, unchanged services: one line
    assert.matches("no output and no change during the test: idle: running %(pid %d+%); never: not started", r.stdout)
    -- each tail once
    assert.equal(1, count(out, "during-2002"))
    -- the test left `many` running: stopped, with a warning
    assert.matches("mkharness: warning: test 'ctx breaks' left service many running; stopped it", r.stderr, 1, true)
  end)

  it("the same under stock busted with require \"mkharness.busted\"", function()
    local dir = mk.tmpdir()
    spec_file(dir, "ctx_spec.lua", "require 'mkharness.busted'\n" .. CONTEXT_SPEC)
    local r = run_stock({ "ctx_spec.lua" }, dir)
    local out = r.stdout .. r.stderr
    assert.not_equal(0, r.code, out)
    assert.matches("talker: running %(pid %d+%)\n    stdout since the test began:\n      | during%-2002\n", r.stdout)
    assert.not_matches("before-1001", out, 1, true)
    assert.matches("crasher: crashed: exit code 3, during the test", r.stdout, 1, true)
    assert.matches("mkharness: warning: test 'ctx breaks' left service many running; stopped it", r.stderr, 1, true)
  end)

  it("a harness error's output tail is not repeated in the context", function()
    local dir = mk.tmpdir()
    spec_file(dir, "once_spec.lua", [[
describe("once", function()
  it("times out", function()
    mk.output { shell = "echo once-$((7000+731)); exec sleep 1000", banner = "never", timeout = 0.2, name = "slow" }:start()
  end)
end)
]])
    local r = run_test({ "once_spec.lua" }, dir)
    local out = r.stdout .. r.stderr
    assert.equal(1, r.code, out)
    assert.matches("TimeoutExpired", r.stdout, 1, true)
    assert.equal(1, count(out, "once-7731"))
    assert.matches("slow: stopped (killed by signal 9 (SIGKILL)), started during the test; its last output is in the error above", r.stdout, 1, true)
  end)

  it("-o junit: system-out/system-err per failing case, still valid XML", function()
    local dir = mk.tmpdir()
    spec_file(dir, "ctx_spec.lua", CONTEXT_SPEC .. [[
describe("junk", function()
  it("prints what XML cannot hold", function()
    local s = mk.process { shell = "printf 'red-\\033[31m-\\377-\\001-end\\n'; exec sleep 1000", name = "junk" }:start()
    s:wait_output("end")
    s:stop()
    error("broken")
  end)
  it("passes", function() end)
end)
]])
    local r = run_test({ "-o", "junit", "ctx_spec.lua" }, dir)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local xml = write(dir .. "/out.xml", r.stdout)
    local check = mk.run { "python3", "-c", [[
import sys, xml.dom.minidom
doc = xml.dom.minidom.parse(sys.argv[1])
for case in doc.getElementsByTagName("testcase"):
    for tag in ("system-out", "system-err"):
        for node in case.getElementsByTagName(tag):
            print(case.getAttribute("name") + " " + tag + ": " + "".join(c.data for c in node.childNodes))
]], xml }
    assert.equal(0, check.code, check.stderr .. r.stdout)
    assert.matches("ctx breaks system-out: ", check.stdout, 1, true)
    assert.matches("\ntalker: running %(pid %d+%)\n  stdout since the test began:\n    | during%-2002\n", check.stdout)
    assert.matches("ctx breaks system-err: talker: stderr since the test began:\n  | on-stderr-3003", check.stdout, 1, true)
    assert.matches("junk prints what XML cannot hold system-out: junk: stopped", check.stdout, 1, true)
    assert.matches([[red-\x1B[31m-\xFF-\x01-end]], check.stdout, 1, true)
    assert.not_matches("passes system", check.stdout, 1, true)
    -- in JUnit the context is in the case's streams, not in its message
    assert.not_matches("services at this failure", r.stdout, 1, true)
  end)

  it("scopes services: it to its end, before_each past after_each, setup to the describe", function()
    local dir = mk.tmpdir()
    spec_file(dir, "scope_spec.lua", [[
local outer, each, lazy, inner_setup
describe("outer", function()
  setup(function() outer = mk.process { FX, "--forever", name = "outer" }:start() end)
  describe("inner", function()
    lazy_setup(function() lazy = mk.process { FX, "--forever", name = "lazy" }:start() end)
    setup(function() inner_setup = mk.process { FX, "--forever", name = "inner_setup" }:start() end)
    before_each(function() each = mk.process { FX, "--forever", name = "each" }:start() end)
    after_each(function() print("after_each sees each running: " .. tostring(each:running())) end)
    it("one", function()
      assert.is_true(outer:running() and lazy:running() and inner_setup:running() and each:running())
      mk.process { FX, "--forever", name = "leaky" }:start()
    end)
    it("two restarts an outer service", function()
      assert.is_true(lazy:running())
      outer:restart()
    end)
  end)
  it("three", function()
    print("after inner: lazy " .. tostring(lazy:running()) .. ", inner_setup " .. tostring(inner_setup:running())
      .. ", each " .. tostring(each:running()) .. ", outer " .. tostring(outer:running()))
  end)
  teardown(function() print("outer teardown sees outer running: " .. tostring(outer:running())) end)
end)
describe("later", function()
  it("four", function() print("after outer: outer " .. tostring(outer:running())) end)
end)
]])
    local r = run_test({ "-o", "TAP", "scope_spec.lua" }, dir)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(2, count(r.stdout, "after_each sees each running: true"))
    assert.matches("after inner: lazy false, inner_setup false, each false, outer true", r.stdout, 1, true)
    assert.matches("outer teardown sees outer running: true", r.stdout, 1, true)
    assert.matches("after outer: outer false", r.stdout, 1, true)
    assert.matches("mkharness: warning: test 'outer inner one' left service leaky running; stopped it", r.stderr, 1, true)
    assert.equal(1, count(r.stderr, "warning"))
  end)

  it("a lab belongs to the block that built it: a test that leaves it open gets it closed", function()
    local dir = mk.tmpdir()
    spec_file(dir, "lab_scope_spec.lua", [[
local mk = require "mkharness"
local outer, leaky
describe("labs", function()
  setup(function() outer = mk.lab { hosts = { "a" }, name = "outerlab" } end)
  it("leaves one open", function() leaky = mk.lab { hosts = { "b" }, name = "leakylab" } end)
  it("sees it closed, the block's still open", function()
    print("leaky open: " .. tostring(pcall(leaky.keeper, leaky)) .. ", outer open: " .. tostring(pcall(outer.keeper, outer)))
  end)
end)
describe("later", function()
  it("sees the block's closed", function() print("after the block, outer open: " .. tostring(pcall(outer.keeper, outer))) end)
end)
]])
    local r = run_test({ "-o", "TAP", "lab_scope_spec.lua" }, dir)
    if r.stderr:match("user namespaces") then pending("no user namespaces here") return end
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("leaky open: false, outer open: true", r.stdout, 1, true)
    assert.matches("after the block, outer open: false", r.stdout, 1, true)
    assert.matches("mkharness: warning: test 'labs leaves one open' left lab leakylab open; closed it", r.stderr, 1, true)
    assert.equal(1, count(r.stderr, "warning"))
  end)

  it("an unreported crash fails the test during which it happened", function()
    if not mk._check_crashes then pending("needs crash detection") return end
    local dir = mk.tmpdir()
    spec_file(dir, "crash_spec.lua", [[
local svc
describe("crash", function()
  setup(function()
    -- ready once its handler is in: a USR1 before it would end it by the
    -- signal itself, which is the scenario's doing, not a crash
    svc = mk.output { FX, "--on-signal", "USR1", "3", "--print", "armed", "--forever", banner = "armed",
      name = "fragile" }:start()
  end)
  it("the crash happens here", function()
    svc:signal("USR1")
    for _ = 1, 3000 do if not svc:running() then break end mk.core.sleep(0.01) end
  end)
  it("the next test is not blamed", function() end)
end)
]])
    local r = run_test({ "-o", "TAP", "crash_spec.lua" }, dir)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("not ok 1 - crash the crash happens here", r.stdout, 1, true)
    assert.matches("UnexpectedExit", r.stdout, 1, true)
    assert.matches("\nok 2 - crash the next test is not blamed", r.stdout, 1, true)
  end)

  it("mk._check_crashes runs at the end of each test, inside it (after the test's finally)", function()
    local dir = mk.tmpdir()
    spec_file(dir, "stub_spec.lua", [[
-- a stand-in for the crash detection: one crash, reported once
local pending_crash
mk._check_crashes = function()
  local c = pending_crash
  pending_crash = nil
  if c then error("UnexpectedExit: " .. c, 0) end
end
describe("stub", function()
  it("a crash happens in a passing test", function() pending_crash = "first" end)
  it("the next test is not blamed", function() end)
  it("a failing test only consumes it", function() pending_crash = "second" error("own failure") end)
  it("nor is this one", function() end)
  it("with a finally of its own", function()
    finally(function() print("user finally ran") end)
    pending_crash = "third"
  end)
end)
]])
    local r = run_test({ "-o", "TAP", "stub_spec.lua" }, dir)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("not ok 1 %- stub a crash happens in a passing test\n[^\n]*\n# Failure message: [^\n]*UnexpectedExit: first", r.stdout)
    assert.matches("\nok 2 - ", r.stdout, 1, true)
    assert.matches("not ok 3 %- stub a failing test only consumes it\n[^\n]*\n# Failure message: [^\n]*own failure", r.stdout)
    assert.not_matches("second", r.stdout, 1, true)
    assert.matches("\nok 4 - ", r.stdout, 1, true)
    assert.matches("user finally ran\nnot ok 5 %- [^\n]*\n[^\n]*\n# Failure message: [^\n]*UnexpectedExit: third", r.stdout)
  end)

  it("mkharness test speaks as itself: usage errors exit 2, --help is its help", function()
    local dir = mk.tmpdir()
    local r = run_test({ "--nope" }, dir)
    assert.equal(2, r.code, r.stderr)
    assert.matches("^mkharness test: error: [^\n]*%-%-nope", r.stderr)
    assert.not_matches("host.lua", r.stderr, 1, true)
    r = run_test({ "--help" }, dir)
    assert.equal(0, r.code, r.stderr)
    assert.matches("^Usage: mkharness test ", r.stdout)
  end)

  it("loading the module under a Lua other than 5.4 says which, and how to run with 5.4", function()
    local init = package.searchpath("mkharness", package.path)
    local lua_dir = init:match("^(.*)/mkharness/init%.lua$")
    local r = mk.run { "lua5.4", "-e", "_VERSION = 'Lua 5.1'; package.path = '" .. lua_dir ..
      "/?.lua;" .. lua_dir .. "/?/init.lua;' .. package.path; require 'mkharness'", timeout = 30 }
    assert.is_not.equal(0, r.code)
    assert.matches("needs Lua 5.4, but this is Lua 5.1", r.stderr, 1, true)
    assert.matches("lua5.4 /usr/bin/busted", r.stderr, 1, true)
  end)
end)
