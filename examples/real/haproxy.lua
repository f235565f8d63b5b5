-- haproxy in front of two nginx (Debian's haproxy and nginx): requests are
-- balanced across both; one nginx stopped, haproxy notices and answers
-- from the other.
--   build/mkharness -v examples/real/haproxy.lua
local mk = require "mkharness"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- An nginx in the foreground answering its own name; everything it writes
-- stays in its tmpdir (the compiled-in paths are the system instance's).
local function web(name)
  local dir, port = mk.tmpdir(), mk.free_port()
  local conf = write(dir .. "/nginx.conf", ([[
daemon off;
worker_processes 1;
user root;                   # ignored (with a warning) when not run as root
pid DIR/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
  access_log DIR/access.log;
  client_body_temp_path DIR/body; proxy_temp_path DIR/proxy; fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi; scgi_temp_path DIR/scgi;
  server {
    listen 127.0.0.1:PORT;
    location / { default_type text/plain; return 200 "NAME\n"; }
  }
}
]]):gsub("DIR", dir):gsub("PORT", port):gsub("NAME", name))
  return mk.http {
    "nginx", "-p", dir, "-c", conf, "-e", "stderr",
    name = name, url = "http://127.0.0.1:" .. port .. "/", method = "GET", timeout = 10,
  }
end

local web1, web2 = web("web1"), web("web2")

local port, dir = mk.free_port(), mk.tmpdir()
local cfg = write(dir .. "/haproxy.cfg", ([[
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
  # a refused connection is tried again on the other server
  retries 2
  option redispatch
frontend www
  bind 127.0.0.1:PORT
  default_backend webs
backend webs
  balance roundrobin
  option httpchk GET /
  # checked every 200 ms, down after one failure: noticed quickly
  server web1 WEB1 check inter 200 fall 1 rise 1
  server web2 WEB2 check inter 200 fall 1 rise 1
]]):gsub("PORT", port):gsub("WEB1", web1.host .. ":" .. web1.port):gsub("WEB2", web2.host .. ":" .. web2.port))

local haproxy = mk.http {
  -- -db: foreground, no daemon; its warnings (server state) go to stderr
  "haproxy", "-f", cfg, "-db",
  url = "http://127.0.0.1:" .. port .. "/", method = "GET", timeout = 10,
}
-- haproxy comes after its backends: a group starts them in that order
local g <close> = mk.group { web1, web2, haproxy, after = { [haproxy] = { web1, web2 } } }:start()
print(string.format("1. web1 and web2 (nginx) are up, haproxy (pid %d) in front of them on %s", haproxy:pid(), haproxy.url))

local function tally(n)
  local seen = {}
  for _ = 1, n do
    local r = mk.get(haproxy.url, { timeout = 5 })
    assert(r.status == 200, "haproxy answered " .. r.status)
    local who = r.body:gsub("\n$", "")
    seen[who] = (seen[who] or 0) + 1
  end
  return seen
end

local seen = tally(10)
assert(seen.web1 and seen.web2, "requests were not balanced across both")
print(string.format("2. 10 requests: web1 answered %d, web2 %d", seen.web1, seen.web2))

local mark = haproxy:mark()
web2:stop()
print("3. stopped web2")
local line = haproxy:wait_output("Server webs/web2 is DOWN", { since = mark, plain = true, timeout = 5 })
print("4. haproxy noticed: " .. line:match("(Server webs/web2 is DOWN[^.,]*)"))

seen = tally(10)
assert(seen.web1 == 10 and not seen.web2)
print("5. 10 requests: all answered by web1, none failed")

web2:start()
mk.wait_until(function() local s = tally(2) return s.web1 and s.web2 end,
  { timeout = 5, message = "haproxy did not send requests to web2 again" })
print("6. web2 started again: haproxy sends it requests again")

g:stop()
print("haproxy scenario passed")
