/* Socket probes and port helpers. */
#define _GNU_SOURCE
#include "mkh.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len, double timeout)
{
    if (connect(fd, sa, len) == 0) return 0;
    if (errno != EINPROGRESS) return -1;
    struct pollfd pf = { fd, POLLOUT, 0 };
    int ms = timeout <= 0 ? 0 : (int)(timeout * 1000.0) + 1;
    int r;
    do r = poll(&pf, 1, ms); while (r < 0 && errno == EINTR && !mkh_interrupted());
    if (r == 0) { errno = ETIMEDOUT; return -1; }
    if (r < 0) return -1;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) { errno = soerr; return -1; }
    return 0;
}

int mkh_tcp_probe(const char *host, int port, double timeout, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    /* numeric addresses skip the resolver, which matters at 1 kHz polling */
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)port);
        len = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)port);
        len = sizeof *s6;
    } else {
        struct addrinfo hints, *res;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        int g = getaddrinfo(host, NULL, &hints, &res);
        if (g != 0) {
            snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(g));
            return -1;
        }
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        len = res->ai_addrlen;
        freeaddrinfo(res);
        if (ss.ss_family == AF_INET) s4->sin_port = htons((unsigned short)port);
        else s6->sin6_port = htons((unsigned short)port);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int r = connect_bounded(fd, (struct sockaddr *)&ss, len, timeout);
    if (r != 0) snprintf(err, errlen, "connect to %s:%d: %s", host, port, strerror(errno));
    close(fd);
    return r;
}

int mkh_unix_probe(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "socket path too long (%zu bytes, at most %zu)", strlen(path),
                 sizeof sa.sun_path - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* a unix connect never waits for a handshake: EAGAIN means the backlog is full,
     * which still proves a listener */
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (r != 0 && errno == EAGAIN) r = 0;
    if (r != 0) snprintf(err, errlen, "connect to %s: %s", path, strerror(errno));
    close(fd);
    return r;
}

int mkh_free_port(char *err, size_t errlen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        snprintf(err, errlen, "bind: %s", strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* inode of a listening socket on `port` from /proc/net/tcp{,6}, or 0 */
static unsigned long listen_inode(const char *file, int port)
{
    FILE *f = fopen(file, "re");
    if (!f) return 0;
    char line[512];
    unsigned long found = 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return 0; }
    while (fgets(line, sizeof line, f)) {
        char local[128];
        unsigned st;
        unsigned long inode;
        if (sscanf(line, "%*d: %127s %*s %x %*s %*s %*s %*d %*d %lu", local, &st, &inode) != 3)
            continue;
        char *colon = strrchr(local, ':');
        if (!colon) continue;
        if ((int)strtol(colon + 1, NULL, 16) == port && st == 0x0A) { found = inode; break; }
    }
    fclose(f);
    return found;
}

pid_t mkh_port_owner(int port, char *cmd, size_t cmdlen)
{
    unsigned long ino = listen_inode("/proc/net/tcp", port);
    if (!ino) ino = listen_inode("/proc/net/tcp6", port);
    if (!ino) return 0;
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", ino);
    DIR *d = opendir("/proc");
    if (!d) return 0;
    pid_t owner = 0;
    struct dirent *e;
    while (!owner && (e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/fd", e->d_name);
        DIR *fds = opendir(path);
        if (!fds) continue;
        struct dirent *f;
        while ((f = readdir(fds)) != NULL) {
            char link[600], target[128];
            snprintf(link, sizeof link, "/proc/%s/fd/%s", e->d_name, f->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0) continue;
            target[n] = '\0';
            if (!strcmp(target, want)) { owner = (pid_t)atoi(e->d_name); break; }
        }
        closedir(fds);
    }
    closedir(d);
    if (owner) {
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)owner);
        ssize_t n = mkh_read_small(path, buf, sizeof buf);
        for (ssize_t i = 0; i + 1 < n; i++) if (buf[i] == '\0') buf[i] = ' ';
        snprintf(cmd, cmdlen, "%s", n > 0 ? buf : "?");
    }
    return owner;
}
