-- `mkharness report`: a kept run's events.jsonl drawn as a timeline, in
-- the terminal and as a self-contained HTML page (checked in a headless
-- Chromium when there is one).
local H = require "spec.helpers"
local mk = require "mkharness"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local function host(args, env)
  local argv = { H.host }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.timeout = 60
  argv.env = env or { MKHARNESS_TMPDIR = mk.tmpdir() }
  return mk.run(argv)
end

-- A glyph row with repeats and blanks squeezed out: ".==~~=  X" -> ".=~=X"
local function squeeze(row)
  local out = {}
  for c in row:gmatch("%S") do
    if c ~= out[#out] then out[#out + 1] = c end
  end
  return table.concat(out)
end

local function lane_row(out, label)
  for line in out:gmatch("[^\n]+") do
    local name, row = line:match("^(.-)%s+|(.*)|$")
    if name == label then return row end
  end
end

-- One scenario for the whole file: a service that starts, pauses and
-- stops; a proxy with a fault; a mark; a second service that crashes, the
-- crash caught with pcall.
local SCENARIO = [[
  local alpha = mk.process { FX, "--print", "up", "--forever", name = "alpha" }:start()
  alpha:wait_output("up")
  mk.sleep(0.3)
  alpha:pause()
  mk.sleep(0.3)
  alpha:resume()
  local edge <close> = mk.proxy { upstream = mk.free_port(), name = "edge" }:start()
  mk.sleep(0.2)
  edge:latency(50)
  mk.sleep(0.3)
  edge:clear()
  mk.mark("checkpoint", { step = 1 })
  local beta = mk.process { FX, "--print", "up", "--forever", name = "beta" }:start()
  mk.sleep(0.2)
  os.execute("kill -9 " .. beta:pid())
  local ok, err = pcall(mk.sleep, 5)
  assert(not ok and mk.is_error(err, "UnexpectedExit"), tostring(err))
  mk.sleep(0.2)
  alpha:stop()
]]

-- the kept run, made by the first test that needs it, in a directory of
-- mk.tmpdir(): removed with the spec run's own
local base, file

local function kept_run()
  if file then return file end
  base = mk.tmpdir()
  local r = H.scenario(SCENARIO, { host_args = { "--keep" }, env = { MKHARNESS_TMPDIR = base } })
  assert.equal(0, r.code, r.stderr)
  local dir = r.stderr:match("run directory kept: ([^\n]+)")
  assert.is_not_nil(dir, r.stderr)
  file = dir .. "/events.jsonl"
  return file
end

local function chromium()
  for _, name in ipairs { "chromium", "chromium-browser" } do
    local r = mk.run { "sh", "-c", "command -v " .. name }
    if r.code == 0 then return (r.stdout:gsub("%s+$", "")) end
  end
end

describe("mkharness report", function()
  H.leakcheck()

  it("draws one lane per service and proxy, glyphs in order, within 100 columns", function()
    local r = host { "report", kept_run() }
    assert.equal(0, r.code, r.stderr)
    local out = r.stdout
    for line in out:gmatch("[^\n]*") do
      assert(utf8.len(line) <= 100, "wider than 100 columns: " .. line)
    end
    local alpha, beta, edge = lane_row(out, "alpha"), lane_row(out, "beta"), lane_row(out, "proxy edge")
    assert(alpha and beta and edge, "a lane is missing:\n" .. out)
    -- started, ready, paused, running again, stopped (blank)
    assert.matches("^%.=+~=+$", squeeze(alpha))
    -- started, (ready,) crashed
    assert.matches("^%.=*X$", squeeze(beta))
    -- forwarding, the latency band, forwarding again
    assert.matches("^%-#%-$", squeeze(edge))
    assert.matches("%^", lane_row(out, "marks") or "")
    assert.matches("mark: checkpoint (step=1)", out, 1, true)
    assert.matches("beta crashed", out, 1, true)
    assert.matches("proxy edge: latency", out, 1, true)
    assert.matches("legend:", out, 1, true)
    assert.matches("K killed", out, 1, true) -- the legend is whole, not cut at 100
  end)

  it("with no FILE draws the newest kept run", function()
    local named = host { "report", kept_run() }
    local newest = host({ "report" }, { MKHARNESS_TMPDIR = base })
    assert.equal(0, newest.code, newest.stderr)
    assert.equal(named.stdout, newest.stdout)
    local dir = host { "report", (kept_run():gsub("/events%.jsonl$", "")) } -- a run directory: its events
    assert.equal(0, dir.code, dir.stderr)
    assert.equal(named.stdout, dir.stdout)
    local none = host({ "report" }, { MKHARNESS_TMPDIR = mk.tmpdir() })
    assert.equal(1, none.code)
    assert.matches("no kept run in", none.stderr, 1, true)
  end)

  describe("bad input is one line and a status, never a traceback", function()
    local function check(r, code, text)
      assert.equal(code, r.code, r.stderr)
      assert.matches(text, r.stderr, 1, true)
      assert.not_matches("traceback", r.stderr, 1, true)
      assert.not_matches("%.lua:%d+:", r.stderr)
      assert.equal("", r.stdout)
    end

    it("a missing file, a directory", function()
      check(host { "report", "/nonexistent/events.jsonl" }, 1, "cannot read /nonexistent/events.jsonl")
      local dir = mk.tmpdir()
      check(host { "report", dir }, 1, "cannot read " .. dir .. ": Is a directory")
    end)

    it("a bad JSON line, named by number", function()
      local f = write(mk.tmpdir() .. "/bad.jsonl",
        '{"event":"start","t":1,"schema":1}\n{"event":"mark","t":2,"text":"a"}\n{not json\n')
      check(host { "report", f }, 1, f .. ":3: not an events.jsonl line")
    end)

    it("a file that is not events.jsonl", function()
      local f = write(mk.tmpdir() .. "/other.json", '{"name":"x"}\n')
      check(host { "report", f }, 1, f .. ":1: not an event")
      f = write(mk.tmpdir() .. "/nohead.jsonl", '{"event":"mark","t":2,"text":"a"}\n')
      check(host { "report", f }, 1, "not the \"start\" header")
    end)

    it("an empty run", function()
      local f = write(mk.tmpdir() .. "/empty.jsonl", "")
      check(host { "report", f }, 1, "empty run")
    end)

    it("usage errors exit 2", function()
      check(host { "report", "--html" }, 2, "--html needs a file name")
      check(host { "report", "--frobnicate" }, 2, "unknown option --frobnicate")
      check(host { "report", "a.jsonl", "b.jsonl" }, 2, "one events file at a time")
      check(host { "reprot" }, 2, "did you mean `report`?")
    end)
  end)

  describe("--html", function()
    local page

    local function html()
      if page then return page end
      page = mk.tmpdir() .. "/timeline.html"
      local r = host { "report", kept_run(), "--html", page }
      assert.equal(0, r.code, r.stderr)
      return page
    end

    it("writes one self-contained file: nothing to load from anywhere", function()
      local text = H.slurp(html())
      assert.is_not_nil(text)
      assert.not_matches("http://", text, 1, true)
      assert.not_matches("https://", text, 1, true)
      assert.not_matches("<script[^>]*src", text)
      assert.not_matches("<link", text, 1, true)
      assert.not_matches("@import", text, 1, true)
      assert.not_matches("url%(", text)
      -- the data is in it: every lane's name, the mark, the zoom buttons
      for _, s in ipairs { '"alpha"', '"beta"', '"edge"', "checkpoint", 'id="zin"', '"wheel"' } do
        assert.matches(s, text, 1, true)
      end
    end)

    it("draws its lanes in a headless Chromium", function()
      local browser = chromium()
      if not browser then
        local root = mk.run { "id", "-u" }.stdout:match("^0") ~= nil
        if not root then
          pending("needs the Debian package chromium (./run test installs it as root)")
          return
        end
        error("chromium is not installed: apt-get install chromium (./run test does)")
      end
      local dir = mk.tmpdir()
      local url = "file://" .. html()
      local flags = { browser, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" .. dir .. "/profile",
        timeout = 120, env = { HOME = dir } }
      local function run(extra)
        local argv = {}
        for k, v in pairs(flags) do argv[k] = v end
        for _, a in ipairs(extra) do argv[#argv + 1] = a end
        argv[#argv + 1] = url
        return mk.run(argv)
      end
      local dom = run { "--dump-dom" }
      assert.equal(0, dom.code, dom.stderr)
      -- the page names itself drawn only after the script drew the SVG
      assert.matches("<title>mkharness timeline: 3 lanes drawn</title>", dom.stdout, 1, true)
      local lanes = {}
      for name in dom.stdout:gmatch('<g class="lane" data%-lane="([^"\']*)">') do lanes[#lanes + 1] = name end
      table.sort(lanes)
      assert.same({ "alpha", "beta", "proxy edge" }, lanes)
      assert.matches("<rect", dom.stdout, 1, true)

      local png = dir .. "/shot.png"
      local shot = run { "--screenshot=" .. png, "--window-size=1200,600" }
      assert.equal(0, shot.code, shot.stderr)
      local bytes = H.slurp(png)
      assert.is_not_nil(bytes, "no screenshot")
      assert.equal("\137PNG\r\n\26\n", bytes:sub(1, 8))
      local w, h = string.unpack(">I4I4", bytes, 17)
      assert.same({ 1200, 600 }, { w, h })
    end)
  end)

  -- A chaos run on a lab, drawn in the browser: a service lane, one lane
  -- per lab host, one per fault, the operations as ticks. With
  -- MKH_UPDATE_DOCS=1 its screenshot becomes the README's docs/timeline.png.
  it("draws a chaos run on a lab: services, hosts, fault bands and operations", function()
    local browser = chromium()
    if not browser then pending("needs the Debian package chromium") return end
    local r = H.scenario(string.format("local KVD = %q\n", H.kvd) .. [[
local built, lab = pcall(mk.lab, { hosts = { "n1", "n2" } })
if not built then print("no lab: " .. tostring(lab)) return end
local kvd = mk.http { KVD, "--port", "8080", "--bind", "0.0.0.0", "--data", mk.tmpdir() .. "/kv.log",
  url = "http://n1:8080/health", method = "GET", host = lab.n1, name = "kvd" }:start()
local n = 0
local run = mk.chaos { seed = 7, duration = 3, clients = 2,
  faults = { mk.fault.kill { { kvd }, every = { 0.3, 0.6 }, lasting = { 0.2, 0.3 } },
    mk.fault.partition { lab, mode = "isolate", every = { 0.4, 0.8 }, lasting = { 0.3, 0.5 } } },
  workload = function(ctx)
    while ctx:running() do
      n = n + 1
      local k = n
      ctx:invoke("add", k, function()
        local res = mk.http_request { url = "http://n1:8080/kv/k" .. k, method = "PUT", body = "v", timeout = 0.3 }
        if res.status ~= 204 then ctx:fail("status " .. res.status) end
      end)
      mk.sleep(0.02)
    end
  end }
mk.mark("healed")
kvd:stop()
lab:close()
print("ops " .. #run.history)
]], { host_args = { "--keep" }, env = { MKHARNESS_TMPDIR = mk.tmpdir() }, timeout = 60 })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    if r.stdout:match("^no lab") then pending(r.stdout) return end
    local dir = r.stderr:match("run directory kept: ([^\n]+)")
    local page = mk.tmpdir() .. "/chaos.html"
    local h = host { "report", dir .. "/events.jsonl", "--html", page }
    assert.equal(0, h.code, h.stderr)
    local term = host { "report", dir .. "/events.jsonl" }.stdout
    for _, lane in ipairs { "kvd", "host n1", "host n2", "fault kill", "ops" } do
      assert.is_not_nil(lane_row(term, lane), "no lane " .. lane .. ":\n" .. term)
    end
    assert.matches("\nfault partition iso… |", term, 1, true) -- labels are cut to 20 columns
    local profile = mk.tmpdir()
    local function chrome(extra)
      local argv = { browser, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" .. profile .. "/p",
        timeout = 120, env = { HOME = profile } }
      for _, a in ipairs(extra) do argv[#argv + 1] = a end
      argv[#argv + 1] = "file://" .. page
      return mk.run(argv)
    end
    local dom = chrome { "--dump-dom" }
    assert.equal(0, dom.code, dom.stderr)
    local lanes = {}
    for name in dom.stdout:gmatch('<g class="lane" data%-lane="([^"\']*)">') do lanes[name] = true end
    for _, lane in ipairs { "kvd", "host n1", "host n2", "fault kill", "fault partition isolate" } do
      assert.is_true(lanes[lane], "the page has no lane " .. lane)
    end
    local png = profile .. "/chaos.png"
    local shot = chrome { "--screenshot=" .. png, "--window-size=1000,420" }
    assert.equal(0, shot.code, shot.stderr)
    local bytes = H.slurp(png)
    assert.equal("\137PNG\r\n\26\n", bytes:sub(1, 8))
    if os.getenv("MKH_UPDATE_DOCS") == "1" then
      local f = assert(io.open("docs/timeline.png", "wb"))
      f:write(bytes)
      f:close()
    end
  end)
end)
