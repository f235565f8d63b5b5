-- Every scenario in examples/ (the real services' are in 80-real) runs and
-- passes, so that what the README and docs point to stays true.
local H = require "spec.helpers"
local mk = require "mkharness"

local function examples()
  local list = {}
  for name in mk.run { "ls", "examples", host = false }.stdout:gmatch("[^\n]+") do
    if name:match("%.lua$") then list[#list + 1] = name end
  end
  table.sort(list)
  return list
end

describe("examples/", function()
  H.leakcheck()
  for _, name in ipairs(examples()) do
    it(name .. " runs and passes", function()
      local r = mk.run { H.host, "examples/" .. name, timeout = 120, host = false }
      assert.equal(0, r.code, r.stdout .. r.stderr)
    end)
  end
end)
