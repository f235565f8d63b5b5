-- mk.unix (mirakuru's UnixSocketExecutor): ready when a stream connect to the socket succeeds.
local mk = require "mkharness"
local here = arg[0]:match("(.*/)") or "./"
local FX = here .. "../build/fixtures/fx_svc"

local sock = mk.tmpdir() .. "/fixture.sock"
print("starting a fixture that listens on " .. sock .. " after 0.2 s ...")
local svc <close> = mk.unix {
  FX, "--sleep", 0.2, "--unix", sock, "--serve-unix",
  socket = sock, timeout = 10,
}:start()
print("ready: " .. tostring(svc))

local r = mk.run { "test", "-S", sock }
assert(r.code == 0, sock .. " is not a socket")
print("test -S " .. svc.socket .. " -> " .. r.code)
