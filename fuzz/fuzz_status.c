/* libFuzzer: HTTP status specs given as text ("200", "2xx"). */
#define _GNU_SOURCE
#include "mkh.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);
    memcpy(s, data, size);
    int v = -1;
    int kind = mkh_parse_status(s, size, &v);
    if (kind == MKH_STATUS_CODE && (v < 100 || v > 599)) abort();
    if (kind == MKH_STATUS_CLASS && (v < 1 || v > 5)) abort();
    free(s);
    return 0;
}
