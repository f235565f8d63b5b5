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
