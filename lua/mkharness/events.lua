-- Events of a run: verbose lines on stderr and the --report JSON lines.
-- Configured by the host (mkharness.host); under stock lua/busted the
-- environment variables MKHARNESS_VERBOSE and MKHARNESS_REPORT do the same.
local core = require "mkharness.core"
local json = require "mkharness.json"

local E = {
  verbose = tonumber(os.getenv("MKHARNESS_VERBOSE") or "") or 0,
  quiet = false,
}
local report_file

function E.configure(opts)
  E.verbose = opts.verbose or E.verbose
  E.quiet = opts.quiet or false
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
  if report_file then
    local rec = { event = event, t = core.now() }
    for k, v in pairs(fields or {}) do rec[k] = v end
    -- a line is written whatever the fields hold: the report must not end the run
    local ok, line = pcall(json.encode_report, rec)
    if not ok then
      line = json.encode_report { event = event, t = rec.t, encode_error = tostring(line) }
    end
    report_file:write(line, "\n")
  end
  if text and E.verbose > 0 and not E.quiet then
    io.stderr:write("mkharness: ", text, "\n")
  end
end

function E.close()
  if report_file then report_file:close() report_file = nil end
end

return E
