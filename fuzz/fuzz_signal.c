/* libFuzzer: signal names and numbers ("TERM", "sigterm", "RTMIN+2", "15"). */
#define _GNU_SOURCE
#include "mkh.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    int sig = mkh_signum(s);
    if (sig != -1 && (sig < 1 || sig >= NSIG)) abort();
    if (sig > 0) {
        /* a name we print must read back as the same signal */
        const char *name = mkh_signame(sig);
        if (name && mkh_signum(name) != sig) abort();
    }
    free(s);
    return 0;
}
