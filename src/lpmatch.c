/* Lua 5.4's pattern matcher (lstrlib.c, MIT licence, Lua.org, PUC-Rio)
 * with a step budget. string.find runs in C where no Lua hook fires, so a
 * banner that backtracks exponentially would ignore both a wait's deadline
 * and Ctrl-C for minutes. This copy counts its steps and, every
 * PM_CHECK_EVERY of them, looks at the clock and at pending signals; when
 * either says stop it unwinds at once (longjmp: the matcher holds no
 * resources) and reports that it gave up. Semantics are string.find's. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <ctype.h>
#include <setjmp.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#define PM_MAXCCALLS 200
#define PM_MAXCAPTURES 32 /* as stock Lua: string.find accepts the same patterns */
#define PM_ESC '%'
#define PM_SPECIALS "^$*+?.([%-"
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
/* ~1 ms of matching between looks at the clock: cheap and prompt */
#define PM_CHECK_EVERY (1u << 16)

typedef struct {
    const char *src_init, *src_end, *p_end;
    lua_State *L;
    int matchdepth;
    int level;
    struct { const char *init; ptrdiff_t len; } capture[PM_MAXCAPTURES];
    unsigned long steps, next_check;
    double deadline; /* <= 0: none */
    jmp_buf stop;
} pmstate;

#define uchar(c) ((unsigned char)(c))

static const char *pm_match(pmstate *ms, const char *s, const char *p);

static void pm_tick(pmstate *ms, unsigned long n)
{
    ms->steps += n;
    if (ms->steps < ms->next_check) return;
    ms->next_check = ms->steps + PM_CHECK_EVERY;
    if (mkh_interrupted() || (ms->deadline > 0 && mkh_now() >= ms->deadline))
        longjmp(ms->stop, 1);
}

static int pm_check_capture(pmstate *ms, int l)
{
    l -= '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
        return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    return l;
}

static int pm_capture_to_close(pmstate *ms)
{
    int level = ms->level;
    for (level--; level >= 0; level--)
        if (ms->capture[level].len == CAP_UNFINISHED) return level;
    return luaL_error(ms->L, "invalid pattern capture");
}

static const char *pm_class_end(pmstate *ms, const char *p)
{
    switch (*p++) {
    case PM_ESC:
        if (p == ms->p_end) luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return p + 1;
    case '[':
        if (*p == '^') p++;
        do { /* look for a ']' */
            if (p == ms->p_end) luaL_error(ms->L, "malformed pattern (missing ']')");
            if (*(p++) == PM_ESC && p < ms->p_end) p++; /* skip escapes (e.g. '%]') */
        } while (*p != ']');
        return p + 1;
    default:
        return p;
    }
}

static int pm_match_class(int c, int cl)
{
    int res;
    switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'g': res = isgraph(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    default: return cl == c;
    }
    return islower(cl) ? res : !res;
}

static int pm_bracket_class(int c, const char *p, const char *ec)
{
    int sig = 1;
    if (*(p + 1) == '^') {
        sig = 0;
        p++; /* skip the '^' */
    }
    while (++p < ec) {
        if (*p == PM_ESC) {
            p++;
            if (pm_match_class(c, uchar(*p))) return sig;
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            p += 2;
            if (uchar(*(p - 2)) <= c && c <= uchar(*p)) return sig;
        } else if (uchar(*p) == c) {
            return sig;
        }
    }
    return !sig;
}

static int pm_single(pmstate *ms, const char *s, const char *p, const char *ep)
{
    if (s >= ms->src_end) return 0;
    int c = uchar(*s);
    switch (*p) {
    case '.': return 1;
    case PM_ESC: return pm_match_class(c, uchar(*(p + 1)));
    case '[': return pm_bracket_class(c, p, ep - 1);
    default: return uchar(*p) == c;
    }
}

static const char *pm_balance(pmstate *ms, const char *s, const char *p)
{
    if (p >= ms->p_end - 1) luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= ms->src_end || *s != *p) return NULL;
    int b = uchar(*p), e = uchar(*(p + 1)), cont = 1;
    const char *s0 = s;
    while (++s < ms->src_end) {
        if (uchar(*s) == e) {
            if (--cont == 0) {
                pm_tick(ms, (unsigned long)(s - s0));
                return s + 1;
            }
        } else if (uchar(*s) == b) {
            cont++;
        }
    }
    pm_tick(ms, (unsigned long)(s - s0));
    return NULL;
}

static const char *pm_max_expand(pmstate *ms, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = 0;
    while (pm_single(ms, s + i, p, ep)) i++;
    pm_tick(ms, (unsigned long)i); /* the scan is work too */
    while (i >= 0) { /* try with the most repetitions first */
        const char *res = pm_match(ms, s + i, ep + 1);
        if (res) return res;
        i--;
    }
    return NULL;
}

static const char *pm_min_expand(pmstate *ms, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *res = pm_match(ms, s, ep + 1);
        if (res) return res;
        if (pm_single(ms, s, p, ep)) s++;
        else return NULL;
    }
}

static const char *pm_start_capture(pmstate *ms, const char *s, const char *p, int what)
{
    int level = ms->level;
    if (level >= PM_MAXCAPTURES) luaL_error(ms->L, "too many captures");
    ms->capture[level].init = s;
    ms->capture[level].len = what;
    ms->level = level + 1;
    const char *res = pm_match(ms, s, p);
    if (!res) ms->level--; /* undo capture */
    return res;
}

static const char *pm_end_capture(pmstate *ms, const char *s, const char *p)
{
    int l = pm_capture_to_close(ms);
    ms->capture[l].len = s - ms->capture[l].init;
    const char *res = pm_match(ms, s, p);
    if (!res) ms->capture[l].len = CAP_UNFINISHED; /* undo capture */
    return res;
}

static const char *pm_match_capture(pmstate *ms, const char *s, int l)
{
    l = pm_check_capture(ms, l);
    size_t len = (size_t)ms->capture[l].len;
    if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
        return s + len;
    return NULL;
}

static const char *pm_match(pmstate *ms, const char *s, const char *p)
{
    if (ms->matchdepth-- == 0) luaL_error(ms->L, "pattern too complex");
init: /* goto instead of tail recursion */
    pm_tick(ms, 1);
    if (p != ms->p_end) {
        switch (*p) {
        case '(':
            if (*(p + 1) == ')') s = pm_start_capture(ms, s, p + 2, CAP_POSITION);
            else s = pm_start_capture(ms, s, p + 1, CAP_UNFINISHED);
            break;
        case ')':
            s = pm_end_capture(ms, s, p + 1);
            break;
        case '$':
            if (p + 1 != ms->p_end) goto dflt; /* not the last char: a literal */
            s = s == ms->src_end ? s : NULL;
            break;
        case PM_ESC:
            switch (*(p + 1)) {
            case 'b':
                s = pm_balance(ms, s, p + 2);
                if (s) {
                    p += 4;
                    goto init;
                }
                break;
            case 'f': {
                p += 2;
                if (*p != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                const char *ep = pm_class_end(ms, p);
                /* at the end the subject's terminating NUL is the next char, as in Lua */
                char previous = '\0';
                if (s != ms->src_init) previous = *(s - 1);
                if (!pm_bracket_class(uchar(previous), p, ep - 1) &&
                    pm_bracket_class(uchar(*s), p, ep - 1)) {
                    p = ep;
                    goto init;
                }
                s = NULL;
                break;
            }
            case '0': case '1': case '2': case '3': case '4':
            case '5': case '6': case '7': case '8': case '9':
                s = pm_match_capture(ms, s, uchar(*(p + 1)));
                if (s) {
                    p += 2;
                    goto init;
                }
                break;
            default:
                goto dflt;
            }
            break;
        default:
        dflt: {
            const char *ep = pm_class_end(ms, p);
            if (!pm_single(ms, s, p, ep)) {
                if (*ep == '*' || *ep == '?' || *ep == '-') { /* accept empty */
                    p = ep + 1;
                    goto init;
                }
                s = NULL; /* '+' or no suffix */
            } else {
                switch (*ep) {
                case '?': {
                    const char *res = pm_match(ms, s + 1, ep + 1);
                    if (res) {
                        s = res;
                    } else {
                        p = ep + 1;
                        goto init;
                    }
                    break;
                }
                case '+':
                    s++; /* one match already done */
                    /* fallthrough */
                case '*':
                    s = pm_max_expand(ms, s, p, ep);
                    break;
                case '-':
                    s = pm_min_expand(ms, s, p, ep);
                    break;
                default:
                    s++;
                    p = ep;
                    goto init;
                }
            }
            break;
        }
        }
    }
    ms->matchdepth++;
    return s;
}

static void pm_push_capture(pmstate *ms, int i)
{
    ptrdiff_t l = ms->capture[i].len;
    if (l == CAP_UNFINISHED) luaL_error(ms->L, "unfinished capture");
    if (l == CAP_POSITION)
        lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
    else
        lua_pushlstring(ms->L, ms->capture[i].init, (size_t)l);
}

static int pm_find(pmstate *ms, const char *s, size_t ls, const char *p, size_t lp, size_t init)
{
    int anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
    const char *s1 = s + init;
    do {
        ms->level = 0;
        ms->matchdepth = PM_MAXCCALLS;
        const char *e = pm_match(ms, s1, p);
        if (e) {
            lua_State *L = ms->L;
            luaL_checkstack(L, ms->level + 2, "too many captures");
            lua_pushinteger(L, (s1 - s) + 1);
            lua_pushinteger(L, e - s);
            for (int i = 0; i < ms->level; i++) pm_push_capture(ms, i);
            return ms->level + 2;
        }
    } while (s1++ < ms->src_end && !anchor);
    return 0;
}

int lmkh_pfind(lua_State *L, const char *s, size_t ls, const char *p, size_t lp,
               size_t init, double deadline)
{
    if (init > ls) return 0;
    if (!memchr(p, '\0', lp) && !strpbrk(p, PM_SPECIALS)) { /* a literal */
        const char *hit = memmem(s + init, ls - init, p, lp);
        if (!hit) return 0;
        lua_pushinteger(L, (hit - s) + 1);
        lua_pushinteger(L, (hit - s) + (lua_Integer)lp);
        return 2;
    }
    pmstate ms;
    ms.L = L;
    ms.steps = 0;
    ms.next_check = PM_CHECK_EVERY;
    ms.deadline = deadline;
    if (setjmp(ms.stop)) return -1;
    return pm_find(&ms, s, ls, p, lp, init);
}
