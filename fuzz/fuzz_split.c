/* libFuzzer: the cmd word splitter (untrusted scenario text). */
#define _GNU_SOURCE
#include "mkh.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out = malloc(size + 1);
    char err[256];
    int n = mkh_split_words((const char *)data, size, out, err, sizeof err);
    if (n >= 0) {
        /* words are NUL-terminated inside the output, which never outgrows the input */
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            size_t l = strnlen(out + off, size + 1 - off);
            if (off + l >= size + 1) abort();
            off += l + 1;
        }
    } else if (!memchr(err, '\0', sizeof err)) {
        abort();
    }
    free(out);
    return 0;
}
