/* engine/sched_text.h — the text side of one generation: incremental
 * detokenization plus stop strings. Text that might be the beginning of a stop
 * string is held back until the next tokens show it is not; a matched stop
 * string and everything after it is never emitted. Emitted pieces are always
 * whole UTF-8 characters. One per sequence; engine thread only. */
#ifndef MS_SCHED_TEXT_H
#define MS_SCHED_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/tokenizer.h"

typedef struct sched_text {
    detok d;
    char **stop;            /* copies of the stop strings */
    int n_stop;
    char *pending;          /* decoded, not yet emitted */
    size_t pending_len, pending_cap;
    int stopped;
} sched_text;

int sched_text_init(sched_text *t, const tokenizer *tok, int skip_special, const char *const *stop, int n_stop,
                    ms_err *err);
void sched_text_free(sched_text *t);

/* Feeds one generated token. Returns the malloc'd text that can be emitted now
 * (possibly ""), and sets *stopped when a stop string matched (the returned text
 * then ends right before it). NULL when out of memory. */
char *sched_text_push(sched_text *t, int32_t token, size_t *len, int *stopped);

/* End of generation (not by a stop string): everything still held back. */
char *sched_text_flush(sched_text *t, size_t *len);

#endif
