local H = require "spec.helpers"
local mk = require "mkharness"

describe("smoke", function()
  H.leakcheck()
  it("starts and stops a process", function()
    local s = mk.process { H.fx, "--print", "hi", "--forever" }:start()
    assert.is_true(s:running())
    assert.equal("hi", (s:wait_output("hi")))
    s:stop()
    assert.is_false(s:running())
  end)
end)
