/* server/cli_engine.c — see cli_engine.h. */
#include "server/cli_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu/backend_cpu.h"

/* The step agreement of ep_launch.h: rank 0 brings its tokens (step) or stop;
 * 1 the world steps, 0 it stops, -1 it has failed. */
static int agree(comm *c, int step) {
    ms_err err = {{0}};
    float v[2] = {step ? 1.0f : 0.0f, step ? 0.0f : 1.0f};
    if (c->ops->all_reduce_sum(c, v, 2, &err) != 0) return -1;
    return v[1] > 0.0f ? 0 : 1;
}

/* Local ranks 1..N-1 (workers on other nodes run the same loop). */
static void *follower_main(void *arg) {
    ms_err err = {{0}};
    ep_follow(arg, &err); /* a failure reaches rank 0 through the world */
    return NULL;
}

static int start_followers(cli_engine *e, ms_err *err) {
    e->followers = calloc((size_t)e->ranks.n_ranks - 1, sizeof *e->followers);
    if (!e->followers) return ms_err_set(err, "out of memory");
    for (int r = 1; r < e->ranks.n_ranks; r++) {
        if (pthread_create(&e->followers[r - 1], NULL, follower_main, e->ranks.m[r]) != 0) {
            ep_abort(e->m->ep, "cannot start a rank thread"); /* releases the ones already started */
            return ms_err_set(err, "cannot start the thread of rank %d", r);
        }
        e->n_followers++;
    }
    return 0;
}

int cli_engine_open(cli_engine *e, const char *dir, int kv_tokens, const ep_launch_opts *o) {
    ms_err err = {{0}};
    *e = (cli_engine){0};
    if (ep_launch_open(&e->ranks, dir, o, &err) != 0) goto fail;
    e->be = e->ranks.be[0];
    e->m = e->ranks.m[0];
    if (model_kv_init(e->m, &e->kv, kv_tokens, &err) != 0) goto fail;
    if (e->ranks.n_ranks > 1 && start_followers(e, &err) != 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "mlaserve: %s\n", err.msg);
    cli_engine_close(e);
    e->m = NULL;
    e->be = NULL;
    return -1;
}

void cli_engine_close(cli_engine *e) {
    if (e->m && e->m->ep) { /* stop the world, or fail it if its local ranks never all started */
        if (e->n_followers == e->ranks.n_ranks - 1) agree(ep_comm(e->m->ep), 0);
        else ep_abort(e->m->ep, "rank 0 could not start");
    }
    for (int i = 0; i < e->n_followers; i++) pthread_join(e->followers[i], NULL);
    free(e->followers);
    kv_cache_free(&e->kv);
    ep_launch_close(&e->ranks);
    *e = (cli_engine){0};
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
    int rc = 0;
    if (e->m->ep && agree(ep_comm(e->m->ep), 1) != 1)
        rc = ms_err_set(&err, "expert-parallel ranks are not running");
    if (rc == 0) rc = model_forward(e->m, &e->kv, &b, logits, &err);
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
