/* cpu/mla.c — MLA attention on the CPU: absorbed decode over the paged latent
 * cache and expanded causal prefill. Both use an online softmax in blocks of 64
 * keys (running max, running sum, rescaled accumulator), fp32 throughout.
 *
 * Each op has a plain-C reference (`*_ref`: one task per (token, head), scalar
 * loops; the oracle of test/unit/test_cpu_ops.c) and the version the backend
 * runs, which uses the SIMD helpers of the chosen kernel variant
 * (cpu_kernels.h: attn_scores, exp_sum, attn_accum) and falls back to the
 * reference on CPUs without one. The fast decode gives each task a group of
 * heads of one token and walks the cache page by page, so a 64-token page
 * (147 KB for the V3 latent) is read from memory once and stays in L2 while the
 * group's heads score and accumulate it together. The fast prefill gives each
 * task 16 query tokens of one head, scored and accumulated together against
 * each 64-key block. */
#include <math.h>
#include <string.h>

#include "cpu/cpu_attn.h"
#include "cpu/cpu_kernels.h"

#define BLOCK 64

static float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Online-softmax state for one query row. */
typedef struct {
    float max, sum;
    float *acc; /* [dim] */
    int dim;
} softmax_acc;

static void acc_init(softmax_acc *a, float *acc, int dim) {
    a->max = -INFINITY;
    a->sum = 0.0f;
    a->acc = acc;
    a->dim = dim;
    memset(acc, 0, (size_t)dim * sizeof *acc);
}

/* Folds a block of n scores in; value row j is vals + j * stride. */
static void acc_block(softmax_acc *a, const float *s, int n, const float *vals, int64_t stride) {
    float m = a->max;
    for (int j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
    float rescale = expf(a->max - m); /* exp(-inf) = 0 on the first block */
    a->sum *= rescale;
    for (int d = 0; d < a->dim; d++) a->acc[d] *= rescale;
    for (int j = 0; j < n; j++) {
        float p = expf(s[j] - m);
        a->sum += p;
        const float *v = vals + j * stride;
        for (int d = 0; d < a->dim; d++) a->acc[d] += p * v[d];
    }
    a->max = m;
}

/* Softmax step of a block for nq query rows with the variant's helpers: row i
 * has scores s[i][0..min(valid[i], n)) (valid NULL: all n; p is zero past
 * them); sets rescale[i] and p[i][0..n) and updates max and sum. attn_accum
 * then folds p into acc. */
static void softmax_rows(const cpu_kernels *k, softmax_acc *a, int nq, const float *s, float *p, int64_t ld, int n,
                         const int *valid, float *rescale) {
    for (int i = 0; i < nq; i++) {
        const int v = valid && valid[i] < n ? valid[i] : n;
        const float *si = s + (size_t)i * (size_t)ld;
        float *pi = p + (size_t)i * (size_t)ld;
        if (v <= 0) { /* no key of this block is visible to the row */
            rescale[i] = 1.0f;
            memset(pi, 0, (size_t)n * sizeof *pi);
            continue;
        }
        float m = a[i].max;
        for (int j = 0; j < v; j++) m = si[j] > m ? si[j] : m;
        rescale[i] = expf(a[i].max - m); /* exp(-inf) = 0 on the first block */
        a[i].sum = a[i].sum * rescale[i] + k->exp_sum(si, m, pi, v);
        a[i].max = m;
        if (v < n) memset(pi + v, 0, (size_t)(n - v) * sizeof *pi);
    }
}

static void acc_finish(softmax_acc *a, float *out) {
    float inv = 1.0f / a->sum;
    for (int d = 0; d < a->dim; d++) out[d] = a->acc[d] * inv;
}

/* ---- absorbed decode ------------------------------------------------------ */

typedef struct {
    const cpu_kernels *k;
    const kv_cache *kv;
    int layer, n_heads, heads_per_task;
    const kv_seq *const *seqs;
    const int32_t *ctx;
    const float *q_lat, *q_pe;
    float scale;
    float *o_lat;
} decode_job;

static void decode_task_ref(void *p, int task, int thread) {
    (void)thread;
    const decode_job *b = p;
    int i = task / b->n_heads, h = task % b->n_heads;
    int kvr = b->kv->kv_lora_rank, rope = b->kv->rope_dim, entry = b->kv->entry_dim;
    const float *ql = b->q_lat + ((size_t)i * b->n_heads + h) * kvr;
    const float *qp = b->q_pe + ((size_t)i * b->n_heads + h) * rope;
    float acc[kvr], s[BLOCK];
    softmax_acc a;
    acc_init(&a, acc, kvr);
    int ctx = b->ctx[i];
    for (int t0 = 0; t0 < ctx; t0 += BLOCK) {
        int n = ctx - t0 < BLOCK ? ctx - t0 : BLOCK; /* a block is exactly one page */
        const float *page = kv_page_layer(b->kv, b->seqs[i]->pages[t0 / KV_PAGE_TOKENS], b->layer);
        for (int t = 0; t < n; t++) {
            const float *e = page + (size_t)t * entry;
            s[t] = (dot(ql, e, kvr) + dot(qp, e + kvr, rope)) * b->scale;
        }
        acc_block(&a, s, n, page, entry);
    }
    acc_finish(&a, b->o_lat + ((size_t)i * b->n_heads + h) * kvr);
}

/* Task = (token i, heads [h0, h0 + heads_per_task)). The query of each head is
 * copied next to its rope part ([q_lat | q_pe], the layout of a cache entry) so
 * a score is one dot product over the entry; per page, all the task's heads
 * are scored and accumulated together (attn_scores / attn_accum), so the page
 * is read from L2 once per four heads rather than once per head. */
static void decode_task_fast(void *p, int task, int thread) {
    (void)thread;
    const decode_job *b = p;
    const cpu_kernels *k = b->k;
    const int groups = (b->n_heads + b->heads_per_task - 1) / b->heads_per_task;
    const int i = task / groups, h0 = task % groups * b->heads_per_task;
    const int hn = b->n_heads - h0 < b->heads_per_task ? b->n_heads - h0 : b->heads_per_task;
    const int kvr = b->kv->kv_lora_rank, rope = b->kv->rope_dim, entry = b->kv->entry_dim, qd = kvr + rope;
    float q[hn][qd], acc[hn][kvr], s[hn][BLOCK], pr[hn][BLOCK], rescale[hn];
    softmax_acc a[hn];
    for (int h = 0; h < hn; h++) {
        memcpy(q[h], b->q_lat + ((size_t)i * b->n_heads + h0 + h) * kvr, (size_t)kvr * sizeof(float));
        memcpy(q[h] + kvr, b->q_pe + ((size_t)i * b->n_heads + h0 + h) * rope, (size_t)rope * sizeof(float));
        acc_init(&a[h], acc[h], kvr);
    }
    const int ctx = b->ctx[i];
    for (int t0 = 0; t0 < ctx; t0 += BLOCK) {
        const int n = ctx - t0 < BLOCK ? ctx - t0 : BLOCK;
        const float *page = kv_page_layer(b->kv, b->seqs[i]->pages[t0 / KV_PAGE_TOKENS], b->layer);
        k->attn_scores(q[0], qd, hn, page, entry, n, qd, b->scale, 0, s[0], BLOCK);
        softmax_rows(k, a, hn, s[0], pr[0], BLOCK, n, NULL, rescale);
        k->attn_accum(acc[0], kvr, rescale, hn, pr[0], BLOCK, n, page, entry, kvr);
    }
    for (int h = 0; h < hn; h++) acc_finish(&a[h], b->o_lat + ((size_t)i * b->n_heads + h0 + h) * kvr);
}

void cpu_mla_decode_ref(const kv_cache *kv, int layer, int n, const kv_seq *const *seqs, const int32_t *ctx,
                        int n_heads, const float *q_lat, const float *q_pe, float scale, float *o_lat) {
    decode_job j = {NULL, kv, layer, n_heads, 1, seqs, ctx, q_lat, q_pe, scale, o_lat};
    threadpool_run(NULL, n * n_heads, decode_task_ref, &j);
}

/* Runs the decode with hpt heads per task (hpt 0: the scalar reference, one
 * (token, head) per task, for CPUs without a SIMD variant). */
static void decode_run(threadpool *pool, const cpu_kernels *k, int hpt, const kv_cache *kv, int layer, int n,
                       const kv_seq *const *seqs, const int32_t *ctx, int n_heads, const float *q_lat,
                       const float *q_pe, float scale, float *o_lat) {
    decode_job j = {k, kv, layer, n_heads, hpt ? hpt : 1, seqs, ctx, q_lat, q_pe, scale, o_lat};
    if (!hpt) threadpool_run(pool, n * n_heads, decode_task_ref, &j);
    else threadpool_run(pool, n * ((n_heads + hpt - 1) / hpt), decode_task_fast, &j);
}

void cpu_mla_decode(threadpool *pool, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                    const int32_t *ctx, int n_heads, const float *q_lat, const float *q_pe, float scale,
                    float *o_lat) {
    const cpu_kernels *k = cpu_kernels_get();
    /* enough tasks for every thread at batch 1; up to 16 heads share a page read */
    int hpt = n * n_heads / threadpool_size(pool);
    hpt = hpt < 1 ? 1 : hpt > 16 ? 16 : hpt;
    if (hpt > n_heads) hpt = n_heads;
    decode_run(pool, k, k ? hpt : 0, kv, layer, n, seqs, ctx, n_heads, q_lat, q_pe, scale, o_lat);
}

/* Heads are grouped 4 to a task whatever n is: a head's scores take the same
 * path (4-query register block or single dot) in every batch. */
void cpu_mla_decode_invariant(threadpool *pool, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                              const int32_t *ctx, int n_heads, const float *q_lat, const float *q_pe, float scale,
                              float *o_lat) {
    const cpu_kernels *k = cpu_kernels_get();
    const int hpt = n_heads < 4 ? n_heads : 4;
    decode_run(pool, k, k ? hpt : 0, kv, layer, n, seqs, ctx, n_heads, q_lat, q_pe, scale, o_lat);
}

/* ---- expanded causal prefill ------------------------------------------------ */

typedef struct {
    const cpu_kernels *k;
    int T, pos0, n_heads, nope, rope, vdim;
    const float *q, *kvb, *k_pe;
    float scale;
    float *o;
} prefill_job;

/* Reference task = (token t, head h), scalar loops. */
static void prefill_task_ref(void *p, int task, int thread) {
    (void)thread;
    const prefill_job *j = p;
    int t = task / j->n_heads, h = task % j->n_heads;
    int qdim = j->nope + j->rope, kvdim = j->nope + j->vdim;
    int64_t kv_stride = (int64_t)j->n_heads * kvdim;
    const float *q = j->q + ((size_t)t * j->n_heads + h) * qdim;
    const float *kh = j->kvb + (size_t)h * kvdim;
    float acc[j->vdim], s[BLOCK];
    softmax_acc a;
    acc_init(&a, acc, j->vdim);
    int ctx = j->pos0 + t + 1; /* causal: keys 0..pos */
    for (int s0 = 0; s0 < ctx; s0 += BLOCK) {
        int n = ctx - s0 < BLOCK ? ctx - s0 : BLOCK;
        for (int u = 0; u < n; u++) {
            const float *kr = kh + (size_t)(s0 + u) * kv_stride, *pe = j->k_pe + (size_t)(s0 + u) * j->rope;
            s[u] = (dot(q, kr, j->nope) + dot(q + j->nope, pe, j->rope)) * j->scale;
        }
        acc_block(&a, s, n, kh + (size_t)s0 * kv_stride + j->nope, kv_stride);
    }
    acc_finish(&a, j->o + ((size_t)t * j->n_heads + h) * j->vdim);
}

/* Fast task = (block of QBLOCK query tokens, head h): each 64-key block is
 * scored for all the block's queries at once (nope part against the head's
 * keys, rope part against the shared k_pe), keys past a query's position masked
 * out, then accumulated with the variant's helpers. */
#define QBLOCK 16
static void prefill_task_fast(void *p, int task, int thread) {
    (void)thread;
    const prefill_job *j = p;
    const cpu_kernels *k = j->k;
    const int h = task % j->n_heads, t0 = task / j->n_heads * QBLOCK;
    const int qn = j->T - t0 < QBLOCK ? j->T - t0 : QBLOCK;
    const int qdim = j->nope + j->rope, kvdim = j->nope + j->vdim;
    const int64_t kv_stride = (int64_t)j->n_heads * kvdim, ldq = (int64_t)j->n_heads * qdim;
    const float *q = j->q + ((size_t)t0 * j->n_heads + h) * qdim;
    const float *kh = j->kvb + (size_t)h * kvdim;
    float acc[qn][j->vdim], s[qn][BLOCK], pr[qn][BLOCK], rescale[qn];
    int valid[qn];
    softmax_acc a[qn];
    for (int r = 0; r < qn; r++) acc_init(&a[r], acc[r], j->vdim);
    const int ctx = j->pos0 + t0 + qn; /* keys the last query sees */
    for (int s0 = 0; s0 < ctx; s0 += BLOCK) {
        const int n = ctx - s0 < BLOCK ? ctx - s0 : BLOCK;
        k->attn_scores(q, ldq, qn, kh + (size_t)s0 * kv_stride, kv_stride, n, j->nope, j->scale, 0, s[0], BLOCK);
        k->attn_scores(q + j->nope, ldq, qn, j->k_pe + (size_t)s0 * j->rope, j->rope, n, j->rope, j->scale, 1, s[0],
                       BLOCK);
        for (int r = 0; r < qn; r++) valid[r] = j->pos0 + t0 + r + 1 - s0; /* causal: keys 0..pos */
        softmax_rows(k, a, qn, s[0], pr[0], BLOCK, n, valid, rescale);
        k->attn_accum(acc[0], j->vdim, rescale, qn, pr[0], BLOCK, n, kh + (size_t)s0 * kv_stride + j->nope, kv_stride,
                      j->vdim);
    }
    for (int r = 0; r < qn; r++) acc_finish(&a[r], j->o + ((size_t)(t0 + r) * j->n_heads + h) * j->vdim);
}

void cpu_mla_prefill_ref(int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                         const float *kvb, const float *k_pe, float scale, float *o) {
    prefill_job j = {NULL, T, pos0, n_heads, nope, rope, vdim, q, kvb, k_pe, scale, o};
    threadpool_run(NULL, T * n_heads, prefill_task_ref, &j);
}

void cpu_mla_prefill(threadpool *pool, int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                     const float *kvb, const float *k_pe, float scale, float *o) {
    prefill_job j = {cpu_kernels_get(), T, pos0, n_heads, nope, rope, vdim, q, kvb, k_pe, scale, o};
    if (!j.k) {
        threadpool_run(pool, T * n_heads, prefill_task_ref, &j);
        return;
    }
    threadpool_run(pool, (T + QBLOCK - 1) / QBLOCK * n_heads, prefill_task_fast, &j);
}
