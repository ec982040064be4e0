/* common/rbuf.h — a growable byte buffer, always NUL-terminated once anything
 * was appended (so text can be used as a C string; len counts the bytes, which
 * may include NULs). A zero-initialised rbuf is empty. Used by the streaming
 * output parsers (server/reasoning.c, server/toolcall.c, server/chat_output.c).
 * Not shared between threads. */
#ifndef MS_RBUF_H
#define MS_RBUF_H

#include <stddef.h>

typedef struct rbuf {
    char *p;
    size_t len, cap;
} rbuf;

/* Appends n bytes (n may be 0: still allocates and terminates). 0, or -1 when out of memory. */
int rbuf_append(rbuf *b, const char *s, size_t n);
/* Replaces the content. 0, or -1 when out of memory. */
int rbuf_set(rbuf *b, const char *s, size_t n);
void rbuf_clear(rbuf *b); /* len = 0, memory kept */
void rbuf_free(rbuf *b);

#endif
