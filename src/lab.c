/* The lab: a private network of hosts, built without root.
 *
 * A keeper process, forked from the harness, unshares a user and a network
 * namespace (the control node's), makes a bridge there and one network
 * namespace per host, joined to the bridge by a veth pair. It also makes a
 * mount namespace whose /etc/hosts names the hosts. Then it hands the
 * namespaces to the harness as file descriptors and serves requests over a
 * SOCK_SEQPACKET pair: sockets made in the control node's network (the
 * harness is threaded and holds no capability in the lab, so it cannot
 * setns itself; a socket keeps the namespace it was made in), packet
 * filter rules for a host (libnftables) and netem queueing (rtnetlink).
 *
 * Links, addresses and qdiscs go through rtnetlink with libmnl; rules go
 * through libnftables, loaded with dlopen by the keeper only, so that a
 * harness that never builds a lab does not load it. Services are spawned
 * straight into a host by spawn.c with the descriptors given here.
 *
 * Nothing of the lab outlives the run: the namespaces are held only by the
 * keeper, the harness's descriptors and the processes inside; the keeper
 * dies with the harness (parent-death signal, end of file on its socket,
 * and the guardian, which watches its session). */
#define _GNU_SOURCE
#include "mkh.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h> /* before the kernel's headers, which defer to it */
#include <libmnl/libmnl.h>
#include <nftables/libnftables.h>
#include <linux/if_link.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAB_MAX 16 /* live labs in one run; each has its own /24 */

struct mkh_lab {
    int slot;                 /* index in live_labs[]; the third octet is slot + 1 */
    int nhosts;
    char (*names)[MKH_LAB_NAME_MAX + 1];
    int ctl;                  /* our end of the keeper's socket */
    pid_t keeper;
    int fd_user, fd_mnt, fd_net; /* fd_net: the control node's network */
    int *fd_host;             /* each host's network: nfd of them received so far */
    int nfd;
    int pool[16], npool;      /* control-node TCP sockets made ahead, under mu */
    unsigned long user_ino;   /* the user namespace's inode: "is anything of it left?" */
    int direct;               /* we may enter its networks without its user namespace (root) */
    pthread_mutex_t mu;       /* one request at a time: the proxy's thread asks too */
};

static mkh_lab *live_labs[LAB_MAX];
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- the wire between harness and keeper ---- */

enum { OP_SOCKET = 1, OP_FILTER, OP_NETEM };

struct request {
    int op, host;             /* host: 0-based; -1 the control node */
    int family, type, proto, count; /* OP_SOCKET: count sockets, 1 to FDS_MAX */
    double delay_ms, jitter_ms, loss_pct; /* OP_NETEM; all 0: remove */
    char text[];              /* OP_FILTER: "HOST\x1fSCRIPT\x1e" per host whose rules change */
};

struct reply {
    int ok;
    char text[];              /* the problem when not ok */
};

#define WIRE_MAX (1 << 20)
#define FDS_MAX 16

static int send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
    struct iovec iov = { (void *)buf, len };
    char cbuf[CMSG_SPACE(sizeof(int) * FDS_MAX)];
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
        memset(cbuf, 0, sizeof cbuf);
        m.msg_control = cbuf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do n = sendmsg(sock, &m, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
    return n == (ssize_t)len ? 0 : -1;
}

/* One message; up to *nfds descriptors, close-on-exec from birth. Returns
 * its length, 0 at end of file, -1 on error. */
static ssize_t recv_fds(int sock, void *buf, size_t len, int *fds, int *nfds)
{
    struct iovec iov = { buf, len };
    char cbuf[CMSG_SPACE(sizeof(int) * FDS_MAX)];
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof cbuf;
    ssize_t n;
    do n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
    int got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); n >= 0 && c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int in[FDS_MAX];
        memcpy(in, CMSG_DATA(c), sizeof(int) * (size_t)(k < FDS_MAX ? k : FDS_MAX));
        for (int i = 0; i < k && i < FDS_MAX; i++) {
            if (nfds && got < *nfds) fds[got++] = in[i];
            else close(in[i]);
        }
    }
    if (nfds) *nfds = got;
    return n;
}

/* ==== the keeper ==== */

typedef struct nft_ctx *nft_ctx_ptr;

static struct {
    int ctl, fd_ctl_net, n;
    int *fd_net;
    nft_ctx_ptr *nft;         /* one libnftables context per host */
    char why[512];
} K;

static struct {
    struct nft_ctx *(*ctx_new)(uint32_t);
    int (*buffer_output)(struct nft_ctx *);
    int (*buffer_error)(struct nft_ctx *);
    const char *(*get_error)(struct nft_ctx *);
    int (*run)(struct nft_ctx *, const char *);
} nft;

static int nft_load(char *why, size_t len)
{
    void *h = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, len, "the lab filters packets with libnftables, which cannot be loaded (%s); "
                 "install it (Debian: apt-get install libnftables1)", dlerror());
        return -1;
    }
    /* the pointers take the header's own prototypes */
    *(void **)&nft.ctx_new = dlsym(h, "nft_ctx_new");
    *(void **)&nft.buffer_output = dlsym(h, "nft_ctx_buffer_output");
    *(void **)&nft.buffer_error = dlsym(h, "nft_ctx_buffer_error");
    *(void **)&nft.get_error = dlsym(h, "nft_ctx_get_error_buffer");
    *(void **)&nft.run = dlsym(h, "nft_run_cmd_from_buffer");
    if (!nft.ctx_new || !nft.buffer_output || !nft.buffer_error || !nft.get_error || !nft.run) {
        snprintf(why, len, "libnftables.so.1 lacks a function the lab needs");
        return -1;
    }
    return 0;
}

/* Runs an nft script in the current network namespace's context c. */
static int nft_do(struct nft_ctx *c, const char *script, char *why, size_t len)
{
    if (nft.run(c, script) == 0) return 0;
    const char *e = nft.get_error(c);
    snprintf(why, len, "nftables: %s", e && *e ? e : "the rules were refused");
    size_t l = strlen(why);
    while (l && (why[l - 1] == '\n' || why[l - 1] == ' ')) why[--l] = '\0';
    return -1;
}

/* -- rtnetlink -- */

static unsigned nl_seq;

/* Sends nlh, waits for the kernel's answer; -1 with errno on refusal. */
static int nl_talk(struct mnl_socket *nl, struct nlmsghdr *nlh)
{
    nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = ++nl_seq;
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) return -1;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
    if (n < 0) return -1;
    return mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, mnl_socket_get_portid(nl), NULL, NULL) < 0 ? -1 : 0;
}

static struct mnl_socket *nl_open(void)
{
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (nl && mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        mnl_socket_close(nl);
        nl = NULL;
    }
    return nl;
}

static struct nlmsghdr *link_msg(char *buf, int type, unsigned flags, const char *name)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (uint16_t)type;
    nlh->nlmsg_flags = (uint16_t)flags;
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof *ifm);
    ifm->ifi_family = AF_UNSPEC;
    if (name) mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
    return nlh;
}

/* name up, optionally enslaved to the bridge master */
static int link_up(struct mnl_socket *nl, const char *name, int master)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = link_msg(buf, RTM_NEWLINK, 0, name);
    struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
    ifm->ifi_change = IFF_UP;
    ifm->ifi_flags = IFF_UP;
    if (master > 0) mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t)master);
    return nl_talk(nl, nlh);
}

static int bridge_new(struct mnl_socket *nl, const char *name)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, name);
    struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
    mnl_attr_nest_end(nlh, info);
    return nl_talk(nl, nlh);
}

/* A veth pair: name here, peer (called eth0) in the namespace netfd. */
static int veth_new(struct mnl_socket *nl, const char *name, int netfd)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, name);
    struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
    struct ifinfomsg *pm = mnl_nlmsg_put_extra_header(nlh, sizeof *pm);
    pm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, "eth0");
    mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)netfd);
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, info);
    return nl_talk(nl, nlh);
}

static int addr_add(struct mnl_socket *nl, const char *dev, uint32_t addr_be)
{
    unsigned idx = if_nametoindex(dev);
    if (!idx) return -1;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWADDR;
    nlh->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = 24;
    ifa->ifa_index = idx;
    mnl_attr_put_u32(nlh, IFA_LOCAL, addr_be);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, addr_be);
    return nl_talk(nl, nlh);
}

/* netem on eth0 of the current namespace; all zero removes it. */
static int netem_set(double delay_ms, double jitter_ms, double loss_pct, char *why, size_t len)
{
    struct mnl_socket *nl = nl_open();
    unsigned idx = if_nametoindex("eth0");
    if (!nl || !idx) {
        snprintf(why, len, "netlink: %s", strerror(errno));
        if (nl) mnl_socket_close(nl);
        return -1;
    }
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    int off = delay_ms <= 0 && jitter_ms <= 0 && loss_pct <= 0;
    nlh->nlmsg_type = off ? RTM_DELQDISC : RTM_NEWQDISC;
    nlh->nlmsg_flags = off ? 0 : NLM_F_CREATE | NLM_F_REPLACE;
    struct tcmsg *tc = mnl_nlmsg_put_extra_header(nlh, sizeof *tc);
    tc->tcm_family = AF_UNSPEC;
    tc->tcm_ifindex = (int)idx;
    tc->tcm_parent = TC_H_ROOT;
    tc->tcm_handle = 0x10000; /* 1: */
    if (!off) {
        mnl_attr_put_strz(nlh, TCA_KIND, "netem");
        /* netem's options: its fixed struct, then attributes; the 64-bit
         * nanosecond delays spare us the kernel's tick units */
        struct nlattr *o = mnl_attr_nest_start(nlh, TCA_OPTIONS);
        struct tc_netem_qopt *q = mnl_nlmsg_put_extra_header(nlh, sizeof *q);
        q->limit = 1000;
        q->loss = (uint32_t)(loss_pct / 100.0 * (double)UINT32_MAX);
        mnl_attr_put_u64(nlh, TCA_NETEM_LATENCY64, (uint64_t)(delay_ms * 1e6));
        mnl_attr_put_u64(nlh, TCA_NETEM_JITTER64, (uint64_t)(jitter_ms * 1e6));
        mnl_attr_nest_end(nlh, o);
    }
    int r = nl_talk(nl, nlh);
    int e = errno;
    mnl_socket_close(nl);
    if (r == 0 || (off && (e == ENOENT || e == EINVAL))) return 0;
    if (e == ENOENT || e == EOPNOTSUPP)
        snprintf(why, len, "netem (delay and loss) is missing from this kernel: the sch_netem qdisc is "
                 "not available (CONFIG_NET_SCH_NETEM)");
    else
        snprintf(why, len, "netem: %s", strerror(e));
    return -1;
}

static int fail(const char *step)
{
    snprintf(K.why, sizeof K.why, "%s: %s", step, strerror(errno));
    return -1;
}

/* The network: the bridge (.1, the control node), each host on its veth. */
static int keeper_build(int third, const char *hosts_file)
{
    struct mnl_socket *nl = nl_open();
    if (!nl) return fail("netlink");
    char name[32];
    int r = 0;
    if (link_up(nl, "lo", 0) != 0) r = fail("loopback up");
    if (!r && bridge_new(nl, "mkh0") != 0) r = fail("bridge");
    if (!r && addr_add(nl, "mkh0", htonl(0xC6120000u | (uint32_t)third << 8 | 1u)) != 0) r = fail("bridge address");
    if (!r && link_up(nl, "mkh0", 0) != 0) r = fail("bridge up");
    int bridge = r ? 0 : (int)if_nametoindex("mkh0");
    for (int i = 0; !r && i < K.n; i++) {
        if (unshare(CLONE_NEWNET) != 0) { r = fail("new network namespace"); break; }
        K.fd_net[i] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        struct mnl_socket *hn = nl_open();
        if (K.fd_net[i] < 0 || !hn) { r = fail("host namespace"); if (hn) mnl_socket_close(hn); break; }
        if (link_up(hn, "lo", 0) != 0) r = fail("host loopback up");
        /* as on a machine of one's own: any user may bind port 80 */
        int pf = open("/proc/sys/net/ipv4/ip_unprivileged_port_start", O_WRONLY | O_CLOEXEC);
        if (pf >= 0 && write(pf, "0", 1) != 1) { /* a lower bound stays: not worth failing the lab */ }
        if (pf >= 0) close(pf);
        K.nft[i] = r ? NULL : nft.ctx_new(0);
        if (!r && !K.nft[i]) r = fail("nftables context");
        if (!r) {
            nft.buffer_output(K.nft[i]);
            nft.buffer_error(K.nft[i]);
            r = nft_do(K.nft[i], "add table inet mkharness\n"
                       "add chain inet mkharness input { type filter hook input priority 0 ; policy accept ; }\n",
                       K.why, sizeof K.why);
        }
        if (setns(K.fd_ctl_net, CLONE_NEWNET) != 0 && !r) r = fail("back to the control network");
        snprintf(name, sizeof name, "h%d", i + 1);
        if (!r && veth_new(nl, name, K.fd_net[i]) != 0) r = fail("veth pair");
        if (!r && link_up(nl, name, bridge) != 0) r = fail("veth on the bridge");
        if (!r && setns(K.fd_net[i], CLONE_NEWNET) != 0) r = fail("enter host");
        if (!r && addr_add(hn, "eth0", htonl(0xC6120000u | (uint32_t)third << 8 | (uint32_t)(i + 2))) != 0)
            r = fail("host address");
        if (!r && link_up(hn, "eth0", 0) != 0) r = fail("host link up");
        mnl_socket_close(hn);
        if (setns(K.fd_ctl_net, CLONE_NEWNET) != 0 && !r) r = fail("back to the control network");
    }
    mnl_socket_close(nl);
    if (r) return r;
    /* the hosts' names, for services and commands run in the lab */
    if (unshare(CLONE_NEWNS) != 0) return fail("new mount namespace");
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return fail("private mounts");
    if (mount(hosts_file, "/etc/hosts", NULL, MS_BIND, NULL) != 0) return fail("bind the lab's hosts file on /etc/hosts");
    return 0;
}

/* Each host's new rules: "HOST\x1fSCRIPT\x1e" records, run in that host's
 * namespace; the first refusal is the answer. */
static int filter_all(char *text, char *why, size_t len)
{
    int r = 0;
    for (char *rec = text; *rec && r == 0;) {
        char *sep = strchr(rec, '\x1f'), *end = sep ? strchr(sep, '\x1e') : NULL;
        int host = sep ? atoi(rec) : -1;
        if (!end || host < 0 || host >= K.n) {
            snprintf(why, len, "bad request");
            return -1;
        }
        *end = '\0';
        if (setns(K.fd_net[host], CLONE_NEWNET) != 0) {
            snprintf(why, len, "cannot enter the host: %s", strerror(errno));
            return -1;
        }
        r = nft_do(K.nft[host], sep + 1, why, len);
        if (setns(K.fd_ctl_net, CLONE_NEWNET) != 0) _exit(1); /* cannot serve sockets any more */
        rec = end + 1;
    }
    return r;
}

static void keeper_serve(void)
{
    static char in[WIRE_MAX + 1];
    static char out[sizeof(struct reply) + 1024];
    for (;;) {
        ssize_t n = recv_fds(K.ctl, in, WIRE_MAX, NULL, NULL);
        if (n <= 0) _exit(0); /* the harness is gone, or closed the lab */
        in[n] = '\0';
        struct request *q = (struct request *)in;
        struct reply *a = (struct reply *)out;
        a->ok = 1;
        a->text[0] = '\0';
        int fds[FDS_MAX], nfds = 0;
        int known = q->op == OP_SOCKET || q->op == OP_FILTER || q->op == OP_NETEM;
        if ((size_t)n < sizeof *q || q->host < -1 || q->host >= K.n || !known) {
            a->ok = 0;
            snprintf(a->text, 1024, "bad request");
        } else if (q->op == OP_SOCKET) {
            while (nfds < q->count && nfds < FDS_MAX) {
                int fd = socket(q->family, q->type | SOCK_CLOEXEC, q->proto);
                if (fd < 0) break;
                fds[nfds++] = fd;
            }
            if (nfds == 0) { a->ok = 0; snprintf(a->text, 1024, "socket: %s", strerror(errno)); }
        } else if (q->op == OP_FILTER) {
            a->ok = filter_all(q->text, a->text, 1024) == 0;
        } else if (q->host < 0 || setns(K.fd_net[q->host], CLONE_NEWNET) != 0) {
            a->ok = 0;
            snprintf(a->text, 1024, "cannot enter the host: %s", strerror(errno));
        } else {
            a->ok = netem_set(q->delay_ms, q->jitter_ms, q->loss_pct, a->text, 1024) == 0;
            if (setns(K.fd_ctl_net, CLONE_NEWNET) != 0) _exit(1);
        }
        send_fds(K.ctl, a, sizeof *a + strlen(a->text) + 1, fds, nfds);
        for (int i = 0; i < nfds; i++) close(fds[i]);
    }
}

/* The keeper's life: told by the harness when its id maps are written,
 * builds the lab, sends the namespaces, then serves. */
static void keeper_main(int ctl, pid_t parent, int n, int third, const char *hosts_file)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
    prctl(PR_SET_NAME, "mkh-lab");
    /* hold nothing of the harness's: not its pipes (whose end of file tells
     * the guardian the harness died), nor its listening sockets */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0) _exit(1);
    if (ctl > 3) syscall(SYS_close_range, 3u, (unsigned)ctl - 1, 0u);
    syscall(SYS_close_range, (unsigned)ctl + 1, ~0u, 0u);
    setsid(); /* no terminal signal: the lab stays up while teardown stops its services */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) sigaction(s, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    K.ctl = ctl;
    K.n = n;
    K.fd_net = calloc((size_t)n, sizeof *K.fd_net);
    K.nft = calloc((size_t)n, sizeof(nft_ctx_ptr));
    struct reply *a = calloc(1, sizeof *a + sizeof K.why);
    if (!K.fd_net || !K.nft || !a) _exit(1);
    int fds[3] = { -1, -1, -1 };
    int r = 0;
    char go;
    if (nft_load(K.why, sizeof K.why) != 0) r = -1;
    if (!r && unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
        int e = errno;
        snprintf(K.why, sizeof K.why, "cannot create a user namespace: %s", strerror(e));
        if (e == EPERM || e == EACCES || e == ENOSPC) r = -2;
        else r = -1;
    }
    /* the harness writes our id maps, then says go */
    int st = r;
    if (write(ctl, &st, sizeof st) != (ssize_t)sizeof st) _exit(1);
    if (r) goto report;
    if (read(ctl, &go, 1) != 1) _exit(1);
    if (go != 'g') { snprintf(K.why, sizeof K.why, "the id maps could not be written"); r = -1; goto report; }
    K.fd_ctl_net = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    fds[0] = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
    if (K.fd_ctl_net < 0 || fds[0] < 0) r = fail("open namespace");
    if (!r) r = keeper_build(third, hosts_file);
    if (!r) {
        fds[1] = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
        fds[2] = K.fd_ctl_net;
        if (fds[1] < 0) r = fail("open mount namespace");
    }
report:
    a->ok = r == 0 ? 1 : r;
    snprintf(a->text, sizeof K.why, "%s", r ? K.why : "");
    if (send_fds(ctl, a, sizeof *a + strlen(a->text) + 1, fds, r ? 0 : 3) != 0 || r) _exit(1);
    for (int i = 0; i < n; i++)
        if (send_fds(ctl, "h", 1, &K.fd_net[i], 1) != 0) _exit(1);
    free(a);
    keeper_serve();
}

/* ==== the harness side ==== */

#define BUILD_TIMEOUT 60  /* seconds: 253 hosts take about 1 s */
#define ANSWER_TIMEOUT 5  /* seconds: a request takes about 0.1 ms */

static void set_timeout(int fd, int seconds)
{
    struct timeval tv = { seconds, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int write_file(pid_t pid, const char *what, const char *text)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* Root maps every id to itself, so services may run as any user inside;
 * anyone else maps only their own ids (the kernel allows no more). */
static int write_maps(pid_t pid, char *err, size_t errlen)
{
    char m[64];
    if (geteuid() == 0) {
        if (write_file(pid, "uid_map", "0 0 4294967295\n") == 0 &&
            write_file(pid, "gid_map", "0 0 4294967295\n") == 0)
            return 0;
    } else {
        snprintf(m, sizeof m, "%u %u 1\n", (unsigned)geteuid(), (unsigned)geteuid());
        if (write_file(pid, "uid_map", m) == 0 && write_file(pid, "setgroups", "deny") == 0) {
            snprintf(m, sizeof m, "%u %u 1\n", (unsigned)getegid(), (unsigned)getegid());
            if (write_file(pid, "gid_map", m) == 0) return 0;
        }
    }
    snprintf(err, errlen, "cannot write the lab's id maps: %s", strerror(errno));
    return -1;
}

/* What blocks unprivileged user namespaces here, as a sentence. */
static void userns_hint(char *err, size_t errlen)
{
    static const struct { const char *file, *bad, *hint; } knobs[] = {
        { "/proc/sys/kernel/unprivileged_userns_clone", "0",
          "set the sysctl kernel.unprivileged_userns_clone=1" },
        { "/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
          "set the sysctl kernel.apparmor_restrict_unprivileged_userns=0 (or give mkharness an AppArmor "
          "profile that allows userns)" },
        { "/proc/sys/user/max_user_namespaces", "0", "set the sysctl user.max_user_namespaces above 0" },
    };
    for (size_t i = 0; i < sizeof knobs / sizeof *knobs; i++) {
        char v[32] = "";
        FILE *f = fopen(knobs[i].file, "re");
        if (!f) continue;
        if (fgets(v, sizeof v, f)) v[strcspn(v, "\n")] = '\0';
        fclose(f);
        if (!strcmp(v, knobs[i].bad)) {
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, "; unprivileged user namespaces are not allowed here: %s", knobs[i].hint);
            return;
        }
    }
    size_t l = strlen(err);
    snprintf(err + l, errlen - l, "; unprivileged user namespaces seem not allowed here (check the sysctls "
             "kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns, "
             "user.max_user_namespaces, or a seccomp filter of the container)");
}

void mkh_lab_close(mkh_lab *lab)
{
    if (!lab) return;
    pthread_mutex_lock(&live_mu);
    if (lab->slot >= 0 && live_labs[lab->slot] == lab) live_labs[lab->slot] = NULL;
    pthread_mutex_unlock(&live_mu);
    if (lab->ctl >= 0) close(lab->ctl);
    for (int i = 0; i < lab->npool; i++) close(lab->pool[i]);
    if (lab->fd_user >= 0) close(lab->fd_user);
    if (lab->fd_mnt >= 0) close(lab->fd_mnt);
    if (lab->fd_net >= 0) close(lab->fd_net);
    for (int i = 0; lab->fd_host && i < lab->nfd; i++) close(lab->fd_host[i]);
    if (lab->keeper > 0) {
        /* it leaves at end of file; bounded all the same */
        int st;
        for (int i = 0; i < 200 && waitpid(lab->keeper, &st, WNOHANG) == 0; i++) usleep(1000);
        if (waitpid(lab->keeper, &st, WNOHANG) == 0) {
            kill(lab->keeper, SIGKILL);
            while (waitpid(lab->keeper, &st, 0) < 0 && errno == EINTR) {}
        }
        mkh_guardian_forget(lab->keeper);
    }
    pthread_mutex_destroy(&lab->mu);
    free(lab->fd_host);
    free(lab->names);
    free(lab);
}

mkh_lab *mkh_lab_new(const char *const *names, int n, const char *hosts_file, char *err, size_t errlen)
{
    if (n < 1 || n > MKH_LAB_HOSTS_MAX) {
        snprintf(err, errlen, "a lab holds 1 to %d hosts", MKH_LAB_HOSTS_MAX);
        return NULL;
    }
    mkh_lab *lab = calloc(1, sizeof *lab);
    if (!lab) { snprintf(err, errlen, "out of memory"); return NULL; }
    lab->ctl = lab->fd_user = lab->fd_mnt = lab->fd_net = -1;
    lab->slot = -1;
    lab->nhosts = n;
    pthread_mutex_init(&lab->mu, NULL);
    lab->names = calloc((size_t)n, sizeof *lab->names);
    lab->fd_host = calloc((size_t)n, sizeof *lab->fd_host);
    if (!lab->names || !lab->fd_host) {
        snprintf(err, errlen, "out of memory");
        mkh_lab_close(lab);
        return NULL;
    }
    for (int i = 0; i < n; i++) snprintf(lab->names[i], sizeof lab->names[i], "%s", names[i]);
    pthread_mutex_lock(&live_mu);
    for (int i = 0; i < LAB_MAX && lab->slot < 0; i++)
        if (!live_labs[i]) lab->slot = i;
    if (lab->slot >= 0) live_labs[lab->slot] = lab;
    pthread_mutex_unlock(&live_mu);
    if (lab->slot < 0) {
        snprintf(err, errlen, "at most %d labs may be up at once", LAB_MAX);
        mkh_lab_close(lab);
        return NULL;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        mkh_lab_close(lab);
        return NULL;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        keeper_main(sv[1], parent, n, lab->slot + 1, hosts_file);
        _exit(1);
    }
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(sv[1]);
    lab->ctl = sv[0];
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(fork_errno));
        mkh_lab_close(lab);
        return NULL;
    }
    lab->keeper = pid;
    mkh_guardian_watch(pid, mkh_start_ticks(pid));
    /* every read below ends when the keeper dies (end of file), and after
     * a while even if it lives but does not answer (stopped by someone) */
    set_timeout(lab->ctl, BUILD_TIMEOUT);
    int st = -1;
    char go = 'g';
    if (read(lab->ctl, &st, sizeof st) != (ssize_t)sizeof st) st = -1;
    if (st == 0) {
        if (write_maps(pid, err, errlen) != 0) go = 'n';
        if (write(lab->ctl, &go, 1) != 1) go = 'n';
    }
    char buf[sizeof(struct reply) + 1024] = { 0 };
    struct reply *a = (struct reply *)buf;
    int fds[3], nfds = 3;
    ssize_t got = recv_fds(lab->ctl, buf, sizeof buf - 1, fds, &nfds);
    if (got < (ssize_t)sizeof *a || a->ok != 1 || nfds != 3) {
        if (go == 'g') {
            buf[got > 0 ? got : 0] = '\0';
            snprintf(err, errlen, "cannot build the lab: %s",
                     got >= (ssize_t)sizeof *a && a->text[0] ? a->text : "its keeper died");
            if (got >= (ssize_t)sizeof *a && a->ok == -2) userns_hint(err, errlen);
        }
        for (int i = 0; i < nfds; i++) close(fds[i]);
        mkh_lab_close(lab);
        return NULL;
    }
    lab->fd_user = fds[0];
    lab->fd_mnt = fds[1];
    lab->fd_net = fds[2];
    struct stat sb;
    if (fstat(lab->fd_user, &sb) == 0) lab->user_ino = (unsigned long)sb.st_ino;
    /* Root's capabilities reach into every user namespace below its own:
     * then a child enters a host's network and mounts without joining the
     * lab's user namespace, which a child sharing our memory (vfork) may
     * not do. Tried on this thread: a network namespace is per thread. */
    int here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (here >= 0 && setns(lab->fd_net, CLONE_NEWNET) == 0) {
        lab->direct = 1;
        if (setns(here, CLONE_NEWNET) != 0) {
            /* cannot happen with the rights just used; never stay inside */
            snprintf(err, errlen, "cannot return to our own network namespace: %s", strerror(errno));
            close(here);
            mkh_lab_close(lab);
            return NULL;
        }
    }
    if (here >= 0) close(here);
    for (int i = 0; i < n; i++) {
        int one = 1, fd = -1;
        char h = 0;
        if (recv_fds(lab->ctl, &h, 1, &fd, &one) != 1 || one != 1) {
            snprintf(err, errlen, "cannot build the lab: its keeper died");
            mkh_lab_close(lab);
            return NULL;
        }
        lab->fd_host[lab->nfd++] = fd;
    }
    set_timeout(lab->ctl, ANSWER_TIMEOUT);
    return lab;
}

int mkh_lab_hosts(const mkh_lab *lab) { return lab->nhosts; }
pid_t mkh_lab_keeper(const mkh_lab *lab) { return lab->keeper; }
unsigned long mkh_lab_user_ino(const mkh_lab *lab) { return lab->user_ino; }

uint32_t mkh_lab_addr(const mkh_lab *lab, int host)
{
    return 0xC6120000u | (uint32_t)(lab->slot + 1) << 8 | (uint32_t)(host + 2);
}

int mkh_lab_ns_fds(const mkh_lab *lab, int host, int fds[3])
{
    if (host < -1 || host >= lab->nfd) return -1;
    fds[0] = lab->direct ? -1 : lab->fd_user;
    fds[1] = host < 0 ? lab->fd_net : lab->fd_host[host];
    fds[2] = lab->fd_mnt;
    return 0;
}

/* One request, one reply (and maybe descriptors: up to *nfds). Called
 * with lab->mu held. */
static int ask_locked(mkh_lab *lab, struct request *q, size_t qlen, int *fds, int *nfds, char *err, size_t errlen)
{
    char buf[sizeof(struct reply) + 1025] = { 0 };
    struct reply *a = (struct reply *)buf;
    int want = nfds ? *nfds : 0;
    ssize_t n = -1;
    if (lab->ctl >= 0 && send_fds(lab->ctl, q, qlen, NULL, 0) == 0)
        n = recv_fds(lab->ctl, buf, sizeof buf - 1, fds, nfds ? nfds : &want);
    if (n < (ssize_t)sizeof *a) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && lab->ctl >= 0) {
            /* a late answer would be read as the next one's: the lab is done */
            snprintf(err, errlen, "the lab's keeper (pid %d) did not answer within %d s; the lab is closed",
                     (int)lab->keeper, ANSWER_TIMEOUT);
            close(lab->ctl);
            lab->ctl = -1;
        } else {
            snprintf(err, errlen, "the lab's keeper is gone");
        }
        return -1;
    }
    buf[n] = '\0';
    if (!a->ok) {
        for (int i = 0; nfds && i < *nfds; i++) close(fds[i]);
        snprintf(err, errlen, "%s", a->text);
        return -1;
    }
    return 0;
}

static int ask(mkh_lab *lab, struct request *q, size_t qlen, char *err, size_t errlen)
{
    pthread_mutex_lock(&lab->mu);
    int r = ask_locked(lab, q, qlen, NULL, NULL, err, errlen);
    pthread_mutex_unlock(&lab->mu);
    return r;
}

int mkh_lab_filter(mkh_lab *lab, int n, const int *hosts, const char *const *scripts, char *err, size_t errlen)
{
    size_t l = 1;
    for (int i = 0; i < n; i++) l += strlen(scripts[i]) + 16;
    if (l + sizeof(struct request) > WIRE_MAX) {
        snprintf(err, errlen, "rule set too long");
        return -1;
    }
    struct request *q = calloc(1, sizeof *q + l);
    if (!q) { snprintf(err, errlen, "out of memory"); return -1; }
    q->op = OP_FILTER;
    q->host = -1;
    size_t used = 0;
    for (int i = 0; i < n; i++)
        used += (size_t)snprintf(q->text + used, l - used, "%d\x1f%s\x1e", hosts[i], scripts[i]);
    int r = ask(lab, q, sizeof *q + used + 1, err, errlen);
    free(q);
    return r;
}

int mkh_lab_netem(mkh_lab *lab, int host, double delay_ms, double jitter_ms, double loss_pct,
                  char *err, size_t errlen)
{
    struct request q;
    memset(&q, 0, sizeof q);
    q.op = OP_NETEM;
    q.host = host;
    q.delay_ms = delay_ms;
    q.jitter_ms = jitter_ms;
    q.loss_pct = loss_pct;
    return ask(lab, &q, sizeof q, err, errlen);
}

/* The lab whose network holds this IPv4 address (network byte order). */
static mkh_lab *lab_of(uint32_t addr_be)
{
    uint32_t a = ntohl(addr_be);
    if ((a & 0xFFFF0000u) != 0xC6120000u) return NULL;
    int slot = (int)((a >> 8) & 0xFF) - 1;
    if (slot < 0 || slot >= LAB_MAX) return NULL;
    return live_labs[slot];
}

int mkh_socket(int family, int type, int proto, const struct sockaddr *dst)
{
    if (family == AF_INET && dst && dst->sa_family == AF_INET) {
        /* held across the request: the proxy's thread asks while the Lua
         * thread may close the lab */
        pthread_mutex_lock(&live_mu);
        mkh_lab *lab = lab_of(((const struct sockaddr_in *)dst)->sin_addr.s_addr);
        int fd = -1;
        if (lab) {
            /* plain TCP sockets come from a pool the keeper fills
             * FDS_MAX at a time: a probe polling a lab host pays the
             * round trip once in FDS_MAX attempts */
            int base = type & ~(SOCK_CLOEXEC | SOCK_NONBLOCK);
            int pooled = base == SOCK_STREAM && (proto == 0 || proto == IPPROTO_TCP);
            struct request q;
            memset(&q, 0, sizeof q);
            q.op = OP_SOCKET;
            q.host = -1;
            q.family = family;
            q.type = pooled ? SOCK_STREAM : type & ~SOCK_CLOEXEC; /* SOCK_NONBLOCK travels with the socket */
            q.proto = pooled ? 0 : proto;
            q.count = pooled ? FDS_MAX : 1;
            char err[256];
            pthread_mutex_lock(&lab->mu);
            if (pooled && lab->npool == 0) {
                int got = FDS_MAX;
                if (ask_locked(lab, &q, sizeof q, lab->pool, &got, err, sizeof err) == 0) lab->npool = got;
            }
            if (pooled && lab->npool > 0) {
                fd = lab->pool[--lab->npool];
                if ((type & SOCK_NONBLOCK) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
                    close(fd);
                    fd = -1;
                }
            } else if (!pooled) {
                int one = 1;
                if (ask_locked(lab, &q, sizeof q, &fd, &one, err, sizeof err) != 0 || one != 1) fd = -1;
            }
            pthread_mutex_unlock(&lab->mu);
            if (fd < 0) errno = EHOSTUNREACH;
        }
        pthread_mutex_unlock(&live_mu);
        if (lab) return fd;
    }
    return socket(family, type | SOCK_CLOEXEC, proto);
}

int mkh_lab_lookup(const char *name, uint32_t *addr_be)
{
    int found = 0;
    pthread_mutex_lock(&live_mu);
    for (int s = 0; s < LAB_MAX && !found; s++) {
        mkh_lab *lab = live_labs[s];
        for (int i = 0; lab && i < lab->nhosts && !found; i++)
            if (!strcmp(lab->names[i], name)) {
                *addr_be = htonl(mkh_lab_addr(lab, i));
                found = 1;
            }
    }
    pthread_mutex_unlock(&live_mu);
    return found ? 0 : -1;
}
