-- Services as another user: user = and group = on every executor and on
-- mk.run, the run directory and notify socket that user must reach, and
-- mk.tmpdir{ owner =, mode = }. Switching users needs root: those cases stay
-- pending without it; a harness that is not root is played by a child host
-- under setpriv.
local H = require "spec.helpers"
local mk = require "mkharness"

local FX = H.fx

local function is_root() return mk.run { "id", "-u" }.stdout == "0\n" end
local function have(cmd) return mk.run { "sh", "-c", "command -v " .. cmd }.code == 0 end
local function sh(cmd) return (mk.run { "sh", "-c", cmd }.stdout:gsub("\n$", "")) end

-- What the system (id(1), getent) says, not what the harness resolved.
local function uid_of(user) return sh("id -u " .. user) end
local function gid_of(group) return sh("getent group " .. group .. " | cut -d: -f3") end
local function groups_of(user) return sh("id -G " .. user) end

-- "Uid:" etc. of a running process, from /proc: its real credentials.
local function creds(pid)
  local s = assert(H.slurp("/proc/" .. pid .. "/status"))
  return {
    uid = s:match("\nUid:%s+(%d+)"), gid = s:match("\nGid:%s+(%d+)"),
    groups = (s:match("\nGroups:([^\n]*)") or ""):gsub("^%s+", ""):gsub("%s+$", ""),
  }
end

local function sorted_words(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  table.sort(t)
  return table.concat(t, " ")
end

-- The cases need root, and the fixture reachable by nobody (a build tree
-- under a private home would not be).
local function need_root()
  if not is_root() then pending("needs root: only root can run a service as another user") return false end
  if mk.run { "test", "-x", FX, user = "nobody" }.code ~= 0 then
    pending("the fixture " .. FX .. " is not executable by nobody (a private directory on its path?)")
    return false
  end
  return true
end

-- A user listed as a member of some group of its own system: one with
-- supplementary groups beyond its primary one. nil when there is none.
local function user_with_supplementary_groups()
  for line in sh("getent group"):gmatch("[^\n]+") do
    local members = line:match("^[^:]*:[^:]*:%d+:(.+)$")
    for m in (members or ""):gmatch("[^,]+") do
      if mk.run { "id", "-u", m }.code == 0 and select(2, groups_of(m):gsub("%S+", "")) > 1 then return m end
    end
  end
end

local function mode_and_owner(path) return sh("stat -c '%a %U' " .. path) end

describe("user = and group =", function()
  H.leakcheck()

  -------------------------------------------------------------- options
  describe("options", function()
    it("an unknown user or group is a ConfigError at construction, naming the option", function()
      for _, ctor in ipairs { mk.process, mk.executor, mk.notify } do
        local e = H.expect_error("ConfigError", function() ctor { FX, "--forever", user = "no-such-user-mkh" } end)
        assert.equal("user", e.option)
        assert.matches("option 'user' names no user", e.message, 1, true)
        assert.matches("no-such-user-mkh", e.message, 1, true)
        e = H.expect_error("ConfigError", function() ctor { FX, "--forever", group = "no-such-group-mkh" } end)
        assert.equal("group", e.option)
        assert.matches("option 'group' names no group", e.message, 1, true)
      end
      local e = H.expect_error("ConfigError", function() mk.tcp { FX, "--forever", port = 1, user = "no-such-user-mkh" } end)
      assert.equal("user", e.option)
      e = H.expect_error("ConfigError", function() mk.run { "true", user = "no-such-user-mkh" } end)
      assert.matches("^mk%.run: option 'user'", e.message)
      e = H.expect_error("ConfigError", function() mk.run { "true", user = "nobody", group = "no-such-group-mkh" } end)
      assert.matches("^mk%.run: option 'group'", e.message)
    end)

    it("user and group are names or numbers", function()
      for _, bad in ipairs { {}, true, -1, 1.5, "", "a:b", 2 ^ 40 } do
        local e = H.expect_error("ConfigError", function() mk.process { "true", user = bad } end)
        assert.equal("user", e.option)
        e = H.expect_error("ConfigError", function() mk.run { "true", group = bad } end)
        assert.equal("group", e.option)
      end
      local e = H.expect_error("ConfigError", function() mk.process { "true", usr = "nobody" } end)
      assert.matches("did you mean 'user'", e.message, 1, true)
    end)

    it("a number is a uid or gid of the system", function()
      if not need_root() then return end
      assert.equal(uid_of("nobody") .. "\n", mk.run { "id", "-u", user = tonumber(uid_of("nobody")) }.stdout)
      assert.equal(gid_of("daemon") .. "\n",
        mk.run { "id", "-g", user = "nobody", group = tonumber(gid_of("daemon")) }.stdout)
      assert.equal(uid_of("nobody") .. "\n", mk.run { "id", "-u", user = uid_of("nobody") }.stdout)
    end)
  end)

  -------------------------------------------------------------- as root
  describe("as root", function()
    it("mk.run runs the command as the user, with its primary group", function()
      if not need_root() then return end
      assert.equal(uid_of("nobody") .. "\n", mk.run { "id", "-u", user = "nobody" }.stdout)
      assert.equal(sh("id -g nobody") .. "\n", mk.run { "id", "-g", user = "nobody" }.stdout)
      assert.equal(uid_of("nobody") .. "\n", mk.run { shell = "id -u", user = "nobody" }.stdout)
    end)

    it("a service runs as the user with that user's groups (and not the harness's)", function()
      if not need_root() then return end
      local s <close> = mk.output { "sh", "-c", "echo uid=$(id -u); exec sleep 600", user = "nobody",
        banner = "^uid=" }:start()
      assert.equal("uid=" .. uid_of("nobody") .. "\n", s:output())
      local c = creds(s:pid())
      assert.equal(uid_of("nobody"), c.uid)
      assert.equal(sh("id -g nobody"), c.gid)
      -- setgroups happened: the kernel's list is the user's, as id(1) sees it
      assert.equal(sorted_words(groups_of("nobody")), sorted_words(c.groups))
      s:stop()
    end)

    it("supplementary groups are the user's memberships (initgroups)", function()
      if not need_root() then return end
      local user = user_with_supplementary_groups()
      if not user then pending("no user of this system is a member of a group besides its own") return end
      local r = mk.run { "id", "-G", user = user }
      assert.equal(0, r.code)
      assert.equal(sorted_words(groups_of(user)), sorted_words(r.stdout))
    end)

    it("group = overrides the primary group; the groups are the user's with that one", function()
      if not need_root() then return end
      local daemon, nogroup = gid_of("daemon"), sh("id -g nobody")
      local r = mk.run { "sh", "-c", "id -u; id -g; id -G", user = "nobody", group = "daemon" }
      assert.equal(0, r.code)
      local u, g, gs = r.stdout:match("^(%d+)\n(%d+)\n([^\n]*)\n$")
      assert.equal(uid_of("nobody"), u)
      assert.equal(daemon, g)
      assert.truthy((" " .. gs .. " "):find(" " .. daemon .. " ", 1, true))
      assert.falsy((" " .. gs .. " "):find(" " .. nogroup .. " ", 1, true))
      -- a service too, seen from /proc
      local s <close> = mk.process { FX, "--forever", user = "nobody", group = "daemon" }:start()
      local c = creds(s:pid())
      assert.equal(uid_of("nobody"), c.uid)
      assert.equal(daemon, c.gid)
      s:stop()
    end)

    it("group = alone keeps the harness's user", function()
      if not need_root() then return end
      local r = mk.run { "sh", "-c", "id -u; id -g", group = "daemon" }
      assert.equal("0\n" .. gid_of("daemon") .. "\n", r.stdout)
    end)

    it("HOME, USER and LOGNAME are the user's unless env = sets them", function()
      if not need_root() then return end
      local home = sh("getent passwd nobody | cut -d: -f6")
      local show = "echo $HOME:$USER:$LOGNAME"
      assert.equal(home .. ":nobody:nobody\n", mk.run { "sh", "-c", show, user = "nobody" }.stdout)
      assert.equal(home .. ":nobody:nobody\n", mk.run { "sh", "-c", show, user = "nobody", clear_env = true }.stdout)
      assert.equal("/elsewhere:nobody:\n",
        mk.run { "sh", "-c", show, user = "nobody", env = { HOME = "/elsewhere", LOGNAME = false } }.stdout)
      -- group = alone is not another user: the harness's own stay
      local r = mk.run { "sh", "-c", "echo $HOME", group = "daemon", env = { HOME = "/mine" } }
      assert.equal("/mine\n", r.stdout)
    end)

    it("a notify service running as nobody becomes ready", function()
      if not need_root() then return end
      local s <close> = mk.notify { FX, "--notify", "--forever", user = "nobody", timeout = 20 }:start()
      assert.equal(uid_of("nobody"), creds(s:pid()).uid)
      s:stop()
      -- and with mk.probe.notify on a plain executor
      local e <close> = mk.executor { FX, "--notify", "--forever", user = "nobody", timeout = 20,
        ready = mk.probe.notify() }:start()
      e:stop()
    end)

    it("the run directory becomes traversable (0711); capture logs stay private (0600)", function()
      if not need_root() then return end
      local s <close> = mk.process { FX, "--print", "secret", "--forever", user = "nobody" }:start()
      s:wait_output("secret")
      local dir = assert(mk.core.run_dir(nil, true))
      assert.equal("711 root", mode_and_owner(dir))
      local log = rawget(s, "_logs").stdout
      assert.equal("600 root", mode_and_owner(log))
      -- nobody reaches the run directory but neither lists it nor reads the log
      assert.equal(0, mk.run { "test", "-x", dir, user = "nobody" }.code)
      assert.not_equal(0, mk.run { "ls", dir, user = "nobody" }.code)
      assert.not_equal(0, mk.run { "cat", log, user = "nobody" }.code)
      s:stop()
    end)

    it("a cwd the user may not enter is a SpawnError at chdir (the switch comes first)", function()
      if not need_root() then return end
      local private = mk.tmpdir() -- 0700, root's
      local e = H.expect_error("SpawnError", function() mk.process { "true", cwd = private, user = "nobody" }:start() end)
      assert.matches("cannot change directory", e.message, 1, true)
      assert.matches("ermission denied", e.message, 1, true)
    end)
  end)

  -------------------------------------------------------------- tmpdir
  describe("mk.tmpdir{ owner =, mode = }", function()
    it("with no options: private to the harness, as before", function()
      local d = mk.tmpdir()
      assert.equal("700", sh("stat -c %a " .. d))
      assert.equal(sh("id -un"), sh("stat -c %U " .. d))
    end)

    it("mode as an octal string or a number", function()
      assert.equal("755", sh("stat -c %a " .. mk.tmpdir { mode = "755" }))
      assert.equal("750", sh("stat -c %a " .. mk.tmpdir { mode = "0750" }))
      assert.equal("1777", sh("stat -c %a " .. mk.tmpdir { mode = "1777" }))
      assert.equal("711", sh("stat -c %a " .. mk.tmpdir { mode = tonumber("711", 8) }))
    end)

    it("a bad mode or owner is a ConfigError naming the option", function()
      for _, bad in ipairs { "8", "abc", "", "77777", -1, 1.5, true } do
        local e = H.expect_error("ConfigError", function() mk.tmpdir { mode = bad } end)
        assert.equal("mode", e.option)
      end
      -- 755 in Lua is decimal: refused, with the way to say it
      local e = H.expect_error("ConfigError", function() mk.tmpdir { mode = 755 } end)
      assert.matches('mode = "755"', e.message, 1, true)
      e = H.expect_error("ConfigError", function() mk.tmpdir { owner = "no-such-user-mkh" } end)
      assert.equal("owner", e.option)
      assert.matches("mk.tmpdir: option 'owner' names no user", e.message, 1, true)
      e = H.expect_error("ConfigError", function() mk.tmpdir { ownr = "nobody" } end)
      assert.matches("did you mean 'owner'", e.message, 1, true)
      H.expect_error("ConfigError", function() mk.tmpdir "nobody" end)
    end)

    it("owner = gives it to the user, who can write there from a service", function()
      if not need_root() then return end
      local d = mk.tmpdir { owner = "nobody", mode = "755" }
      assert.equal("755 nobody", mode_and_owner(d))
      assert.equal("711", sh("stat -c %a " .. d .. "/.."))
      local s <close> = mk.pidfile { FX, "--pidfile", d .. "/svc.pid", "--forever", file = d .. "/svc.pid",
        user = "nobody" }:start()
      assert.equal("nobody", sh("stat -c %U " .. d .. "/svc.pid"))
      assert.equal(0, mk.run { "sh", "-c", "echo hi > " .. d .. "/f", user = "nobody" }.code)
      assert.equal("hi\n", H.slurp(d .. "/f"))
      s:stop()
    end)
  end)

  -------------------------------------------------------------- not root
  describe("a harness that is not root", function()
    -- A child host as nobody, with a run directory of its own it may write.
    local function as_nobody(code)
      local d = mk.tmpdir { owner = "nobody" }
      local path = d .. "/scenario.lua"
      local f = assert(io.open(path, "w"))
      f:write("local mk = require 'mkharness'\nlocal FX = " .. string.format("%q", FX) .. "\n", code)
      f:close()
      return mk.run { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", H.host, path,
        env = { MKHARNESS_TMPDIR = d }, timeout = 60 }
    end

    it("user = another user is a SpawnError that says only root can", function()
      if not is_root() then pending("needs root: setpriv switches the child host to nobody") return end
      if not have("setpriv") then pending("needs setpriv (util-linux)") return end
      if mk.run { "test", "-x", H.host, user = "nobody" }.code ~= 0 then
        pending("the host " .. H.host .. " is not executable by nobody") return
      end
      local r = as_nobody [[
        local ok, e = pcall(mk.run, { "id", "-u", user = "daemon" })
        print(mk.is_error(e, "SpawnError") and "SpawnError" or tostring(e))
        print(e.message)
        ok, e = pcall(function() mk.process { FX, "--forever", group = "daemon" }:start() end)
        print(mk.is_error(e, "SpawnError") and "SpawnError" or tostring(e))
        print(e.message)
        -- its own identity needs no privilege
        print(mk.run { "id", "-u", user = "nobody" }.stdout)
      ]]
      assert.equal(0, r.code, r.stderr)
      local l = {}
      for line in r.stdout:gmatch("[^\n]*") do l[#l + 1] = line end
      assert.equal("SpawnError", l[1])
      assert.matches("cannot run as user 'daemon': operation not permitted (setgroups); only root can", l[2], 1, true)
      assert.matches("this harness runs as uid " .. uid_of("nobody"), l[2], 1, true)
      assert.equal("SpawnError", l[3])
      assert.matches("cannot run as group 'daemon': operation not permitted", l[4], 1, true)
      assert.matches("only root can", l[4], 1, true)
      assert.equal(uid_of("nobody"), l[5])
    end)
  end)
end)
