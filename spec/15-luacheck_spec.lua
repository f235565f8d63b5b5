-- The Lua lint: luacheck runs in `./run test`'s lint step with the tree's
-- .luacheckrc and finds nothing to say.
local H = require "spec.helpers"
local mk = require "mkharness"

local function have(prog) return os.execute("command -v " .. prog .. " >/dev/null 2>&1") == true end

describe("luacheck", function()
  H.leakcheck()

  it("is part of ./run test's lint step, not of --quick", function()
    local run = assert(H.slurp("run"))
    assert.matches('TEST_PACKAGES="[^"]*lua%-check', run)
    local lint = assert(run:match("\nlint%(%) {\n(.-)\n}"), "run has a lint() function")
    assert.matches("luacheck [^\n]*lua spec examples bench", lint)
    local quick = assert(run:match("%-%-quick%)([^\n]*)"))
    assert.is_nil(quick:find("lint", 1, true))
    local rc = assert(H.slurp(".luacheckrc"))
    assert.matches('std = "lua54"', rc, 1, true)
    assert.matches('files%["spec/"%] = { std = "%+busted" }', rc)
  end)

  it("reports no warning on lua/, spec/, examples/ and bench/", function()
    if not have("luacheck") then
      pending("luacheck is not installed: apt-get install lua-check")
      return
    end
    local r = mk.run { "luacheck", "--no-color", "--codes", "--quiet", "lua", "spec", "examples", "bench", timeout = 120 }
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Total: 0 warnings / 0 errors", r.stdout, 1, true)
  end)

  it("flags an unused <close> variable unless its name starts with _", function()
    if not have("luacheck") then
      pending("luacheck is not installed: apt-get install lua-check")
      return
    end
    local dir = mk.tmpdir()
    H.write_file(dir .. "/s_spec.lua", table.concat({
      "local mk = require 'mkharness'",
      "it('x', function()",
      "  local svc <close> = mk.process { 'true' }",
      "  local _kept <close> = mk.process { 'true' }",
      "end)", "" }, "\n"))
    -- the tree's settings, as a spec file of its own would see them
    local r = mk.run { "luacheck", "--no-color", "--codes", "--config", ".luacheckrc",
      "--filename", "spec/s_spec.lua", dir .. "/s_spec.lua", timeout = 60 }
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("(W211) unused variable 'svc'", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("_kept", 1, true))
    assert.is_nil(r.stdout:find("(W113)", 1, true)) -- `it` is a busted global there
    assert.matches("local _svc <close>", assert(H.slurp("docs/development.md")), 1, true)
  end)
end)
