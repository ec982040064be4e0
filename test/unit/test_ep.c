/* test/unit/test_ep.c — engine/ep.c over CPU-thread ranks (cpu/comm_cpu.h):
 * random hidden rows, random top-k routing and weights, a synthetic
 * row-independent "expert", 1..4 ranks with uneven token counts (some ranks
 * with none) and contiguous or scattered placement. Reference: the same
 * experts applied per token on one thread, added with the backend's axpy in
 * ascending expert order — ep_moe must match it bitwise, and the per-expert
 * row counts must add up. Also: a rank that aborts releases the others. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/backend_cpu.h"
#include "cpu/comm_cpu.h"
#include "engine/ep.h"

enum { D = 24, K = 3, E = 8, MAXW = 4, MAXN = 40 };

typedef struct {
    int n;
    float x[MAXN * D], w[MAXN * K], out[MAXN * D];
    int32_t idx[MAXN * K];
} rank_data;

typedef struct {
    comm *c;
    backend *be;
    const int32_t *owner;
    rank_data *d;
    uint64_t counts[E];
    int rc, abort_first;
    char msg[1024];
} rank_arg;

static uint64_t rng = 1;
static uint32_t next_u32(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 33);
}
static float uniform(void) { return (float)next_u32() / 4294967296.0f * 2.0f - 1.0f; }

/* y = expert e (x): a row-independent map that differs per expert. */
static void fake_expert(void *ctx, int e, const float *x, float *y, int m) {
    (void)ctx;
    for (int i = 0; i < m; i++) {
        float s = 0.0f;
        for (int d = 0; d < D; d++) s += x[i * D + d];
        for (int d = 0; d < D; d++) y[i * D + d] = x[i * D + (d + e) % D] * (float)(e + 1) * 0.25f + s * 0.01f;
    }
}

static void fill(rank_data *d, int n) {
    d->n = n;
    for (int t = 0; t < n; t++) {
        for (int j = 0; j < D; j++) d->x[t * D + j] = uniform(), d->out[t * D + j] = uniform();
        for (int k = 0; k < K; k++) {
            int e, dup;
            do { /* distinct experts per token, as top-k gives */
                e = (int)(next_u32() % E);
                dup = 0;
                for (int q = 0; q < k; q++) dup |= d->idx[t * K + q] == e;
            } while (dup);
            d->idx[t * K + k] = e;
            d->w[t * K + k] = uniform();
        }
    }
}

/* The single-rank result: out += Σ w · expert(x) in ascending expert order. */
static void reference(backend *be, const rank_data *d, float *out, uint64_t *counts) {
    memcpy(out, d->out, sizeof d->out);
    for (int t = 0; t < d->n; t++)
        for (int e = 0; e < E; e++)
            for (int k = 0; k < K; k++) {
                if (d->idx[t * K + k] != e) continue;
                float y[D];
                fake_expert(NULL, e, d->x + t * D, y, 1);
                be->ops->axpy(be, d->w[t * K + k], y, out + t * D, D);
                counts[e]++;
            }
}

static void *rank_main(void *p) {
    rank_arg *a = p;
    ms_err err = {{0}};
    ep *e = ep_create(a->c, E, a->owner, &err);
    a->rc = e ? 0 : -1;
    for (int layer = 0; layer < 3 && a->rc == 0; layer++) { /* repeated layers reuse the buffers */
        if (a->abort_first && layer == 1) {
            ep_abort(e, "test abort");
            a->rc = -1;
            break;
        }
        a->rc = ep_step_begin(e, a->d->n, &err);
        if (a->rc == 0)
            a->rc = ep_moe(e, a->be, a->d->n, D, K, a->d->x, a->d->idx, a->d->w, a->d->out, fake_expert, NULL,
                           a->counts, &err);
    }
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    ep_free(e, a->be);
    return NULL;
}

/* Runs 3 layers on W ranks (token counts n[r]); checks bitwise vs the reference. */
static void run_world(int W, const int *n, const int32_t *owner) {
    static rank_data data[MAXW];
    comm_cpu_world *world = comm_cpu_world_create(W, NULL);
    rank_arg args[MAXW];
    pthread_t th[MAXW];
    uint64_t want_counts[E] = {0};
    static float want[MAXW][MAXN * D];
    backend *be = backend_cpu_create(1, NULL);
    for (int r = 0; r < W; r++) {
        fill(&data[r], n[r]);
        rank_data tmp = data[r];
        for (int layer = 0; layer < 3; layer++) { /* the reference runs the same 3 accumulating layers */
            reference(be, &tmp, want[r], want_counts);
            memcpy(tmp.out, want[r], sizeof tmp.out);
        }
    }
    for (int r = 0; r < W; r++) {
        args[r] = (rank_arg){.c = comm_cpu_world_rank(world, r), .be = be, .owner = owner, .d = &data[r]};
        pthread_create(&th[r], NULL, rank_main, &args[r]);
    }
    for (int r = 0; r < W; r++) pthread_join(th[r], NULL);
    uint64_t got_counts[E] = {0};
    for (int r = 0; r < W; r++) {
        cr_assert(args[r].rc == 0, "W=%d rank %d failed: %s", W, r, args[r].msg);
        cr_expect(memcmp(data[r].out, want[r], sizeof(float) * (size_t)n[r] * D) == 0,
                  "W=%d rank %d: output differs from the single-rank reference", W, r);
        for (int e = 0; e < E; e++) got_counts[e] += args[r].counts[e];
    }
    for (int e = 0; e < E; e++)
        cr_expect(got_counts[e] == want_counts[e], "W=%d expert %d: %llu rows, want %llu", W, e,
                  (unsigned long long)got_counts[e], (unsigned long long)want_counts[e]);
    backend_cpu_free(be);
    comm_cpu_world_free(world);
}

Test(ep, one_rank_matches_reference) {
    int n[] = {17};
    run_world(1, n, NULL);
}

Test(ep, two_ranks_one_idle) {
    int n[] = {23, 0};
    run_world(2, n, NULL);
}

Test(ep, three_ranks_uneven) {
    int n[] = {5, 40, 1};
    run_world(3, n, NULL);
}

Test(ep, four_ranks_scattered_placement) {
    int n[] = {0, 12, 31, 7};
    int32_t owner[E] = {3, 0, 2, 1, 1, 3, 0, 2};
    run_world(4, n, owner);
}

Test(ep, all_ranks_idle) {
    int n[] = {0, 0, 0};
    run_world(3, n, NULL);
}

Test(ep, abort_releases_the_others) {
    comm_cpu_world *world = comm_cpu_world_create(3, NULL);
    backend *be = backend_cpu_create(1, NULL);
    static rank_data data[3];
    rank_arg args[3];
    pthread_t th[3];
    for (int r = 0; r < 3; r++) {
        fill(&data[r], 4 + r);
        args[r] = (rank_arg){.c = comm_cpu_world_rank(world, r), .be = be, .d = &data[r], .abort_first = r == 1};
        pthread_create(&th[r], NULL, rank_main, &args[r]);
    }
    for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 3; r++) cr_expect(args[r].rc == -1, "rank %d should have failed", r);
    for (int r = 0; r < 3; r += 2)
        cr_expect(strstr(args[r].msg, "rank 1: test abort") != NULL, "rank %d message: %s", r, args[r].msg);
    backend_cpu_free(be);
    comm_cpu_world_free(world);
}

Test(ep, placement_checks) {
    ms_err err = {{0}};
    int32_t bad_rank[4] = {0, 1, 2, 1};
    cr_expect(ep_check_placement(bad_rank, 4, 2, &err) == -1);
    cr_expect(strstr(err.msg, "expert 2 is placed on rank 2") != NULL, "%s", err.msg);
    int32_t empty[4] = {0, 0, 2, 2};
    cr_expect(ep_check_placement(empty, 4, 3, &err) == -1);
    cr_expect(strstr(err.msg, "rank 1 owns no expert") != NULL, "%s", err.msg);
    int32_t good[4] = {1, 0, 0, 1};
    cr_expect(ep_check_placement(good, 4, 2, &err) == 0);
    for (int e = 0; e < 256; e++) cr_expect(ep_default_owner(e, 256, 8) == e / 32);
    cr_expect(ep_default_owner(4, 6, 4) == 2);
}
