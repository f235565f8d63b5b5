-- `luarocks make` (or `luarocks make --tree DIR`) builds and installs from
-- this source tree; nothing is downloaded. The JSON module (lua-dkjson),
-- libcurl, libmnl and libnftables come from Debian packages, so the only dependency LuaRocks checks
-- is the Lua version.
rockspec_format = "3.0"
package = "mkharness"
version = "scm-1"
source = {
  -- only `luarocks make` in a checkout is supported: there is no published
  -- repository to fetch from
  url = "git+file://./mkharness",
}
description = {
  summary = "Integration and chaos test scenarios as plain Lua: process executors, a host, busted support",
  detailed = [[
mkharness starts services, waits until they are really ready, stops, pauses,
kills and restarts them, and tears down whatever a run started however it
ends. It is a Lua 5.4 module (mkharness, with the C part mkharness.core) and
a host program, `mkharness`, that runs scenarios and busted specs.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "RelWithDebInfo",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}
