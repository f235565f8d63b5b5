-- Installing: with LuaRocks (mkharness-scm-1.rockspec, into a tree of its
-- own, from this source, with nothing downloaded) and the man page and docs
-- CMake installs; and the host's command line the man page documents
-- (getopt_long: where option parsing stops, one-line usage errors).
local H = require "spec.helpers"
local mk = require "mkharness"

local function exists(p)
  local _, kind = mk.core.size(p)
  return kind ~= nil
end

local function run(argv)
  argv.timeout = argv.timeout or 60
  return mk.run(argv)
end

local function have(program)
  return run { "sh", "-c", 'command -v "$1" >/dev/null', "sh", program }.code == 0
end

local function is_root()
  return (run { "id", "-u" }.stdout:match("%d+")) == "0"
end

-- The specs run from the source tree (CTest's working directory).
local SOURCE = assert(run { "pwd" }.stdout:match("[^\n]+"))

-- A proxy nobody listens on: a download attempt fails at once instead of
-- reaching the network, and the failure shows in the output.
local NO_NETWORK = {
  http_proxy = "http://127.0.0.1:9", https_proxy = "http://127.0.0.1:9",
  HTTP_PROXY = "http://127.0.0.1:9", HTTPS_PROXY = "http://127.0.0.1:9",
  ALL_PROXY = "http://127.0.0.1:9", all_proxy = "http://127.0.0.1:9",
}

-- The options the host's --help lists: long ones anywhere, short ones
-- where they stand alone (so the -vq of "bundle: -vq" counts as -v only).
local function help_options()
  local r = run { H.host, "--help" }
  assert(r.code == 0, r.stderr)
  local opts, seen = {}, {}
  local function add(o)
    if not seen[o] then
      seen[o] = true
      opts[#opts + 1] = o
    end
  end
  for o in r.stdout:gmatch("%-%-%a[%w%-]*") do add(o) end
  for o in (" " .. r.stdout):gmatch("[%s%[](%-%a)[%s,]") do add(o) end
  return opts, r.stdout
end

local function mentions(text, opt)
  return text:find("%f[%w%-]" .. opt:gsub("%-", "%%-") .. "%f[^%w%-]") ~= nil
end

describe("install", function()
  H.leakcheck()

  describe("with LuaRocks", function()
    local tree, built, skip

    setup(function()
      if not have("luarocks") then
        if not is_root() then
          skip = "luarocks is not installed (Debian package luarocks; ./run test installs it as root)"
          return
        end
        error("luarocks is not installed: apt-get install -y luarocks (./run test does, TEST_PACKAGES)")
      end
      -- a copy of the source: the cmake backend builds in the source
      -- directory (build.luarocks), which must not be this checkout
      local src = mk.tmpdir() .. "/src"
      tree = mk.tmpdir() .. "/tree"
      local cp = run { "sh", "-c", [[
        set -e
        mkdir -p "$2/spec"
        cd "$1"
        cp -R CMakeLists.txt README.md LICENSE mkharness-scm-1.rockspec src lua man examples "$2/"
        cp -R spec/fixtures "$2/spec/"
      ]], "sh", SOURCE, src }
      assert(cp.code == 0, cp.stderr)
      local env = { CMAKE_BUILD_PARALLEL_LEVEL = "2" }
      for k, v in pairs(NO_NETWORK) do env[k] = v end
      built = run { "luarocks", "--lua-version=5.4", "make", "--tree", tree, "mkharness-scm-1.rockspec",
        cwd = src, env = env, timeout = 300 }
    end)

    it("`luarocks make --tree T` builds from this source without downloading anything", function()
      if skip then return pending(skip) end
      assert(built.code == 0, "luarocks make failed:\n" .. built.stdout .. built.stderr)
      local out = built.stdout .. built.stderr
      assert.is_nil(out:lower():find("download"), out)
      assert.is_nil(out:find("127.0.0.1:9", 1, true), out)
      assert.is_true(exists(tree .. "/bin/mkharness"))
      assert.is_true(exists(tree .. "/share/lua/5.4/mkharness/init.lua"))
      assert.is_true(exists(tree .. "/lib/lua/5.4/mkharness/core.so"))
      local list = run { "luarocks", "--lua-version=5.4", "--tree", tree, "list", "--porcelain" }
      assert.matches("mkharness\tscm%-1\tinstalled", list.stdout)
    end)

    it("the tree's host finds its Lua files there, with no LUA_PATH", function()
      if skip then return pending(skip) end
      assert(built.code == 0, "luarocks make failed")
      local r = run { tree .. "/bin/mkharness", "-e", [[
print(require("mkharness")._VERSION)
print("MOD=" .. package.searchpath("mkharness", package.path))
]], env = { LUA_PATH = false, LUA_CPATH = false, LUA_PATH_5_4 = false, LUA_CPATH_5_4 = false,
        MKHARNESS_TMPDIR = mk.tmpdir() } }
      assert.equal(0, r.code, r.stderr)
      assert.matches("^mkharness %d", r.stdout)
      local mod = r.stdout:match("MOD=([^\n]+)")
      assert.is_not_nil(mod, r.stdout)
      assert.equal(tree .. "/", mod:sub(1, #tree + 1))
      assert.matches("/share/lua/5.4/mkharness/init.lua$", mod)
    end)

    it("stock lua5.4 loads the tree's module and runs a process", function()
      if skip then return pending(skip) end
      assert(built.code == 0, "luarocks make failed")
      local share, lib = tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4"
      -- the tree first; the system's paths still give dkjson (lua-dkjson)
      local code = string.format([[
package.path = %q .. ";" .. package.path
package.cpath = %q .. ";" .. package.cpath
local mk = require "mkharness"
print(mk._VERSION)
print("MOD=" .. package.searchpath("mkharness", package.path))
print("CORE=" .. package.searchpath("mkharness.core", package.cpath))
local r = mk.run { "echo", "from-the-tree" }
print("GOT=" .. r.stdout)
]], share .. "/?.lua;" .. share .. "/?/init.lua", lib .. "/?.so")
      local r = run { "lua5.4", "-e", code, env = {
        LUA_PATH = false, LUA_CPATH = false, LUA_PATH_5_4 = false, LUA_CPATH_5_4 = false,
        -- LuaRocks built this core.so without sanitizers, whatever H.build is
        MKHARNESS_TMPDIR = mk.tmpdir(),
      } }
      assert.equal(0, r.code, r.stderr)
      assert.matches("^mkharness %d", r.stdout)
      assert.matches("MOD=" .. share .. "/mkharness/init.lua", r.stdout, 1, true)
      assert.matches("CORE=" .. lib .. "/mkharness/core.so", r.stdout, 1, true)
      assert.matches("GOT=from-the-tree", r.stdout, 1, true)
    end)
  end)

  describe("the man page", function()
    local page = SOURCE .. "/man/mkharness.1"

    -- The page as a reader sees it: man-db's man, else groff; plain text
    -- (overstrike bold and underline removed).
    local function render()
      local r
      if have("man") then
        r = run { "man", "-l", page, env = { MANWIDTH = "200", LANG = "C", LC_ALL = "C", MANPAGER = "cat",
          PAGER = "cat", MAN_KEEP_FORMATTING = false } }
      elseif have("groff") then
        r = run { "groff", "-man", "-Tascii", "-rLL=200n", page }
      else
        return nil
      end
      assert.equal(0, r.code, r.stderr)
      return (r.stdout:gsub(".\b", "")), r.stderr
    end

    it("renders, without groff warnings", function()
      local text = render()
      if not text then return pending("neither man (man-db) nor groff (groff-base) is installed") end
      assert.matches("MKHARNESS%(1%)", text)
      assert.matches("SYNOPSIS", text, 1, true)
      assert.matches("EXIT STATUS", text, 1, true)
      if have("groff") then
        local w = run { "groff", "-man", "-ww", "-z", page }
        assert.equal(0, w.code, w.stderr)
        assert.equal("", w.stderr)
      end
    end)

    it("has every option of the host's --help", function()
      local text = render()
      if not text then return pending("neither man (man-db) nor groff (groff-base) is installed") end
      local opts = help_options()
      assert.is_true(#opts >= 10, "too few options found in --help: " .. table.concat(opts, " "))
      local missing = {}
      for _, o in ipairs(opts) do
        if not mentions(text, o) then missing[#missing + 1] = o end
      end
      assert(#missing == 0, "options in --help but not in the man page: " .. table.concat(missing, " "))
    end)

    it("is installed to share/man/man1, README, LICENSE and examples to share/doc/mkharness", function()
      local prefix = mk.tmpdir() .. "/prefix"
      local r = run { "cmake", "--install", H.build, "--prefix", prefix, timeout = 120 }
      assert(r.code == 0, "cmake --install failed:\n" .. r.stdout .. r.stderr)
      assert.is_true(exists(prefix .. "/share/man/man1/mkharness.1"))
      assert.is_true(exists(prefix .. "/share/doc/mkharness/README.md"))
      assert.is_true(exists(prefix .. "/share/doc/mkharness/LICENSE"))
      assert.is_true(exists(prefix .. "/share/doc/mkharness/examples/quickstart.lua"))
      -- the default layout is unchanged
      assert.is_true(exists(prefix .. "/bin/mkharness"))
      assert.is_true(exists(prefix .. "/lib/lua/5.4/mkharness/core.so"))
      assert.is_true(exists(prefix .. "/share/lua/5.4/mkharness/init.lua"))
    end)
  end)

  describe("the host's command line", function()
    local function host(args, opts)
      local argv = { H.host }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      argv.env = { MKHARNESS_TMPDIR = mk.tmpdir() }
      argv.cwd = opts and opts.cwd
      return run(argv)
    end

    it("a usage error is one line naming the problem and pointing at --help, exit 2", function()
      local cases = {
        { { "--tiemout", "5", "w.lua" },
          "mkharness: unknown option: --tiemout (did you mean --timeout?); see mkharness --help\n" },
        { { "-vx", "w.lua" }, "mkharness: unknown option: -x; see mkharness --help\n" },
        { { "--keep=yes", "w.lua" }, "mkharness: this option takes no value: --keep=yes; see mkharness --help\n" },
        { { "--report" }, "mkharness: --report needs a file name; see mkharness --help\n" },
        { { "-e" }, "mkharness: -e needs a chunk of code; see mkharness --help\n" },
        { { "--color=pink", "-e", "" },
          "mkharness: --color takes auto, always or never, got: pink; see mkharness --help\n" },
      }
      for _, c in ipairs(cases) do
        local r = host(c[1])
        assert.equal(2, r.code, table.concat(c[1], " "))
        assert.equal(c[2], r.stderr)
        assert.equal("", r.stdout)
      end
      local r = host({ "tset" }, { cwd = mk.tmpdir() })
      assert.equal(2, r.code)
      assert.equal("mkharness: no script `tset` (did you mean `test`?); see mkharness --help\n", r.stderr)
      r = host {}
      assert.equal(2, r.code)
      assert.equal(1, select(2, r.stderr:gsub("\n", "")), r.stderr)
      assert.matches("no script given", r.stderr, 1, true)
    end)

    it("a unique prefix of a long option is that option; one that fits two is an error", function()
      local r = host { "--quie", "--verb", "-e", "require('mkharness').mark('hidden')" }
      assert.equal(0, r.code, r.stderr)
      assert.equal("", r.stderr)
      r = host { "--time=3", "-e", "" }
      assert.equal(2, r.code)
      assert.equal("mkharness: ambiguous option --time=3 (--timestamps or --timeout?); see mkharness --help\n",
        r.stderr)
    end)

    it("options end at the script: what follows is the script's, as with lua; -- ends them too", function()
      local script = mk.tmpdir() .. "/args.lua"
      local f = assert(io.open(script, "w"))
      f:write("print(table.concat({ ... }, '|'))\n")
      f:close()
      local r = host { "-q", script, "--timeout=0", "-vx", "--tiemout", "--", "-e" }
      assert.equal(0, r.code, r.stderr)
      assert.equal("--timeout=0|-vx|--tiemout|--|-e\n", r.stdout)
      r = host { "--", script, "-q" }
      assert.equal(0, r.code, r.stderr)
      assert.equal("-q\n", r.stdout)
    end)

    it("`mkharness test` hands everything after `test` to busted, options the host does not know included", function()
      local dir = mk.tmpdir()
      local f = assert(io.open(dir .. "/one_check.lua", "w"))
      f:write('describe("t", function() it("adds", function() assert.equal(2, 1 + 1) end) end)\n')
      f:close()
      -- -o and --pattern are busted's, unknown to the host: had the host
      -- parsed past `test`, this would be a usage error (exit 2)
      local r = host({ "-q", "test", "-o", "TAP", "--pattern=_check", dir }, { cwd = dir })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("ok 1 - t adds", r.stdout, 1, true)
    end)
  end)
end)
