-- luacheck configuration: `luacheck lua spec examples bench` is part of the
-- lint step of `./run test` and must report nothing.
std = "lua54"
-- the code is written to about 150 columns (option tables, messages)
max_line_length = 150
-- methods that ignore their object (Probe:attach() returning {}) are
-- interfaces, not mistakes
self = false
-- `local _svc <close> = mk.tcp {...}:start()`: a variable kept only for its
-- close at the end of the scope is named with a leading underscore
-- (docs/development.md)
ignore = { "211/_.*" }

files["spec/"] = { std = "+busted" }
-- LuaLS annotations: stubs without bodies, documented lines of any length
files["lua/mkharness/meta.lua"] = { unused_args = false, max_line_length = false, ignore = { "241" } }
