/* engine/sched_text.h — the text side of one generation: incremental
 * detokenization plus stop strings. Text that might be the beginning of a stop
 * string is held back until the next tokens show it is not; everything after
 * a matched stop string is never emitted, nor is the stop string itself unless
 * include_stop. Before min_tokens tokens no stop string is looked for (vLLM's
 * min_tokens): that text goes out as it comes and never takes part in a later
 * match. Emitted pieces are always whole UTF-8 characters. One per sequence;
 * engine thread only. */
#ifndef MS_SCHED_TEXT_H
#define MS_SCHED_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/tokenizer.h"

typedef struct sched_text_opts {
    int skip_special;       /* detokenize without special tokens */
    const char *const *stop;
    int n_stop;
    int include_stop;       /* a matched stop string ends the text instead of being cut */
    int min_tokens;         /* tokens before stop strings are looked for */
} sched_text_opts;

typedef struct sched_text {
    detok d;
    char **stop;            /* copies of the stop strings */
    int n_stop;
    int include_stop, min_tokens;
    int n_pushed;           /* tokens fed so far */
    char *pending;          /* decoded, not yet emitted */
    size_t pending_len, pending_cap;
    int stopped;
} sched_text;

int sched_text_init(sched_text *t, const tokenizer *tok, const sched_text_opts *o, ms_err *err);
void sched_text_free(sched_text *t);

/* Feeds one generated token. Returns the malloc'd text that can be emitted now
 * (possibly ""), and sets *stopped when a stop string matched (the returned text
 * then ends right before it, or with it when include_stop). NULL when out of
 * memory. */
char *sched_text_push(sched_text *t, int32_t token, size_t *len, int *stopped);

/* End of generation (not by a stop string): everything still held back. */
char *sched_text_flush(sched_text *t, size_t *len);

#endif
