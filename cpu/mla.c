/* cpu/mla.c — MLA attention on the CPU: absorbed decode over the paged latent
 * cache and expanded causal prefill. Both use an online softmax in blocks of 64
 * keys (running max, running sum, rescaled accumulator), fp32 throughout. */
#include <math.h>
#include <string.h>

#include "cpu/cpu_attn.h"

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

static void acc_finish(softmax_acc *a, float *out) {
    float inv = 1.0f / a->sum;
    for (int d = 0; d < a->dim; d++) out[d] = a->acc[d] * inv;
}

typedef struct {
    const kv_cache *kv;
    int layer, n_heads;
    const kv_seq *const *seqs;
    const int32_t *ctx;
    const float *q_lat, *q_pe;
    float scale;
    float *o_lat;
} decode_job;

static void decode_task(void *p, int task, int thread) {
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

void cpu_mla_decode(threadpool *pool, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                    const int32_t *ctx, int n_heads, const float *q_lat, const float *q_pe, float scale,
                    float *o_lat) {
    decode_job j = {kv, layer, n_heads, seqs, ctx, q_lat, q_pe, scale, o_lat};
    threadpool_run(pool, n * n_heads, decode_task, &j);
}

typedef struct {
    int T, pos0, n_heads, nope, rope, vdim;
    const float *q, *kvb, *k_pe;
    float scale;
    float *o;
} prefill_job;

static void prefill_task(void *p, int task, int thread) {
    (void)thread;
    const prefill_job *j = p;
    int t = task / j->n_heads, h = task % j->n_heads;
    int qdim = j->nope + j->rope, kvdim = j->nope + j->vdim;
    int64_t kv_stride = (int64_t)j->n_heads * kvdim;
    const float *q = j->q + ((size_t)t * j->n_heads + h) * qdim;
    const float *k = j->kvb + (size_t)h * kvdim;
    float acc[j->vdim], s[BLOCK];
    softmax_acc a;
    acc_init(&a, acc, j->vdim);
    int ctx = j->pos0 + t + 1; /* causal: keys 0..pos */
    for (int s0 = 0; s0 < ctx; s0 += BLOCK) {
        int n = ctx - s0 < BLOCK ? ctx - s0 : BLOCK;
        for (int u = 0; u < n; u++) {
            const float *kr = k + (size_t)(s0 + u) * kv_stride;
            s[u] = (dot(q, kr, j->nope) + dot(q + j->nope, j->k_pe + (size_t)(s0 + u) * j->rope, j->rope)) * j->scale;
        }
        acc_block(&a, s, n, k + (size_t)s0 * kv_stride + j->nope, kv_stride);
    }
    acc_finish(&a, j->o + ((size_t)t * j->n_heads + h) * j->vdim);
}

void cpu_mla_prefill(threadpool *pool, int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                     const float *kvb, const float *k_pe, float scale, float *o) {
    prefill_job j = {T, pos0, n_heads, nope, rope, vdim, q, kvb, k_pe, scale, o};
    threadpool_run(pool, T * n_heads, prefill_task, &j);
}
