-- mk.http_request{...} and mk.get(url) (libcurl).
local H = require "spec.helpers"
local mk = require "mkharness"
local FX = H.fx

local expect_error = H.expect_error


local function url(port, path) return "http://127.0.0.1:" .. port .. (path or "/") end

local function server(extra, status)
  local port = mk.free_port()
  local argv = { FX, "--listen", port }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = "--serve-http"
  argv[#argv + 1] = status or 200
  argv.port, argv.timeout = port, 10
  return mk.tcp(argv):start(), port
end

describe("http client", function()
  H.leakcheck()

  it("mk.get returns status, lower-case headers and body", function()
    local _svc <close>, port = server()
    local r = mk.get(url(port, "/hello"))
    assert.equal(200, r.status)
    assert.equal("table", type(r.headers))
    assert.equal("GET", r.headers["x-method"])
    assert.equal("/hello", r.headers["x-path"])
    assert.is_nil(r.headers["X-Method"])
    assert.equal(tostring(#r.body), r.headers["content-length"])
    assert.equal("GET /hello\n", r.body)
  end)

  it("returns non-2xx statuses without raising", function()
    local _svc <close>, port = server({}, 503)
    local r = mk.get(url(port))
    assert.equal(503, r.status)
  end)

  it("sends the path and query string as given", function()
    local _svc <close>, port = server()
    for _, p in ipairs { "/a/b?x=1&y=2", "/enc%2Fded/..%2f?q=%20", "/?", "/x?a=b#frag" } do
      local r = mk.get(url(port, p))
      assert.equal((p:gsub("#.*$", "")), r.headers["x-path"])
    end
  end)

  it("POST echoes the body; methods and headers are sent", function()
    local _svc <close>, port = server()
    local r = mk.http_request { url = url(port, "/items?id=7"), method = "POST", body = "a=1\nb=2",
      headers = { ["Content-Type"] = "text/plain", ["X-Custom"] = "yes" }, timeout = 5 }
    assert.equal(200, r.status)
    assert.equal("POST /items?id=7\na=1\nb=2", r.body)
    for _, m in ipairs { "PUT", "DELETE", "PATCH", "get" } do
      local q = mk.http_request { url = url(port, "/m"), method = m, body = m == "PUT" and "v" or nil }
      assert.equal(m:upper(), q.headers["x-method"])
    end
  end)

  it("a binary body round-trips", function()
    local _svc <close>, port = server()
    local body = "\0\1\2binary\255\r\n\0end"
    local r = mk.http_request { url = url(port, "/bin"), method = "POST", body = body }
    assert.equal("POST /bin\n" .. body, r.body)
  end)

  it("HEAD returns no body", function()
    local _svc <close>, port = server()
    local r = mk.http_request { url = url(port, "/h"), method = "HEAD" }
    assert.equal(200, r.status)
    assert.equal("", r.body)
    assert.equal("HEAD", r.headers["x-method"])
  end)

  it("talks to kvd: PUT then GET", function()
    local port = mk.free_port()
    local _kvd <close> = mk.http { H.kvd, "--port", port, "--data", mk.tmpdir() .. "/kvd.log",
      url = url(port, "/health"), method = "GET", timeout = 10 }:start()
    local put = mk.http_request { url = url(port, "/kv/k1"), method = "PUT", body = "value one" }
    assert.equal(204, put.status)
    assert.equal("value one", mk.get(url(port, "/kv/k1")).body)
    assert.equal(404, mk.get(url(port, "/kv/missing")).status)
  end)

  it("a refused connection raises a harness error naming the URL", function()
    local port = mk.free_port()
    local u = url(port, "/nothing-here")
    local ok, e = pcall(mk.get, u)
    assert.is_false(ok)
    assert.is_true(mk.is_error(e), tostring(e))
    assert.matches(u, tostring(e), 1, true)
    local ok2, e2 = pcall(mk.http_request, { url = u, method = "POST", body = "x" })
    assert.is_false(ok2)
    assert.is_true(mk.is_error(e2))
    assert.matches(u, e2.message, 1, true)
  end)

  it("a hung endpoint errors out at the timeout", function()
    local _svc <close>, port = server { "--http-hang" }
    local u = url(port, "/hang")
    local t0 = mk.now()
    local ok, e = pcall(mk.http_request, { url = u, timeout = 0.3 })
    local took = mk.now() - t0
    assert.is_false(ok)
    assert.is_true(mk.is_error(e), tostring(e))
    assert.matches(u, tostring(e), 1, true)
    assert.is_true(took < 3, "took " .. took)
  end)

  it("a slow server answering within the timeout succeeds", function()
    local _svc <close>, port = server { "--http-delay", 0.3 }
    local r = mk.http_request { url = url(port, "/slow"), timeout = 10 }
    assert.equal(200, r.status)
  end)

  it("a garbage answer is an error naming the URL", function()
    local _svc <close>, port = server { "--http-garbage" }
    local u = url(port, "/g")
    local ok, e = pcall(mk.get, u, { timeout = 5 })
    assert.is_false(ok)
    assert.is_true(mk.is_error(e), tostring(e))
    assert.matches(u, tostring(e), 1, true)
  end)

  it("a large body arrives whole", function()
    local _svc <close>, port = server { "--http-huge", 5000000 }
    local r = mk.get(url(port, "/big"), { timeout = 20 })
    assert.equal(200, r.status)
    assert.equal(5000000, #r.body)
  end)

  it("an endless body stops at max_body with an error naming the limit", function()
    local _svc <close>, port = server { "--http-endless" }
    local u = url(port, "/endless")
    local t0 = mk.now()
    local e = expect_error("ExecutorError", function() mk.get(u, { max_body = 1000000, timeout = 20 }) end)
    assert.matches("body exceeded max_body (1000000 bytes)", e.message, 1, true)
    assert.matches(u, e.message, 1, true)
    assert.is_true(mk.now() - t0 < 15, "no hang")
    -- by default at 64 MB, well before the timeout
    e = expect_error("ExecutorError", function() mk.http_request { url = u, timeout = 60 } end)
    assert.matches("body exceeded max_body (67108864 bytes)", e.message, 1, true)
  end)

  it("a body of exactly max_body bytes arrives whole", function()
    local _svc <close>, port = server { "--http-huge", 1000 }
    local r = mk.get(url(port, "/exact"), { max_body = 1000 })
    assert.equal(1000, #r.body)
    expect_error("ExecutorError", function() mk.get(url(port, "/over"), { max_body = 999 }) end)
  end)

  it("rejects bad arguments with ConfigError", function()
    for _, t in ipairs {
      { url = "127.0.0.1:80/" }, { url = "ftp://127.0.0.1/" }, { url = "http://127.0.0.1:70000/" }, {},
      { url = "http://127.0.0.1/", methd = "GET" }, { url = "http://127.0.0.1/", timeout = -1 },
      { url = "http://127.0.0.1/", headers = { ["Bad Name"] = "x" } },
      { url = "http://127.0.0.1/", max_body = -1 }, { url = "http://127.0.0.1/", max_body = 1.5 },
    } do
      expect_error("ConfigError", function() mk.http_request(t) end)
    end
    local e = expect_error("ConfigError", function() mk.get("nonsense") end)
    assert.matches("url", e.message, 1, true)
  end)
end)

-- While timers are pending (a chaos run) a request is driven by the wait
-- loop instead (core.http_start), on a multi handle taken from a pool and
-- given back after it: every kind of request and failure, one after the
-- other on the same reused handles, must behave as on a fresh one.
describe("http client inside the wait loop", function()
  H.leakcheck()
  local loop = require "mkharness.loop"

  local function in_chaos(fn, clients)
    local errors = {}
    mk.chaos { seed = 1, duration = 0.05, clients = clients, concurrent = clients and true,
      workload = function(ctx)
        local ok, err = pcall(fn, ctx)
        if not ok then errors[#errors + 1] = tostring(err) end
      end }
    assert.same({}, errors)
  end

  it("gives the same answers and errors on reused handles, one request after another", function()
    local _svc <close>, port = server()
    local _hang <close>, hport = server { "--http-hang" }
    local _junk <close>, gport = server { "--http-garbage" }
    local _big <close>, bport = server { "--http-huge", 1000 }
    local dead = mk.free_port()
    in_chaos(function()
      assert.is_true(loop.active())
      for round = 1, 2 do
        local r = mk.get(url(port, "/hello?r=" .. round))
        assert.equal(200, r.status)
        assert.equal("GET /hello?r=" .. round .. "\n", r.body)
        assert.equal(tostring(#r.body), r.headers["content-length"])
        r = mk.http_request { url = url(port, "/items"), method = "POST", body = "a\0b",
          headers = { ["X-Custom"] = "yes" }, timeout = 5 }
        assert.equal("POST /items\na\0b", r.body)
        assert.equal("POST", r.headers["x-method"])
        r = mk.http_request { url = url(port, "/h"), method = "HEAD" }
        assert.equal("", r.body)
        assert.equal("HEAD", r.headers["x-method"])
        local e = expect_error("ExecutorError", function() mk.get(url(dead, "/refused")) end)
        assert.matches(url(dead, "/refused"), e.message, 1, true)
        local t0 = mk.now()
        e = expect_error("ExecutorError", function() mk.get(url(hport, "/hang"), { timeout = 0.2 }) end)
        assert.matches(url(hport, "/hang"), e.message, 1, true)
        assert.is_true(mk.now() - t0 < 3, "no hang")
        e = expect_error("ExecutorError", function() mk.get(url(gport, "/g"), { timeout = 5 }) end)
        assert.matches(url(gport, "/g"), e.message, 1, true)
        assert.equal(1000, #mk.get(url(bport, "/exact"), { max_body = 1000 }).body)
        e = expect_error("ExecutorError", function() mk.get(url(bport, "/over"), { max_body = 999 }) end)
        assert.matches("body exceeded max_body (999 bytes)", e.message, 1, true)
      end
    end)
  end)

  it("serves concurrent clients, each request on a handle of its own", function()
    local _svc <close>, port = server { "--http-delay", 0.02 }
    in_chaos(function(ctx)
      for i = 1, 5 do
        local r = mk.get(url(port, "/c" .. ctx.client .. "-" .. i))
        assert.equal("GET /c" .. ctx.client .. "-" .. i .. "\n", r.body)
      end
    end, 4)
  end)

  it("fires a due timer inside mk.get even when the answer needs no wait", function()
    local _svc <close>, port = server()
    for i = 1, 20 do
      local fired = false
      local tm = loop.at(mk.now(), function() fired = true end)
      local keep = loop.at(mk.now() + 3600, function() end) -- the loop stays active after the first
      local ok, err = pcall(mk.get, url(port, "/t" .. i))
      local was = fired
      loop.cancel(tm)
      loop.cancel(keep)
      assert(ok, err)
      assert.is_true(was, "request " .. i .. ": the timer did not fire inside it")
    end
    mk.core.http_release()
  end)

  it("closes the handle of a request its client left behind (the run's grace)", function()
    local _hang <close>, hport = server { "--http-hang" }
    local run = mk.chaos { seed = 1, duration = 0.05, grace = 0.1,
      workload = function(ctx) ctx:invoke("read", nil, function() mk.get(url(hport, "/stuck"), { timeout = 30 }) end) end }
    assert.equal("info", run.history[#run.history].type)
    -- the leak check collects the request and counts the fds
  end)
end)
