-- mk.notify: ready when the service sends READY=1 to $NOTIFY_SOCKET (systemd's
-- sd_notify protocol; the harness creates the socket and sets the variable).
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local FX = here .. "../build/fixtures/fx_svc"

print("starting a fixture that prints NOTIFY_SOCKET, then sends READY=1 after 0.2 s ...")
local svc <close> = mk.notify {
  FX, "--env", "NOTIFY_SOCKET", "--sleep", 0.2, "--notify", "READY=1", "--forever",
  timeout = 10,
}:start()

local line = svc:wait_output("^env NOTIFY_SOCKET=(.*)$")
assert(line:match("=/"), line)
print("ready; the service saw " .. line)
