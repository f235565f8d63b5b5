-- mk.json.encode / mk.json.decode (dkjson underneath, shapes decided by
-- lua/mkharness/json.lua) and res:json() on HTTP responses.
local H = require "spec.helpers"
local mk = require "mkharness"

local expect_error = H.expect_error
local encode, decode = mk.json.encode, mk.json.decode

describe("mk.json", function()
  H.leakcheck()

  describe("encode", function()
    it("a mixed table is a ConfigError, not an object missing its list items", function()
      local e = expect_error("ConfigError", function() encode { 1, 2, x = 3 } end)
      assert.matches("mixed table", e.message, 1, true)
      assert.matches('"x"', e.message, 1, true)
      e = expect_error("ConfigError", function() encode { list = { 1, 2, x = 3 } } end)
      assert.matches("value.list", e.message, 1, true)
    end)

    it("a sparse array keeps its items: holes are null", function()
      assert.equal("[1,null,3]", encode { 1, nil, 3 })
      assert.equal("[null,null,3]", encode { [3] = 3 })
      local t = decode(encode { 1, nil, 3 })
      assert.equal(1, t[1])
      assert.is_nil(t[2])
      assert.equal(3, t[3])
    end)

    it("a mostly empty sparse array is a ConfigError", function()
      local e = expect_error("ConfigError", function() encode { [1] = 1, [1000000] = 2 } end)
      assert.matches("sparse array", e.message, 1, true)
      assert.matches("1000000", e.message, 1, true)
    end)

    it("numbers keep their value: 1e-9, integers, doubles", function()
      assert.equal(1e-9, decode(encode(1e-9)))
      assert.equal(0.1 + 0.2, decode(encode(0.1 + 0.2)))
      assert.equal(-2.5e-300, decode(encode(-2.5e-300)))
      assert.equal("9223372036854775807", encode(math.maxinteger))
      assert.equal(math.mininteger, decode(encode(math.mininteger)))
      assert.equal("integer", math.type(decode(encode(3))))
      assert.equal("[0.5,-7]", encode { 0.5, -7 })
    end)

    it("a key that is neither a string nor a positive integer is a ConfigError", function()
      for _, t in ipairs { { [true] = 1 }, { [1.5] = 1 }, { [0] = 1 }, { [-1] = 1 }, { [{}] = 1 } } do
        local e = expect_error("ConfigError", function() encode(t) end)
        assert.matches("neither a string nor a positive integer", e.message, 1, true)
      end
      local e = expect_error("ConfigError", function() encode { [true] = 1 } end)
      assert.matches("boolean true", e.message, 1, true)
    end)

    it("a field named n stays a field", function()
      assert.equal('{"n":5}', encode { n = 5 })
    end)

    it("objects have sorted keys; nesting, escapes, booleans, mk.json.null", function()
      assert.equal('{"a":[true,false],"b":{"c":"x\\"y\\n"},"d":null}',
        encode { b = { c = 'x"y\n' }, a = { true, false }, d = mk.json.null })
    end)

    it("what has no JSON form is a ConfigError naming where it is", function()
      for _, case in ipairs {
        { { a = { 1, print } }, "value.a[2]", "function" },
        { 0 / 0, "value", "NaN" },
        { { x = math.huge }, "value.x", "infinity" },
        { { s = "bad\xffutf8" }, "value.s", "UTF-8" },
      } do
        local e = expect_error("ConfigError", function() encode(case[1]) end)
        assert.matches(case[2], e.message, 1, true)
        assert.matches(case[3], e.message, 1, true)
      end
      local t = {}
      t.self = t
      local e = expect_error("ConfigError", function() encode(t) end)
      assert.matches("cycle", e.message, 1, true)
    end)

    it("a table shared without a cycle is fine", function()
      local shared = { 1 }
      assert.equal('{"a":[1],"b":[1]}', encode { a = shared, b = shared })
    end)
  end)

  describe("decode", function()
    it("objects, arrays, null as nil; empty ones encode back the same", function()
      local v = decode(' {"a": [1, 2.5, "x", null, true], "b": {}, "c": []} ')
      assert.equal(1, v.a[1])
      assert.equal(2.5, v.a[2])
      assert.equal("x", v.a[3])
      assert.is_nil(v.a[4])
      assert.is_true(v.a[5])
      assert.equal('{"a":[1,2.5,"x",null,true],"b":{},"c":[]}', encode(v))
      assert.is_nil(decode("null"))
      assert.equal("a\0b\u{e9}", decode('"a\\u0000b\\u00e9"'))
    end)

    it("bad text is a ConfigError", function()
      for _, s in ipairs { "", "{bad", "[1,", "1 2", '{"a":1} x', string.rep("[", 200000) } do
        local e = expect_error("ConfigError", function() decode(s) end)
        assert.matches("mk.json.decode", e.message, 1, true)
      end
      expect_error("ConfigError", function() decode(42) end)
    end)
  end)

  describe("res:json()", function()
    local port, kvd
    before_each(function()
      port = mk.free_port()
      kvd = mk.http { H.kvd, "--port", port, "--data", mk.tmpdir() .. "/kvd.log",
        url = "http://127.0.0.1:" .. port .. "/health", method = "GET", timeout = 10 }:start()
    end)
    after_each(function() if kvd then kvd:stop() end end)

    it("decodes the body; status, headers and body are still fields", function()
      local base = "http://127.0.0.1:" .. port .. "/kv/"
      local doc = encode { name = "x", list = { 1, 2 } }
      assert.equal(204, mk.http_request { url = base .. "doc", method = "PUT", body = doc }.status)
      local r = mk.get(base .. "doc")
      assert.equal(200, r.status)
      assert.equal(doc, r.body)
      assert.equal("table", type(r.headers))
      local v = r:json()
      assert.equal("x", v.name)
      assert.same({ 1, 2 }, { v.list[1], v.list[2] })
    end)

    it("a body that is not JSON is a ConfigError naming the status", function()
      local base = "http://127.0.0.1:" .. port .. "/kv/"
      mk.http_request { url = base .. "text", method = "PUT", body = "not json" }
      local r = mk.get(base .. "text")
      local e = expect_error("ConfigError", function() r:json() end)
      assert.matches("HTTP 200", e.message, 1, true)
    end)
  end)
end)
