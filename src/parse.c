/* Parsers of untrusted text. No Lua, no allocation: easy to fuzz. */
#define _GNU_SOURCE
#include "mkh.h"

#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct { const char *name; int sig; } signals[] = {
    {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"IOT", SIGIOT}, {"BUS", SIGBUS},
    {"FPE", SIGFPE}, {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},
    {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},
    {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CLD", SIGCHLD}, {"CONT", SIGCONT},
    {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},
    {"URG", SIGURG}, {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM},
    {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO}, {"POLL", SIGPOLL},
    {"PWR", SIGPWR}, {"SYS", SIGSYS},
};

/* Parse a small decimal integer; -1 if s is not entirely digits. */
static int parse_small_int(const char *s)
{
    if (!*s) return -1;
    long v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) return -1;
        v = v * 10 + (*s - '0');
        if (v > 1000) return -1;
    }
    return (int)v;
}

int mkh_signum(const char *name)
{
    if (!name || !*name) return -1;
    int n = parse_small_int(name);
    if (n >= 0) return (n >= 1 && n < NSIG) ? n : -1;
    if (!strncasecmp(name, "SIG", 3)) name += 3;
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (!strcasecmp(name, signals[i].name)) return signals[i].sig;
    /* RTMIN, RTMIN+n, RTMAX, RTMAX-n */
    int base, dir;
    if (!strncasecmp(name, "RTMIN", 5)) { base = SIGRTMIN; dir = 1; }
    else if (!strncasecmp(name, "RTMAX", 5)) { base = SIGRTMAX; dir = -1; }
    else return -1;
    const char *rest = name + 5;
    if (!*rest) return base;
    if ((dir == 1 && *rest != '+') || (dir == -1 && *rest != '-')) return -1;
    int off = parse_small_int(rest + 1);
    if (off < 0) return -1;
    int sig = base + dir * off;
    return (sig >= SIGRTMIN && sig <= SIGRTMAX) ? sig : -1;
}

const char *mkh_signame(int sig)
{
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (signals[i].sig == sig) return signals[i].name;
    return NULL;
}

int mkh_split_words(const char *s, size_t len, char *out, char *err, size_t errlen)
{
    size_t i = 0, o = 0;
    int words = 0;
    while (i < len) {
        /* skip blanks between words */
        while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) i++;
        if (i >= len) break;
        int in_word = 0;
        while (i < len) {
            char c = s[i];
            if (c == ' ' || c == '\t' || c == '\n') break;
            if (c == '\0') {
                snprintf(err, errlen, "NUL byte at position %zu", i + 1);
                return -1;
            }
            if (c == '\'') {
                size_t start = i++;
                while (i < len && s[i] != '\'') out[o++] = s[i++];
                if (i >= len) {
                    snprintf(err, errlen, "unterminated single quote at position %zu", start + 1);
                    return -1;
                }
                i++;
                in_word = 1;
            } else if (c == '"') {
                size_t start = i++;
                while (i < len && s[i] != '"') {
                    if (s[i] == '\\' && i + 1 < len &&
                        (s[i + 1] == '"' || s[i + 1] == '\\' || s[i + 1] == '$' ||
                         s[i + 1] == '`' || s[i + 1] == '\n')) {
                        if (s[i + 1] != '\n') out[o++] = s[i + 1];
                        i += 2;
                    } else {
                        out[o++] = s[i++];
                    }
                }
                if (i >= len) {
                    snprintf(err, errlen, "unterminated double quote at position %zu", start + 1);
                    return -1;
                }
                i++;
                in_word = 1;
            } else if (c == '\\') {
                if (i + 1 >= len) {
                    snprintf(err, errlen, "trailing backslash at position %zu", i + 1);
                    return -1;
                }
                if (s[i + 1] != '\n') out[o++] = s[i + 1];
                i += 2;
                in_word = 1;
            } else if (strchr("|&;<>()`$", c)) {
                snprintf(err, errlen,
                         "unquoted '%c' at position %zu is shell syntax, which cmd does not "
                         "interpret: quote it, or use shell = \"...\"", c, i + 1);
                return -1;
            } else {
                out[o++] = c;
                i++;
                in_word = 1;
            }
        }
        if (in_word) {
            out[o++] = '\0';
            words++;
        }
    }
    return words;
}

/* ---- URLs: http(s)://[userinfo@]host[:port][/path][?query][#fragment] ---- */

static int ascii_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

int mkh_parse_url(const char *s, size_t len, mkh_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    size_t i = 0;
    if (len == 0 || !isalpha((unsigned char)s[0])) goto not_absolute;
    while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '.' || s[i] == '-')) i++;
    if (i + 3 > len || memcmp(s + i, "://", 3) != 0) goto not_absolute;
    if (i == 4 && ascii_lower(s[0]) == 'h' && ascii_lower(s[1]) == 't' && ascii_lower(s[2]) == 't' &&
        ascii_lower(s[3]) == 'p') {
        u->https = 0;
    } else if (i == 5 && ascii_lower(s[0]) == 'h' && ascii_lower(s[1]) == 't' && ascii_lower(s[2]) == 't' &&
               ascii_lower(s[3]) == 'p' && ascii_lower(s[4]) == 's') {
        u->https = 1;
    } else {
        snprintf(err, errlen, "must use http or https");
        return -1;
    }
    size_t a = i + 3, ae = a;
    while (ae < len && s[ae] != '/' && s[ae] != '?' && s[ae] != '#') ae++;
    for (size_t k = a; k < ae; k++)
        if (s[k] == '@') a = k + 1; /* userinfo is not ours to send */
    size_t h = a, he;
    const char *port = NULL;
    size_t port_len = 0;
    if (a < ae && s[a] == '[') {
        he = a + 1;
        while (he < ae && s[he] != ']') {
            if (!isxdigit((unsigned char)s[he]) && s[he] != ':' && s[he] != '.') {
                snprintf(err, errlen, "has a malformed IPv6 host");
                return -1;
            }
            he++;
        }
        if (he >= ae || he == a + 1) {
            snprintf(err, errlen, "has a malformed IPv6 host");
            return -1;
        }
        h = a + 1;
        if (he + 1 < ae) {
            if (s[he + 1] != ':') {
                snprintf(err, errlen, "has garbage after the IPv6 host");
                return -1;
            }
            port = s + he + 2;
            port_len = ae - (he + 2);
        }
    } else {
        he = a;
        while (he < ae && s[he] != ':') he++;
        if (he < ae) {
            port = s + he + 1;
            port_len = ae - (he + 1);
        }
    }
    if (he == h) {
        snprintf(err, errlen, "has no host");
        return -1;
    }
    for (size_t k = h; k < he; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c <= ' ' || c == 0x7f) {
            snprintf(err, errlen, "has a host with blanks or control characters");
            return -1;
        }
    }
    u->host = s + h;
    u->host_len = he - h;
    if (port) {
        long v = 0;
        if (port_len == 0 || port_len > 5) goto bad_port;
        for (size_t k = 0; k < port_len; k++) {
            if (!isdigit((unsigned char)port[k])) goto bad_port;
            v = v * 10 + (port[k] - '0');
        }
        if (v < 1 || v > 65535) goto bad_port;
        u->port = (int)v;
    } else {
        u->port = u->https ? 443 : 80;
    }
    size_t pe = ae;
    while (pe < len && s[pe] != '#') pe++;
    for (size_t k = ae; k < pe; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c <= ' ' || c == 0x7f) {
            snprintf(err, errlen, "has blanks or control characters in its path (encode them)");
            return -1;
        }
    }
    u->path = s + ae;
    u->path_len = pe - ae;
    return 0;
bad_port:
    snprintf(err, errlen, "has a bad port (1-65535)");
    return -1;
not_absolute:
    snprintf(err, errlen, "must be an absolute http:// or https:// URL");
    return -1;
}

/* ---- HTTP status specs given as text: "200" or a class "2xx" ---- */

int mkh_parse_status(const char *s, size_t len, int *value)
{
    if (len == 3 && s[0] >= '1' && s[0] <= '5' && ascii_lower(s[1]) == 'x' && ascii_lower(s[2]) == 'x') {
        *value = s[0] - '0';
        return MKH_STATUS_CLASS;
    }
    if (len == 3 && isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[2])) {
        int v = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
        if (v >= 100 && v <= 599) {
            *value = v;
            return MKH_STATUS_CODE;
        }
    }
    return -1;
}

/* ---- sd_notify datagrams: newline-separated KEY=VALUE assignments ---- */

static int parse_int_field(const char *v, size_t n, int *out)
{
    long x = 0;
    if (n == 0 || n > 9) return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)v[i])) return -1;
        x = x * 10 + (v[i] - '0');
    }
    *out = (int)x;
    return 0;
}

int mkh_parse_notify(const char *buf, size_t len, mkh_notify *n)
{
    int known = 0;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        const char *line = buf + i;
        size_t ll = e - i;
        const char *eq = memchr(line, '=', ll);
        if (eq) {
            size_t kl = (size_t)(eq - line);
            const char *v = eq + 1;
            size_t vl = ll - kl - 1;
#define KEY(k) (kl == sizeof(k) - 1 && !memcmp(line, k, kl))
            if (KEY("READY") && vl == 1 && v[0] == '1') { n->ready = 1; known++; }
            else if (KEY("STOPPING") && vl == 1 && v[0] == '1') { n->stopping = 1; known++; }
            else if (KEY("RELOADING") && vl == 1 && v[0] == '1') { n->reloading = 1; known++; }
            else if (KEY("STATUS")) {
                size_t c = vl < sizeof n->status - 1 ? vl : sizeof n->status - 1;
                memcpy(n->status, v, c);
                n->status[c] = '\0';
                n->has_status = 1;
                known++;
            } else if (KEY("ERRNO") && parse_int_field(v, vl, &n->errnum) == 0) { n->has_errno = 1; known++; }
            else if (KEY("MAINPID") && parse_int_field(v, vl, &n->mainpid) == 0) known++;
#undef KEY
        }
        i = e + 1;
    }
    return known;
}
