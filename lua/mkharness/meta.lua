---@meta mkharness
-- Editor annotations (LuaLS / LuaCATS) for `require "mkharness"` and the
-- busted matchers of `require "mkharness.busted"`. Editors read this file
-- through `"workspace.library"` (docs/api.md); the module never loads it, and
-- the functions below have no bodies. spec/14-annotations_spec.lua checks that every
-- public function and every option key is annotated here.

-- ---------------------------------------------------------------------------
-- Commands and options

---A command: the array part is argv (numbers become strings), or `cmd =`
---(split by shell word rules, no shell), or `shell =` (run by /bin/sh -c).
---@class mkharness.Command
---@field [integer] string|number
---@field cmd? string
---@field shell? string

---@alias mkharness.Signal string|integer a name ("TERM", "SIGTERM", "RTMIN+2") or a number
---@alias mkharness.Stream "capture"|"inherit"|"null"
---@alias mkharness.ProbeLike mkharness.Probe|fun(svc: mkharness.Executor): any
---@alias mkharness.Ready mkharness.ProbeLike|mkharness.ProbeLike[]
---@alias mkharness.Status integer|integer[]|string|fun(status: integer): boolean

---Options of every executor (mk.process takes only these).
---@class mkharness.BaseOptions: mkharness.Command
---@field name? string logs, errors and capture file names; made unique
---@field timeout? number|false seconds start() may wait for readiness (60); false = no limit
---@field interval? number the longest pause between attempts of a polling probe (0.1)
---@field stop_timeout? number seconds stop() waits before kill_signal (10)
---@field stop_signal? mkharness.Signal ("TERM")
---@field kill_signal? mkharness.Signal ("KILL")
---@field expected_returncode? integer an exit code stop() accepts besides 0 and the stop signal
---@field env? table<string, string|false> variables to add (string) or remove (false)
---@field clear_env? boolean start from an empty environment
---@field cwd? string working directory
---@field user? string|integer run as this user (needs root)
---@field group? string|integer run with this group
---@field stdin? string what the child reads on stdin
---@field stdout? mkharness.Stream ("capture")
---@field stderr? mkharness.Stream ("capture")
---@field echo? boolean copy the output live to stderr, prefixed `[name] `
---@field on_exit? "fail"|"ignore"|"restart" what a crash does ("fail")
---@field max_restarts? integer with on_exit = "restart" (5)
---@field stop_command? string|mkharness.Command run first by stop()
---@field host? mkharness.LabHost|false run inside this lab host (lab.n1); false: the machine's own network

---@class mkharness.ProcessOptions: mkharness.BaseOptions

---Options of every executor with readiness.
---@class mkharness.ExecutorOptions: mkharness.BaseOptions
---@field ready? mkharness.Ready a probe, a function or a list of them (all must pass)
---@field already_running? "error"|"reuse"|"ignore" when the probe passes before spawning ("error")

---@class mkharness.OutputOptions: mkharness.ExecutorOptions
---@field banner string a Lua pattern (or plain text with plain = true)
---@field stream? "any"|"stdout"|"stderr"
---@field plain? boolean
---@field times? integer the N-th matching line

---@class mkharness.TcpOptions: mkharness.ExecutorOptions
---@field host? string|mkharness.LabHost|false the address to probe ("127.0.0.1"), or a lab host to run in and probe
---@field port integer

---@class mkharness.UnixOptions: mkharness.ExecutorOptions
---@field socket string the socket's path

---@class mkharness.HttpOptions: mkharness.ExecutorOptions
---@field url string
---@field status? mkharness.Status ("2xx")
---@field method? string ("HEAD")
---@field headers? table<string, string>
---@field body? string
---@field insecure? boolean do not verify TLS certificates

---@class mkharness.PidfileOptions: mkharness.ExecutorOptions
---@field file string the pid file the daemon writes

---@class mkharness.NotifyOptions: mkharness.ExecutorOptions

---@class mkharness.StopOptions
---@field signal? mkharness.Signal
---@field timeout? number
---@field expected_returncode? integer

---@class mkharness.KillOptions
---@field signal? mkharness.Signal ("KILL")
---@field wait? boolean reap the tree (true)

---@class mkharness.WaitExitOptions
---@field timeout? number|false

---@class mkharness.WaitOutputOptions
---@field timeout? number|false
---@field stream? "any"|"stdout"|"stderr"
---@field plain? boolean
---@field since? "start"|"now"|mkharness.Mark
---@field times? integer

---@class mkharness.WaitUntilOptions
---@field timeout? number|false (10)
---@field interval? number
---@field message? string said by the TimeoutExpired error

---@class mkharness.RunOptions: mkharness.Command
---@field timeout? number|false (60)
---@field stdin? string
---@field env? table<string, string|false>
---@field clear_env? boolean
---@field cwd? string
---@field user? string|integer
---@field group? string|integer
---@field host? mkharness.LabHost|false a lab host to run in; by default the lab's control node while a lab is up; false: the machine's own network

---@class mkharness.RunResult
---@field code integer
---@field stdout string
---@field stderr string

---@class mkharness.TmpdirOptions
---@field owner? string|integer give the directory to this user
---@field mode? string|integer an octal string ("755") or a number

---@class mkharness.GetOptions
---@field method? string ("GET")
---@field headers? table<string, string>
---@field body? string
---@field timeout? number|false (30)
---@field insecure? boolean do not verify TLS certificates
---@field max_body? integer bytes (64 MB); longer is an ExecutorError

---@class mkharness.HttpRequestOptions: mkharness.GetOptions
---@field url string

---@class mkharness.GroupOptions
---@field [integer] mkharness.Executor
---@field after? table<mkharness.Executor, mkharness.Executor[]> a member starts once these are ready

---@class mkharness.GroupStopOptions
---@field order? mkharness.Executor[] stop in this order, one at a time

---@alias mkharness.MarkFields table<string, string|number|boolean>

-- ---------------------------------------------------------------------------
-- Errors

---@alias mkharness.ErrorKind
---| "ConfigError"
---| "SpawnError"
---| "AlreadyRunning"
---| "TimeoutExpired"
---| "ProcessExitedWithError"
---| "ProcessFinishedWithError"
---| "ExecutorError"
---| "UnexpectedExit"
---| "FaultError"
---| "CheckFailed"

---A harness error, raised as a table; tostring(e) is the full message.
---@class mkharness.Error
---@field kind mkharness.ErrorKind
---@field message string
---@field name? string the service
---@field command? string
---@field exit_code? integer the code, or -N when killed by signal N
---@field timeout? number TimeoutExpired: the seconds it was given
---@field waited? number TimeoutExpired: the seconds it waited
---@field tried? string TimeoutExpired: each probe, its attempts and last result
---@field since_ready? number UnexpectedExit: seconds it had been ready
---@field crashed_at? number UnexpectedExit: mk.now() when it ended
---@field option? string ConfigError: the option at fault
---@field disk_full? string the full filesystem's directory, when that explains it
---@field log_tail? string the last lines of the service's output
---@field where? string the caller's file:line
---@field cleanup? any[] errors of cleanup steps while this one unwound
---@field url? string
---@field max_body? integer
---@field seed? integer FaultError, CheckFailed: the chaos run's seed
---@field faults? string[] FaultError: each fault that could not start or heal, and why
---@field checker? string CheckFailed: the checker's name
---@field result? mkharness.CheckResult CheckFailed: what the checker found
---@field KINDS table<mkharness.ErrorKind, true>
local Error = {}

---@param kind mkharness.ErrorKind
---@param fields table
---@return mkharness.Error
function Error.new(kind, fields) end

---@param kind mkharness.ErrorKind
---@param fields table
function Error.raise(kind, fields) end

---@param e any
---@param kind? mkharness.ErrorKind
---@return boolean
function Error.is(e, kind) end

-- ---------------------------------------------------------------------------
-- Executors

---A position in a service's output, for wait_output{ since = mark }.
---@class mkharness.Mark

---@class mkharness.ReadyMatch
---@field line string
---@field [integer] string the pattern's captures

---@class mkharness.Executor
---@field name string
---@field kind string
---@field command string the command as a string
---@field argv string[]
---@field host? string mk.tcp, mk.http
---@field port? integer mk.tcp, mk.http
---@field url? string mk.http
---@field socket? string mk.unix
---@field file? string mk.pidfile
---@field ready_match? mkharness.ReadyMatch the line an output probe matched
---@field notify_status? string STATUS= of an mk.notify service
local Executor = {}

---Spawn and wait until ready; a no-op when running.
---@return self
function Executor:start() end

---@param opts? mkharness.StopOptions
---@return self
function Executor:stop(opts) end

---@param opts? mkharness.KillOptions
---@return self
function Executor:kill(opts) end

---@return self
function Executor:restart() end

---@param sig mkharness.Signal
---@return self
function Executor:signal(sig) end

---@return self
function Executor:pause() end

---@return self
function Executor:resume() end

---Stop, call fn(self), start again (also when fn raises). Without fn: a
---to-be-closed guard.
---@generic R
---@param fn? fun(svc: mkharness.Executor): R
---@return R|any
function Executor:stopped(fn) end

---Pause, call fn(self), resume (also when fn raises). Without fn: a
---to-be-closed guard.
---@generic R
---@param fn? fun(svc: mkharness.Executor): R
---@return R|any
function Executor:paused(fn) end

---@return boolean
function Executor:running() end

---@return integer?
function Executor:pid() end

---@return integer? code the code, -N when killed by signal N, nil while running
function Executor:exit_code() end

---@param opts? mkharness.WaitExitOptions
---@return integer? code
function Executor:wait_exit(opts) end

---@return string
function Executor:output() end

---@return string
function Executor:err_output() end

---@param pattern string
---@param opts? mkharness.WaitOutputOptions
---@return string line
---@return string ... the pattern's captures
function Executor:wait_output(pattern, opts) end

---@return mkharness.Mark
function Executor:mark() end

---Call fn until truthy within the service's timeout; otherwise kill it and
---raise TimeoutExpired.
---@param fn fun(): any
---@return self
function Executor:wait_for(fn) end

---@class mkharness.Group
---@field members mkharness.Executor[]
local Group = {}

---@return self
function Group:start() end

---@param opts? mkharness.GroupStopOptions
---@return self
function Group:stop(opts) end

-- ---------------------------------------------------------------------------
-- Probes

---@class mkharness.Probe
---@field kind string
local Probe = {}

---@return string
function Probe:describe() end

---@class mkharness.probe.OutputOptions
---@field banner string
---@field stream? "any"|"stdout"|"stderr"
---@field plain? boolean
---@field times? integer

---@class mkharness.probe.TcpOptions
---@field host? string ("127.0.0.1")
---@field port integer

---@class mkharness.probe.UnixOptions
---@field socket string

---@class mkharness.probe.HttpOptions
---@field url string
---@field status? mkharness.Status ("2xx")
---@field method? string ("HEAD")
---@field headers? table<string, string>
---@field body? string
---@field insecure? boolean

---@class mkharness.probe.FileOptions
---@field path string

---@class mkharness.probe.NotifyOptions

---@class mkharness.probe.ExecOptions: mkharness.Command

---@class mkharness.probe.AnyOptions
---@field [integer] mkharness.ProbeLike

---@class mkharness.probes
local probe = {}

---@param t mkharness.probe.OutputOptions
---@return mkharness.Probe
function probe.output(t) end

---@param t mkharness.probe.TcpOptions
---@return mkharness.Probe
function probe.tcp(t) end

---@param t mkharness.probe.UnixOptions
---@return mkharness.Probe
function probe.unix(t) end

---@param t mkharness.probe.HttpOptions
---@return mkharness.Probe
function probe.http(t) end

---@param t mkharness.probe.FileOptions
---@return mkharness.Probe
function probe.file(t) end

---@param t? mkharness.probe.NotifyOptions
---@return mkharness.Probe
function probe.notify(t) end

---@param t mkharness.probe.ExecOptions
---@return mkharness.Probe
function probe.exec(t) end

---Ready when the first of its members is.
---@param t mkharness.probe.AnyOptions
---@return mkharness.Probe
function probe.any(t) end

-- ---------------------------------------------------------------------------
-- Fault proxy

---@class mkharness.ProxyOptions
---@field upstream string|integer "host:port" or a port on 127.0.0.1
---@field listen? integer (0: any free port)
---@field host? string|mkharness.Lab the address to listen on ("127.0.0.1"), or a lab: its control node
---@field name? string
---@field timeout? number|false seconds to resolve host names (5)

---@class mkharness.FaultOptions
---@field direction? "up"|"down"|"both" ("both")
---@field probability? number the share of connections affected (1)

---@class mkharness.LatencyOptions: mkharness.FaultOptions
---@field jitter? number milliseconds

---@class mkharness.SlicerOptions: mkharness.FaultOptions
---@field size integer bytes per piece
---@field size_variation? integer bytes
---@field delay? number milliseconds between pieces

---@class mkharness.ResetOptions
---@field probability? number

---@class mkharness.ProxyStats
---@field connections integer
---@field active integer
---@field bytes_up integer
---@field bytes_down integer
---@field upstream_errors integer
---@field resets integer
---@field limited integer

-- ---------------------------------------------------------------------------
-- Lab

---@class mkharness.LabOptions
---@field hosts string[] host names: a lower-case letter, then letters, digits or '-' (at most 31)
---@field name? string ("lab", then "lab2", ...)

---A host of a lab: pass it as `host =` to run a command inside it.
---@class mkharness.LabHost
---@field lab mkharness.Lab
---@field name string
---@field index integer
---@field ip string its address on the lab's network

---@class mkharness.DropOptions
---@field from string|mkharness.LabHost|(string|mkharness.LabHost)[]
---@field to string|mkharness.LabHost|(string|mkharness.LabHost)[]

---@class mkharness.LabLatencyOptions
---@field host string|mkharness.LabHost
---@field ms number
---@field jitter? number milliseconds

---@class mkharness.LossOptions
---@field host string|mkharness.LabHost
---@field percent number 0 to 100

---What partition, isolate and drop return: their cut links, for heal(handle).
---@class mkharness.LabCut

---Hosts with a network of their own; `lab.n1` is the host named n1.
---@class mkharness.Lab
---@field name string
---@field control_ip string the address of the control node (the scenario's side of the lab)
---@field [string] mkharness.LabHost
local Lab = {}

---The address peers use to reach a host.
---@param host string|mkharness.LabHost
---@return string
function Lab:ip(host) end

---The host names, in order.
---@return string[]
function Lab:hosts() end

---No traffic between the groups; hosts in no group form one more group.
---@param groups (string|mkharness.LabHost)[][]
---@return mkharness.Lab
---@return mkharness.LabCut handle for heal(handle): this fault's cuts only
function Lab:partition(groups) end

---Cut one host from every other, both ways.
---@param host string|mkharness.LabHost
---@return mkharness.Lab
---@return mkharness.LabCut handle for heal(handle): this fault's cuts only
function Lab:isolate(host) end

---Drop the packets from some hosts to others (one way).
---@param t mkharness.DropOptions
---@return mkharness.Lab
---@return mkharness.LabCut handle for heal(handle): this fault's cuts only
function Lab:drop(t) end

---Delay a host's packets (netem; ExecutorError where the kernel lacks it).
---@param t mkharness.LabLatencyOptions
---@return mkharness.Lab
function Lab:latency(t) end

---Lose a share of a host's packets (netem; ExecutorError where the kernel lacks it).
---@param t mkharness.LossOptions
---@return mkharness.Lab
function Lab:loss(t) end

---Every cut and every netem setting removed; with a handle, only the
---links that fault cut (a link another fault cut too stays cut). In
---force on return.
---@param handle? mkharness.LabCut
---@return mkharness.Lab
function Lab:heal(handle) end

---The cut one-way links, as "n1->n2", sorted.
---@return string[]
function Lab:cuts() end

---The keeper's pid and the inode of the lab's user namespace.
---@return integer pid
---@return integer inode
function Lab:keeper() end

---Take the lab down (also at the end of the run).
---@return mkharness.Lab
function Lab:close() end

---@class mkharness.Proxy
---@field upstream string
---@field host string
---@field listen integer
---@field name string
---@field port? integer set by start()
local Proxy = {}

---@return self
function Proxy:start() end

---@return self
function Proxy:stop() end

---@return boolean
function Proxy:running() end

---@return boolean
function Proxy:listening() end

---@param ms number 0 turns latency off
---@param opts? mkharness.LatencyOptions
---@return self
function Proxy:latency(ms, opts) end

---@param bytes_per_second number
---@param opts? mkharness.FaultOptions
---@return self
function Proxy:bandwidth(bytes_per_second, opts) end

---@param opts? mkharness.FaultOptions
---@return self
function Proxy:blackhole(opts) end

---@param opts mkharness.SlicerOptions
---@return self
function Proxy:slicer(opts) end

---@param bytes integer
---@param opts? mkharness.FaultOptions
---@return self
function Proxy:limit_data(bytes, opts) end

---@return self
function Proxy:down() end

---@return self
function Proxy:up() end

---@param opts? mkharness.ResetOptions
---@return self
function Proxy:reset(opts) end

---@return self
function Proxy:clear() end

---Down during fn, up after (even if fn raises). Without fn: a to-be-closed
---guard.
---@generic R
---@param fn? fun(): R
---@return R|any
function Proxy:cut(fn) end

---@return mkharness.ProxyStats
function Proxy:stats() end

-- ---------------------------------------------------------------------------
-- HTTP

---@class mkharness.Response
---@field status integer
---@field headers table<string, string> lower-case names
---@field body string
local Response = {}

---@return any
function Response:json() end


-- ---------------------------------------------------------------------------
-- Chaos: schedules, histories, checks

---@alias mkharness.Range number|number[] { min, max } seconds, or one number for both
---@alias mkharness.Pick "one"|"minority"|"majority"|"all"|fun(candidates: any[], rng: mkharness.Rng): any

---A private PRNG (xoshiro256**), as math.random but seeded by the run.
---@class mkharness.Rng
local Rng = {}

---@param m? integer
---@param n? integer
---@return number
function Rng:random(m, n) end

---@class mkharness.ChaosOptions
---@field seed? integer the schedule's seed (MKHARNESS_SEED overrides it; none: drawn and printed)
---@field duration number seconds the workload runs while faults fire
---@field workload fun(ctx: mkharness.ChaosCtx) run once per client
---@field final? fun(ctx: mkharness.ChaosCtx) run after every fault is healed (final reads)
---@field faults? (mkharness.Fault|{ start: function, heal: function })[]
---@field clients? integer logical clients, coroutines over the wait loop (1)
---@field concurrent? integer|boolean most faults in force at once (1); true = no limit
---@field grace? number seconds a client may stay blocked after the run ends (5)
---@field name? string ("chaos")

---Options every fault takes.
---@class mkharness.ChaosFaultOptions
---@field every? mkharness.Range seconds from the start or the last heal to the next start ({ 2, 5 })
---@field lasting? mkharness.Range seconds in force ({ 1, 3 })
---@field pick? mkharness.Pick which candidates ("one")
---@field name? string

---@class mkharness.MemberFaultOptions: mkharness.ChaosFaultOptions
---@field [1] mkharness.Executor[]|fun(): mkharness.Executor[] the candidates

---@class mkharness.PartitionFaultOptions: mkharness.ChaosFaultOptions
---@field [1] table the lab: hosts(), partition{}, isolate(), drop{}, heal()
---@field mode? "halves"|"majority"|"isolate"|"oneway" ("halves")

---@class mkharness.ProxyFaultOptions: mkharness.ChaosFaultOptions
---@field [1] mkharness.Proxy[]|fun(): mkharness.Proxy[]
---@field [2] "latency"|"bandwidth"|"blackhole"|"reset"|"down"|"slicer"|"limit_data"
---@field [3] number|table the amount (ms, bytes/s, bytes) or the slicer's options
---@field direction? "up"|"down"|"both"
---@field probability? number 0..1
---@field jitter? number ms, with "latency"

---@class mkharness.CustomFaultOptions: mkharness.ChaosFaultOptions
---@field start fun(targets: any[], rng: mkharness.Rng): any its result is heal's state
---@field heal fun(state: any, targets: any[])
---@field targets? any[] candidates (none: the fault's name)

---A fault of the nemesis (mk.fault.*).
---@class mkharness.Fault
---@field kind string
---@field name string

---@class mkharness.fault
local fault = {}

---SIGKILL, then start() again.
---@param t mkharness.MemberFaultOptions
---@return mkharness.Fault
function fault.kill(t) end

---stop(), then start() again.
---@param t mkharness.MemberFaultOptions
---@return mkharness.Fault
function fault.stop(t) end

---pause(), then resume().
---@param t mkharness.MemberFaultOptions
---@return mkharness.Fault
function fault.pause(t) end

---Cut a lab's network, then lab:heal().
---@param t mkharness.PartitionFaultOptions
---@return mkharness.Fault
function fault.partition(t) end

---A fault proxy's fault, then clear().
---@param t mkharness.ProxyFaultOptions
---@return mkharness.Fault
function fault.proxy(t) end

---@param t mkharness.CustomFaultOptions
---@return mkharness.Fault
function fault.custom(t) end

---An entry of a chaos run's history.
---@class mkharness.HistoryEntry
---@field index integer
---@field type "invoke"|"ok"|"fail"|"info"|"fault"|"mark"
---@field f any the operation (fault entries: "start" or "heal")
---@field value any
---@field process integer|string the client
---@field time number mk.now() of the entry (faults: the instant before the act)
---@field invoke? integer a completion's invoke entry
---@field invoke_time? number
---@field error? string
---@field fault? string
---@field targets? string

---The workload's handle, one per client.
---@class mkharness.ChaosCtx
---@field client integer|string 1..clients, or "final"
---@field seed integer
---@field rng mkharness.Rng
---@field final? boolean in the final function
local ChaosCtx = {}

---Record an operation: invoke, fn(value, ctx), completion.
---@param f any
---@param value any
---@param fn fun(value: any, ctx: mkharness.ChaosCtx): any
---@return any value
---@return "ok"|"fail"|"info" type
function ChaosCtx:invoke(f, value, fn) end

---End the current operation as failed (it did not happen).
---@param reason any
function ChaosCtx:fail(reason) end

---End the current operation as indeterminate.
---@param reason any
function ChaosCtx:info(reason) end

---@return boolean running false once the run's time is up
function ChaosCtx:running() end

---@return number seconds since the run began
function ChaosCtx:elapsed() end

---@param seconds number
function ChaosCtx:sleep(seconds) end

---@param text string
---@param fields? mkharness.MarkFields
function ChaosCtx:mark(text, fields) end

---@class mkharness.CheckResult
---@field valid boolean
---@field name string
---@field summary string
---@field bad { entry?: mkharness.HistoryEntry, why: string }[]

---@class mkharness.RunCheckOptions
---@field quiet? boolean no summary on stderr

---@class mkharness.ChaosRun
---@field seed integer
---@field seed_from "seed"|"MKHARNESS_SEED"|"random"
---@field history mkharness.HistoryEntry[]
---@field t0 number
---@field late number[] seconds each fault start fired after its planned instant
---@field counts { ok: integer, fail: integer, info: integer }
---@field schedule table[] the occurrences drawn from the seed
local ChaosRun = {}

---@param checker mkharness.Checker|fun(history: mkharness.HistoryEntry[]): mkharness.CheckResult
---@param opts? mkharness.RunCheckOptions
---@return mkharness.CheckResult
function ChaosRun:check(checker, opts) end

---@param f? any
---@param all? boolean invokes too
---@return mkharness.HistoryEntry[]
function ChaosRun:ops(f, all) end

---@return { name: string, kind: string, targets: string, start: number, heal: number }[]
function ChaosRun:fault_log() end

---A checker; call it with options for a configured copy.
---@class mkharness.Checker
---@overload fun(opts: table): mkharness.Checker

---@class mkharness.SetCheckOptions
---@field add? string|string[] the writes' f ({ "add", "write" })
---@field read? string|string[] the reads' f ("read")

---@class mkharness.CounterCheckOptions
---@field add? string|string[] ({ "add", "incr" })
---@field read? string|string[] ("read")

---@class mkharness.RegisterCheckOptions
---@field write? string|string[] ("write")
---@field read? string|string[] ("read")
---@field initial? any a value reads may return before any write

---@class mkharness.LatencyCheckOptions
---@field f? string|string[] only these operations
---@field max_p99? number ms, any phase
---@field min_availability? number 0..1, before and after each fault

---@class mkharness.CheckHistoryOptions
---@field seed? any

---@class mkharness.check
---@field set mkharness.Checker acknowledged writes are never lost
---@field no_lost_writes mkharness.Checker the set checker
---@field counter mkharness.Checker never backwards, ends at what was acknowledged
---@field register mkharness.Checker reads return only written values
---@field latency mkharness.Checker latency and availability by phase
local check = {}

---A hand-made history, to check like a run's.
---@param entries mkharness.HistoryEntry[]
---@param opts? mkharness.CheckHistoryOptions
---@return mkharness.ChaosRun
function check.history(entries, opts) end

-- ---------------------------------------------------------------------------
-- The module

---@class mkharness.json
---@field null any encodes a JSON null
local json = {}

---@param v any
---@return string
function json.encode(v) end

---@param s string
---@return any
function json.decode(s) end

---@class mkharness
---@field _VERSION string
---@field core table the C part (not a stable API)
---@field Error mkharness.Error
---@field Executor mkharness.Executor the executor class
---@field Service mkharness.Executor the executor class's earlier name
---@field DEFAULT_INTERVAL number
---@field probe mkharness.probes
---@field json mkharness.json
---@field fault mkharness.fault
---@field check mkharness.check
local mk = {}

---A service without readiness: start() returns once spawned.
---@param t mkharness.ProcessOptions
---@return mkharness.Executor
function mk.process(t) end

---@param t mkharness.ExecutorOptions
---@return mkharness.Executor
function mk.executor(t) end

---@param t mkharness.OutputOptions
---@return mkharness.Executor
function mk.output(t) end

---@param t mkharness.TcpOptions
---@return mkharness.Executor
function mk.tcp(t) end

---@param t mkharness.UnixOptions
---@return mkharness.Executor
function mk.unix(t) end

---@param t mkharness.HttpOptions
---@return mkharness.Executor
function mk.http(t) end

---@param t mkharness.PidfileOptions
---@return mkharness.Executor
function mk.pidfile(t) end

---@param t mkharness.NotifyOptions
---@return mkharness.Executor
function mk.notify(t) end

---@param t mkharness.GroupOptions
---@return mkharness.Group
function mk.group(t) end

---@param t mkharness.ProxyOptions
---@return mkharness.Proxy
function mk.proxy(t) end

---Hosts with a network of their own, without root.
---@param t mkharness.LabOptions
---@return mkharness.Lab
function mk.lab(t) end

---Poll fn until truthy and return its value; else TimeoutExpired.
---@generic T
---@param fn fun(): T
---@param opts? mkharness.WaitUntilOptions
---@return T
function mk.wait_until(fn, opts) end

---@param seconds number
function mk.sleep(seconds) end

---@return number seconds CLOCK_MONOTONIC
function mk.now() end

---@return integer port free on 127.0.0.1 now
function mk.free_port() end

---@param opts? mkharness.TmpdirOptions
---@return string path
function mk.tmpdir(opts) end

---Run to completion.
---@param t mkharness.RunOptions
---@return mkharness.RunResult
function mk.run(t) end

---@param t mkharness.HttpRequestOptions|string
---@return mkharness.Response
function mk.http_request(t) end

---@param url string
---@param opts? mkharness.GetOptions
---@return mkharness.Response
function mk.get(url, opts) end

---@param err any
---@param kind? mkharness.ErrorKind
---@return boolean
function mk.is_error(err, kind) end

---A user event in events.jsonl, --report and -v.
---@param text string
---@param fields? mkharness.MarkFields
function mk.mark(text, fields) end

---Run the workload while the faults fire on a seeded schedule; every fault
---is healed at the end.
---@param t mkharness.ChaosOptions
---@return mkharness.ChaosRun
function mk.chaos(t) end

-- ---------------------------------------------------------------------------
-- Busted matchers (require "mkharness.busted"); luassert's class is
-- extended so that `assert.running(svc)` completes in editors.

---@class mkharness.EventuallyOptions: mkharness.WaitUntilOptions
---@field falsy? boolean wait for a falsy value instead
---@field no_error? boolean wait until fn stops raising

---@class luassert
---@field running fun(svc: mkharness.Executor, message?: string) the service is running
---@field not_running fun(svc: mkharness.Executor, message?: string) the service is not running
---@field error_kind fun(kind: mkharness.ErrorKind, fn: function) fn raises a harness error of that kind
---@field eventually fun(fn: function, opts?: mkharness.EventuallyOptions) fn comes true (falsy, no error) in time; the first and last errors are reported
---@field status fun(expected: integer, res: mkharness.Response) res.status is expected; the body and headers are shown otherwise

return mk
