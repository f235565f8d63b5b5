-- mk.pidfile (mirakuru's PidExecutor): ready when the service has written its pidfile.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local FX = here .. "../build/fixtures/fx_svc"

local pf = mk.tmpdir() .. "/service.pid"
print("starting a fixture that writes " .. pf .. " after 0.2 s ...")
local svc <close> = mk.pidfile {
  FX, "--sleep", 0.2, "--pidfile", pf, "--forever",
  file = pf, timeout = 10,
}:start()

local f = assert(io.open(svc.file))
local pid = tonumber(f:read("l"))
f:close()
assert(pid == svc:pid(), "pidfile says " .. tostring(pid))
print("ready: pidfile holds " .. pid .. ", the service's pid")
