-- nginx (Debian's nginx): a private instance from a config in a tmpdir, in
-- the foreground; a new config is loaded with SIGHUP, without a restart.
--   build/mkharness -v examples/real/nginx.lua
local mk = require "mkharness"

local port, dir = mk.free_port(), mk.tmpdir()
local conf = dir .. "/nginx.conf"
local url = "http://127.0.0.1:" .. port .. "/"

-- Everything nginx writes goes to the tmpdir: the compiled-in paths point
-- to /var/lib/nginx and /var/log/nginx, the system instance's.
local function write_config(body)
  local f = assert(io.open(conf, "w"))
  f:write((([[
daemon off;                  # the harness supervises it: no fork into the background
master_process on;
worker_processes 1;
user root;                   # ignored (with a warning) when not run as root
pid DIR/nginx.pid;
error_log stderr notice;     # notice: the reload shows in its output
events { worker_connections 64; }
http {
  access_log DIR/access.log;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  server {
    listen 127.0.0.1:PORT;
    location / { default_type text/plain; return 200 "BODY\n"; }
  }
}
]]):gsub("DIR", dir):gsub("PORT", port):gsub("BODY", body)))
  f:close()
end

write_config("version 1")
local nginx <close> = mk.http {
  -- -e stderr: the error log before the config is read (the default is /var/log/nginx)
  "nginx", "-p", dir, "-c", conf, "-e", "stderr",
  url = url, method = "GET", timeout = 10,
}:start()
print(string.format("1. nginx (master pid %d) is ready on %s, config in %s", nginx:pid(), url, conf))
local r = mk.get(url)
assert(r.status == 200 and r.body == "version 1\n", r.body)
print("2. GET / -> 200 " .. r.body:gsub("\n$", ""))

write_config("version 2")
-- The mark is taken before the signal, so the master's answer cannot come
-- too early to be seen.
local master = nginx:pid()
local mark = nginx:mark()
nginx:signal("HUP")
print("3. wrote a new config and sent SIGHUP")
local line = nginx:wait_output("reconfiguring", { since = mark, plain = true, timeout = 5 })
print("4. the master says: " .. line:match("%] (.*)$"))
-- Old workers finish what they accepted before they exit: poll until the
-- new config answers (bounded) rather than trust the first response.
r = mk.wait_until(function()
  local res = mk.get(url)
  return res.body == "version 2\n" and res
end, { timeout = 5, message = "nginx still serves the old config 5 s after SIGHUP" })
assert(nginx:running() and nginx:pid() == master)
print("5. GET / -> 200 " .. r.body:gsub("\n$", "") .. ", from the same master: reloaded, not restarted")

nginx:stop()
print("nginx scenario passed")
