/* mkharness.scanner: reads a capture file line by line as it grows
 * (the output probe's), and core.find, the bounded pattern match. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>


/* Reads a growing capture file and hands out complete lines that contain a
 * literal needle (memmem over big blocks, so a flood is scanned at memory
 * speed); the Lua layer applies the real pattern to those candidates. The
 * partial last line is kept, bounded, so prompts without newline match.
 * A line longer than PARTIAL_MAX is handed out in pieces as it arrives,
 * each starting SCAN_OVERLAP bytes before the previous one ended: a match
 * up to that long is found wherever it sits, and memory stays bounded. */
#define SCAN_BLOCK (1 << 20)
#define PARTIAL_MAX (1 << 20)
#define SCAN_OVERLAP (64 << 10)

typedef struct {
    int fd;
    off_t off;          /* file offset read so far */
    char *buf;          /* [0, len): unconsumed bytes, from a line start unless truncated */
    size_t len, cap;
    int truncated;      /* buf starts inside a line (its head was handed out) */
    char path[];
} lscanner;

static lscanner *check_scanner(lua_State *L, int i)
{
    return (lscanner *)luaL_checkudata(L, i, SCANNER_MT);
}

static int l_scanner(lua_State *L)
{
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    /* read before the userdata takes slot 2: true starts at the current
     * end, an integer at that offset (a mark) */
    int at_offset = lua_isinteger(L, 2);
    lua_Integer from = at_offset ? lua_tointeger(L, 2) : 0;
    int from_end = !at_offset && lua_toboolean(L, 2);
    lscanner *s = lua_newuserdatauv(L, sizeof *s + plen + 1, 0);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    memcpy(s->path, path, plen + 1);
    luaL_setmetatable(L, SCANNER_MT);
    if (from_end) { /* start at the current end */
        struct stat st;
        if (stat(path, &st) == 0) s->off = st.st_size;
    } else if (from > 0) {
        s->off = (off_t)from;
    }
    if (s->off > 0) {
        /* starting inside a line: keep its last byte before the start as
         * context (for %f), and say the line's head is cut off, so that `^`
         * does not match there */
        char prev = '\n';
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (pread(fd, &prev, 1, s->off - 1) != 1) prev = '\n';
            close(fd);
        }
        if (prev != '\n') {
            s->off--;
            s->truncated = 1;
        }
    }
    return 1;
}

/* Read more of the file; returns bytes added. */
static size_t scanner_fill(lscanner *s)
{
    if (s->fd < 0) {
        s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) return 0;
    }
    if (s->cap - s->len < SCAN_BLOCK) {
        size_t cap = s->len + SCAN_BLOCK;
        char *nb = realloc(s->buf, cap);
        if (!nb) return 0;
        s->buf = nb;
        s->cap = cap;
    }
    ssize_t n = pread(s->fd, s->buf + s->len, SCAN_BLOCK, s->off);
    if (n <= 0) return 0;
    s->len += (size_t)n;
    s->off += n;
    return (size_t)n;
}

static void push_line(lua_State *L, const char *p, size_t n)
{
    if (n && p[n - 1] == '\r') n--;
    lua_pushlstring(L, p, n);
}

/* memmem after a memchr for the needle's first byte: an endless line is
 * usually one byte repeated, which memchr passes several times faster */
static int has_needle(const char *h, size_t hl, const char *n, size_t nl)
{
    const char *p = memchr(h, (unsigned char)n[0], hl);
    return p && memmem(p, hl - (size_t)(p - h), n, nl);
}

/* s:next(needle) -> text, at_start, at_end: the next complete line
 * containing needle, or a piece of a line too long to keep (at_end false);
 * at_start is false when text does not begin where the line does. nil when
 * nothing more is complete (all of it is consumed). */
static int l_scanner_next(lua_State *L)
{
    lscanner *s = check_scanner(L, 1);
    size_t nlen;
    const char *needle = luaL_optlstring(L, 2, "", &nlen);
    for (;;) {
        char *end = s->len ? memrchr(s->buf, '\n', s->len) : NULL;
        if (end) {
            size_t complete = (size_t)(end - s->buf) + 1;
            char *hit = nlen ? memmem(s->buf, complete, needle, nlen) : s->buf;
            if (hit) {
                char *ls = hit;
                while (ls > s->buf && ls[-1] != '\n') ls--;
                char *le = memchr(hit, '\n', (size_t)(s->buf + complete - hit));
                push_line(L, ls, (size_t)(le - ls));
                lua_pushboolean(L, !(ls == s->buf && s->truncated));
                lua_pushboolean(L, 1);
                size_t used = (size_t)(le - s->buf) + 1;
                memmove(s->buf, s->buf + used, s->len - used);
                s->len -= used;
                s->truncated = 0;
                return 3;
            }
            memmove(s->buf, s->buf + complete, s->len - complete);
            s->len -= complete;
            s->truncated = 0;
        }
        if (s->len > PARTIAL_MAX) { /* an endless line: hand out what is dropped */
            size_t keep = nlen > SCAN_OVERLAP ? nlen : SCAN_OVERLAP;
            if (keep > PARTIAL_MAX / 2) keep = PARTIAL_MAX / 2;
            int found = !nlen || has_needle(s->buf, s->len, needle, nlen);
            if (found) {
                lua_pushlstring(L, s->buf, s->len);
                lua_pushboolean(L, !s->truncated);
                lua_pushboolean(L, 0);
            }
            memmove(s->buf, s->buf + s->len - keep, keep);
            s->len = keep;
            s->truncated = 1;
            if (found) return 3;
        }
        if (scanner_fill(s) == 0) return 0;
    }
}

/* s:partial() -> the current incomplete last line (possibly ""), and
 * whether its head was cut off (handed out by next() already) */
static int l_scanner_partial(lua_State *L)
{
    lscanner *s = check_scanner(L, 1);
    lua_pushlstring(L, s->buf ? s->buf : "", s->len);
    lua_pushboolean(L, s->truncated);
    return 2;
}

/* core.find(s, pattern [, init [, deadline]]) -> like string.find(s,
 * pattern, init), or false when it gave up because the deadline passed
 * (pmatch.c). A pending signal ends the run, as in any wait. */
static int l_find(lua_State *L)
{
    size_t ls, lp;
    const char *str = luaL_checklstring(L, 1, &ls);
    const char *pat = luaL_checklstring(L, 2, &lp);
    lua_Integer init = luaL_optinteger(L, 3, 1);
    double deadline = luaL_optnumber(L, 4, 0);
    int n = lmkh_pfind(L, str, ls, pat, lp, init > 1 ? (size_t)(init - 1) : 0, deadline);
    if (n < 0) {
        lmkh_check_interrupt(L);
        lua_pushboolean(L, 0);
        return 1;
    }
    if (n == 0) lua_pushnil(L);
    return n ? n : 1;
}

static int l_scanner_gc(lua_State *L)
{
    lscanner *s = check_scanner(L, 1);
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    return 0;
}


static const luaL_Reg scanner_methods[] = {
    {"next", l_scanner_next}, {"partial", l_scanner_partial}, {"close", l_scanner_gc},
    {NULL, NULL}
};

void lmkh_open_scanner(lua_State *L)
{
    lmkh_new_class(L, SCANNER_MT, scanner_methods, l_scanner_gc);
    static const luaL_Reg funcs[] = {
        {"scanner", l_scanner},
        {"find", l_find},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
