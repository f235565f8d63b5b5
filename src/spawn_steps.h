/* Between spawn.c and launch.c, and no other file: one spawn's steps, so
 * that a launch (launch.c) can run the middle one on the spawn thread. */
#ifndef MKH_SPAWN_STEPS_H
#define MKH_SPAWN_STEPS_H

#include "mkh.h"

struct mkh_exec_report { int stage; int err; };

typedef struct {
    /* what the child reads: set by the prepare, never written while it runs */
    const mkh_spawn_opts *o;
    char **cands;
    size_t ncand;
    pid_t parent;
    int rep[2];            /* the exec-status pipe, both ends close-on-exec */
    int drop_groups;
    /* what the launch found */
    pid_t pid;             /* -1: the clone failed, with fork_errno */
    int fork_errno;
    unsigned long long ticks;
    int failed;            /* the child reported its failing step in r */
    struct mkh_exec_report r;
} mkh_spawn_job;

/* On the run's thread: PATH candidates, the report pipe, the guardian.
 * 0, or -1 with err (nothing left to release). */
void mkh_job_init(mkh_spawn_job *j);
int mkh_job_prepare(mkh_spawn_job *j, const mkh_spawn_opts *o, char *err, size_t errlen);
/* On any thread: the clone, then the wait until the child has exec'd or
 * reported why it could not. */
void mkh_job_launch(mkh_spawn_job *j);
/* On the run's thread again: the child's pid, pidfd and start time, or -1
 * with err (the child reaped). */
int mkh_job_finish(mkh_spawn_job *j, pid_t *pid, int *pidfd, unsigned long long *ticks, char *err, size_t errlen);
/* What a job holds before its launch, or after one that never came. */
void mkh_job_drop(mkh_spawn_job *j);

/* The child's stdio and cgroup into s (0, or -1 with err); after the spawn
 * (or instead of it: failed) they go, a failed start's cgroup with them. */
int mkh_start_open(const mkh_start_opts *o, mkh_spawn_opts *s, int *cg_id, char *err, size_t errlen);
void mkh_start_close(mkh_spawn_opts *s, int cg_id, int failed);
/* p before its spawn (nothing to kill), and once spawned (on the live list) */
void mkh_proc_init(mkh_proc *p, int stop_sig, int kill_sig, double stop_timeout);
void mkh_proc_started(mkh_proc *p, pid_t pid, int pidfd, unsigned long long ticks, int cg_id);

#endif
