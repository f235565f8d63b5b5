/* libFuzzer: URL parsing (http probe, http_request). */
#define _GNU_SOURCE
#include "mkh.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy so reads past the end are caught by ASan */
    char *s = malloc(size ? size : 1);
    memcpy(s, data, size);
    mkh_url u;
    char err[256];
    if (mkh_parse_url(s, size, &u, err, sizeof err) == 0) {
        if (u.port < 1 || u.port > 65535) abort();
        if (u.host < s || u.host + u.host_len > s + size || u.host_len == 0) abort();
        if (u.path < s || u.path + u.path_len > s + size) abort();
        for (size_t i = 0; i < u.host_len; i++)
            if ((unsigned char)u.host[i] <= ' ') abort();
    }
    free(s);
    return 0;
}
