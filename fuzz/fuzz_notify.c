/* libFuzzer: sd_notify datagrams sent by services to NOTIFY_SOCKET. */
#define _GNU_SOURCE
#include "mkh.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);
    memcpy(s, data, size);
    mkh_notify n;
    memset(&n, 0, sizeof n);
    int k = mkh_parse_notify(s, size, &n);
    if (k < 0 || !memchr(n.status, '\0', sizeof n.status)) abort();
    if (n.ready != 0 && n.ready != 1) abort();
    free(s);
    return 0;
}
