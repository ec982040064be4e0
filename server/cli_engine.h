/* server/cli_engine.h — what the model-running subcommands (logits, generate)
 * share: argument helpers and opening a model with a CPU backend and a KV cache.
 * Owned by the calling command; single-threaded. */
#ifndef MS_CLI_ENGINE_H
#define MS_CLI_ENGINE_H

#include <stdint.h>

#include "engine/model.h"

typedef struct cli_engine {
    backend *be;
    model *m;
    kv_cache kv;
} cli_engine;

/* Loads dir with n_threads (<= 0: all CPUs) and a KV cache of kv_tokens tokens.
 * On failure prints the loader's message to stderr and returns -1. */
int cli_engine_open(cli_engine *e, const char *dir, int n_threads, int kv_tokens);
void cli_engine_close(cli_engine *e);

/* Runs tokens at positions pos0.. of seq; writes the last token's logits to
 * logits (vocab floats), or every token's when all_rows (n * vocab floats). */
int cli_engine_step(cli_engine *e, kv_seq *seq, const int32_t *ids, int n, int pos0, int all_rows, float *logits);

/* Strict number parsing for option values; return -1 if s is not entirely a number in range. */
int cli_parse_int(const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *s, double lo, double hi, double *out);

int32_t cli_argmax(const float *v, int n);

#endif
