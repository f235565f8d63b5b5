/* The host program (host.c, supervisor.c): not part of the engine. */
#ifndef MKH_HOST_H
#define MKH_HOST_H

#include <sys/types.h>

/* The host ends the run at --timeout itself; should it be stuck where no
 * signal reaches Lua (inside os.execute, a C library), the supervisor kills
 * it MKH_HARD_GRACE seconds later, cleans up, and still exits 124. */
#define MKH_HARD_GRACE 5.0

/* Fork the host under a supervisor (unless MKHARNESS_SUPERVISOR=0).
 * Returns in the host process: the supervisor's pid, or 0 when there is
 * none. The supervisor itself never returns. */
pid_t host_supervise(double timeout);

#endif
