-- The run driver of the mkharness host: builds `arg` as lua does, runs the
-- scenario (or busted, or a chunk), and on failure reports the error, the
-- traceback, every service's last output and the run directory it kept.
local core = require "mkharness.core"
local events = require "mkharness.events"

local H = {}
local opts = {}
local real_exit = os.exit
local finished = false

local function say(...)
  if not opts.quiet then io.stderr:write(...) end
end

-- Services' tails, for failure reports (only if the module was used). Listed:
-- the services still running at the failure, and those that ended on their
-- own with nobody looking (no stop, wait_exit or exit_code since): what the
-- scenario stopped, or caught failing (a failed start kills the service),
-- it has dealt with already. The failing error's own service has its tail
-- in the error: not printed twice.
local function service_report(err)
  local mk = package.loaded["mkharness"]
  if type(mk) ~= "table" or not mk._services then return "" end
  local Error = package.loaded["mkharness.errors"]
  local shown = Error and Error.is(err) and err.log_tail and err.log_tail ~= "" and err.name
  local out = {}
  local list = {}
  for svc in pairs(mk._services) do
    local proc = svc._proc
    if proc and not svc._stopped and (proc:poll() == nil or svc._exit == nil) then list[#list + 1] = svc end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  for _, svc in ipairs(list) do
    local code = svc._proc:poll()
    local state = code == nil and string.format("pid %d, running", svc._proc:pid())
      or ("ended on its own: " .. (code < 0 and ("killed by SIG" .. (core.signame(-code) or -code))
        or ("exit code " .. code)))
    out[#out + 1] = string.format("--- %s (%s): %s\n", svc.name, state, svc.command)
    local tail = svc.name ~= shown and mk._log_tail(svc, 20)
    if svc.name == shown then
      out[#out + 1] = "    (its last output is in the error above)\n"
    elseif tail and tail ~= "" then
      out[#out + 1] = "    | " .. tail:gsub("\n", "\n    | ") .. "\n"
    else
      out[#out + 1] = "    (no output)\n"
    end
  end
  return table.concat(out)
end

local function teardown()
  local mk = package.loaded["mkharness"]
  if type(mk) == "table" and mk._teardown then mk._teardown() else core.teardown(true) end
end

local function env_keep()
  local v = os.getenv("MKHARNESS_KEEP")
  return v ~= nil and v ~= "" and v ~= "0"
end

-- The "error" event: what failed, as the failure report says it.
local function error_event(err, info, failure)
  local Error = package.loaded["mkharness.errors"]
  local f = {}
  if info then
    f.kind, f.message = info.kind, info.message
  elseif Error and Error.is(err) then
    f.kind, f.service, f.message = err.kind, err.name, tostring(err.message)
  else
    f.kind = "error"
    f.message = type(err) == "string" and err or (failure or ""):match("FAILED: ([^\n]*)") or tostring(err)
  end
  events.emit("error", f, nil) -- the failure report says it on stderr already
end

-- End of run: report first (a long teardown must not cost the report: the
-- run may be out of time), keep the run directory on failure, tear down.
local function finish(code, failure, err, info)
  if finished then return code end
  finished = true
  if failure or info then error_event(err, info, failure) end
  local keep = opts.keep or code ~= 0 or env_keep()
  core.keep(keep)
  -- a failed or kept run has its events.jsonl, even if it started nothing
  if keep then events.persist() end
  local dir = core.run_dir(nil, true) -- only if the run made one
  core.echo_flush_all() -- the services' lines so far come before the report
  if failure then
    io.stderr:write(failure)
    local report = service_report(err)
    if report ~= "" then io.stderr:write("services:\n", report) end
  end
  if keep and dir then
    say("mkharness: run directory kept: ", dir, "\n")
  end
  io.stderr:flush()
  local ok, teardown_err = pcall(teardown)
  if not ok then
    io.stderr:write("mkharness: teardown: ", tostring(teardown_err), "\n")
    if code == 0 then code = 1 end
  end
  if dir and not keep then core.rmtree(dir) end
  events.emit("end", { status = code }, "run ended with status " .. code)
  events.close()
  return code
end

local function traceback(err)
  local Error = package.loaded["mkharness.errors"]
  local msg
  if Error and Error.is(err) then msg = tostring(err)
  elseif type(err) == "string" then msg = err
  elseif type(err) == "number" then msg = tostring(err) -- as lua.c prints error(42)
  else
    local mt = getmetatable(err)
    msg = (mt and mt.__tostring) and tostring(err) or ("(error object is a " .. type(err) .. " value)")
  end
  return { msg = msg, tb = debug.traceback("", 2), err = err }
end

local function failure_text(e)
  -- out of memory: Lua does not call the message handler, e is the message
  if type(e) ~= "table" then e = { msg = tostring(e), tb = "" } end
  -- what <close> cleanup found while this error unwound (e.cleanup)
  local notes = {}
  for _, c in ipairs(e.cleanup or {}) do notes[#notes + 1] = "  then, while cleaning up: " .. tostring(c) .. "\n" end
  if #notes > 0 then e.tb = table.concat(notes) .. e.tb end
  return "mkharness: FAILED: " .. e.msg .. "\n" .. e.tb:gsub("^\n", "") .. "\n"
end

-- Called by the C host (from a hook or a wait) on SIGINT/SIGTERM/SIGHUP
-- or when --timeout expires; the C side then tears down and exits.
function H.interrupted(sig, code)
  local what = code == 124 and string.format("run timeout (--timeout %g s) expired", opts.timeout or 0)
    or ("interrupted by SIG" .. (core.signame(sig) or sig))
  local text = "mkharness: " .. what .. ": tearing down\n" .. debug.traceback("", 2):gsub("^\n", "") .. "\n"
  finish(code, text, nil, { kind = code == 124 and "timeout" or "interrupted", message = what })
end

-- Scripts that call os.exit (busted does) still get a clean teardown.
local function exit_wrapper(code, close)
  local status = code
  if code == nil or code == true then status = 0 elseif code == false then status = 1 end
  status = finish(math.tointeger(status) or 1)
  io.stdout:flush()
  return real_exit(status, close)
end

local function load_script(path)
  local f, err
  if path == "-" then
    f, err = load(io.read("a"), "=stdin")
  else
    f, err = loadfile(path) -- skips a #! line, like lua
  end
  return f, err
end

function H.main(o)
  opts = o
  -- reading an old run's events is no run: no events, no run directory
  if o.mode == "report" then return require("mkharness.report").main(o.argv) end
  events.configure { verbose = o.verbose, quiet = o.quiet, report = o.report,
    color = o.color, timestamps = o.timestamps }
  os.exit = exit_wrapper -- luacheck: ignore 122 (exit through the host's teardown)
  events.emit("start", { mode = o.mode, run = core.run_id() })
  local fn, err
  local argv = o.argv
  if o.mode == "script" then
    _G.arg = argv
    arg[-1] = o.progname -- luacheck: ignore 122 (the script's own arg table, set just above)
  else
    _G.arg = { [0] = o.progname }
  end
  -- -e chunks run first, in order, as with lua
  for i, chunk in ipairs(o.code or {}) do
    local pre, perr = load(chunk, "=(command line)")
    if not pre then
      io.stderr:write("mkharness: cannot load -e chunk ", i, ": ", tostring(perr), "\n")
      return finish(2, nil, nil, { kind = "load", message = tostring(perr) })
    end
    local ok, e = xpcall(pre, traceback)
    if not ok then return finish(1, failure_text(e), type(e) == "table" and e.err) end
  end
  if o.mode == "code" then
    return finish(0)
  elseif o.mode == "test" then
    -- busted inside the host: all its options and output handlers work
    local args = { [0] = "mkharness test" }
    for i = 1, #argv do args[i] = argv[i] end
    _G.arg = args
    fn = require("mkharness.busted_hooks").host_test()
  else
    fn, err = load_script(argv[0])
  end
  if not fn then
    io.stderr:write("mkharness: cannot load script: ", tostring(err), "\n")
    return finish(2, nil, nil, { kind = "load", message = tostring(err) })
  end
  local ok, e = xpcall(fn, traceback, table.unpack(o.mode == "script" and argv or {}))
  if not ok then return finish(1, failure_text(e), type(e) == "table" and e.err) end
  -- a crash the script made no harness call after still fails the run
  local mk = package.loaded["mkharness"]
  if o.mode == "script" and type(mk) == "table" and mk._check_crashes then
    ok, e = xpcall(mk._check_crashes, traceback)
    if not ok then return finish(1, failure_text(e), type(e) == "table" and e.err) end
  end
  return finish(0)
end

return H
