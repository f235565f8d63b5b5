-- The run's own helpers: mk.run (a command to completion), mk.tmpdir,
-- mk.free_port; and children of io.popen registered as the script's own.
local core = require "mkharness.core"
local Error = require "mkharness.errors"
local options = require "mkharness.options"
local defaults = require "mkharness.defaults"
local crash = require "mkharness.crash"
local executor = require "mkharness.executor"
local types = options.types
local held, check_crashes = crash.held, crash.check
local Executor = executor.Executor

local R = {}

-- Children forked by io.popen are the script's to wait for (its close does):
-- register them, so that waiting for stray zombies never takes them.
do
  local popen = io.popen
  io.popen = function(...) -- luacheck: ignore 122 (wrapped on purpose, see above)
    local before = {}
    for _, pid in ipairs(core.children()) do before[pid] = true end
    local f, err, code = popen(...)
    if f then
      for _, pid in ipairs(core.children()) do
        if not before[pid] then core.own_child(pid) end
      end
    end
    return f, err, code
  end
end

function R.free_port()
  local p, err = core.free_port()
  if not p then Error.raise("ExecutorError", { message = "free_port: " .. err }) end
  return p
end

local tmp_count = 0
local TMPDIR = { owner = types.user, mode = types.mode }
function R.tmpdir(opts)
  local o = options.check("mk.tmpdir", opts, TMPDIR)
  local ids = o.owner and options.identity("mk.tmpdir", o.owner, nil, "owner")
  local function raise(msg) Error.raise("ExecutorError", { message = "tmpdir: " .. msg }) end
  local dir, err = core.run_dir()
  if not dir then raise(err) end
  tmp_count = tmp_count + 1
  local path = string.format("%s/tmp-%d", dir, tmp_count)
  local ok, e2 = core.mkdir(path)
  if not ok then raise(e2) end
  if ids then
    executor.share_run_dir(raise)
    local done, e3, errno = core.chown(path, ids.uid, ids.gid)
    if not done then
      raise(string.format("cannot give %s to user '%s': %s%s", path, ids.user, e3,
        errno == 1 and " (only root can give a directory to another user)" or ""))
    end
  end
  -- chmod after chown: chown may clear the set-id bits
  if o.mode then
    local done, e4 = core.chmod(path, o.mode)
    if not done then raise(e4) end
  end
  return path
end

local RUN = { timeout = types.timeout, stdin = types.string, env = types.env, cwd = types.nonempty, clear_env = types.boolean,
  user = types.user, group = types.group, cmd = function(_, _, v) return v end, shell = function(_, _, v) return v end,
  host = function(ctx, k, v) return require("mkharness.lab").check_host(ctx, k, v) end }
function R.run(t)
  local o = options.check("mk.run", t, RUN)
  options.identity("mk.run", o.user, o.group) -- named as mk.run's when they do not exist
  t = t or {}
  local spec = { env = o.env, cwd = o.cwd, stdin = o.stdin, clear_env = o.clear_env, user = o.user, group = o.group,
    cmd = t.cmd, shell = t.shell, name = "run", timeout = false, host = o.host }
  -- the argv by its keys, as options.command reads it: ipairs would follow an
  -- __index for ever
  for k, a in pairs(t) do if math.type(k) == "integer" then spec[k] = a end end
  local svc = executor.process(spec)
  -- the scenario is the lab's control node: without host =, a command
  -- runs where it reaches every lab host
  svc._control = o.host == nil
  -- a chaos client closed while its command runs (given up after the
  -- run's grace) unwinds through here without returning: the command goes
  -- with it, not at the end of the run
  local settled = false
  local _abandoned <close> = setmetatable({}, { __close = function()
    if not settled and svc._proc and not svc._stopped then pcall(svc.kill, svc) end
  end })
  svc:start()
  local ok, code = pcall(Executor.wait_exit, svc, { timeout = o.timeout == nil and defaults.run_timeout or o.timeout })
  settled = true
  if not ok then
    svc:kill()
    if Error.is(code) then code.message = "mk.run: " .. svc.command .. ": " .. code.message end
    error(code, 0)
  end
  svc._proc:sweep()
  svc._stopped = true
  held[svc] = nil
  executor.echo_close(svc)
  local res = { code = code, stdout = svc:output(), stderr = svc:err_output() }
  for _, path in pairs(svc._logs) do os.remove(path) end
  executor.services[svc] = nil
  executor.forget_name(svc.name)
  check_crashes()
  return res
end

return R
