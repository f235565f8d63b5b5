-- stop_command: the service's own way to stop (pg_ctl stop -m fast), run
-- first by stop(); signals follow only if the service still runs after
-- stop_timeout.
local H = require "spec.helpers"
local mk = require "mkharness"

local function waiter(flag)
  -- ignores SIGTERM; ends on its own once the flag file exists
  return { shell = "trap '' TERM; echo up; while [ ! -e " .. flag .. " ]; do sleep 0.01; done; echo bye",
    banner = "up" }
end

describe("stop_command", function()
  H.leakcheck()

  it("stops the service its own way, without a signal", function()
    local flag = mk.tmpdir() .. "/stop-now"
    local t = waiter(flag)
    t.stop_command = { "touch", flag }
    t.stop_timeout = 20
    local svc = mk.output(t):start()
    local t0 = mk.now()
    svc:stop()
    assert.is_true(mk.now() - t0 < 10, "stop() waited for its timeout")
    assert.equal(0, svc:exit_code())
    assert.matches("bye", svc:output(), 1, true)
  end)

  it("takes every command form", function()
    for _, form in ipairs { "cmd", "shell" } do
      local flag = mk.tmpdir() .. "/stop-" .. form
      local t = waiter(flag)
      t.stop_command = form == "cmd" and { cmd = "touch " .. flag } or { shell = "touch " .. flag .. " && true" }
      t.stop_timeout = 20
      local svc = mk.output(t):start()
      svc:stop()
      assert.equal(0, svc:exit_code())
    end
  end)

  it("is followed by the signals when the service still runs after stop_timeout", function()
    local svc = mk.output { H.fx, "--print", "up", "--forever", banner = "up",
      stop_command = { "true" }, stop_timeout = 0.3 }:start()
    svc:stop()
    assert.equal(-15, svc:exit_code())
    assert.is_false(svc:running())
  end)

  it("is a ConfigError when it is not a command", function()
    for _, bad in ipairs { 42, {}, { cmd = "" }, { "a", shell = "b" } } do
      local e = H.expect_error("ConfigError", function()
        mk.process { H.fx, "--forever", stop_command = bad }
      end)
      assert.matches("stop_command", e.message, 1, true)
    end
  end)
end)
