-- mirakuru's executors and the behaviours mirakuru's own test-suite
-- checks, plus the ones beyond mirakuru (adoption, daemon following).
local H = require "spec.helpers"
local mk = require "mkharness"
local core = mk.core
local FX = H.fx

local expect_error = H.expect_error


local function listening(port) return core.tcp_probe("127.0.0.1", port, 1) == true end
local function url(port, path) return "http://127.0.0.1:" .. port .. (path or "/") end

local function read_pid(path)
  local s = assert(H.slurp(path), "no pidfile " .. path)
  return assert(math.tointeger(tonumber(s:match("%d+"))), "bad pidfile: " .. s)
end

-- A plain process listening on `port` (started without readiness), once it listens.
local function holder(port, extra)
  local argv = { FX, "--listen", port }
  for _, a in ipairs(extra or { "--serve-tcp" }) do argv[#argv + 1] = a end
  local p = mk.process(argv):start()
  p:wait_output("^port ", { timeout = 10 })
  return p
end

describe("executors", function()
  H.leakcheck()

  ------------------------------------------------------------ start and wait
  describe("start and wait", function()
    it("mk.output", function()
      local svc <close> = mk.output { FX, "--sleep", 0.1, "--print", "hello ready", "--forever",
        banner = "ready$", timeout = 10 }:start()
      assert.equal("output", svc.kind)
      assert.equal("hello ready", svc.ready_match.line)
    end)

    it("mk.output on stderr", function()
      local svc <close> = mk.output { FX, "--sleep", 0.1, "--eprint", "ready", "--forever",
        banner = "^ready$", stream = "stderr", timeout = 10 }:start()
      assert.equal("ready", svc.ready_match.line)
    end)

    it("mk.output: a banner that never comes times out", function()
      local svc = mk.output { FX, "--print", "nope", "--forever", banner = "^ready$", timeout = 0.3 }
      expect_error("TimeoutExpired", function() svc:start() end)
      assert.is_false(svc:running())
    end)

    it("mk.tcp sets host and port", function()
      local port = mk.free_port()
      local svc <close> = mk.tcp { FX, "--sleep", 0.1, "--listen", port, "--serve-tcp", port = port, timeout = 10 }:start()
      assert.equal("127.0.0.1", svc.host)
      assert.equal(port, svc.port)
      assert.is_true(listening(port))
      local other = mk.tcp { FX, host = "localhost", port = 1234 }
      assert.equal("localhost", other.host)
    end)

    it("mk.unix sets socket; ready and timing out", function()
      local path = mk.tmpdir() .. "/u.sock"
      local svc <close> = mk.unix { FX, "--sleep", 0.1, "--unix", path, "--serve-unix", socket = path, timeout = 10 }:start()
      assert.equal(path, svc.socket)
      assert.is_true(core.unix_probe(path) == true)
      local none = mk.tmpdir() .. "/none.sock"
      local e = expect_error("TimeoutExpired", function()
        mk.unix { FX, "--forever", socket = none, timeout = 0.3 }:start()
      end)
      assert.matches(none, e.message, 1, true)
    end)

    it("mk.http sets url, host and port", function()
      local port = mk.free_port()
      local u = url(port, "/health?deep=1")
      local svc <close> = mk.http { FX, "--sleep", 0.1, "--listen", port, "--serve-http", 200, url = u, timeout = 10 }:start()
      assert.equal(u, svc.url)
      assert.equal("127.0.0.1", svc.host)
      assert.equal(port, svc.port)
      assert.equal(200, mk.get(u).status)
    end)

    it("mk.pidfile sets file; ready once the pidfile exists", function()
      local pf = mk.tmpdir() .. "/svc.pid"
      local svc <close> = mk.pidfile { FX, "--sleep", 0.2, "--pidfile", pf, "--forever", file = pf, timeout = 10 }:start()
      assert.equal(pf, svc.file)
      assert.equal(svc:pid(), read_pid(pf))
    end)

    it("mk.pidfile follows the daemon its pid file names: pid, running, signal, pause, stopped, crash, stop", function()
      local pf = mk.tmpdir() .. "/daemon.pid"
      local svc = mk.pidfile { FX, "--daemonize", "--pidfile", pf, "--print", "daemon up", "--forever",
        file = pf, timeout = 10, name = "daemon" }:start()
      local dpid = read_pid(pf)
      assert.equal(dpid, svc:pid())
      assert.is_true(svc:running())
      assert.matches("pid " .. dpid .. ", running", tostring(svc), 1, true)
      svc:pause() -- returns once the daemon is stopped or frozen (the pause specs look closer)
      svc:resume()
      svc:stopped(function()
        assert.is_false(H.pid_alive(dpid))
      end)
      local again = read_pid(pf)
      assert.equal(again, svc:pid())
      -- a crash of the daemon is a crash of the service
      os.execute("kill -9 " .. again)
      local e = expect_error("UnexpectedExit", function() mk.sleep(5) end)
      assert.equal("daemon", e.name)
      svc:stop()
      assert.is_false(H.pid_alive(again))
    end)

    it("mk.pidfile: a pid file naming no running process is an ExecutorError; a stale one is removed before start", function()
      local pf = mk.tmpdir() .. "/stale.pid"
      local e = expect_error("ExecutorError", function()
        mk.pidfile { shell = "echo 999999999 > " .. pf .. "; exec sleep 100", file = pf, timeout = 5 }:start()
      end)
      assert.matches("cannot follow the daemon", e.message, 1, true)
    end)

    it("mk.pidfile: a pidfile that never appears times out", function()
      local pf = mk.tmpdir() .. "/never.pid"
      local e = expect_error("TimeoutExpired", function()
        mk.pidfile { FX, "--forever", file = pf, timeout = 0.3 }:start()
      end)
      assert.matches(pf, e.message, 1, true)
    end)

    it("an event probe that timed out says it waited for the event, not how many attempts", function()
      local pf = mk.tmpdir() .. "/never.pid"
      local e = expect_error("TimeoutExpired", function()
        mk.pidfile { FX, "--forever", file = pf, timeout = 0.2 }:start()
      end)
      assert.matches("waited for the event", e.message, 1, true)
      assert.not_matches("attempt", e.message, 1, true)
    end)

    it("mk.notify", function()
      local stamp = mk.tmpdir() .. "/stamp"
      local _svc <close> = mk.notify { FX, "--sleep", 0.2, "--touch", stamp, "--notify", "--forever", timeout = 10 }:start()
      assert.is_not_nil(core.size(stamp))
    end)

    it("mk.executor with a probe list", function()
      local port = mk.free_port()
      local pf = mk.tmpdir() .. "/p.pid"
      local svc <close> = mk.executor { FX, "--listen", port, "--sleep", 0.2, "--pidfile", pf, "--serve-tcp", timeout = 10,
        ready = { mk.probe.tcp { port = port }, mk.probe.file { path = pf } } }:start()
      assert.equal(svc:pid(), read_pid(pf))
    end)

    it("start() on a running service is a no-op", function()
      local svc <close> = mk.output { FX, "--print", "ready", "--forever", banner = "ready", timeout = 10 }:start()
      local pid = svc:pid()
      svc:start()
      assert.equal(pid, svc:pid())
    end)
  end)

  ------------------------------------------------------------ slow HTTP servers
  describe("slow HTTP servers", function()
    for _, method in ipairs { "HEAD", "GET", "POST" } do
      it(method .. ": started in time", function()
        local port = mk.free_port()
        local svc <close> = mk.http { FX, "--listen", port, "--http-delay", 0.5, "--serve-http", 200,
          url = url(port, "/slow"), method = method, body = method == "POST" and "payload" or nil, timeout = 10 }:start()
        assert.is_true(svc:running())
      end)

      it(method .. ": timing out", function()
        local port = mk.free_port()
        local svc = mk.http { FX, "--listen", port, "--http-delay", 5, "--serve-http", 200,
          url = url(port, "/slow"), method = method, body = method == "POST" and "payload" or nil, timeout = 0.5 }
        local t0 = mk.now()
        local e = expect_error("TimeoutExpired", function() svc:start() end)
        assert.is_true(mk.now() - t0 < 5)
        assert.matches(method .. " " .. url(port, "/slow"), e.message, 1, true)
        assert.is_false(svc:running())
      end)
    end

    it("POST sends its payload (kvd stores the body of a PUT/POST-style request)", function()
      local port = mk.free_port()
      local _svc <close> = mk.http { H.kvd, "--port", port, "--data", mk.tmpdir() .. "/kvd.log", url = url(port, "/kv/greeting"), method = "PUT",
        body = "hello from the probe", status = 204, timeout = 10 }:start()
      assert.equal("hello from the probe", mk.get(url(port, "/kv/greeting")).body)
    end)
  end)

  ------------------------------------------------------------ status forms
  describe("http status", function()
    -- the forms themselves are the probe's (spec/30-probes_spec.lua "status forms")
    it("mk.http hands its status = to its probe", function()
      local port = mk.free_port()
      local svc <close> = mk.http { FX, "--listen", port, "--serve-http", 418, url = url(port), status = "4xx",
        timeout = 10 }:start()
      assert.is_true(svc:running())
    end)
  end)

  ------------------------------------------------------------ AlreadyRunning
  describe("AlreadyRunning", function()
    it("tcp: names the pid and command holding the port; nothing is spawned", function()
      local port = mk.free_port()
      local h <close> = holder(port)
      local svc = mk.tcp { FX, "--listen", port, "--serve-tcp", port = port, timeout = 10 }
      local e = expect_error("AlreadyRunning", function() svc:start() end)
      assert.matches(tostring(h:pid()), e.message, 1, true)
      assert.matches("fx_svc", e.message, 1, true)
      assert.matches(tostring(port), e.message, 1, true)
      assert.is_nil(svc:pid())
      assert.is_true(h:running())
    end)

    it("http", function()
      local port = mk.free_port()
      local h <close> = holder(port, { "--serve-http", 200 })
      local svc = mk.http { FX, "--listen", port, "--serve-http", 200, url = url(port), timeout = 10 }
      local e = expect_error("AlreadyRunning", function() svc:start() end)
      assert.matches(url(port), e.message, 1, true)
      assert.matches(tostring(h:pid()), e.message, 1, true)
      assert.is_nil(svc:pid())
    end)

    it("names the holder by its process title, trimmed (redis pads its title with spaces)", function()
      local port = mk.free_port()
      local _h <close> = mk.tcp { "bash", "-c", "exec -a 'padded-title   with   gaps   ' " .. FX .. " --listen " .. port ..
        " --serve-tcp", port = port, timeout = 10, name = "holder" }:start()
      local svc = mk.tcp { FX, "--listen", port, "--serve-tcp", port = port, timeout = 10 }
      local e = expect_error("AlreadyRunning", function() svc:start() end)
      assert.matches("padded-title with gaps --listen", e.message, 1, true)
      assert.not_matches("  ", e.message:match("[^\n]*"), 1, true)
    end)

    it("pidfile", function()
      local pf = mk.tmpdir() .. "/exists.pid"
      local f = assert(io.open(pf, "w"))
      f:write("1\n")
      f:close()
      local svc = mk.pidfile { FX, "--forever", file = pf, timeout = 10 }
      local e = expect_error("AlreadyRunning", function() svc:start() end)
      assert.matches(pf, e.message, 1, true)
      assert.is_nil(svc:pid())
    end)

    it("already_running = 'reuse' adopts: no spawn, stop() is a no-op, the original keeps running", function()
      local port = mk.free_port()
      local h <close> = holder(port)
      local stamp = mk.tmpdir() .. "/spawned"
      local svc = mk.tcp { FX, "--touch", stamp, "--listen", port, "--serve-tcp", port = port,
        already_running = "reuse", timeout = 10 }
      assert.equal(svc, svc:start())
      assert.is_nil(svc:pid())
      assert.is_nil(core.size(stamp))
      svc:stop()
      assert.is_true(h:running())
      assert.is_true(listening(port))
    end)

    it("already_running = 'ignore' spawns anyway", function()
      local port = mk.free_port()
      local h <close> = holder(port)
      local svc <close> = mk.tcp { FX, "--print", "second", "--forever", port = port,
        already_running = "ignore", timeout = 10 }:start()
      assert.is_true(svc:running())
      assert.is_not.equal(h:pid(), svc:pid())
      assert.equal("second", (svc:wait_output("second")))
    end)

    it("rejects other values", function()
      expect_error("ConfigError", function() mk.tcp { FX, port = 80, already_running = "adopt" } end)
    end)
  end)

  ------------------------------------------------------------ dying and daemonizing
  describe("before ready", function()
    it("a non-zero exit raises ProcessExitedWithError at once, with exit_code and log tail", function()
      local port = mk.free_port()
      local svc = mk.tcp { FX, "--print", "starting up", "--eprint", "fatal: bad config line 3", "--exit", 3,
        port = port, timeout = 30 }
      local t0 = mk.now()
      local e = expect_error("ProcessExitedWithError", function() svc:start() end)
      assert.is_true(mk.now() - t0 < 5, "waited " .. (mk.now() - t0) .. " s: not at once")
      assert.equal(3, e.exit_code)
      assert.matches("fatal: bad config line 3", e.log_tail, 1, true)
      assert.matches("starting up", e.log_tail, 1, true)
      assert.matches("fatal: bad config line 3", tostring(e), 1, true)
      assert.equal(svc.name, e.name)
      assert.is_false(svc:running())
    end)

    it("death by a signal before ready is ProcessExitedWithError too", function()
      local e = expect_error("ProcessExitedWithError", function()
        mk.output { shell = "kill -9 $$", banner = "never", timeout = 30 }:start()
      end)
      assert.equal(-9, e.exit_code)
    end)

    it("an exit 0 before ready keeps probing (daemonizing); stop() cleans up the daemon", function()
      local port = mk.free_port()
      local pf = mk.tmpdir() .. "/daemon.pid"
      local svc = mk.tcp { FX, "--daemonize", "--pidfile", pf, "--sleep", 0.2, "--listen", port, "--serve-tcp",
        port = port, timeout = 10 }:start()
      local daemon = read_pid(pf)
      assert.is_true(H.pid_alive(daemon))
      assert.is_true(listening(port))
      svc:stop()
      assert.is_true(mk.wait_until(function() return not H.pid_alive(daemon) end, { timeout = 5 }))
      assert.is_false(listening(port))
    end)

    it("an exit 0 before ready that never becomes ready still times out", function()
      local port = mk.free_port()
      expect_error("TimeoutExpired", function()
        mk.tcp { FX, "--exit", 0, port = port, timeout = 0.4 }:start()
      end)
    end)
  end)

  ------------------------------------------------------------ timeouts
  describe("not ready in time", function()
    it("kills the service and names what was tried and how often", function()
      local port = mk.free_port()
      local pf = mk.tmpdir() .. "/slow.pid"
      local svc = mk.tcp { FX, "--pidfile", pf, "--print", "warming up", "--forever", port = port, timeout = 0.4 }
      local e = expect_error("TimeoutExpired", function() svc:start() end)
      assert.matches("tcp 127.0.0.1:" .. port, e.message, 1, true)
      local n = tonumber(e.message:match("(%d+) attempts?"))
      assert.is_true(n ~= nil and n > 0, e.message)
      assert.matches("warming up", e.log_tail, 1, true)
      assert.is_truthy(e.timeout)
      assert.is_false(svc:running())
      local pid = read_pid(pf)
      assert.is_false(H.pid_alive(pid))
    end)

    it("the deadline covers the whole start, all probes", function()
      local port = mk.free_port()
      local t0 = mk.now()
      expect_error("TimeoutExpired", function()
        mk.executor { FX, "--forever", timeout = 0.5, ready = {
          mk.probe.tcp { port = port }, mk.probe.exec { "false" }, function() return false end,
        } }:start()
      end)
      assert.is_true(mk.now() - t0 < 5)
    end)
  end)

  ------------------------------------------------------------ stopping
  describe("stopping", function()
    it("a server started through a shell stops", function()
      local port = mk.free_port()
      local svc = mk.tcp { shell = string.format("%s --listen %d --serve-tcp", FX, port), port = port, timeout = 10 }:start()
      svc:stop()
      assert.is_false(svc:running())
      assert.is_false(listening(port))
    end)

    it("a server started through a shell that stays its parent stops", function()
      local port = mk.free_port()
      local pf = mk.tmpdir() .. "/child.pid"
      local svc = mk.tcp { shell = string.format("%s --pidfile %s --listen %d --serve-tcp; echo after", FX, pf, port),
        port = port, timeout = 10 }:start()
      local child = read_pid(pf)
      assert.is_not.equal(svc:pid(), child)
      svc:stop()
      assert.is_false(svc:running())
      assert.is_false(H.pid_alive(child))
      assert.is_false(listening(port))
    end)

    it("a service ignoring SIGTERM is killed after stop_timeout", function()
      local port = mk.free_port()
      local svc = mk.tcp { FX, "--ignore", "TERM", "--listen", port, "--serve-tcp", port = port,
        stop_timeout = 0.3, timeout = 10 }:start()
      local t0 = mk.now()
      svc:stop()
      assert.is_true(mk.now() - t0 < 5)
      assert.is_false(svc:running())
      assert.equal(-9, svc:exit_code())
      assert.is_false(listening(port))
    end)

    it("<close> stops", function()
      local port = mk.free_port()
      local pid
      do
        local svc <close> = mk.tcp { FX, "--listen", port, "--serve-tcp", port = port, timeout = 10 }:start()
        pid = svc:pid()
      end
      assert.is_false(H.pid_alive(pid))
    end)
  end)

  ------------------------------------------------------------ configuration
  describe("configuration", function()
    it("http: the default port is 80, or 443 for https", function()
      local a = mk.http { FX, url = "http://example.invalid/health" }
      assert.equal(80, a.port)
      assert.equal("example.invalid", a.host)
      local b = mk.http { FX, url = "https://example.invalid/" }
      assert.equal(443, b.port)
      local c = mk.http { FX, url = "https://example.invalid:8443/x?y" }
      assert.equal(8443, c.port)
      assert.equal("https://example.invalid:8443/x?y", c.url)
    end)

    it("mk.pidfile with an empty file name is a ConfigError", function()
      local e = expect_error("ConfigError", function() mk.pidfile { FX, file = "" } end)
      assert.matches("file", e.message, 1, true)
      expect_error("ConfigError", function() mk.pidfile { FX } end)
    end)

    it("unknown options (typos) are ConfigErrors naming the option, per executor", function()
      local cases = {
        { mk.executor, { FX, raedy = function() return true end }, "raedy" },
        { mk.output, { FX, banner = "x", baner = "x" }, "baner" },
        { mk.tcp, { FX, port = 80, prot = 81 }, "prot" },
        { mk.unix, { FX, socket = "/tmp/x", sockt = "/tmp/x" }, "sockt" },
        { mk.http, { FX, url = "http://127.0.0.1/", ulr = "x" }, "ulr" },
        { mk.pidfile, { FX, file = "/tmp/x", fiel = "/tmp/x" }, "fiel" },
        { mk.notify, { FX, timout = 5 }, "timout" },
        { mk.process, { FX, stop_timout = 5 }, "stop_timout" },
      }
      for _, c in ipairs(cases) do
        local e = expect_error("ConfigError", function() c[1](c[2]) end)
        assert.matches("'" .. c[3] .. "'", e.message, 1, true)
      end
    end)

    it("a required option missing is a ConfigError naming it", function()
      for _, c in ipairs {
        { mk.output, "banner" }, { mk.tcp, "port" }, { mk.unix, "socket" }, { mk.http, "url" }, { mk.pidfile, "file" },
      } do
        local e = expect_error("ConfigError", function() c[1] { FX } end)
        assert.matches(c[2], e.message, 1, true)
      end
    end)

    it("bad URL forms are ConfigErrors naming `url`", function()
      for _, u in ipairs { "127.0.0.1:8080/", "ftp://127.0.0.1/", "http://127.0.0.1:70000/", "http:///health",
        "http://:8080/", "http://127.0.0.1:-1/" } do
        local e = expect_error("ConfigError", function() mk.http { FX, url = u } end)
        assert.matches("url", e.message, 1, true)
        assert.equal("url", e.option)
      end
    end)

    it("a port out of range is a ConfigError naming `port`", function()
      for _, p in ipairs { 0, -5, 65536, 70000, "x" } do
        local e = expect_error("ConfigError", function() mk.tcp { FX, port = p } end)
        assert.matches("port", e.message, 1, true)
      end
    end)

    it("an invalid banner is a ConfigError", function()
      local e = expect_error("ConfigError", function() mk.output { FX, banner = "[" } end)
      assert.matches("banner", e.message, 1, true)
    end)

    it("tostring names the kind and command", function()
      local svc = mk.tcp { FX, "--forever", port = 1234 }
      assert.matches("mkharness.tcp", tostring(svc), 1, true)
      assert.matches("fx_svc --forever", tostring(svc), 1, true)
    end)
  end)
end)
