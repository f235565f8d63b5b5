-- The luassert extensions of mkharness.busted (DESIGN 2.9).
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
end)
