/* The run: its id (in every service's marker) and its directory (captures,
 * tmpdirs, events.jsonl), kept on failure or with --keep. */
#define _GNU_SOURCE
#include "mkh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FINISHED_MARKER ".finished"
#define LAST_LINK "mkharness-last"
#define KEEP_RUNS_DEFAULT 20

static char run_id[64];
static char run_dir[4096];
static int run_dir_made;
static int keep_dir;

const char *mkh_run_id(void)
{
    if (!run_id[0]) {
        unsigned r = 0;
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (read(fd, &r, sizeof r) != (ssize_t)sizeof r) r = 0;
            close(fd);
        }
        if (!r) r = (unsigned)time(NULL) ^ (unsigned)getpid();
        snprintf(run_id, sizeof run_id, "%d-%08x", (int)getpid(), r);
    }
    return run_id;
}

/* ---- kept directories of earlier runs do not pile up ---- */

typedef struct {
    char name[256];
    time_t mtime;
} old_run;

static int newest_first(const void *a, const void *b)
{
    time_t x = ((const old_run *)a)->mtime, y = ((const old_run *)b)->mtime;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* A directory of a finished run: ours by name and owner, and either marked
 * finished at its end or its host's pid is gone (a run killed outright).
 * A live pid without the marker may be a run still going: never touched. */
static int finished_run(int basefd, const char *name, time_t *mtime)
{
    int pid = 0, len = 0;
    unsigned r;
    if (sscanf(name, "mkharness-%d-%8x%n", &pid, &r, &len) != 2 || name[len] || pid <= 0)
        return 0;
    if (!strcmp(name + strlen("mkharness-"), mkh_run_id())) return 0;
    struct stat st;
    if (fstatat(basefd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != geteuid())
        return 0;
    char marker[300];
    snprintf(marker, sizeof marker, "%s/" FINISHED_MARKER, name);
    struct stat ms;
    if (fstatat(basefd, marker, &ms, AT_SYMLINK_NOFOLLOW) == 0) {
        *mtime = ms.st_mtime;
        return 1;
    }
    if (kill(pid, 0) == 0 || errno != ESRCH) return 0;
    *mtime = st.st_mtime;
    return 1;
}

/* Remove finished runs' directories in base beyond the newest keep_n
 * (MKHARNESS_KEEP_RUNS, default 20). Done when this run makes its own
 * directory: a run that makes none adds nothing and pays nothing. */
static size_t prune_runs(const char *base, long keep_n)
{
    int basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (basefd < 0) return 0;
    int dupfd = fcntl(basefd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dupfd >= 0 ? fdopendir(dupfd) : NULL;
    if (!d) {
        if (dupfd >= 0) close(dupfd);
        close(basefd);
        return 0;
    }
    old_run *runs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "mkharness-", 10) != 0 || strlen(e->d_name) >= sizeof runs->name) continue;
        time_t mt;
        if (!finished_run(basefd, e->d_name, &mt)) continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            old_run *nr = realloc(runs, ncap * sizeof *nr);
            if (!nr) break;
            runs = nr;
            cap = ncap;
        }
        snprintf(runs[n].name, sizeof runs[n].name, "%s", e->d_name);
        runs[n].mtime = mt;
        n++;
    }
    closedir(d);
    size_t removed = 0;
    if (n > (size_t)keep_n) {
        qsort(runs, n, sizeof *runs, newest_first);
        char path[4096 + 300];
        for (size_t k = (size_t)keep_n; k < n; k++) {
            snprintf(path, sizeof path, "%s/%s", base, runs[k].name);
            if (mkh_rmtree(path) == 0) removed++;
        }
    }
    free(runs);
    /* the link to the newest kept run, once that run is gone */
    char target[4096];
    ssize_t tl = readlinkat(basefd, LAST_LINK, target, sizeof target - 1);
    if (tl > 0) {
        target[tl] = '\0';
        struct stat sb;
        if (fstatat(basefd, target, &sb, 0) != 0) unlinkat(basefd, LAST_LINK, 0);
    }
    close(basefd);
    return removed;
}

static const char *runs_base(void)
{
    const char *base = getenv("MKHARNESS_TMPDIR");
    if (!base || !*base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    return base;
}

/* Earlier runs' kept directories beyond the newest keep_n
 * (MKHARNESS_KEEP_RUNS, default 20). */
static void prune_old_runs(const char *base)
{
    long keep_n = KEEP_RUNS_DEFAULT;
    const char *env = getenv("MKHARNESS_KEEP_RUNS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v >= 0) keep_n = v;
    }
    prune_runs(base, keep_n);
}

size_t mkh_runs_clean(const char **base)
{
    *base = runs_base();
    return prune_runs(*base, 0);
}

const char *mkh_run_dir(char *err, size_t errlen)
{
    if (run_dir_made) return run_dir;
    const char *base = runs_base();
    snprintf(run_dir, sizeof run_dir, "%s/mkharness-%s", base, mkh_run_id());
    if (mkh_mkdir_p(run_dir, err, errlen) != 0) return NULL;
    run_dir_made = 1;
    prune_old_runs(base);
    return run_dir;
}

const char *mkh_run_dir_if_made(void) { return run_dir_made ? run_dir : NULL; }
void mkh_set_run_dir_keep(int keep) { keep_dir = keep; }

/* MKHARNESS_KEEP=1 keeps it as --keep does, also without the host */
int mkh_run_dir_keep(void)
{
    const char *env = getenv("MKHARNESS_KEEP");
    return keep_dir || (env && *env && strcmp(env, "0") != 0);
}

/* Remove the run directory unless it must be kept; a kept one is marked
 * finished, so that later runs may prune it. */
void mkh_run_dir_finish(void)
{
    if (!run_dir_made) return;
    if (!mkh_run_dir_keep()) {
        mkh_rmtree(run_dir);
        run_dir_made = 0;
        return;
    }
    char marker[sizeof run_dir + 16];
    snprintf(marker, sizeof marker, "%s/" FINISHED_MARKER, run_dir);
    int fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
    /* BASE/mkharness-last -> the newest kept run (relative: the base may
     * move), swapped in atomically by a rename */
    char link[sizeof run_dir + 64], tmp[sizeof run_dir + 96];
    const char *slash = strrchr(run_dir, '/');
    size_t blen = slash ? (size_t)(slash - run_dir) : 0;
    snprintf(link, sizeof link, "%.*s/" LAST_LINK, (int)blen, run_dir);
    snprintf(tmp, sizeof tmp, "%s.%d", link, (int)getpid());
    if (symlink(slash ? slash + 1 : run_dir, tmp) == 0 && rename(tmp, link) != 0) unlink(tmp);
}
