/* The strongest net, where it exists: cgroup v2. When our cgroup is
 * writable, the run gets one (mkharness-<run id>) and each spawn a child
 * cgroup of it. A process cannot leave its cgroup by setsid, double fork or
 * a scrubbed environment, so cgroup.kill reaches every descendant. Detected
 * at run time and never required: without it the other nets still hold.
 * MKHARNESS_CGROUP=0 turns it off (the specs test both ways). */
#define _GNU_SOURCE
#include "mkh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int state;          /* 0 not tried, 1 usable, -1 not */
static char run_cg[4096];  /* absolute path of the run's cgroup */

/* Where cgroup2 is mounted, from /proc/self/mountinfo. */
static int cgroup2_mount(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        char *sep = strstr(line, " - ");
        if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0) continue;
        char mnt[4096];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) == 1) {
            snprintf(out, len, "%s", mnt);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

int mkh_cg_enabled(void)
{
    if (state) return state > 0;
    state = -1;
    const char *off = getenv("MKHARNESS_CGROUP");
    if (off && !strcmp(off, "0")) return 0;
    char mnt[4096], self[4096];
    if (cgroup2_mount(mnt, sizeof mnt) != 0) return 0;
    if (mkh_read_small("/proc/self/cgroup", self, sizeof self) <= 0) return 0;
    char *p = strstr(self, "0::");
    if (!p || (p != self && p[-1] != '\n')) return 0;
    p += 3;
    char *nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    if (!strcmp(p, "/")) p = "";
    int n = snprintf(run_cg, sizeof run_cg, "%s%s/mkharness-%s", mnt, p, mkh_run_id());
    if (n < 0 || (size_t)n >= sizeof run_cg - 64 || mkdir(run_cg, 0755) != 0) return 0;
    /* cgroup.kill (Linux 5.14) is what makes it worth it */
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/cgroup.kill", run_cg);
    if (access(probe, W_OK) != 0) {
        rmdir(run_cg);
        return 0;
    }
    state = 1;
    return 1;
}

const char *mkh_cg_run(void)
{
    return mkh_cg_enabled() ? run_cg : NULL;
}

void mkh_cg_path(int id, char *out, size_t len)
{
    snprintf(out, len, "%s/s%d", run_cg, id);
}

int mkh_cg_create(int id)
{
    if (!mkh_cg_enabled()) return -1;
    char path[4200];
    mkh_cg_path(id, path, sizeof path);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return -1;
    snprintf(path + strlen(path), sizeof path - strlen(path), "/cgroup.procs");
    return open(path, O_WRONLY | O_CLOEXEC);
}

static int populated(const char *cg)
{
    char path[4200], buf[256];
    snprintf(path, sizeof path, "%s/cgroup.events", cg);
    if (mkh_read_small(path, buf, sizeof buf) <= 0) return 0;
    char *p = strstr(buf, "populated ");
    return p && p[10] == '1';
}

/* rmdir cg after its child cgroups, depth first (a nested harness makes
 * its own run cgroup inside a service's). */
static void remove_tree(const char *cg, int depth)
{
    DIR *d = depth < 16 ? opendir(cg) : NULL;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
            char sub[4200];
            snprintf(sub, sizeof sub, "%s/%s", cg, e->d_name);
            remove_tree(sub, depth + 1);
        }
        closedir(d);
    }
    rmdir(cg);
}

/* Kill everything in cg (and below), wait until it is empty, remove it and
 * its child cgroups. Returns 1 when something was running there. */
int mkh_cg_kill(const char *cg, double timeout)
{
    int was = populated(cg);
    if (was) {
        char path[4200];
        snprintf(path, sizeof path, "%s/cgroup.kill", cg);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "1", 1) < 0) { /* gone already */ }
            close(fd);
        }
        double until = mkh_now() + timeout;
        while (populated(cg) && mkh_now() < until) mkh_sleep_until(mkh_now() + 0.0002);
    }
    remove_tree(cg, 0);
    return was;
}

/* For the host's supervisor: the run cgroup of a host that died (its run
 * id starts with the host's pid), killed and removed. */
void mkh_cg_cleanup_host(pid_t host)
{
    const char *off = getenv("MKHARNESS_CGROUP");
    if (off && !strcmp(off, "0")) return;
    char mnt[4096], self[4096];
    if (cgroup2_mount(mnt, sizeof mnt) != 0) return;
    if (mkh_read_small("/proc/self/cgroup", self, sizeof self) <= 0) return;
    char *p = strstr(self, "0::");
    if (!p || (p != self && p[-1] != '\n')) return;
    p += 3;
    char *nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    if (!strcmp(p, "/")) p = "";
    char parent[8200], prefix[64];
    snprintf(parent, sizeof parent, "%s%s", mnt, p);
    int plen = snprintf(prefix, sizeof prefix, "mkharness-%d-", (int)host);
    DIR *d = opendir(parent);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || strncmp(e->d_name, prefix, (size_t)plen) != 0) continue;
        char cg[8500];
        snprintf(cg, sizeof cg, "%s/%s", parent, e->d_name);
        mkh_cg_kill(cg, 2.0);
    }
    closedir(d);
}

void mkh_cg_teardown(void)
{
    if (state > 0) {
        mkh_cg_kill(run_cg, 2.0);
        state = 0; /* a later spawn in this process makes a new one */
    }
}

/* Freeze (on = 1) or thaw (on = 0) cg and wait until cgroup.events says
 * so (every process in it, and in its child cgroups, has stopped running
 * or runs again), until `deadline` (< 0: do not wait). The kernel notifies
 * cgroup.events changes with POLLPRI; each poll is also capped short, so
 * a missed notification costs a retry, not the deadline.
 * Returns 1 done, 0 timed out, -1 with errno (no such cgroup, no freezer). */
int mkh_cg_freeze(const char *cg, int on, double deadline)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/cgroup.freeze", cg);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t w = write(fd, on ? "1" : "0", 1);
    int saved = errno;
    close(fd);
    if (w != 1) { errno = saved; return -1; }
    if (deadline < 0) return 1;
    snprintf(path, sizeof path, "%s/cgroup.events", cg);
    int ev = open(path, O_RDONLY | O_CLOEXEC);
    if (ev < 0) return -1;
    const char *want = on ? "frozen 1" : "frozen 0";
    int done = 0;
    for (;;) {
        char buf[256];
        ssize_t n = pread(ev, buf, sizeof buf - 1, 0);
        if (n < 0) break;
        buf[n] = '\0';
        char *f = strstr(buf, "frozen ");
        /* no "frozen" key at all: a kernel without the v2 freezer */
        if (!f) { errno = ENOTSUP; done = -1; break; }
        if (!strncmp(f, want, 8)) { done = 1; break; }
        double left = deadline - mkh_now();
        if (left <= 0) break;
        struct pollfd pf = { ev, POLLPRI, 0 };
        int ms = (int)(left * 1000.0) + 1;
        if (ms > 10) ms = 10;
        poll(&pf, 1, ms);
    }
    close(ev);
    return done;
}
