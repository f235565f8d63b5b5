/* Who a service runs as: a user and group given by name or number, resolved
 * in the harness before any fork (the NSS lookups take locks and allocate,
 * which a child of a threaded process must not do). */
#define _GNU_SOURCE
#include "mkh.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* All decimal digits: a user or group given as a number. */
static int numeric(const char *s, unsigned long *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 10) return 0;
    unsigned long v = strtoul(s, NULL, 10);
    if (v >= 0xffffffffUL) return 0; /* (uid_t)-1 means "unchanged" to the kernel */
    *out = v;
    return 1;
}

/* getpw*_r / getgr*_r with a buffer that grows on ERANGE; the record's
 * strings live in *buf (freed by the caller). 0 found, 1 none, -1 error. */
static int get_user(const char *name, uid_t uid, struct passwd *pw, char **buf)
{
    size_t len = 1024;
    for (;;) {
        char *b = realloc(*buf, len);
        if (!b) return -1;
        *buf = b;
        struct passwd *res = NULL;
        int e = name ? getpwnam_r(name, pw, b, len, &res) : getpwuid_r(uid, pw, b, len, &res);
        if (e == ERANGE && len < (1u << 20)) { len *= 2; continue; }
        if (e == 0 || e == ENOENT || e == ESRCH) return res ? 0 : 1;
        errno = e;
        return -1;
    }
}

static int get_group(const char *name, gid_t gid, struct group *gr, char **buf)
{
    size_t len = 1024;
    for (;;) {
        char *b = realloc(*buf, len);
        if (!b) return -1;
        *buf = b;
        struct group *res = NULL;
        int e = name ? getgrnam_r(name, gr, b, len, &res) : getgrgid_r(gid, gr, b, len, &res);
        if (e == ERANGE && len < (1u << 20)) { len *= 2; continue; }
        if (e == 0 || e == ENOENT || e == ESRCH) return res ? 0 : 1;
        errno = e;
        return -1;
    }
}

void mkh_ids_free(mkh_ids *ids)
{
    free(ids->groups);
    ids->groups = NULL;
    ids->ngroups = 0;
}

int mkh_ids_resolve(const char *user, const char *group, mkh_ids *ids, const char **which,
                    char *err, size_t errlen)
{
    memset(ids, 0, sizeof *ids);
    char *buf = NULL, *gbuf = NULL;
    struct passwd pw;
    struct group gr;
    unsigned long num;
    int r, have_pw;
    *which = "user";
    if (user) {
        /* a name first: a user called "1000" is that user, as chown(1) does */
        r = get_user(user, 0, &pw, &buf);
        if (r == 1 && numeric(user, &num)) r = get_user(NULL, (uid_t)num, &pw, &buf);
        if (r < 0) {
            snprintf(err, errlen, "cannot be looked up: %s", strerror(errno));
            goto fail;
        }
        if (r == 1) {
            snprintf(err, errlen, "names no user of this system (not in the user database)");
            goto fail;
        }
        have_pw = 1;
    } else {
        /* only a group: the harness's own user keeps running it */
        r = get_user(NULL, geteuid(), &pw, &buf);
        if (r < 0) {
            snprintf(err, errlen, "cannot look up the harness's user: %s", strerror(errno));
            goto fail;
        }
        have_pw = r == 0;
    }
    ids->uid = have_pw ? pw.pw_uid : geteuid();
    ids->gid = have_pw ? pw.pw_gid : getegid();
    snprintf(ids->user, sizeof ids->user, "%s", have_pw ? pw.pw_name : "");
    snprintf(ids->home, sizeof ids->home, "%s", have_pw ? pw.pw_dir : "");

    *which = "group";
    if (group) {
        r = get_group(group, 0, &gr, &gbuf);
        if (r == 1 && numeric(group, &num)) r = get_group(NULL, (gid_t)num, &gr, &gbuf);
        if (r < 0) snprintf(err, errlen, "cannot be looked up: %s", strerror(errno));
        else if (r == 1) snprintf(err, errlen, "names no group of this system (not in the group database)");
        else {
            ids->gid = gr.gr_gid;
            snprintf(ids->group, sizeof ids->group, "%s", gr.gr_name);
        }
    } else {
        r = get_group(NULL, ids->gid, &gr, &gbuf);
        snprintf(ids->group, sizeof ids->group, "%s", r == 0 ? gr.gr_name : "");
        r = 0; /* a primary group without a name is still a group */
    }
    if (r != 0) goto fail;

    /* initgroups(3) semantics: the chosen group and every group that lists
     * the user as a member */
    *which = "user";
    if (have_pw) {
        int n = 32;
        for (;;) {
            gid_t *g = realloc(ids->groups, (size_t)n * sizeof *g);
            if (!g) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            ids->groups = g;
            int want = n;
            if (getgrouplist(pw.pw_name, ids->gid, g, &want) >= 0) {
                ids->ngroups = (size_t)want;
                break;
            }
            if (want <= n) want = n * 2; /* some NSS modules do not say */
            if (want > 65536) {
                snprintf(err, errlen, "has too many groups");
                goto fail;
            }
            n = want;
        }
    } else {
        ids->groups = malloc(sizeof *ids->groups);
        if (!ids->groups) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        ids->groups[0] = ids->gid;
        ids->ngroups = 1;
    }
    free(buf);
    free(gbuf);
    return 0;
fail:
    free(buf);
    free(gbuf);
    mkh_ids_free(ids);
    return -1;
}
