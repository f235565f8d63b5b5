-- A hostile environment rather than a hostile service: a DNS server that
-- never answers, a full capture filesystem, a directory the harness may not
-- read. Each case runs a fresh `mkharness` in the set-up it needs (a mount
-- namespace, another user), so nothing here changes the machine; the set-ups
-- need root, and the cases say so and stay pending without it.
local H = require "spec.helpers"
local mk = require "mkharness"

local MARGIN = 2 -- seconds allowed past a deadline

local function is_root() return mk.run { "id", "-u" }.stdout == "0\n" end
local function have(cmd) return mk.run { "sh", "-c", "command -v " .. cmd }.code == 0 end

-- Write a scenario (FX is the fixture) and return its path.
local function scenario(code)
  local path = mk.tmpdir() .. "/scenario.lua"
  local f = assert(io.open(path, "w"))
  f:write("local mk = require 'mkharness'\nlocal FX = " .. string.format("%q", H.fx) .. "\n", code)
  f:close()
  return path
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A child mkharness whose /etc/resolv.conf names `nameserver` (with slow,
-- many retries), in its own mount namespace. Should the bind mount fail, the
-- scenario does not run: its lookups must never reach a real DNS server.
local function with_resolver(nameserver, path)
  local conf = mk.tmpdir() .. "/resolv.conf"
  write(conf, "nameserver " .. nameserver .. "\noptions timeout:30 attempts:5\n")
  return { "unshare", "-m", "--", "sh", "-c", 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"',
    "sh", conf, H.host, path }
end

-- A local DNS "server" that never answers, on an address of its own in
-- 127/8 (port 53 there is free even where a local resolver holds 127.0.0.53).
local function dns_sink()
  local addr = string.format("127.%d.%d.%d", math.random(1, 254), math.random(1, 254), math.random(1, 254))
  return mk.output { H.fx, "--udp-sink", addr, "--forever", banner = "^udp ", timeout = 10 }:start(), addr
end

describe("hostile environment #hostile", function()
  H.leakcheck()

  describe("DNS that never answers", function()
    local NAME = "never-answered.mkharness.invalid"

    it("bounds mk.tcp, mk.proxy and mk.get by their timeouts", function()
      if not is_root() then pending("needs root: a mount namespace points DNS at a silent local server") return end
      local _sink <close>, addr = dns_sink()
      local path = scenario(string.format([[
local NAME = %q
local function try(what, fn)
  local t0 = mk.now()
  local ok, e = pcall(fn)
  print(string.format("%%s ok=%%s took=%%.2f", what, tostring(ok), mk.now() - t0))
  print(what .. " error: " .. tostring(e))
end
try("tcp", function() mk.tcp { FX, "--forever", host = NAME, port = 9, timeout = 1 }:start() end)
try("proxy", function() mk.proxy { upstream = NAME .. ":80", timeout = 1 } end)
try("get", function() mk.get("http://" .. NAME .. ":9/", { timeout = 1 }) end)
]], NAME))
      local argv = with_resolver(addr, path)
      argv.timeout = 60
      local r = mk.run(argv)
      assert.equal(0, r.code, r.stdout .. r.stderr)
      for _, what in ipairs { "tcp", "proxy", "get" } do
        local ok, took = r.stdout:match(what .. " ok=(%a+) took=([%d.]+)")
        assert.equal("false", ok, r.stdout .. r.stderr)
        assert.is_true(tonumber(took) < 1 + MARGIN, what .. " took " .. took .. " s:\n" .. r.stdout)
      end
      local tcp_err = r.stdout:match("tcp error: ([^\n]*)")
      assert.matches("TimeoutExpired", tcp_err, 1, true)
      -- the probe's budget is what is left of the 1 s, so "within 0.99 s"
      assert.matches("cannot resolve '" .. NAME .. "' within", tcp_err, 1, true)
      local proxy_err = r.stdout:match("proxy error: ([^\n]*)")
      assert.matches("ConfigError", proxy_err, 1, true)
      assert.matches("cannot resolve '" .. NAME .. "' within 1.00 s", proxy_err, 1, true)
      local get_err = r.stdout:match("get error: ([^\n]*)")
      assert.matches("ExecutorError", get_err, 1, true)
      assert.matches("cannot resolve '" .. NAME .. "' within 1.00 s", get_err, 1, true)
    end)

    it("a Ctrl-C reaches a start() waiting for the resolver", function()
      if not is_root() then pending("needs root: a mount namespace points DNS at a silent local server") return end
      local _sink <close>, addr = dns_sink()
      local path = scenario(string.format([[
print("STARTING")
io.stdout:flush()
mk.tcp { FX, "--forever", host = %q, port = 9, timeout = 60 }:start()
print("NOT INTERRUPTED")
]], NAME))
      local argv = with_resolver(addr, path)
      argv.banner, argv.timeout, argv.expected_returncode = "^STARTING", 10, 130
      local child <close> = mk.output(argv):start()
      mk.sleep(0.5) -- into the lookup
      child:signal("INT")
      local t0 = mk.now()
      assert.equal(130, child:wait_exit { timeout = 2 + MARGIN })
      assert.is_true(mk.now() - t0 < 2 + MARGIN)
      assert.is_nil(child:output():find("NOT INTERRUPTED", 1, true))
    end)
  end)

  describe("a full capture filesystem", function()
    it("a start() that times out says no space left and names the capture file", function()
      if not is_root() then pending("needs root: a tiny tmpfs is mounted in a mount namespace") return end
      local dir = mk.tmpdir()
      -- 200 kB of output before the banner, into 64 kB: the banner, on
      -- stderr, finds no page left
      local path = scenario([[
local ok, e = pcall(function()
  mk.output { FX, "--flood", 200000, "--eprint", "READY", "--forever", banner = "^READY", stream = "stderr",
    timeout = 1, name = "filler" }:start()
end)
print("error: " .. tostring(e))
print("disk_full: " .. tostring(e.disk_full))
]])
      local r = mk.run { "unshare", "-m", "--", "sh", "-c",
        'mount -t tmpfs -o size=64k tmpfs "$1" && export MKHARNESS_TMPDIR="$1" && shift && exec "$@"',
        "sh", dir, H.host, path, timeout = 30 }
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local err = r.stdout:match("error: ([^\n]*)")
      assert.matches("no space left on device", err, 1, true)
      assert.matches(dir:gsub("%p", "%%%0") .. "/mkharness%-[^ ]*/filler%.stdout%.log", err)
      assert.matches("TimeoutExpired", err, 1, true)
      assert.matches("filler.stdout.log", r.stdout:match("disk_full: ([^\n]*)"), 1, true)
    end)
  end)

  describe("a directory the harness may not search", function()
    local function as_nobody_ok()
      if not is_root() then return false, "needs root: the harness runs as nobody (root is never denied)" end
      if not have("setpriv") then return false, "needs setpriv (util-linux) to run the harness as nobody" end
      return true
    end

    it("a pid file or file probe in it is 'permission denied', naming the directory", function()
      local ok, why = as_nobody_ok()
      if not ok then pending(why) return end
      -- a tree nobody may read, outside the run directory (which is private)
      local base = mk.run { "mktemp", "-d", "/tmp/mkh-spec-XXXXXX" }.stdout:gsub("%s+$", "")
      local done, err = pcall(function()
        local locked, tmp = base .. "/locked", base .. "/tmp"
        assert(mk.run { "sh", "-c", 'chmod 755 "$1" && mkdir -m 700 "$2" && mkdir -m 1777 "$3"',
          "sh", base, locked, tmp }.code == 0)
        local path = base .. "/scenario.lua"
        write(path, "local mk = require 'mkharness'\nlocal FX, LOCKED = " .. string.format("%q, %q", H.fx, locked) .. [[

local function try(what, make)
  local ok, e = pcall(function() make():start() end)
  print(what .. " error: " .. tostring(e))
end
try("pidfile", function() return mk.pidfile { FX, "--forever", file = LOCKED .. "/app.pid", timeout = 1 } end)
try("file", function()
  return mk.executor { FX, "--forever", ready = mk.probe.file { path = LOCKED .. "/sub/ready" }, timeout = 1 }
end)
]])
        local r = mk.run { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
          "env", "MKHARNESS_TMPDIR=" .. tmp, H.host, path, timeout = 30 }
        assert.equal(0, r.code, r.stdout .. r.stderr)
        for _, what in ipairs { "pidfile", "file" } do
          local e = r.stdout:match(what .. " error: ([^\n]*)")
          assert.matches("TimeoutExpired", e, 1, true)
          assert.matches("permission denied (directory " .. locked .. ")", e, 1, true)
          assert.is_nil(e:find("does not exist yet", 1, true))
        end
      end)
      mk.run { "rm", "-rf", base }
      assert(done, err)
    end)
  end)
end)
