/* server/cli_engine.c — see cli_engine.h. */
#include "server/cli_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu/backend_cpu.h"

int cli_engine_open(cli_engine *e, const char *dir, int n_threads, int kv_tokens) {
    ms_err err = {{0}};
    e->be = backend_cpu_create(n_threads, &err);
    if (!e->be) goto fail;
    e->m = model_load(dir, e->be, &err);
    if (!e->m) goto fail;
    if (model_kv_init(e->m, &e->kv, kv_tokens, &err) != 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "mlaserve: %s\n", err.msg);
    model_free(e->m);
    backend_cpu_free(e->be);
    e->m = NULL;
    e->be = NULL;
    return -1;
}

void cli_engine_close(cli_engine *e) {
    kv_cache_free(&e->kv);
    model_free(e->m);
    backend_cpu_free(e->be);
}

int cli_engine_step(cli_engine *e, kv_seq *seq, const int32_t *ids, int n, int pos0, int all_rows, float *logits) {
    int32_t *pos = malloc((size_t)n * sizeof *pos), *sq = calloc((size_t)n, sizeof *sq);
    int32_t *rows = malloc((size_t)n * sizeof *rows);
    if (!pos || !sq || !rows) {
        free(pos); free(sq); free(rows);
        fprintf(stderr, "mlaserve: out of memory\n");
        return -1;
    }
    for (int i = 0; i < n; i++) pos[i] = pos0 + i, rows[i] = i;
    kv_seq *seqs[1] = {seq};
    model_batch b = {n, ids, pos, sq, seqs, 1, all_rows ? rows : rows + n - 1, all_rows ? n : 1};
    ms_err err = {{0}};
    int rc = model_forward(e->m, &e->kv, &b, logits, &err);
    if (rc != 0) fprintf(stderr, "mlaserve: %s\n", err.msg);
    free(pos);
    free(sq);
    free(rows);
    return rc;
}

int cli_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_parse_float(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

int32_t cli_argmax(const float *v, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}
