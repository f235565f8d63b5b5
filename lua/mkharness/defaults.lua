-- Every default of the API, in one place. The C side takes what Lua passes
-- and keeps no defaults of its own.
return {
  timeout = 60,           -- start(): seconds for readiness, all probes together
  stop_timeout = 10,      -- stop(): seconds after stop_signal before kill_signal
  stop_signal = "TERM",
  kill_signal = "KILL",
  -- The longest pause between attempts of a polling probe. The pause adapts
  -- to what an attempt costs: 25x its cost (the harness's own CPU for the
  -- tcp, unix and http probes, the time taken for a command or a function),
  -- at least 0.5 ms, and never more than `interval`. The floor bounds the
  -- wait loop's cost per pass and keeps readiness latency p50 well under
  -- 1 ms (bench/run.lua measures both); an exec probe that takes 4 ms polls
  -- every 100 ms.
  interval = 0.1,
  min_pause = 0.0005,
  cost_factor = 25,
  -- The wait loop's own CPU over a long wait (its thread, in the passes
  -- polling woke), as a share of one core: past a burst (the first few
  -- hundred ms of fast polling, when most services come up), polling
  -- wake-ups are held back to stay within it, never beyond `interval` (the
  -- pauses above bound each probe, not the loop's passes, which also cost).
  wait_cpu_share = 0.015,
  wait_cpu_burst = 0.025, -- seconds of CPU a wait may spend before that
  on_exit = "fail",
  max_restarts = 5,
  already_running = "error",
  stream = "capture",     -- stdout, stderr
  pause_wait = 5,         -- pause()/resume(): seconds for every process to follow
  wait_until_timeout = 10,
  run_timeout = 60,       -- mk.run
  http_timeout = 30,      -- mk.http_request
  max_body = 64 * 1024 * 1024, -- mk.http_request: an endless body must not take all memory
}
