/* common/rbuf.c — see rbuf.h. */
#include "common/rbuf.h"

#include <stdlib.h>
#include <string.h>

int rbuf_append(rbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return -1;
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int rbuf_set(rbuf *b, const char *s, size_t n) {
    b->len = 0;
    return rbuf_append(b, s, n);
}

void rbuf_clear(rbuf *b) {
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

void rbuf_free(rbuf *b) {
    free(b->p);
    *b = (rbuf){0};
}
