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
