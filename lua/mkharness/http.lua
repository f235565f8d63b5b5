-- mk.http_request and mk.get (libcurl), and their responses' :json().
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local probes = require "mkharness.probes"
local json = require "mkharness.json"
local defaults = require "mkharness.defaults"
local crash = require "mkharness.crash"
local loop = require "mkharness.loop"
local types = options.types
local check_crashes = crash.check

local H = {}
local in_loop

-- Responses stay plain tables (status, headers, body) with one method.
local Response = { __name = "mkharness.Response" }
Response.__index = Response
function Response:json()
  return json.decode(self.body, "res:json() (HTTP " .. tostring(self.status) .. ")")
end

-- Header lines as the blocking client reads them: lower-case names,
-- values trimmed, a repeated header joined with ", ".
local function parse_headers(raw)
  local h = {}
  for line in raw:gmatch("[^\r\n]+") do
    local name, v = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
    if name and #name < 256 and not line:find("^HTTP/") then
      name = name:lower()
      h[name] = h[name] and (h[name] .. ", " .. v) or v
    end
  end
  return h
end

-- The request driven by the wait loop (curl's multi interface), so that
-- due timers fire and other chaos clients run while it is in flight.
-- A local server often answers before there is anything to wait for: the
-- timers are looked at between the steps (set-up, then each perform,
-- which stops early once one is due), not only when a step would wait.
function in_loop(req)
  req.full = true
  req.reuse = true -- a pooled multi handle; the chaos run releases the pool at its end
  local a, err, code = core.http_start(req)
  if not a then return nil, err, code end
  local ok, status, perr = pcall(function()
    while true do
      loop.run_due()
      local st, e = a:perform(loop.next_due())
      if st ~= nil then return st, e end
      local wake = a:wake()
      loop.block({ a:fd() }, wake and math.max(0, wake - core.now()) or -1)
    end
  end)
  if not ok then a:close() error(status, 0) end
  if not status then a:close() loop.run_due() return nil, perr end
  local body, raw, truncated = a:response()
  a:close()
  loop.run_due()
  return { status = status, headers = parse_headers(raw), body = body, truncated = truncated or nil }
end

local HTTP_REQ = { url = types.required(types.nonempty), method = types.nonempty, headers = types.table, body = types.string,
  timeout = types.timeout, insecure = types.boolean,
  max_body = function(ctx, k, v)
    local n = math.tointeger(v)
    if not n or n < 0 then options.fail(ctx, k, "must be a number of bytes (an integer >= 0)", v) end
    return n
  end }
function H.request(t)
  if type(t) == "string" then t = { url = t } end
  local o = options.check("mk.http_request", t, HTTP_REQ)
  options.url("mk.http_request", "url", o.url)
  local method, max_body = (o.method or "GET"):upper(), o.max_body or defaults.max_body
  check_crashes()
  local req = { url = o.url, method = method,
    headers = probes.header_list("mk.http_request", o.headers or {}), body = o.body,
    timeout = o.timeout == nil and defaults.http_timeout or (o.timeout or 1e9), insecure = o.insecure, max_body = max_body }
  local res, err
  if loop.active() then res, err = in_loop(req) else res, err = core.http_request(req) end
  check_crashes()
  if not res then Error.raise("ExecutorError", { message = "http request failed: " .. err, url = o.url }) end
  if res.truncated then
    Error.raise("ExecutorError", { message = string.format("http request failed: %s %s: the body exceeded max_body (%d bytes)",
      method, o.url, max_body), url = o.url, max_body = max_body })
  end
  return setmetatable(res, Response)
end

-- mk.get's options: mk.http_request's, the url given apart
local GET_OPTS = {}
for k, v in pairs(HTTP_REQ) do if k ~= "url" then GET_OPTS[k] = v end end
function H.get(url, opts)
  options.check("mk.get", opts, GET_OPTS)
  local t = { url = url }
  for k, v in pairs(opts or {}) do t[k] = v end
  return H.request(t)
end

return H
