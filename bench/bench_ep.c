/* bench/bench_ep.c — expert-parallel MoE exchange on CPU ranks (engine/ep.h over
 * cpu/comm_cpu.h) at bench-7b's MoE shapes: hidden 2048, 64 routed experts of
 * intermediate 1408 in FP8 e4m3 with 128x128 block scales, top-6. Each rank has
 * `--tokens` tokens (default 64) routed uniformly at random; one call of ep_moe
 * per layer. Prints, per MoE layer, the dispatch and combine time (including
 * the wait for the slowest rank at each exchange) beside the expert compute
 * time, the bytes exchanged per token, and the machine's memcpy bandwidth as
 * the ceiling for an in-process exchange. Each rank's dispatch/combine time
 * includes waiting at the exchange for the slowest rank; the summary line takes
 * the fastest rank's (the least waiting) as the exchange cost. Combine includes
 * adding the weighted expert rows into the layer output.
 * Usage: bench_ep [--ranks W] [--tokens T] [--threads N] [--layers L] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/backend_cpu.h"
#include "cpu/comm_cpu.h"
#include "engine/ep.h"

enum { D = 2048, I = 1408, E = 64, K = 6 };

typedef struct {
    weight gate[E], up[E], down[E];
} experts;

typedef struct {
    comm *c;
    backend *be;
    const experts *x;
    int tokens, layers;
    ep_timing t;
    uint64_t dispatch_bytes, combine_bytes;
    int rc;
    char msg[1024];
} rank_arg;

typedef struct {
    backend *be;
    const experts *x;
    float *g, *u;
} expert_ctx;

static uint32_t next_u32(uint64_t *rng) {
    *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*rng >> 33);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *alloc_or_die(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_ep: cannot allocate %zu MiB\n", bytes >> 20);
        exit(1);
    }
    return p;
}

/* An FP8 weight [rows, cols] of random finite e4m3 values with scale 1/64. */
static weight fp8_weight(uint64_t *rng, int rows, int cols) {
    size_t n = (size_t)rows * cols, ns = (size_t)((rows + 127) / 128) * ((cols + 127) / 128);
    uint8_t *d = alloc_or_die(n);
    float *s = alloc_or_die(ns * sizeof *s);
    for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(next_u32(rng) & 0xF7); /* never 0x7F/0xFF (NaN) */
    for (size_t i = 0; i < ns; i++) s[i] = 1.0f / 64;
    return (weight){DTYPE_F8_E4M3, rows, cols, d, s, 0};
}

static void free_weight(weight *w) {
    free((void *)w->data);
    free((void *)w->scale);
}

/* ep_expert_fn: y = down(silu(gate x) * up x), as engine/model.c's mlp. */
static void run_expert(void *p, int e, const float *x, float *y, int m) {
    expert_ctx *c = p;
    const backend_ops *op = c->be->ops;
    op->linear(c->be, &c->x->gate[e], x, c->g, m);
    op->linear(c->be, &c->x->up[e], x, c->u, m);
    op->silu_mul(c->be, c->g, c->u, c->g, (int64_t)m * I);
    op->linear(c->be, &c->x->down[e], c->g, y, m);
}

static void route(uint64_t *rng, int n, int32_t *idx, float *w) {
    for (int t = 0; t < n; t++)
        for (int k = 0; k < K; k++) {
            int e, dup;
            do {
                e = (int)(next_u32(rng) % E);
                dup = 0;
                for (int q = 0; q < k; q++) dup |= idx[t * K + q] == e;
            } while (dup);
            idx[t * K + k] = e;
            w[t * K + k] = 1.0f / K;
        }
}

/* Bytes this rank's tokens put on the wire (to other ranks) for one layer. */
static void count_bytes(rank_arg *a, const int32_t *idx) {
    int W = a->c->size;
    for (int t = 0; t < a->tokens; t++)
        for (int p = 0; p < W; p++) {
            if (p == a->c->rank) continue;
            int slots = 0;
            for (int k = 0; k < K; k++) slots += ep_default_owner(idx[t * K + k], E, W) == p;
            if (slots) a->dispatch_bytes += (uint64_t)(K + D) * 4;
            a->combine_bytes += (uint64_t)slots * D * 4;
        }
}

static void *rank_main(void *p) {
    rank_arg *a = p;
    ms_err err = {{0}};
    int n = a->tokens, max_rows = n * a->c->size;
    float *x = alloc_or_die((size_t)n * D * sizeof *x), *out = alloc_or_die((size_t)n * D * sizeof *out);
    float *w = alloc_or_die((size_t)n * K * sizeof *w);
    int32_t *idx = alloc_or_die((size_t)n * K * sizeof *idx);
    expert_ctx ec = {a->be, a->x, alloc_or_die((size_t)max_rows * I * 4), alloc_or_die((size_t)max_rows * I * 4)};
    for (size_t i = 0; i < (size_t)n * D; i++) x[i] = (float)(i % 97) * 1e-2f - 0.5f;
    ep *e = ep_create(a->c, E, NULL, &err);
    a->rc = e ? 0 : -1;
    uint64_t rng = 1000 + (uint64_t)a->c->rank;
    ep_timing warm = {0};
    for (int l = 0; l < a->layers + 1 && a->rc == 0; l++) { /* layer 0 warms up the buffers, untimed */
        route(&rng, n, idx, w);
        memset(out, 0, (size_t)n * D * sizeof *out);
        if (l == 1) warm = ep_get_timing(e);
        if (l >= 1) count_bytes(a, idx);
        a->rc = ep_step_begin(e, n, &err);
        if (a->rc == 0) a->rc = ep_moe(e, a->be, n, D, K, x, idx, w, out, run_expert, &ec, NULL, &err);
    }
    if (e) {
        a->t = ep_get_timing(e);
        a->t.dispatch_s -= warm.dispatch_s;
        a->t.combine_s -= warm.combine_s;
        a->t.expert_s -= warm.expert_s;
        a->t.calls -= warm.calls;
    }
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    ep_free(e, a->be);
    free(x); free(out); free(w); free(idx); free(ec.g); free(ec.u);
    return NULL;
}

static double memcpy_gbs(void) {
    size_t bytes = (size_t)256 << 20;
    char *a = alloc_or_die(bytes), *b = alloc_or_die(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 0;
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        memcpy(b, a, bytes);
        double gbs = (double)bytes / (now_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(a);
    free(b);
    return best;
}

int main(int argc, char **argv) {
    int W = 2, tokens = 64, threads = 2, layers = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--ranks")) W = v;
        else if (!strcmp(argv[i], "--tokens")) tokens = v;
        else if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--layers")) layers = v;
        else { fprintf(stderr, "usage: bench_ep [--ranks W] [--tokens T] [--threads N] [--layers L]\n"); return 2; }
    }
    if (W < 1 || W > 64 || tokens < 1 || layers < 1 || threads < 1) { fprintf(stderr, "bench_ep: bad arguments\n"); return 2; }
    experts *x = alloc_or_die(sizeof *x);
    uint64_t rng = 42;
    for (int e = 0; e < E; e++)
        x->gate[e] = fp8_weight(&rng, I, D), x->up[e] = fp8_weight(&rng, I, D), x->down[e] = fp8_weight(&rng, D, I);
    comm_cpu_world *world = comm_cpu_world_create(W, NULL);
    rank_arg *a = calloc((size_t)W, sizeof *a);
    pthread_t *th = calloc((size_t)W, sizeof *th);
    int per = threads / W > 0 ? threads / W : 1;
    for (int r = 0; r < W; r++) {
        a[r] = (rank_arg){.c = comm_cpu_world_rank(world, r), .be = backend_cpu_create(per, NULL), .x = x,
                          .tokens = tokens, .layers = layers};
        pthread_create(&th[r], NULL, rank_main, &a[r]);
    }
    for (int r = 0; r < W; r++) pthread_join(th[r], NULL);
    double gbs = memcpy_gbs();
    printf("bench-7b MoE layer (hidden %d, %d experts x [%d, %d] FP8, top-%d), %d CPU ranks x %d threads, %d tokens/rank, %d layers\n",
           D, E, I, D, K, W, per, tokens, layers);
    printf("%-5s %12s %12s %12s %10s %14s %14s\n", "rank", "dispatch ms", "combine ms", "experts ms", "xchg/exp",
           "disp B/token", "comb B/token");
    int bad = 0;
    for (int r = 0; r < W; r++) {
        if (a[r].rc != 0) { printf("rank %d failed: %s\n", r, a[r].msg); bad = 1; continue; }
        double c = (double)a[r].t.calls, dms = a[r].t.dispatch_s / c * 1e3, cms = a[r].t.combine_s / c * 1e3;
        double ems = a[r].t.expert_s / c * 1e3, toks = (double)tokens * layers;
        printf("%-5d %12.3f %12.3f %12.3f %9.1f%% %14.0f %14.0f\n", r, dms, cms, ems, 100 * (dms + cms) / ems,
               (double)a[r].dispatch_bytes / toks, (double)a[r].combine_bytes / toks);
        backend_cpu_free(a[r].be);
    }
    double dmin = 1e30, cmin = 1e30, emax = 0;
    for (int r = 0; r < W; r++) {
        if (a[r].rc != 0 || !a[r].t.calls) continue;
        double c = (double)a[r].t.calls;
        if (a[r].t.dispatch_s / c < dmin) dmin = a[r].t.dispatch_s / c;
        if (a[r].t.combine_s / c < cmin) cmin = a[r].t.combine_s / c;
        if (a[r].t.expert_s / c > emax) emax = a[r].t.expert_s / c;
    }
    if (!bad)
        printf("per layer: exchange %.3f ms (dispatch + combine, fastest rank: least waiting for the slowest) vs "
               "experts %.3f ms (slowest rank) = %.1f%%\n", (dmin + cmin) * 1e3, emax * 1e3, 100 * (dmin + cmin) / emax);
    printf("ceiling: memcpy %.1f GB/s on this machine (an in-process exchange is a copy; NCCL over NVLink/IB is the GPU path)\n",
           gbs);
    for (int e = 0; e < E; e++) free_weight(&x->gate[e]), free_weight(&x->up[e]), free_weight(&x->down[e]);
    free(x);
    free(a);
    free(th);
    comm_cpu_world_free(world);
    return bad;
}
