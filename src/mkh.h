/* mkharness engine: internal interface shared by the C files.
 * Nothing here knows about Lua except lmkh.c and host.c. */
#ifndef MKH_H
#define MKH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define MKH_VERSION "0.1.0"

/* ---- util.c ---- */
double mkh_now(void);                       /* CLOCK_MONOTONIC, seconds */
/* t as printf's "%.9f" writes it (rounded to nearest, ties to even), at a
 * fraction of its cost for 0 <= t < 1e15; out holds MKH_FIXED9_MAX bytes.
 * Returns the length (no NUL is written). */
#define MKH_FIXED9_MAX 420
size_t mkh_fixed9(char *out, double t);
void mkh_sleep_until(double deadline);      /* not interruptible; for teardown */
int mkh_mkdir_p(const char *path, char *err, size_t errlen);
int mkh_rmtree(const char *path);
/* Read the last `nlines` lines (at most `maxbytes`) of a file into a malloc'd
 * string; NULL when the file does not exist or is empty. */
char *mkh_tail_file(const char *path, int nlines, size_t maxbytes);
/* Read a whole small /proc file into buf (NUL-terminated); bytes or -1. */
ssize_t mkh_read_small(const char *path, char *buf, size_t len);
/* Make room for `need` elements of size `elem` in a doubling array. 0 or -1. */
int mkh_grow(void **arr, size_t *cap, size_t need, size_t elem);
/* vfork, the way posix_spawn does it: fn(arg) runs in a child that shares
 * our memory, on a stack of its own, while we wait until it execs or
 * exits (it must do one of the two, and write nothing we read except
 * errno). No page tables are copied, and no copy-on-write faults follow.
 * Signals must be blocked around it: handlers would run on our memory.
 * With share_memory 0 the child gets a copy instead, as with fork (what
 * entering another user namespace needs). The child's pid, or -1 with
 * errno. */
pid_t mkh_vfork_call(int (*fn)(void *), void *arg, int share_memory);
/* For such a child's code: no sanitizer instrumentation, which would call
 * into the sanitizer's runtime (its stack bookkeeping) from the borrowed
 * memory on an unknown stack. */
#define MKH_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

/* ---- parse.c: parsers of untrusted text, free of Lua, fuzzable ---- */
/* Signal by name ("TERM", "SIGTERM", any case, "RTMIN+2") or decimal number.
 * Returns the number, or -1. */
int mkh_signum(const char *name);
const char *mkh_signame(int sig); /* "TERM" or NULL */
/* Split `s` by POSIX shell word rules (quotes, backslashes), no expansion.
 * Words are written NUL-separated into out (capacity len+1 suffices);
 * returns the number of words, or -1 with a message in err. Unquoted shell
 * operators are refused: the user almost certainly wanted `shell =`. */
int mkh_split_words(const char *s, size_t len, char *out, char *err, size_t errlen);

typedef struct {
    int https;
    const char *host; size_t host_len;   /* into the input; IPv6 without [] */
    int port;                            /* explicit, else 80 / 443 */
    const char *path; size_t path_len;   /* path and query as given ("" = /) */
} mkh_url;
/* An absolute http(s) URL; -1 with the problem in err. */
int mkh_parse_url(const char *s, size_t len, mkh_url *u, char *err, size_t errlen);

enum { MKH_STATUS_CODE = 1, MKH_STATUS_CLASS = 2 };
/* "404" -> CODE, 404; "2xx" (any case) -> CLASS, 2; anything else -1 */
int mkh_parse_status(const char *s, size_t len, int *value);

typedef struct {
    int ready, stopping, reloading;
    int has_status; char status[256];
    int has_errno, errnum;
    int mainpid;
} mkh_notify;
/* Parse one sd_notify datagram into n (fields accumulate over calls);
 * returns how many assignments were understood. */
int mkh_parse_notify(const char *buf, size_t len, mkh_notify *n);

/* ---- ids.c ---- */
typedef struct {
    uid_t uid;
    gid_t gid;
    gid_t *groups;         /* supplementary groups, malloc'd by mkh_ids_resolve */
    size_t ngroups;
    char user[256], group[256]; /* names, "" when the database has none */
    char home[4096];
} mkh_ids;
/* Resolve a user (name or decimal uid; NULL: the harness's own) and a group
 * (name or gid; NULL: the user's primary one) with the user's supplementary
 * groups as initgroups(3) would set them. -1 with *which ("user" or "group")
 * and the problem in err. Free with mkh_ids_free. */
int mkh_ids_resolve(const char *user, const char *group, mkh_ids *ids, const char **which,
                    char *err, size_t errlen);
void mkh_ids_free(mkh_ids *ids);

/* ---- spawn.c ---- */
typedef struct {
    char *const *argv;     /* argv[0] looked up in PATH when it has no '/' */
    char *const *envp;
    const char *path;      /* PATH used for the lookup (child's, else ours) */
    const char *cwd;       /* NULL: inherit */
    int fd_in, fd_out, fd_err; /* the child's 0, 1, 2 */
    int fd_cgroup;         /* cgroup.procs to join before exec, or -1 */
    const mkh_ids *ids;    /* NULL: the harness's own user and groups */
    const char *who;       /* ids as the user gave them, for messages ("user 'nobody'") */
    const int *ns;         /* a lab's namespaces to enter (user or -1, net, mount), or NULL */
    const char *where;     /* those namespaces as the user names them ("lab host 'n1'") */
} mkh_spawn_opts;

/* Fork and exec. On success returns 0 and sets *pid, *pidfd and (when not
 * NULL) *start_ticks, the child's start time. On failure
 * returns -1 with a human message in err (which step failed and why); no
 * child is left behind. The child: own session, default signal dispositions,
 * empty mask, only fds 0-2, SIGKILL when the harness dies; with ids, their
 * groups, gid and uid (set before cwd is entered). */
int mkh_spawn(const mkh_spawn_opts *o, pid_t *pid, int *pidfd, unsigned long long *start_ticks, char *err,
              size_t errlen);

/* ---- lab.c: hosts with their own network, no root ---- */
#define MKH_LAB_NAME_MAX 31
#define MKH_LAB_HOSTS_MAX 253   /* .2 to .254 of the lab's /24 */
typedef struct mkh_lab mkh_lab;
/* Builds a lab of n hosts, with hosts_file bound on /etc/hosts inside;
 * NULL with the reason in err (naming the setting to change when user
 * namespaces are not allowed). */
mkh_lab *mkh_lab_new(const char *const *names, int n, const char *hosts_file, char *err, size_t errlen);
void mkh_lab_close(mkh_lab *lab);
int mkh_lab_hosts(const mkh_lab *lab);
pid_t mkh_lab_keeper(const mkh_lab *lab);
unsigned long mkh_lab_user_ino(const mkh_lab *lab);
uint32_t mkh_lab_addr(const mkh_lab *lab, int host);  /* host order; host -1: the control node */
/* the namespaces to spawn into host (-1: the control node): user (-1 when
 * we may enter the others without it, as root), net, mount */
int mkh_lab_ns_fds(const mkh_lab *lab, int host, int fds[3]);
/* Replaces the packet filter of n hosts, each with its nft script, in
 * one request; in force on return. */
int mkh_lab_filter(mkh_lab *lab, int n, const int *hosts, const char *const *scripts, char *err, size_t errlen);
int mkh_lab_netem(mkh_lab *lab, int host, double delay_ms, double jitter_ms, double loss_pct,
                  char *err, size_t errlen);
/* A lab host's address by name (network order); -1 when no live lab has it. */
int mkh_lab_lookup(const char *name, uint32_t *addr_be);
/* socket(2), close-on-exec, made in the lab's control network when dst is
 * a lab address, so that the harness reaches the hosts. */
int mkh_socket(int family, int type, int proto, const struct sockaddr *dst);

/* ---- run.c ---- */
const char *mkh_run_id(void);
/* The run directory, created on first use; NULL with err on failure. */
const char *mkh_run_dir(char *err, size_t errlen);
const char *mkh_run_dir_if_made(void);   /* without creating it */
void mkh_set_run_dir_keep(int keep);
int mkh_run_dir_keep(void);
void mkh_run_dir_finish(void);           /* remove it unless it is kept */
/* Remove every kept directory of a finished run in the runs' base (the one
 * the run directory goes to); sets *base; returns how many. */
size_t mkh_runs_clean(const char **base);

/* ---- procfs.c: reading /proc ---- */
/* Fields of /proc/PID/stat: state, ppid, pgrp, session and (ticks not NULL)
 * the start time. 0, or -1 when the process is gone. */
int mkh_proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp, pid_t *sid,
                  unsigned long long *ticks);
/* A process's start time in clock ticks since boot, 0 if gone. */
unsigned long long mkh_start_ticks(pid_t pid);
unsigned long long mkh_ticks_now(void);  /* the same clock, now */
/* Whether PID's environment carries the marker "KEY=VALUE" (also through a
 * nested run's MKHARNESS_OUTER chain): MKH_ENV_MATCH; some other run's
 * marker: MKH_ENV_OTHER; none at all (a scrubbed environment): MKH_ENV_NONE. */
enum { MKH_ENV_NONE, MKH_ENV_OTHER, MKH_ENV_MATCH };
int mkh_env_match(pid_t pid, const char *marker, size_t mlen);
int mkh_has_marker(pid_t pid, const char *marker, size_t mlen);
/* This process's children: those its main thread made, and the reparented
 * orphans (a subreaper's thread group gets them on its main thread). */
size_t mkh_children(pid_t *out, size_t cap);
size_t mkh_task_children(pid_t tid, pid_t *out, size_t cap); /* those thread tid made */

/* ---- guardian.c ---- */
/* The host's supervisor (its parent), for the guardian to watch: once it
 * is gone, a host that has not ended within a grace is killed. */
void mkh_set_supervisor(pid_t pid);
/* The host program: start the guardian as a new image of the binary that
 * holds addr (vfork + exec), which then enters mkh_guardian_exec_main;
 * elsewhere (core.so in a stock lua) it is forked. */
void mkh_guardian_exec_self(const void *addr);
/* argv of such an exec: guards and exits; any other argv: returns -1. */
int mkh_guardian_exec_main(int argc, char **argv);
/* Start the guardian now if there is none (before a spawn). */
void mkh_guardian_ensure(void);
/* Tell the guardian about a new service session (starting it on first use),
 * with its leader's start time so that a reused session id is told apart;
 * forget it before its leader is reaped. */
void mkh_guardian_watch(pid_t sid, unsigned long long start_ticks);
void mkh_guardian_forget(pid_t sid);
pid_t mkh_guardian_pid(void);            /* 0 when there is none */
void mkh_guardian_stop(void);            /* goodbye: the run ended normally */

/* ---- proc.c: the processes of a run ---- */
typedef struct mkh_proc {
    pid_t pid;
    int pidfd;             /* -1 once reaped, or without pidfd support */
    int exited;            /* 1 once its exit is known (it may still be a zombie) */
    int reaped;            /* 1 once waited for: from then on its pid is not ours */
    int status;            /* wait status once exited */
    unsigned long long start_ticks; /* /proc starttime, to tell it from a pid reuse */
    int foreign;           /* adopted, not our child: known through its pidfd only, exit status unknown */
    int stop_sig, kill_sig;
    double stop_timeout;
    struct mkh_proc *prev, *next; /* live list, for teardown */
    int linked;
    int cg_id;             /* its cgroup under the run's (cgroup.c), 0: none */
} mkh_proc;

/* Become a child subreaper (idempotent). */
void mkh_supervise_init(void);
/* Starting a process of the run, in one call (spawn.c): its stdin (a memfd
 * holding stdin_data, else /dev/null), stdout and stderr (to /dev/null,
 * inherited, or appended to a capture file), its own cgroup where cgroup v2
 * is writable, the spawn, the live list. 0, or -1 with the failing step in
 * err; nothing is left behind on failure. */
enum { MKH_IO_NULL, MKH_IO_INHERIT, MKH_IO_FILE };
typedef struct { int mode; const char *path; /* MKH_IO_FILE's */ } mkh_io;
typedef struct {
    mkh_spawn_opts spawn;  /* argv, envp, path, cwd, ids, who; the fds are set here */
    const char *stdin_data; size_t stdin_len; /* NULL: /dev/null */
    mkh_io out, err;
    int stop_sig, kill_sig;
    double stop_timeout;
} mkh_start_opts;
int mkh_proc_start(mkh_proc *p, mkh_start_opts *o, char *err, size_t errlen);
/* The same in three steps, the middle one (the clone and the wait until the
 * child has exec'd, which blocks the calling thread for as long as the
 * child's steps before its exec take) on the spawn thread (spawn.c), so
 * that the run's thread keeps waiting through its own loop meanwhile.
 * mkh_proc_start_async does the rest of the start's first half now (o is
 * copied) and queues the launch: a launch, or NULL with err, and
 * *no_thread set when no thread could be had (then mkh_proc_start is the
 * way). mkh_launch_fd is readable, and mkh_launch_done true, once the
 * launch is over; mkh_launch_finish (waiting for it if need be) makes p
 * the process as mkh_proc_start would have, or fails with the same
 * message. mkh_launch_abandon gives a launch up: one not begun never
 * runs, a child already started is killed with its descendants (token:
 * its service marker). Both free the launch. */
typedef struct mkh_launch mkh_launch;
mkh_launch *mkh_proc_start_async(const mkh_start_opts *o, int *no_thread, char *err, size_t errlen);
int mkh_launch_fd(const mkh_launch *l);
int mkh_launch_done(mkh_launch *l);
int mkh_launch_finish(mkh_launch *l, mkh_proc *p, char *err, size_t errlen);
void mkh_launch_abandon(mkh_launch *l, const char *token);
/* Teardown: every launch not finished is waited for (or cancelled, when
 * queued), and its process put on the live list for teardown to end;
 * mkh_launch_finish then fails. */
void mkh_launch_settle(void);
/* The spawn thread's children, for the stray hunt: none while a launch
 * is unfinished (its child is nobody's stray). */
size_t mkh_launch_children(pid_t *out, size_t cap);
void mkh_proc_link(mkh_proc *p);
void mkh_proc_unlink(mkh_proc *p);
/* A service's leader is never reaped before its group is swept: while it
 * is an unreaped zombie, neither its pid nor its process group id can be
 * given to another process, so signalling them cannot reach a stranger. */
/* Has p exited? Non-blocking, does not reap; 1 when exited (status filled). */
int mkh_proc_poll(mkh_proc *p);
/* Wait for p's exit with a deadline (<0: none), without reaping.
 * Returns 1 exited, 0 timed out. */
int mkh_proc_wait(mkh_proc *p, double deadline);
/* Signal p's process group (falls back to p alone). 0, or -1 once reaped. */
int mkh_proc_signal(mkh_proc *p, int sig);
/* After p's leader exited: SIGKILL what is left of its group and its
 * descendants that escaped it (found as reparented orphans carrying the
 * service token "MKHARNESS_SERVICE=..."), then reap the leader. Returns how
 * many were killed. */
int mkh_proc_sweep(mkh_proc *p, const char *token);
/* Pause (on = 1) or resume (on = 0) every process of p and return once
 * they all are, within `timeout` seconds: with its cgroup's freezer, else
 * SIGSTOP/SIGCONT to its process group checked in /proc. 0, or -1 with a
 * message in err (which processes did not follow). */
int mkh_proc_freeze(mkh_proc *p, int on, double timeout, char *err, size_t errlen);
/* Thaw p's cgroup without waiting, so that a stop signal is seen. */
void mkh_proc_thaw(mkh_proc *p);
/* Reap p's leader (after its exit); it leaves the live list and the guardian. */
void mkh_proc_reap(mkh_proc *p);
/* Adopt `pid` (a daemon a service started, named by its pid file) as p,
 * taking over `from`'s cgroup. Our child (reparented to us, the subreaper)
 * is handled like any service; another process only through its pidfd,
 * never by a number that may have been reused. 0, or -1 with err. */
int mkh_proc_adopt(mkh_proc *p, pid_t pid, mkh_proc *from, char *err, size_t errlen);
/* Wait for our stray zombies that nobody else will wait for: children
 * reparented to us that are not services, the guardian, nor children the
 * process forked itself (popen), which are registered with mkh_own_child. */
void mkh_reap_strays(void);
void mkh_own_child(pid_t pid, int own);
/* Processes of this run that no live executor owns: our stray children
 * (zombies included) and anything else carrying our marker. For specs. */
size_t mkh_leftovers(pid_t *out, size_t cap);
/* Whole-run teardown: stop signals, grace, SIGKILL, sweep, guardian off. */
void mkh_teardown(int graceful);
/* Cap the graceful part of teardown (a run out of time has none to spare). */
void mkh_teardown_grace_cap(double seconds);

/* ---- cgroup.c ---- */
int mkh_cg_enabled(void);                /* cgroup v2 usable (creates the run's) */
const char *mkh_cg_run(void);            /* the run's cgroup path, or NULL */
void mkh_cg_path(int id, char *out, size_t len);
int mkh_cg_create(int id);               /* make cgroup `id`; its cgroup.procs fd or -1 */
int mkh_cg_kill(const char *cg, double timeout); /* kill all in it, wait, rmdir */
/* Freeze (on) or thaw cg, waiting for cgroup.events until deadline (<0:
 * no wait). 1 done, 0 timed out, -1 with errno. */
int mkh_cg_freeze(const char *cg, int on, double deadline);
void mkh_cg_teardown(void);
void mkh_cg_cleanup_host(pid_t host);    /* the supervisor's, after a host died */

/* ---- interrupt.c ---- */
/* Interrupt plumbing: the host installs signal handlers that call
 * mkh_interrupt(sig); waits return early when it is set. */
void mkh_interrupt(int sig);
int mkh_interrupted(void);     /* pending signal number or 0 */
int mkh_interrupt_fd(void);    /* read end of the self-pipe, or -1 */
int mkh_interrupt_drain(void); /* empty the self-pipe; how many signals were in it */
void mkh_interrupt_init(void);
int mkh_interrupt_note_fd(void); /* a second self-pipe's read end (blocking), made on first call */
/* Readable when a child may have exited, for processes without a pidfd
 * (SIGCHLD self-pipe, installed on first use); drain after waking. */
int mkh_exit_fd(void);
void mkh_exit_fd_drain(void);
/* Does this kernel (or valgrind) support pidfd_open? */
int mkh_have_pidfd(void);

/* ---- echo.c: live copy of capture files to our stderr ---- */
/* One capture file being echoed; the caller owns the memory, echo.c the
 * rest (between mkh_echo_open and mkh_echo_close). */
typedef struct mkh_echo {
    int open, fd, wd, is_err;
    off_t off;              /* read so far */
    char *buf;              /* the incomplete last line */
    size_t len;
    int cut;                /* dropping the rest of an over-long line */
    int more;               /* unread bytes left after a pass */
    int rank;               /* in a pass: the order of its first change */
    off_t snap, target;     /* sizes seen by a pass, by a flush */
    char name[256];
    struct mkh_echo *prev, *next;
} mkh_echo;
/* Colour (ANSI), "+S.mmms " time stamps on the clock mkh_now() - t0. */
void mkh_echo_setup(int color, int stamps, double t0);
/* Echo `path` from its start as lines of service `name` ("[name] ", or
 * "[name!] " when is_err); the thread starts on first use. 0, or -1 with err. */
int mkh_echo_open(mkh_echo *e, const char *path, const char *name, int is_err, char *err, size_t errlen);
void mkh_echo_flush(mkh_echo *e);   /* every complete line, out before it returns */
void mkh_echo_close(mkh_echo *e);   /* all of it, the last unterminated line too; idempotent */
void mkh_echo_flush_all(void);
/* Close every stream and join the thread (started again on the next open). */
void mkh_echo_shutdown(void);

/* ---- net.c ---- */
/* getaddrinfo for a stream socket, bounded by `timeout` seconds and by an
 * interrupt ("cannot resolve 'NAME' within 1.00 s"). The first address, or
 * with prefer_v4 the first IPv4 one; with `all`, every address as text
 * ("1.2.3.4,[::1]"). 0 ok, -1 with err. */
int mkh_resolve(const char *host, int port, int passive, int prefer_v4, double timeout,
                struct sockaddr_storage *ss, socklen_t *len, char *all, size_t alllen,
                char *err, size_t errlen);
/* Non-blocking connect bounded by timeout (seconds). 0 ok, -1 with err. */
int mkh_tcp_probe(const char *host, int port, double timeout, char *err, size_t errlen);
/* The same without blocking (but for resolving a name): 0 connected at
 * once, 1 in progress, the socket in *fd either way (the caller's to
 * close), -1 refused or failed (err).
 * Then mkh_tcp_connect_result(fd): 1 still in progress, 0 connected, -1
 * failed with the reason in err. */
int mkh_tcp_connect_start(const char *host, int port, double resolve_timeout, int *fd, char *err, size_t errlen);
int mkh_tcp_connect_result(int fd, char *err, size_t errlen);
int mkh_unix_probe(const char *path, char *err, size_t errlen);
int mkh_free_port(char *err, size_t errlen);
/* Who listens on 127.0.0.1/any:port, from /proc: pid and command, or 0. */
pid_t mkh_port_owner(int port, char *cmd, size_t cmdlen);

#endif
