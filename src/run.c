/* The run: its id (in every service's marker) and its directory (captures,
 * tmpdirs, the report), kept on failure or with --keep. */
#define _GNU_SOURCE
#include "mkh.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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

const char *mkh_run_dir(char *err, size_t errlen)
{
    if (run_dir_made) return run_dir;
    const char *base = getenv("MKHARNESS_TMPDIR");
    if (!base || !*base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(run_dir, sizeof run_dir, "%s/mkharness-%s", base, mkh_run_id());
    if (mkh_mkdir_p(run_dir, err, errlen) != 0) return NULL;
    run_dir_made = 1;
    return run_dir;
}

const char *mkh_run_dir_if_made(void) { return run_dir_made ? run_dir : NULL; }
void mkh_set_run_dir_keep(int keep) { keep_dir = keep; }
int mkh_run_dir_keep(void) { return keep_dir; }

/* Remove the run directory unless it must be kept. */
void mkh_run_dir_finish(void)
{
    if (run_dir_made && !keep_dir) {
        mkh_rmtree(run_dir);
        run_dir_made = 0;
    }
}

