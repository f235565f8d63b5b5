-- The lab: three hosts with networks of their own, no root needed. The demo
-- service kvd runs on each, all on port 8080; the scenario (the control
-- node) reaches each by name; each host reaches the others by name. Then
-- n1 is isolated, one direction of n2 -> n3 is dropped, and all is healed,
-- printing who reaches whom after each step.
--   build/mkharness -v examples/lab.lua
local mk = require "mkharness"
local KVD = (os.getenv("MKH_BUILD_DIR") or "build") .. "/kvd"

local lab <close> = mk.lab { hosts = { "n1", "n2", "n3" } }
local members = {}
for _, h in ipairs(lab:hosts()) do
  members[#members + 1] = mk.http { KVD, "--port", 8080, "--bind", "0.0.0.0", "--data", mk.tmpdir() .. "/kv.log",
    url = "http://" .. h .. ":8080/health", method = "GET", host = lab[h], name = "kvd-" .. h }
end
local _g <close> = mk.group(members):start()
for _, h in ipairs(lab:hosts()) do print(string.format("%s is %s, kvd ready", h, lab:ip(h))) end

-- Can `from` connect to `to`? (bash's /dev/tcp inside host `from`, 0.5 s at most)
local function reaches(from, to)
  return mk.run { "timeout", "0.5", "bash", "-c", "exec 3<>/dev/tcp/" .. to .. "/8080", host = lab[from] }.code == 0
end

local function matrix(title)
  print(title .. "   (row reaches column?)")
  print("        n1   n2   n3")
  for _, a in ipairs(lab:hosts()) do
    local row = {}
    for _, b in ipairs(lab:hosts()) do row[#row + 1] = a == b and "  - " or reaches(a, b) and " yes" or "  no" end
    print("  " .. a .. "  " .. table.concat(row, " "))
  end
end

matrix("all connected")
assert(reaches("n1", "n2"))

lab:isolate("n1")
matrix("n1 isolated: " .. table.concat(lab:cuts(), " "))
assert(not reaches("n1", "n2") and not reaches("n3", "n1") and reaches("n2", "n3"))
-- the scenario is the control node: never cut off
assert(mk.get("http://n1:8080/health").status == 200)

lab:heal()
-- one way only: n2's packets to n3 are lost; a TCP connection needs both
-- ways, so n3 cannot connect to n2 either (its SYN+ACK never arrives)
lab:drop { from = "n2", to = "n3" }
matrix("after heal, then drop n2 -> n3")
lab:heal()
matrix("healed")
assert(reaches("n2", "n3") and reaches("n3", "n1"))
print("lab example passed")
