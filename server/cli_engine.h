/* server/cli_engine.h — what the model-running subcommands (logits, generate)
 * share: argument helpers and opening a model with a CPU backend and a KV cache.
 * Owned by the calling command; single-threaded from the caller's side.
 *
 * With --ep N > 1 the model runs expert-parallel over N CPU ranks
 * (server/ep_launch.h): the caller's sequence lives on rank 0; ranks 1..N-1 are
 * threads that join every step with no tokens of their own and run their share
 * of the routed experts, so results can be compared across rank counts. With
 * --nnodes this process is node 0 and the other nodes' ranks follow the same
 * way (server/ep_launch.h); the caller sends node_rank >= 1 to ep_launch_worker. */
#ifndef MS_CLI_ENGINE_H
#define MS_CLI_ENGINE_H

#include <stdint.h>

#include <pthread.h>

#include "engine/model.h"
#include "server/ep_launch.h"

typedef struct cli_engine {
    backend *be;             /* rank 0's */
    model *m;
    kv_cache kv;
    ep_launch ranks;
    pthread_t *followers;    /* ranks 1..N-1 */
    int n_followers;
} cli_engine;

/* Loads dir as o says (device, threads, ranks, placement) with a KV cache of
 * kv_tokens tokens. On failure prints the loader's message to stderr and returns -1. */
int cli_engine_open(cli_engine *e, const char *dir, int kv_tokens, const ep_launch_opts *o);
void cli_engine_close(cli_engine *e);

/* Runs tokens at positions pos0.. of seq; writes the last token's logits to
 * logits (vocab floats), or every token's when all_rows (n * vocab floats). */
int cli_engine_step(cli_engine *e, kv_seq *seq, const int32_t *ids, int n, int pos0, int all_rows, float *logits);

/* Strict number parsing for option values; return -1 if s is not entirely a number in range. */
int cli_parse_int(const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *s, double lo, double hi, double *out);

int32_t cli_argmax(const float *v, int n);

#endif
