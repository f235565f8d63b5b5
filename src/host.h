/* The host program (host.c, supervisor.c): not part of the engine. */
#ifndef MKH_HOST_H
#define MKH_HOST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The host ends the run at --timeout itself; should it be stuck where no
 * signal reaches Lua (inside os.execute, a C library), the supervisor kills
 * it MKH_HARD_GRACE seconds later, cleans up, and still exits 124. */
#define MKH_HARD_GRACE 5.0

/* Fork the host under a supervisor (unless MKHARNESS_SUPERVISOR=0).
 * Returns in the host process: the supervisor's pid, or 0 when there is
 * none. The supervisor itself never returns. */
pid_t host_supervise(double timeout);

/* Lua modules compiled to bytecode at build time (embed_lua.c): parsing
 * the sources was a large part of a short run's time. A chunk is used
 * only while its source file, found as require would find it, still has
 * the same length and hash; otherwise the source is read as usual. */
typedef struct {
    const char *module;               /* NULL ends the table */
    uint64_t src_hash;                /* host_fnv1a of the source */
    size_t src_len;
    const unsigned char *bc;          /* lua_dump output, chunk name "@?" */
    size_t bc_len;
    size_t name_at;                   /* offset of the name's size byte */
} host_chunk;
extern const host_chunk host_chunks[];

static inline uint64_t host_fnv1a(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#endif
