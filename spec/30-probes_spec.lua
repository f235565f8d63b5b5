-- Readiness probes, each on its own inside mk.executor{ ready = ... },
-- and lists of probes (all must pass).
local H = require "spec.helpers"
local mk = require "mkharness"
local core = mk.core
local FX = H.fx

local expect_error = H.expect_error

local function exe(t)
  t.timeout = t.timeout or 10
  return mk.executor(t)
end

local function listening(port)
  return core.tcp_probe("127.0.0.1", port, 1) == true
end

local function exists(path)
  return core.size(path) ~= nil
end


local function url(port, path) return "http://127.0.0.1:" .. port .. (path or "/") end

describe("probes", function()
  H.leakcheck()

  ------------------------------------------------------------ output
  describe("output", function()
    it("matches a banner on stdout and records ready_match", function()
      local svc <close> = exe { FX, "--print", "starting", "--sleep", 0.1, "--print", "ready to serve", "--forever",
        ready = mk.probe.output { banner = "^ready to" } }:start()
      assert.is_true(svc:running())
      assert.same({ line = "ready to serve" }, svc.ready_match)
    end)

    it("matches a banner on stderr (stream = 'stderr')", function()
      local svc <close> = exe { FX, "--sleep", 0.1, "--eprint", "ERR ready", "--forever",
        ready = mk.probe.output { banner = "ready", stream = "stderr" } }:start()
      assert.equal("ERR ready", svc.ready_match.line)
    end)

    it("stream = 'any' sees stderr too", function()
      local svc <close> = exe { FX, "--print", "noise", "--sleep", 0.1, "--eprint", "up and ready", "--forever",
        ready = mk.probe.output { banner = "ready", stream = "any" } }:start()
      assert.equal("up and ready", svc.ready_match.line)
    end)

    it("stream = 'stdout' does not see a stderr banner", function()
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--eprint", "ready", "--forever", timeout = 0.4,
          ready = mk.probe.output { banner = "ready", stream = "stdout" } }:start()
      end)
      assert.matches("ready", e.message, 1, true)
    end)

    it("matches a banner split across writes", function()
      local svc <close> = exe { FX, "--write", "rea", "--sleep", 0.05, "--print", "dy", "--forever",
        ready = mk.probe.output { banner = "^ready$" } }:start()
      assert.equal("ready", svc.ready_match.line)
    end)

    it("matches the current partial line (a prompt without newline)", function()
      local svc <close> = exe { FX, "--sleep", 0.05, "--write", "db> ", "--forever",
        ready = mk.probe.output { banner = "^db> $" } }:start()
      assert.equal("db> ", svc.ready_match.line)
    end)

    it("finds a banner after 100 MB of output", function()
      local svc <close> = exe { FX, "--flood", 100000000, "--print", "ready now", "--forever", timeout = 40,
        ready = mk.probe.output { banner = "^ready now$" } }:start()
      assert.equal("ready now", svc.ready_match.line)
    end)

    -- Lines longer than 1 MB are matched as they arrive, piece by piece
    -- (README, output probe); these used to keep only the last 512 KB.
    -- --long-line/--long-write write the whole line at once, so the banner
    -- is never seen alone on a short partial line.
    describe("on a line longer than 1 MB", function()
      it("finds a banner at the line's start; ^ still means the start of the line", function()
        local svc <close> = exe { FX, "--long-line", "BANNER up ", 3000000, "--forever",
          ready = mk.probe.output { banner = "^BANNER (%a+)" } }:start()
        assert.equal("up", svc.ready_match[1])
        assert.equal("BANNER up yyy", svc.ready_match.line:sub(1, 13))
      end)

      it("finds it in the unterminated line too (pattern and plain)", function()
        local svc <close> = exe { FX, "--long-write", "port=4242 ", 3000000, "--forever",
          ready = mk.probe.output { banner = "^port=(%d+) " } }:start()
        assert.equal("4242", svc.ready_match[1])
        local svc2 <close> = exe { FX, "--long-write", "port=4242 ", 3000000, "--forever",
          ready = mk.probe.output { banner = "port=4242", plain = true } }:start()
        assert.equal("port=4242 y", svc2.ready_match.line:sub(1, 11))
      end)

      it("finds a banner in the middle of the line, with captures and frontiers", function()
        local svc <close> = exe { FX, "--flood-line", 1100000, "--sleep", 0.3, "--long-line", " port=4242 ", 3000000,
          "--forever", ready = mk.probe.output { banner = "%f[%w]port=(%d+)%f[%W]" } }:start()
        assert.equal("4242", svc.ready_match[1])
      end)

      it("^ does not match inside the line", function()
        local e = expect_error("TimeoutExpired", function()
          exe { FX, "--flood-line", 3000000, "--write", "BANNER", "--forever", timeout = 1,
            ready = mk.probe.output { banner = "^BANNER" } }:start()
        end)
        assert.matches("^BANNER", e.message, 1, true)
      end)

      it("wait_output finds a banner at the start of a long line", function()
        local svc <close> = mk.process { FX, "--long-line", "hello BANNER ", 3000000, "--forever" }:start()
        local line, word = svc:wait_output("^hello (%u+)", { timeout = 10 })
        assert.equal("BANNER", word)
        assert.equal("hello BANNER y", line:sub(1, 14))
      end)
    end)

    -- A pattern that backtracks exponentially on a line containing its
    -- literal part: unbounded, string.find takes ~20 s on these 28 bytes.
    describe("a backtracking banner", function()
      local PAT = string.rep("(.-)", 10) .. "x$"
      local LINE = string.rep("a", 26) .. "x!"

      local function costly(e)
        assert.matches("backtracks too much on a line of 28 bytes", e.message, 1, true)
        assert.matches(string.format("%q", PAT), e.message, 1, true)
        assert.matches("plain = true", e.message, 1, true)
      end

      it("start() still ends at its deadline, saying why", function()
        local t0 = core.now()
        local e = expect_error("TimeoutExpired", function()
          exe { FX, "--print", LINE, "--forever", timeout = 1, ready = mk.probe.output { banner = PAT } }:start()
        end)
        assert(core.now() - t0 < 5, "took " .. (core.now() - t0) .. " s") -- no hang: the bug took ~20 s
        costly(e)
      end)

      it("the bounded matcher (core.find) agrees with string.find", function()
        local pats = { "a", "^a", "a$", "%d+", "(%w+)=(%w+)", "()x()", "[%a_][%w_]*", "%bxy", "%f[%w]%w+",
          "(a)%1", "a-b", "a*b", ".-$", "^(.-)%s", "[^%s]+", "x?y", "[]]", "[a-c%]]+", "%%", "$a", "a.b",
          "%s*$", "[%-x]+", "^$", "", "%f[%W]" }
        local chars = { "a", "b", "x", "y", " ", "=", "1", "%", "]", "_", "\0" }
        local rnd = 12345
        local function random(n) rnd = (rnd * 1103515245 + 12345) % 2147483648 return rnd % n + 1 end
        for _ = 1, 2000 do
          local t = {}
          for i = 1, random(13) - 1 do t[i] = chars[random(#chars)] end
          local s = table.concat(t)
          for _, pat in ipairs(pats) do
            local init = random(#s + 1)
            assert.same({ string.find(s, pat, init) }, { core.find(s, pat, init) },
              string.format("%q %q %d", s, pat, init))
          end
        end
      end)

      it("wait_output still ends at its deadline, saying why", function()
        local svc <close> = mk.process { FX, "--print", LINE, "--forever" }:start()
        local t0 = core.now()
        local e = expect_error("TimeoutExpired", function() svc:wait_output(PAT, { timeout = 1 }) end)
        assert(core.now() - t0 < 5, "took " .. (core.now() - t0) .. " s")
        costly(e)
      end)
    end)

    it("plain = true matches magic characters literally", function()
      local svc <close> = exe { FX, "--sleep", 0.05, "--print", "x (100%) [ok]. done", "--forever",
        ready = mk.probe.output { banner = "(100%) [ok].", plain = true } }:start()
      assert.equal("x (100%) [ok]. done", svc.ready_match.line)
    end)

    it("plain = true does not treat the banner as a pattern", function()
      -- as a pattern, "a.c" would match "abc"
      expect_error("TimeoutExpired", function()
        exe { FX, "--print", "abc", "--forever", timeout = 0.4,
          ready = mk.probe.output { banner = "a.c", plain = true } }:start()
      end)
    end)

    it("ready_match carries the pattern's captures (a port the service chose)", function()
      local svc <close> = exe { FX, "--listen", 0, "--serve-tcp",
        ready = mk.probe.output { banner = "^port (%d+)$" } }:start()
      local m = svc.ready_match
      assert.matches("^port %d+$", m.line)
      local port = assert(math.tointeger(tonumber(m[1])))
      assert.is_true(port > 0)
      assert.is_true(listening(port))
      -- wait_output returns the line, then the captures
      local line, p = svc:wait_output("^port (%d+)$")
      assert.equal(m.line, line)
      assert.equal(m[1], p)
    end)

    it("a banner that never comes: TimeoutExpired naming the banner, service killed", function()
      local svc = exe { FX, "--print", "something else", "--forever", timeout = 0.3,
        ready = mk.probe.output { banner = "never printed" } }
      local e = expect_error("TimeoutExpired", function() svc:start() end)
      assert.matches("never printed", e.message, 1, true)
      assert.matches("something else", e.log_tail, 1, true)
      assert.is_false(svc:running())
    end)

    it("an invalid pattern is a ConfigError", function()
      local e = expect_error("ConfigError", function() mk.probe.output { banner = "([" } end)
      assert.matches("banner", e.message, 1, true)
      expect_error("ConfigError", function() mk.probe.output { banner = "%" } end)
      expect_error("ConfigError", function() mk.probe.output {} end)
      expect_error("ConfigError", function() mk.probe.output { banner = "x", stream = "stdin" } end)
      expect_error("ConfigError", function() mk.output { FX, banner = "[a" } end)
    end)

    it("a pattern invalid only past its first characters is a ConfigError too", function()
      -- an unclosed capture: string.find("", pat) does not notice, a match would raise
      local e = expect_error("ConfigError", function() mk.probe.output { banner = "(100%) [ok]." } end)
      assert.matches("banner", e.message, 1, true)
      expect_error("ConfigError", function() mk.probe.output { banner = "ab(c" } end)
      expect_error("ConfigError", function() mk.probe.output { banner = "x%1" } end)
    end)

    it("the literal every match must contain is right for any pattern (the prefilter never hides a match)", function()
      -- a '?' after %b() is a literal made optional: it is not required
      local svc <close> = mk.output { FX, "--print", "call(x) done", "--forever", banner = "%b()-? done" }:start()
      assert.equal("call(x) done", svc.ready_match.line)
      local alphabet = { "a", "b", "%", "[", "]", "(", ")", ".", "*", "+", "-", "?", "^", "$", "%a", "%d",
        "%%", "%.", "%$", "x", "1", "%b()", "%f[%w]", "[^a]", "%1", " " }
      local chars = { "a", "b", "x", "1", "(", ")", "+", "-", "?", "^", "$", "%", ".", " ", "[", "]", "*" }
      local options = require "mkharness.options"
      local probes = require "mkharness.probes"
      local seed = 20261129
      math.randomseed(seed)
      for _ = 1, 20000 do
        local parts = {}
        for i = 1, math.random(1, 6) do parts[i] = alphabet[math.random(#alphabet)] end
        local pat = table.concat(parts)
        if options.pattern_error(pat) == nil then
          local needle = probes.needle_of(pat)
          for _ = 1, 5 do
            local sp = {}
            for i = 1, math.random(0, 12) do sp[i] = chars[math.random(#chars)] end
            local subject = table.concat(sp)
            local ok, at = pcall(string.find, subject, pat)
            if ok and at then
              assert(subject:find(needle, 1, true), string.format("seed %d: %q matches %q, which lacks the needle %q",
                seed, subject, pat, needle))
            end
          end
        end
      end
    end)

    it("'|' (a regex habit) is a ConfigError pointing at mk.probe.any and plain; '%|' and plain '|' are literal", function()
      local e = expect_error("ConfigError", function() mk.output { FX, banner = "ready|started" } end)
      assert.matches("mk.probe.any", e.message, 1, true)
      assert.matches("plain = true", e.message, 1, true)
      expect_error("ConfigError", function() mk.probe.output { banner = "a|b" } end)
      local svc <close> = mk.output { FX, "--print", "a|b up", "--forever", banner = "a%|b up" }:start()
      assert.equal("a|b up", svc.ready_match.line)
      local p = mk.output { FX, "--print", "a|b", "--forever", banner = "a|b", plain = true }:start()
      p:stop()
      assert.equal("a|b up", svc:wait_output("a[|]b"))
    end)
  end)

  ------------------------------------------------------------ marks
  describe("svc:mark() and wait_output{ since = MARK }", function()
    local RELOADER = "trap 'echo reloaded' HUP; echo up; while :; do sleep 0.01; done"

    it("sees a line written after the mark, even before wait_output is called", function()
      local svc <close> = mk.process { shell = RELOADER }:start()
      svc:wait_output("^up$")
      local m = svc:mark()
      svc:signal("HUP")
      -- the line is there before the wait begins: "now" misses it, the mark does not
      mk.wait_until(function() return svc:output():find("reloaded", 1, true) end, { timeout = 10 })
      expect_error("TimeoutExpired", function() svc:wait_output("^reloaded$", { since = "now", timeout = 0.2 }) end)
      assert.equal("reloaded", (svc:wait_output("^reloaded$", { since = m, timeout = 10 })))
      -- and only what came after it: the first reload is not the second
      local m2 = svc:mark()
      expect_error("TimeoutExpired", function() svc:wait_output("^reloaded$", { since = m2, timeout = 0.2 }) end)
      svc:signal("HUP")
      assert.equal("reloaded", (svc:wait_output("^reloaded$", { since = m2, timeout = 10 })))
      assert.equal("reloaded", (svc:wait_output("reloaded", { since = m, times = 2, timeout = 10 })))
    end)

    it("a mark inside a line: ^ does not match the rest of that line", function()
      local dir = mk.tmpdir()
      local svc <close> = mk.process { FX, "--write", "abc", "--touch", dir .. "/half", "--sleep", 0.3,
        "--print", "def", "--print", "def", "--forever" }:start()
      mk.wait_until(function() return exists(dir .. "/half") end, { timeout = 10 })
      local m = svc:mark()
      local line = svc:wait_output("^def$", { since = m, timeout = 10 })
      assert.equal("def", line)
      assert.matches("abcdef\ndef\n", svc:output(), 1, true)
      expect_error("TimeoutExpired", function() svc:wait_output("^def$", { since = m, times = 2, timeout = 0.3 }) end)
      expect_error("TimeoutExpired", function() svc:wait_output("cdef", { since = m, plain = true, timeout = 0.2 }) end)
    end)

    it("per stream: a mark covers stderr too", function()
      local svc <close> = mk.process { FX, "--eprint", "warn 1", "--print", "up", "--forever" }:start()
      svc:wait_output("^up$")
      local m = svc:mark()
      assert.equal(#"up\n", m.stdout)
      assert.equal(#"warn 1\n", m.stderr)
      expect_error("TimeoutExpired", function() svc:wait_output("warn", { since = m, timeout = 0.2 }) end)
    end)

    it("a mark of another service, or from before a restart, is a ConfigError naming since", function()
      local a <close> = mk.process { FX, "--print", "up", "--forever", name = "mark-a" }:start()
      local b <close> = mk.process { FX, "--print", "up", "--forever", name = "mark-b" }:start()
      local mb = b:mark()
      local e = expect_error("ConfigError", function() a:wait_output("up", { since = mb }) end)
      assert.matches("since", e.message, 1, true)
      assert.matches("mark-b", e.message, 1, true)
      local ma = a:mark()
      a:restart()
      e = expect_error("ConfigError", function() a:wait_output("up", { since = ma }) end)
      assert.matches("since", e.message, 1, true)
      assert.matches("restarted", e.message, 1, true)
      e = expect_error("ConfigError", function() a:wait_output("up", { since = { stdout = 0 } }) end)
      assert.matches("since", e.message, 1, true)
      expect_error("ConfigError", function() a:wait_output("up", { since = 3 }) end)
      assert.equal("up", (a:wait_output("up", { since = "start" })))
      local n = mk.process { FX, "--forever" }
      expect_error("ExecutorError", function() n:mark() end)
    end)
  end)

  ------------------------------------------------------------ times
  describe("times = N", function()
    it("mk.output: ready at the N-th matching line", function()
      local svc <close> = mk.output { FX, "--print", "ready", "--sleep", 0.2, "--print", "ready", "--forever",
        banner = "^ready$", times = 2, timeout = 10 }:start()
      local _, n = svc:output():gsub("ready\n", "")
      assert.equal(2, n)
    end)

    it("mk.probe.output: ready_match is the N-th line", function()
      local svc <close> = exe { FX, "--print", "ready 1", "--print", "noise", "--print", "ready 2",
        "--print", "ready 3", "--forever", ready = mk.probe.output { banner = "^ready (%d)$", times = 2 } }:start()
      assert.same({ line = "ready 2", "2" }, svc.ready_match)
      assert.matches("2 times", mk.probe.output { banner = "x", times = 2 }:describe(), 1, true)
    end)

    it("wait_output{ times = N } counts the lines, not the wake-ups on a partial one", function()
      local svc <close> = mk.process { FX, "--print", "db> ", "--write", "db> ", "--forever" }:start()
      local line = svc:wait_output("db>", { times = 2, timeout = 10 })
      assert.equal("db> ", line)
      local e = expect_error("TimeoutExpired", function() svc:wait_output("db>", { times = 3, timeout = 0.3 }) end)
      assert.matches("1 of 3", e.message, 1, true) -- the unfinished line counts once complete
    end)

    it("N must be an integer >= 1: a ConfigError naming times", function()
      for _, bad in ipairs { 0, -1, 1.5, "2", true } do
        local e = expect_error("ConfigError", function() mk.probe.output { banner = "x", times = bad } end)
        assert.matches("times", e.message, 1, true)
        expect_error("ConfigError", function() mk.output { FX, banner = "x", times = bad } end)
      end
      local svc <close> = mk.process { FX, "--print", "x", "--forever" }:start()
      local e = expect_error("ConfigError", function() svc:wait_output("x", { times = 0 }) end)
      assert.matches("times", e.message, 1, true)
    end)
  end)

  ------------------------------------------------------------ tcp
  describe("tcp", function()
    it("is ready once the port accepts", function()
      local port = mk.free_port()
      local _svc <close> = exe { FX, "--sleep", 0.2, "--listen", port, "--serve-tcp",
        ready = mk.probe.tcp { port = port } }:start()
      assert.is_true(listening(port))
    end)

    it("times out naming host:port and the attempts", function()
      local port = mk.free_port()
      local svc = exe { FX, "--forever", timeout = 0.3, ready = mk.probe.tcp { host = "127.0.0.1", port = port } }
      local e = expect_error("TimeoutExpired", function() svc:start() end)
      assert.matches("tcp 127.0.0.1:" .. port, e.message, 1, true)
      local n = tonumber(e.message:match("(%d+) attempts?"))
      assert.is_true(n ~= nil and n > 0, e.message)
      assert.is_false(svc:running())
    end)

    it("rejects a bad port", function()
      for _, p in ipairs { 0, 65536, -1, "80", 1.5 } do
        local e = expect_error("ConfigError", function() mk.probe.tcp { port = p } end)
        assert.matches("port", e.message, 1, true)
      end
      expect_error("ConfigError", function() mk.probe.tcp {} end)
    end)
  end)

  ------------------------------------------------------------ unix
  describe("unix", function()
    it("is ready once the socket accepts", function()
      local path = mk.tmpdir() .. "/s.sock"
      local _svc <close> = exe { FX, "--sleep", 0.2, "--unix", path, "--serve-unix",
        ready = mk.probe.unix { socket = path } }:start()
      assert.is_true(core.unix_probe(path) == true)
    end)

    it("times out when nobody listens", function()
      local path = mk.tmpdir() .. "/never.sock"
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--forever", timeout = 0.3, ready = mk.probe.unix { socket = path } }:start()
      end)
      assert.matches(path, e.message, 1, true)
    end)

    it("a regular file at the path: a clear error within the deadline, not a hang", function()
      local path = mk.tmpdir() .. "/file.sock"
      local f = assert(io.open(path, "w"))
      f:write("x")
      f:close()
      local t0 = mk.now()
      local ok, e = pcall(function()
        exe { FX, "--forever", timeout = 0.5, ready = mk.probe.unix { socket = path } }:start()
      end)
      assert.is_false(ok)
      assert.is_true(mk.is_error(e), tostring(e))
      assert.matches("not a socket", tostring(e), 1, true)
      assert.is_true(mk.now() - t0 < 3, "took " .. (mk.now() - t0))
    end)

    it("rejects a path too long for a socket", function()
      expect_error("ConfigError", function() mk.probe.unix { socket = "/tmp/" .. string.rep("x", 120) } end)
      expect_error("ConfigError", function() mk.probe.unix {} end)
    end)
  end)

  ------------------------------------------------------------ http
  describe("http", function()
    local function http_svc(port, extra, probe_opts, opts)
      local argv = { FX, "--listen", port }
      for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
      for k, v in pairs(opts or {}) do argv[k] = v end
      probe_opts.url = probe_opts.url or url(port, "/health")
      argv.ready = mk.probe.http(probe_opts)
      return exe(argv)
    end

    it("backs off from a service that answers but is not ready: at most about 1/interval requests a second", function()
      local port = mk.free_port()
      local svc = http_svc(port, { "--http-log", "--serve-http", 404 }, { status = 200 }, { timeout = 1 })
      local e = expect_error("TimeoutExpired", function() svc:start() end)
      -- what the service saw (the attempts before it listened were
      -- refused, and cost it nothing): 1 s at the default interval (0.1 s)
      -- after a doubling ramp, ~10-17, not ~150
      local _, n = svc:output():gsub("request\n", "")
      assert.is_true(n >= 1 and n <= 25, "the service got " .. tostring(n) .. " requests in 1 s")
      assert.matches("404", e.message, 1, true)
    end)

    for _, method in ipairs { "HEAD", "GET", "POST" } do
      it("is ready with method " .. method, function()
        local port = mk.free_port()
        local _svc <close> = http_svc(port, { "--sleep", 0.1, "--serve-http", 200 },
          { method = method, body = method == "POST" and "payload" or nil }):start()
        local r = mk.http_request { url = url(port, "/x"), method = method }
        assert.equal(200, r.status)
        assert.equal(method, r.headers["x-method"])
      end)
    end

    it("sends method and body (checked through kvd, which stores a PUT body)", function()
      local port = mk.free_port()
      local _svc <close> = exe { H.kvd, "--port", port, "--data", mk.tmpdir() .. "/kvd.log",
        ready = mk.probe.http { url = url(port, "/kv/probe"), method = "PUT", body = "sent by the probe" } }:start()
      local r = mk.get(url(port, "/kv/probe"))
      assert.equal(200, r.status)
      assert.equal("sent by the probe", r.body)
    end)

    it("the server echoes what a request sends: path with query, method, body", function()
      local port = mk.free_port()
      local path = "/a/b%20c?x=1&y=%2F&z"
      local _svc <close> = http_svc(port, { "--serve-http", 200 }, { url = url(port, path), headers = { ["X-Test"] = "1" } }):start()
      local r = mk.get(url(port, path))
      assert.equal(path, r.headers["x-path"])
      local p = mk.http_request { url = url(port, path), method = "POST", body = "hello" }
      assert.equal("POST " .. path .. "\nhello", p.body)
    end)

    it("accepts headers as a map and as a list", function()
      local port = mk.free_port()
      local _svc <close> = http_svc(port, { "--serve-http", 200 },
        { headers = { ["X-One"] = "1", Accept = "text/plain" } }):start()
      local p = mk.probe.http { url = url(port), headers = { "X-Two: 2" } }
      assert.equal("http", p.kind)
      expect_error("ConfigError", function() mk.probe.http { url = url(port), headers = { "no colon" } } end)
      expect_error("ConfigError", function() mk.probe.http { url = url(port), headers = { ["X-A"] = "a\r\nB: b" } } end)
    end)

    describe("status forms", function()
      local forms = {
        { "a number", 404 },
        { "a list", { 200, 404 } },
        { "a class", "4xx" },
        { "a function", function(s) return s == 404 end },
      }
      for _, f in ipairs(forms) do
        it(f[1] .. " accepts a matching status", function()
          local port = mk.free_port()
          local svc <close> = http_svc(port, { "--sleep", 0.05, "--serve-http", 404 }, { status = f[2] }):start()
          assert.is_true(svc:running())
        end)
      end
      local bad = {
        { "a number", 200 },
        { "a list", { 200, 201 } },
        { "a class", "2xx" },
        { "a function", function(s) return s == 200 end },
        { "the default (2xx)", nil },
      }
      for _, f in ipairs(bad) do
        it(f[1] .. " rejects another status (not ready)", function()
          local port = mk.free_port()
          local e = expect_error("TimeoutExpired", function()
            http_svc(port, { "--serve-http", 404 }, { status = f[2] }, { timeout = 0.5 }):start()
          end)
          assert.matches("404", e.message, 1, true)
        end)
      end

      it("bad status values are ConfigErrors naming `status`", function()
        for _, s in ipairs { "7xx", 42, 600, "abc", {}, { 200, "x" }, true } do
          local e = expect_error("ConfigError", function() mk.probe.http { url = "http://127.0.0.1:1/", status = s } end)
          assert.matches("status", e.message, 1, true)
        end
      end)
    end)

    it("sends each request on the connection its TCP check opened: no empty connection for the service", function()
      local port = mk.free_port()
      local svc <close> = http_svc(port, { "--http-log", "--http-status-after", 0.3, 200, "--serve-http", 200 }, {})
      svc:start()
      local out = svc:output()
      local _, accepted = out:gsub("accepted\n", "")
      local _, requests = out:gsub("request\n", "")
      assert.is_true(requests >= 2, out) -- answered 503 at least once first
      assert.equal(requests, accepted, out)
    end)

    it("becomes ready once the status turns good (--http-status-after)", function()
      local port = mk.free_port()
      local _svc <close> = http_svc(port, { "--http-status-after", 0.3, 200, "--serve-http", 200 }, {}):start()
      assert.equal(200, mk.get(url(port)).status)
    end)

    it("a slow server answering within the timeout is ready", function()
      local port = mk.free_port()
      local svc <close> = http_svc(port, { "--http-delay", 0.3, "--serve-http", 200 }, { method = "GET" }):start()
      assert.is_true(svc:running())
    end)

    it("a hung endpoint cannot hold an attempt past the executor timeout", function()
      local port = mk.free_port()
      local t0 = mk.now()
      local e = expect_error("TimeoutExpired", function()
        http_svc(port, { "--http-hang", "--serve-http", 200 }, {}, { timeout = 0.5 }):start()
      end)
      assert.is_true(mk.now() - t0 < 5, "hung for " .. (mk.now() - t0) .. " s")
      assert.matches(url(port, "/health"), e.message, 1, true)
    end)

    it("a request still running at the timeout is closed when the start fails: no fd left before any collection", function()
      local port = mk.free_port()
      -- 2 s: a slow (sanitized, loaded) fixture listens in time for a request
      local svc = http_svc(port, { "--http-hang", "--serve-http", 200 }, {}, { timeout = 2 })
      collectgarbage()
      local before = #core.fds()
      collectgarbage("stop") -- an fd closed only by __gc would pass the leak check; not this one
      local e = expect_error("TimeoutExpired", function() svc:start() end)
      local after = #core.fds()
      collectgarbage("restart")
      assert.matches("http HEAD " .. url(port, "/health"), e.message, 1, true)
      assert.equal(before, after)
    end)

    it("core.http_start: one request driven without blocking; its fds are close-on-exec", function()
      local port = mk.free_port()
      local _svc <close> = http_svc(port, { "--http-delay", 0.3, "--serve-http", 201 }, { status = 201 }):start()
      local had = core.fds()
      local before, old = #had, {}
      for _, fd in ipairs(had) do old[fd] = true end
      local t0 = mk.now()
      local a = assert(core.http_start { url = url(port, "/x"), method = "GET", timeout = 5 })
      assert.is_true(mk.now() - t0 < 0.2, "http_start blocked")
      assert.is_nil(a:perform())
      local fds = core.fds()
      assert.is_true(#fds > before)
      for _, fd in ipairs(fds) do
        local f = io.open("/proc/self/fdinfo/" .. fd)
        if f and not old[fd] then
          local flags = tonumber(f:read("a"):match("flags:%s*(%d+)"), 8)
          f:close()
          assert.is_true(flags & 0x80000 ~= 0, "fd " .. fd .. " is not close-on-exec")
        elseif f then f:close() end
      end
      local status
      repeat
        local wake = a:wake()
        core.poll({ a:fd() }, wake and math.max(0, wake - mk.now()) or 1)
        status = a:perform()
      until status ~= nil or mk.now() - t0 > 5
      assert.equal(201, status)
      assert.is_true(mk.now() - t0 >= 0.25)
      assert.equal(before, #core.fds()) -- an ended request holds no fd
      a:close()
    end)

    it("a garbage response is not ready", function()
      local port = mk.free_port()
      local e = expect_error("TimeoutExpired", function()
        http_svc(port, { "--http-garbage", "--serve-http", 200 }, {}, { timeout = 0.5 }):start()
      end)
      assert.matches("http HEAD", e.message, 1, true)
    end)

    it("nothing listening: TimeoutExpired naming the URL", function()
      local port = mk.free_port()
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--forever", timeout = 0.3, ready = mk.probe.http { url = url(port, "/ping") } }:start()
      end)
      assert.matches(url(port, "/ping"), e.message, 1, true)
    end)

    it("bad URLs are ConfigErrors naming `url`", function()
      for _, u in ipairs { "127.0.0.1:80/", "ftp://127.0.0.1/", "http://127.0.0.1:70000/", "http:///x",
        "http://127.0.0.1:0/", "http://host:abc/", "" } do
        local e = expect_error("ConfigError", function() mk.probe.http { url = u } end)
        assert.matches("url", e.message, 1, true)
      end
      expect_error("ConfigError", function() mk.probe.http {} end)
      expect_error("ConfigError", function() mk.probe.http { url = "http://x/", method = "GE T" } end)
    end)
  end)

  ------------------------------------------------------------ file
  describe("file", function()
    it("is ready once the file exists", function()
      local path = mk.tmpdir() .. "/ready.flag"
      local _svc <close> = exe { FX, "--sleep", 0.2, "--touch", path, "--forever",
        ready = mk.probe.file { path = path } }:start()
      assert.is_true(exists(path))
    end)

    it("times out when it never appears", function()
      local path = mk.tmpdir() .. "/never.flag"
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--forever", timeout = 0.3, ready = mk.probe.file { path = path } }:start()
      end)
      assert.matches(path, e.message, 1, true)
    end)
  end)

  ------------------------------------------------------------ notify
  describe("notify", function()
    it("is ready when the service sends READY=1", function()
      local stamp = mk.tmpdir() .. "/before-notify"
      local _svc <close> = exe { FX, "--sleep", 0.2, "--touch", stamp, "--notify", "--forever",
        ready = mk.probe.notify {} }:start()
      assert.is_true(exists(stamp)) -- so it waited for the datagram, not for the spawn
    end)

    it("the harness sets NOTIFY_SOCKET", function()
      local svc <close> = exe { FX, "--env", "NOTIFY_SOCKET", "--notify", "--forever",
        ready = mk.probe.notify {} }:start()
      assert.matches("^env NOTIFY_SOCKET=/", svc:output())
    end)

    it("other messages are not READY=1", function()
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--notify", "STATUS=starting", "--forever", timeout = 0.4, ready = mk.probe.notify {} }:start()
      end)
      assert.matches("notify", e.message, 1, true)
    end)

    it("rejects options", function()
      expect_error("ConfigError", function() mk.probe.notify { socket = "/x" } end)
    end)
  end)

  ------------------------------------------------------------ exec
  describe("exec", function()
    it("is ready once the command exits 0", function()
      local path = mk.tmpdir() .. "/exec.flag"
      local _svc <close> = exe { FX, "--sleep", 0.2, "--touch", path, "--forever",
        ready = mk.probe.exec { "test", "-e", path } }:start()
      assert.is_true(exists(path))
    end)

    it("times out naming the command", function()
      local path = mk.tmpdir() .. "/never.flag"
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--forever", timeout = 0.4, ready = mk.probe.exec { "test", "-e", path } }:start()
      end)
      assert.matches("test -e", e.message, 1, true)
    end)
  end)

  ------------------------------------------------------------ function
  describe("a Lua function", function()
    it("is ready when it returns a truthy value, and gets the service", function()
      local seen, calls = nil, 0
      local svc <close> = exe { FX, "--sleep", 0.2, "--print", "hello", "--forever",
        ready = function(s)
          seen = s
          calls = calls + 1
          return s:output():find("hello", 1, true)
        end }:start()
      assert.equal(svc, seen)
      assert.is_true(calls > 1)
      assert.matches("hello", svc:output(), 1, true)
    end)

    it("times out when it never does", function()
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--forever", timeout = 0.3, ready = function() return false end }:start()
      end)
      assert.matches("function", e.message, 1, true)
    end)
  end)

  ------------------------------------------------------------ any
  describe("mk.probe.any", function()
    it("is ready when the first member passes: an event member, while a polling one fails", function()
      local port = mk.free_port() -- nobody listens
      local svc <close> = exe { FX, "--sleep", 0.2, "--print", "ready at last", "--forever",
        ready = mk.probe.any { mk.probe.tcp { port = port }, mk.probe.output { banner = "^ready" } } }:start()
      assert.equal("ready at last", svc.ready_match.line)
    end)

    it("exposes its event members' fds: a slow polling member does not hold the wait", function()
      -- the exec member costs 0.5 s an attempt, so its next one is 25 s
      -- (50 times that) away: the file's inotify wakes the loop before
      -- that, unless nothing but the exec's pace can
      local dir = mk.tmpdir()
      local flag, count = dir .. "/flag", dir .. "/count"
      local svc <close> = exe { FX, "--sleep", 1, "--touch", flag, "--forever", interval = 3600, timeout = 60,
        ready = mk.probe.any { mk.probe.exec { "sh", "-c", "echo x >> " .. count .. "; sleep 0.5; exit 1" },
          mk.probe.file { path = flag } } }:start()
      assert.is_true(svc:running())
      assert.is_true(exists(flag))
      assert.equal("x\n", H.slurp(count))
    end)

    it("exposes its polling members' pace: a function member is retried without any event", function()
      local dir = mk.tmpdir()
      local calls = 0
      local svc <close> = exe { FX, "--forever", timeout = 20,
        ready = mk.probe.any { mk.probe.file { path = dir .. "/never" },
          function() calls = calls + 1 return calls >= 3 end } }:start()
      assert.equal(3, calls)
      assert.is_true(svc:running())
    end)

    it("an HTTP member's request in flight does not hold the others: ready long before the slow answer", function()
      local port = mk.free_port()
      local t0 = mk.now()
      local _svc <close> = exe { FX, "--listen", port, "--http-delay", 1.5, "--serve-http", 200,
        ready = mk.probe.any { mk.probe.http { url = url(port) }, function() return mk.now() - t0 > 0.2 end } }:start()
      -- a blocking request would hold the check until the answer, 1.5 s on
      assert.is_true(mk.now() - t0 < 1.0, string.format("ready after %.2f s", mk.now() - t0))
    end)

    it("mixes notify (its NOTIFY_SOCKET is set) and http", function()
      local port = mk.free_port()
      local svc <close> = exe { FX, "--sleep", 0.1, "--notify", "--forever",
        ready = mk.probe.any { mk.probe.http { url = url(port) }, mk.probe.notify {} } }:start()
      assert.is_true(svc:running())
    end)

    it("describe() says any of (...); a timeout names it and each member's last result", function()
      local port = mk.free_port()
      local p = mk.probe.any { mk.probe.tcp { port = port }, mk.probe.output { banner = "up" } }
      assert.equal(string.format('any of (tcp 127.0.0.1:%d, output "up" on any)', port), p:describe())
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--print", "down", "--forever", timeout = 0.4, ready = p }:start()
      end)
      assert.matches("any of (tcp 127.0.0.1:" .. port, e.message, 1, true)
      assert.matches("no matching line yet", e.message, 1, true)
    end)

    it("an empty list or a member that is not a probe is a ConfigError", function()
      expect_error("ConfigError", function() mk.probe.any {} end)
      local e = expect_error("ConfigError", function() mk.probe.any { mk.probe.notify {}, 42 } end)
      assert.matches("[2]", e.message, 1, true)
      expect_error("ConfigError", function() mk.probe.any { { mk.probe.notify {} } } end)
      expect_error("ConfigError", function() mk.probe.any { "port 80" } end)
      expect_error("ConfigError", function() mk.probe.any "x" end)
      expect_error("ConfigError", function() mk.probe.any { mk.probe.notify {}, timeout = 1 } end)
      -- an output member needs its stream captured, as on its own
      e = expect_error("ConfigError", function()
        exe { FX, stdout = "null", ready = mk.probe.any { mk.probe.output { banner = "x", stream = "stdout" } } }
      end)
      assert.matches("stdout", e.message, 1, true)
    end)
  end)

  ------------------------------------------------------------ lists
  describe("a list of probes", function()
    it("is ready only when all pass", function()
      local port = mk.free_port()
      local dir = mk.tmpdir()
      local flag, sock = dir .. "/flag", dir .. "/s.sock"
      local svc <close> = exe { FX, "--print", "booting", "--listen", port, "--sleep", 0.3, "--touch", flag,
        "--unix", sock, "--serve-unix",
        ready = {
          mk.probe.output { banner = "^port (%d+)" },
          mk.probe.tcp { port = port },
          mk.probe.file { path = flag },
          mk.probe.unix { socket = sock },
          function(s) return s:output():find("unix ", 1, true) end,
        } }:start()
      assert.is_true(exists(flag))
      assert.equal(tostring(port), svc.ready_match[1])
    end)

    it("times out naming only the probe that did not pass", function()
      local port = mk.free_port()
      local missing = mk.tmpdir() .. "/missing"
      local e = expect_error("TimeoutExpired", function()
        exe { FX, "--listen", port, "--serve-tcp", timeout = 0.5,
          ready = { mk.probe.tcp { port = port }, mk.probe.file { path = missing } } }:start()
      end)
      assert.matches(missing, e.message, 1, true)
      assert.not_matches("tcp 127.0.0.1", e.message, 1, true)
    end)

    it("rejects a member that is not a probe", function()
      local e = expect_error("ConfigError", function() exe { FX, ready = { mk.probe.notify {}, 42 } } end)
      assert.matches("ready[2]", e.message, 1, true)
      expect_error("ConfigError", function() exe { FX, ready = {} } end)
      expect_error("ConfigError", function() exe { FX, ready = "port 80" } end)
    end)
  end)
end)
