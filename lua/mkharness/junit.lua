-- busted's JUnit output handler, decorated: a failing test case gets the
-- services' states and output in <system-out>/<system-err>. `mkharness test
-- -o junit` uses it; under stock busted: `busted -o mkharness.junit`.
local junit = require "busted.outputHandlers.junit"
local hooks = require "mkharness.busted_hooks"

-- XML 1.0 has no place for most control characters nor for invalid UTF-8:
-- a service's output may hold both (colours, binary), and one such byte
-- makes the whole report unreadable. They become \xNN.
local function xml_safe(s)
  local out, i = {}, 1
  while i <= #s do
    local ok, bad = utf8.len(s, i)
    if ok then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = string.format("\\x%02X", s:byte(bad))
    i = bad + 1
  end
  return (table.concat(out):gsub("[%z\1-\8\11\12\14-\31\127]", function(c)
    return string.format("\\x%02X", c:byte())
  end):gsub("\239\191[\190\191]", "\\uFFFE")) -- U+FFFE/FFFF are not XML characters either
end

local function sanitize(node)
  for i, child in ipairs(node) do
    if type(child) == "string" then node[i] = xml_safe(child)
    elseif type(child) == "table" then sanitize(child) end
  end
end

-- The handler keeps the test case being written in a local of its closures.
local function upvalue_reader(fn, wanted)
  for i = 1, 60 do
    local name = debug.getupvalue(fn, i)
    if not name then return nil end
    if name == wanted then
      return function() return select(2, debug.getupvalue(fn, i)) end
    end
  end
end

return function(options)
  local handler = junit(options)
  local busted = require "busted"
  local S = hooks.install()
  if S then S.junit = true end -- the context goes into the XML, not the message
  local testcase = upvalue_reader(handler.testEnd, "testcase_node")
  if not (S and testcase) then return handler end
  -- subscribed after the handler's own test end: the case is complete
  busted.subscribe({ "test", "end" }, function(element)
    local node = testcase()
    local ctx = S.context[element]
    if node then
      sanitize(node)
      if ctx then
        local out, err = hooks.render_streams(ctx)
        if out ~= "" then node:addtag("system-out"):text(xml_safe(out)):up() end
        if err ~= "" then node:addtag("system-err"):text(xml_safe(err)):up() end
      end
    end
    return nil, true
  end, { predicate = handler.cancelOnPending })
  return handler
end
