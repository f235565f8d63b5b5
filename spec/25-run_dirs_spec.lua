-- Kept run directories: the mkharness-last link to the newest, `mkharness
-- clean`, and a directory kept because an error names a file in it.
local H = require "spec.helpers"
local mk = require "mkharness"

local function ls(dir)
  return mk.run { "ls", "-A", dir }.stdout
end

describe("kept run directories", function()
  H.leakcheck()

  it("mkharness-last links the newest kept run; mkharness clean removes kept runs and the link", function()
    local base = mk.tmpdir()
    for _ = 1, 2 do
      local r = mk.run { H.host, "--keep", "-e", "require('mkharness').run{ 'true' }", env = { MKHARNESS_TMPDIR = base } }
      assert.equal(0, r.code, r.stderr)
    end
    local names = ls(base)
    assert.matches("mkharness%-last", names)
    local target = mk.run { "readlink", base .. "/mkharness-last" }.stdout:gsub("%s+$", "")
    assert.matches("^mkharness%-%d+%-%x+$", target)
    assert.truthy(H.slurp(base .. "/mkharness-last/events.jsonl"), "the link does not lead to the newest run")
    local r = mk.run { H.host, "clean", env = { MKHARNESS_TMPDIR = base } }
    assert.equal(0, r.code, r.stderr)
    assert.matches("removed 2 kept run directories", r.stdout, 1, true)
    assert.equal("", ls(base))
  end)

  it("a mistyped clean gets a did-you-mean", function()
    local r = mk.run { H.host, "claen", env = { MKHARNESS_TMPDIR = mk.tmpdir() } }
    assert.equal(2, r.code)
    assert.matches("did you mean `clean`", r.stderr, 1, true)
  end)

  it("under stock Lua, an error that names a file of the run directory keeps it", function()
    local base = mk.tmpdir()
    local init = package.searchpath("mkharness", package.path)
    local lua_dir = init:match("^(.*)/mkharness/init%.lua$")
    local code = "package.path = '" .. lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;' .. package.path\n" ..
      "local mk = require 'mkharness'\n" ..
      "local d = mk.tmpdir()\n" ..
      "pcall(mk.wait_until, function() return false end, { timeout = 0.05, message = 'look in ' .. d })\n" ..
      "print(d)\n"
    local env = { MKHARNESS_TMPDIR = base }
    -- under the sanitizers, stock lua5.4 needs their runtimes preloaded
    local preload = os.getenv("MKH_SANITIZER_PRELOAD")
    if preload and preload ~= "" then env.LD_PRELOAD, env.ASAN_OPTIONS = preload, "detect_leaks=0" end
    local r = mk.run { "lua5.4", "-e", code, env = env }
    assert.equal(0, r.code, r.stderr)
    -- the run directory is still there, and its tmpdir in it
    assert.matches("mkharness%-%d+%-%x+", ls(base))
    assert.equal("", ls(r.stdout:gsub("%s+$", "")))
  end)
end)
