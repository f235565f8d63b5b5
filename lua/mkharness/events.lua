-- Events of a run: verbose lines on stderr and the --report JSON lines.
-- Configured by the host (mkharness.host); under stock lua/busted the
-- environment variables MKHARNESS_VERBOSE and MKHARNESS_REPORT do the same.
local core = require "mkharness.core"
local json = require "mkharness.json"

local E = {
  verbose = tonumber(os.getenv("MKHARNESS_VERBOSE") or "") or 0,
  quiet = false,
  color = false,      -- ANSI colour in echoed lines (the host decides: --color)
  timestamps = false, -- -t: "+S.mmms " on echoed and event lines
  t0 = core.now(),    -- the run's start: the "start" event's t
}
local report_file

function E.configure(opts)
  E.verbose = opts.verbose or E.verbose
  E.quiet = opts.quiet or false
  if opts.color ~= nil then E.color = opts.color end
  if opts.timestamps ~= nil then E.timestamps = opts.timestamps end
  core.echo_setup(E.color, E.timestamps, E.t0)
  if opts.report then
    -- not io.open: its fd would leak into every os.execute/io.popen child
    local f, err = core.open_file(opts.report, "w")
    if not f then error("cannot open report file: " .. err, 0) end
    f:setvbuf("line")
    report_file = f
  end
end

local env_report = os.getenv("MKHARNESS_REPORT")
if env_report and env_report ~= "" then E.configure { report = env_report } end

-- emit("ready", { service = "redis", ms = 12.3 }, "redis: ready after 12.3 ms")
function E.emit(event, fields, text)
  local now = core.now()
  if event == "start" then -- -t counts from here, as the report's t does
    E.t0 = now
    core.echo_setup(E.color, E.timestamps, E.t0)
  end
  if report_file then
    local rec = { event = event, t = now }
    for k, v in pairs(fields or {}) do rec[k] = v end
    -- a line is written whatever the fields hold: the report must not end the run
    local ok, line = pcall(json.encode_report, rec)
    if not ok then
      line = json.encode_report { event = event, t = rec.t, encode_error = tostring(line) }
    end
    report_file:write(line, "\n")
  end
  if text and E.verbose > 0 and not E.quiet then
    -- one write: the echo thread's lines must not land inside it
    local stamp = ""
    if E.timestamps then
      stamp = string.format(E.color and "\27[2m+%.3fs\27[0m " or "+%.3fs ", math.max(0, now - E.t0))
    end
    io.stderr:write(stamp .. "mkharness: " .. text .. "\n")
  end
end

function E.close()
  if report_file then report_file:close() report_file = nil end
end

return E
