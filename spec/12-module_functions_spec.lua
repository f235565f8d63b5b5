-- The module functions: mk.wait_until, mk.sleep, mk.now, mk.free_port,
-- mk.tmpdir, mk.run, mk.is_error.
local H = require "spec.helpers"
local mk = require "mkharness"

local FX = H.fx
local raises = H.raises
local config_error = H.config_error
local file_exists = H.file_exists
local write_file = H.write_file

describe("mk", function()
  H.leakcheck()

  describe("module functions", function()
    it("wait_until returns fn's value", function()
      local n = 0
      local v = mk.wait_until(function()
        n = n + 1
        return n >= 3 and "done" or nil
      end, { timeout = 5 })
      assert.equal("done", v)
      assert.equal(3, n)
      assert.equal(42, mk.wait_until(function() return 42 end))
    end)

    it("wait_until raises TimeoutExpired carrying message", function()
      local e = raises("TimeoutExpired", mk.wait_until, function() return false end,
        { timeout = 0.2, message = "the moon to rise" })
      assert.matches("the moon to rise", e.message, 1, true)
      assert.matches("the moon to rise", tostring(e), 1, true)
      assert.near(0.2, e.timeout, 1e-6)
      config_error("timout", mk.wait_until, function() return true end, { timout = 1 })
      config_error("timeout", mk.wait_until, function() return true end, { timeout = "1" })
      raises("ConfigError", mk.wait_until, "not a function")
    end)

    it("sleep and now (monotonic, same clock as clock_gettime(CLOCK_MONOTONIC))", function()
      local a = mk.now()
      assert.equal("float", math.type(a))
      mk.sleep(0.05)
      local b = mk.now()
      assert.is_true(b - a >= 0.049, "slept " .. (b - a))
      local prev = mk.now()
      for _ = 1, 1000 do
        local t = mk.now()
        assert.is_true(t >= prev)
        prev = t
      end
      -- another program's CLOCK_MONOTONIC timestamp lies between two readings
      local path = mk.tmpdir() .. "/stamp"
      local t0 = mk.now()
      assert.equal(0, mk.run { FX, "--stamp", path }.code)
      local t1 = mk.now()
      local stamp = tonumber(H.slurp(path))
      assert.is_true(t0 <= stamp and stamp <= t1, string.format("%f <= %f <= %f", t0, stamp, t1))
      raises("ConfigError", mk.sleep, -1)
      raises("ConfigError", mk.sleep, "1")
    end)

    it("free_port is an integer port that can be listened on", function()
      local p = mk.free_port()
      assert.equal("integer", math.type(p))
      assert.is_true(p >= 1 and p <= 65535)
      local s <close> = mk.process { FX, "--listen", p, "--forever" }:start()
      local _, got = s:wait_output("port (%d+)", { timeout = 10 })
      assert.equal(p, tonumber(got))
    end)

    it("tmpdir is fresh, distinct and exists", function()
      local a, b = mk.tmpdir(), mk.tmpdir()
      assert.is_string(a)
      assert.not_equal(a, b)
      for _, d in ipairs { a, b } do
        assert.equal("", mk.run { "ls", "-A", d }.stdout)
        write_file(d .. "/f", "x")
        assert.is_true(file_exists(d .. "/f"))
      end
    end)

    it("run returns code, stdout and stderr", function()
      local r = mk.run { FX, "--print", "o", "--eprint", "e", "--exit", 3 }
      assert.same({ code = 3, stdout = "o\n", stderr = "e\n" }, r)
      assert.same({ code = 0, stdout = "HI\n", stderr = "" }, mk.run { shell = "echo hi | tr a-z A-Z" })
      assert.equal("a b\n", mk.run { cmd = "echo 'a b'" }.stdout)
    end)

    it("run with stdin, env and cwd", function()
      local dir = mk.tmpdir()
      local real = mk.run { "realpath", dir }.stdout
      local r = mk.run { FX, "--cat-stdin", "--env", "SPEC10_R", "--pwd",
        stdin = "in\n", env = { SPEC10_R = "r" }, cwd = dir, timeout = 10 }
      assert.equal(0, r.code)
      assert.equal("in\nenv SPEC10_R=r\npwd " .. real, r.stdout)
    end)

    it("run raises TimeoutExpired and leaves no process", function()
      local e = raises("TimeoutExpired", mk.run, { "sleep", "5", timeout = 0.2 })
      assert.matches("sleep", tostring(e), 1, true)
      assert.same({}, H.leftovers())
      config_error("timout", mk.run, { "true", timout = 1 })
      raises("SpawnError", mk.run, { "/nonexistent/spec10-prog" })
    end)

    it("is_error", function()
      local e = raises("TimeoutExpired", mk.wait_until, function() end, { timeout = 0.05 })
      assert.is_true(mk.is_error(e))
      assert.is_true(mk.is_error(e, "TimeoutExpired"))
      assert.is_false(mk.is_error(e, "ConfigError"))
      assert.is_false(mk.is_error("TimeoutExpired"))
      assert.is_false(mk.is_error({ kind = "TimeoutExpired", message = "x" }, "TimeoutExpired"))
      assert.is_false(mk.is_error(nil))
      assert.equal(mk.Error, getmetatable(e))
    end)
  end)

  -------------------------------------------------------------- errors
end)
