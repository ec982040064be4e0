/* common/err.h — error messages that travel up to the caller.
 *
 * Functions that can fail take an `ms_err *` (may be NULL) and return -1 / NULL
 * after filling it with a message that names the file, tensor or parameter at
 * fault. The caller decides whether to print it. No global state; thread-safe. */
#ifndef MS_ERR_H
#define MS_ERR_H

#include <stddef.h>

typedef struct ms_err {
    char msg[1024];
} ms_err;

/* Formats a message into err (if not NULL). Always returns -1 so callers can
 * write `return ms_err_set(err, "...")`. */
int ms_err_set(ms_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (for adding context on the way up). */
int ms_err_prefix(ms_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
