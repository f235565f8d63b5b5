-- Events of a run: verbose lines on stderr, RUNDIR/events.jsonl and the
-- --report JSON lines (the same lines). Configured by the host
-- (mkharness.host); under stock lua/busted the environment variables
-- MKHARNESS_VERBOSE and MKHARNESS_REPORT do the same.
local core = require "mkharness.core"
local json = require "mkharness.json"
local loop = require "mkharness.loop"

local SCHEMA = 1

local E = {
  verbose = tonumber(os.getenv("MKHARNESS_VERBOSE") or "") or 0,
  quiet = false,
  color = false,      -- ANSI colour in echoed lines (the host decides: --color)
  timestamps = false, -- -t: "+S.mmms " on echoed and event lines
  t0 = core.now(),    -- the run's start: the "start" event's t
  schema = SCHEMA,
}

-- The sinks live in the registry, not in this module: busted reloads the
-- module for each spec file, and a reload must neither truncate the files
-- nor write a second first event.
local reg = debug.getregistry()
local S = reg["mkharness.events"]
if not S then
  S = { buffer = {}, started = false, later = {} }
  reg["mkharness.events"] = S
end

function E.configure(opts)
  E.verbose = opts.verbose or E.verbose
  E.quiet = opts.quiet or false
  if opts.color ~= nil then E.color = opts.color end
  if opts.timestamps ~= nil then E.timestamps = opts.timestamps end
  core.echo_setup(E.color, E.timestamps, E.t0)
  if opts.report and opts.report ~= S.report_path then
    -- not io.open: its fd would leak into every os.execute/io.popen child
    local f, err = core.open_file(opts.report, "w")
    if not f then error("cannot open report file: " .. err, 0) end
    f:setvbuf("line")
    if S.report then S.report:close() end
    S.report, S.report_path = f, opts.report
  end
end

local env_report = os.getenv("MKHARNESS_REPORT")
if env_report and env_report ~= "" then E.configure { report = env_report } end

-- The run directory is made only by what needs it (a service's captures, a
-- tmpdir, a failure): until then the lines wait here, so a run that starts
-- nothing and succeeds writes no file at all.
local BUFFER_MAX = 1000

-- Each line is appended by an open, write, close: no fd stays open for it
-- (a test's fd-leak check would see one appear mid-test), and lines after
-- the directory is removed and made again land in the new one.
local function append(dir, line)
  local f = core.open_file(dir .. "/events.jsonl", "a", 384) -- 0600, as the captures
  if not f then return false end
  for _, l in ipairs(S.buffer) do f:write(l, "\n") end
  S.buffer = {}
  if line then f:write(line, "\n") end
  f:close()
  return true
end

-- Make the run directory (if not yet) and write the waiting lines to its
-- events.jsonl: on failure, with --keep, or when the buffer is full.
function E.persist()
  E.flush()
  local dir = core.run_dir()
  return dir ~= nil and append(dir, nil)
end

local function to_run_file(line)
  local dir = core.run_dir(nil, true)
  if dir and append(dir, line) then return end
  S.buffer[#S.buffer + 1] = line
  -- no run directory to be had: the oldest lines go, not the memory
  if #S.buffer > BUFFER_MAX and not E.persist() then table.remove(S.buffer, 1) end
end

local function verbose_line(now, text)
  if not (text and E.verbose > 0 and not E.quiet) then return end
  -- one write: the echo thread's lines must not land inside it
  local stamp = ""
  if E.timestamps then
    stamp = string.format(E.color and "\27[2m+%.3fs\27[0m " or "+%.3fs ", math.max(0, now - E.t0))
  end
  io.stderr:write(stamp .. "mkharness: " .. text .. "\n")
end

local function record(event, fields, now)
  -- the first event of every run is "start", with the header; under stock
  -- lua nobody emits one, so the first event brings it
  if not S.started and event ~= "start" then record("start", { mode = "module", run = core.run_id() }, now) end
  local rec = { event = event, t = now }
  if event == "start" then -- -t counts from here, as the report's t does
    E.t0 = now
    core.echo_setup(E.color, E.timestamps, E.t0)
    if not S.started then
      S.started = true
      local epoch = os.time()
      rec.schema, rec.version = SCHEMA, core.version
      rec.time, rec.epoch = os.date("!%Y-%m-%dT%H:%M:%SZ", epoch), epoch
    end
  end
  for k, v in pairs(fields or {}) do if rec[k] == nil then rec[k] = v end end
  -- a line is written whatever the fields hold: the report must not end the run
  local ok, line = pcall(json.encode_report, rec)
  if not ok then
    line = json.encode_report { event = event, t = rec.t, encode_error = tostring(line) }
  end
  if S.report then S.report:write(line, "\n") end
  to_run_file(line)
end

-- Write the lines emit_later kept back. Every other way a line is written
-- does this first, so the file stays in time order.
function E.flush()
  local later = S.later
  if later[1] == nil then return end
  S.later = {}
  for _, x in ipairs(later) do record(x[1], x[2], x[3]) end
end

-- under stock lua, the lines still owed when the state closes
if not S.finalizer then S.finalizer = setmetatable({}, { __gc = function() pcall(E.flush) end }) end

-- emit("ready", { service = "redis", ms = 12.3 }, "redis: ready after 12.3 ms")
function E.emit(event, fields, text)
  E.flush()
  -- a chaos run keeps its operations in memory and writes them here, before
  -- any other event, so the file stays in time order
  local hook = E.before_emit
  if hook then
    E.before_emit = nil
    hook()
    E.before_emit = hook
  end
  local now = core.now()
  -- the -v line first: the services' echoed lines must not overtake it
  -- while the files are written
  verbose_line(now, text)
  record(event, fields, now)
end

-- The same, with the line written at the next wait or harness call: for
-- the events on a start()'s own path (spawned, ready), whose encoding and
-- writing would otherwise be part of the latency its caller waits for.
-- The -v line and the event's time are taken now.
function E.emit_later(event, fields, text)
  -- a chaos run's operations wait in a queue of their own: the two would
  -- not come out in time order
  if E.before_emit then return E.emit(event, fields, text) end
  local now = core.now()
  verbose_line(now, text)
  local later = S.later
  later[#later + 1] = { event, fields, now }
  if later[2] == nil then loop.defer(E.flush) end
end

-- Lines already encoded, each an event with its own "event" and "t" (a
-- chaos run's operations), written with one append; never a -v line. An
-- item may hold several lines joined by newlines.
function E.write_lines(lines)
  if #lines == 0 then return end
  E.flush()
  if not S.started then E.emit("start", { mode = "module", run = core.run_id() }) end
  if S.report then for _, l in ipairs(lines) do S.report:write(l, "\n") end end
  local dir = core.run_dir(nil, true)
  local f = dir and core.open_file(dir .. "/events.jsonl", "a", 384)
  if f then
    for _, l in ipairs(S.buffer) do f:write(l, "\n") end
    S.buffer = {}
    for _, l in ipairs(lines) do f:write(l, "\n") end
    f:close()
    return
  end
  -- no run directory yet: the waiting buffer counts lines
  for _, text in ipairs(lines) do
    for l in text:gmatch("[^\n]+") do to_run_file(l) end
  end
end

function E.close()
  E.flush()
  if S.report then S.report:close() S.report, S.report_path = nil, nil end
end

return E
