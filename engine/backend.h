/* engine/backend.h — the backend seam: the table of operations engine/model.c
 * calls. The model graph is written once against this table; a backend (cpu/,
 * cuda/) is a table plus its private state. The CPU implementation of every op
 * is the specification and the test oracle for the others.
 *
 * All activation pointers are backend memory (host memory for the CPU backend),
 * float32, row-major and contiguous unless a stride is given. Weights are views
 * in their checkpoint dtype (engine/weight.h). One engine thread drives a
 * backend; ops are not re-entrant across threads. */
#ifndef MS_BACKEND_H
#define MS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kv.h"
#include "engine/weight.h"

typedef struct backend backend;

/* Router hyper-parameters (HF MoEGate semantics, see engine/model.c). */
typedef struct router_params {
    int n_experts, top_k, n_group, topk_group;
    int sigmoid;            /* 1: sigmoid scores, 0: softmax over experts */
    int group_sum_top2;     /* group score = sum of top-2 biased scores (noaux_tc), else max */
    int renormalize;        /* divide the top-k weights by their sum (+1e-20) */
    float scale;            /* routed_scaling_factor, applied as the arch prescribes */
    const float *bias;      /* [n_experts] e_score_correction_bias, or NULL */
} router_params;

/* RoPE tables: inv_freq[i] for i < dim/2 (YaRN-corrected), cos/sin multiplier. */
typedef struct rope_params {
    int dim;                /* qk_rope_head_dim */
    const double *inv_freq; /* [dim/2] */
    double attn_factor;     /* multiplies cos and sin (HF YaRN mscale ratio; 1 here) */
} rope_params;

/* One product of a linear_batch: y = x·Wᵀ (x: m rows of w.cols floats, y: m
 * rows of w.rows), or with transposed, y = x·W (x: m rows of w.rows, y: m rows
 * of w.cols); rows of x are ldx floats apart, rows of y ldy apart. */
typedef struct linear_op {
    weight w;
    const float *x;
    float *y;
    int m, transposed;
    int64_t ldx, ldy;
} linear_op;

typedef struct backend_ops {
    const char *name;

    /* memory (the CPU backend: plain malloc / memcpy) */
    void *(*alloc)(backend *be, size_t bytes);
    void (*free)(backend *be, void *p);
    /* host <-> backend memory copies (complete when they return) */
    void (*upload)(backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(backend *be, void *host_dst, const void *src, size_t bytes);
    /* Makes `bytes` of checkpoint data at host address `host` (inside the mmap)
     * usable by the ops: the CPU returns `host` itself (zero-copy); a device
     * backend copies it into device memory. NULL on failure. Released with
     * weight_release. */
    const void *(*weight_place)(backend *be, const void *host, size_t bytes);
    void (*weight_release)(backend *be, const void *placed);

    /* y[m, rows] = x[m, cols] · Wᵀ */
    void (*linear)(backend *be, const weight *w, const float *x, float *y, int m);
    /* y[m, cols] = x[m, rows] · W */
    void (*linear_t)(backend *be, const weight *w, const float *x, float *y, int m);
    /* Runs n independent products (no y overlaps another product's x or y) as
     * one op; each y as linear / linear_t would give it. Optional: NULL means
     * the engine issues them one by one (engine/model.c linear_batch). */
    void (*linear_batch)(backend *be, const linear_op *ops, int n);
    /* per row of d values: x / sqrt(mean(x²) + eps) * g; y may alias x */
    void (*rmsnorm)(backend *be, const weight *g, const float *x, float *y, int m, int d, float eps);
    /* y[i] = row ids[i] of the table */
    void (*embedding)(backend *be, const weight *table, const int32_t *ids, int n, float *y);
    /* y = silu(gate) * up (elementwise); y may alias gate */
    void (*silu_mul)(backend *be, const float *gate, const float *up, float *y, int64_t n);
    /* y[i] = 0 */
    void (*zero)(backend *be, float *y, int64_t n);
    /* y += a * x */
    void (*axpy)(backend *be, float a, const float *x, float *y, int64_t n);
    /* dst[r][c] = src[r][c] for r < rows, c < cols, with row strides in floats */
    void (*copy_2d)(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                    int64_t rows, int64_t cols);
    /* Gathers / scatters rows of d floats in one op: for i < n, row
     * (dst_idx ? dst_idx[i] : i) of dst = row (src_idx ? src_idx[i] : i) of src.
     * No two i name the same dst row; the index arrays are host memory. */
    void (*copy_rows)(backend *be, float *dst, const int32_t *dst_idx, const float *src, const int32_t *src_idx, int n,
                      int64_t d);
    /* Weighted row sums in one op, in i order: for i = 0..n-1, row
     * (y_idx ? y_idx[i] : i) of y += a[i] * row (x_idx ? x_idx[i] : i) of x,
     * each element as axpy computes it (a y row named several times takes its
     * terms in that order: the MoE combine's ascending expert order); a and the
     * index arrays are host memory; x and y do not overlap. */
    void (*axpy_rows)(backend *be, float *y, const int32_t *y_idx, const float *x, const int32_t *x_idx, const float *a,
                      int n, int64_t d);
    /* Rotates rope_params.dim features of n_vec vectors per token in place, as
     * interleaved pairs (x[2i], x[2i+1]) by angle pos[t] * inv_freq[i]
     * (DeepSeek model.py convention). Vector v of token t starts at
     * x + t * tok_stride + v * vec_stride. */
    void (*rope)(backend *be, const rope_params *rp, float *x, int n_tok, int n_vec, int64_t tok_stride,
                 int64_t vec_stride, const int32_t *pos);
    /* From router logits [n, n_experts] picks top_k experts per token: idx [n, top_k]
     * (in selection order) and combine weights [n, top_k]. */
    void (*router)(backend *be, const router_params *rp, const float *logits, int n, int32_t *idx, float *w);

    /* Writes n tokens' latent entries (c [n, kvr], k_pe [n, rope] -> one entry
     * each) of one layer at positions pos0.. of seq. */
    void (*kv_write)(backend *be, kv_cache *kv, const kv_seq *seq, int layer, int pos0, int n, const float *c,
                     int kvr, const float *k_pe, int rope_dim);
    /* Reads entries [0, n) of one layer of seq into c [n, kvr] and k_pe [n, rope]. */
    void (*kv_gather)(backend *be, const kv_cache *kv, const kv_seq *seq, int layer, int n, float *c, int kvr,
                      float *k_pe, int rope_dim);

    /* Absorbed MLA attention of one query token over its sequence's latent cache:
     * for every head h, score[t] = (q_lat[h]·c[t] + q_pe[h]·k_pe[t]) * scale over
     * t < ctx_len, softmax, o_lat[h] = Σ p[t] c[t]. q_lat [H, kvr], q_pe [H, rope],
     * o_lat [H, kvr]. Called for a batch of tokens: token i uses seqs[i], ctx[i]. */
    void (*mla_decode)(backend *be, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                       const int32_t *ctx, int n_heads, const float *q_lat, const float *q_pe, float scale,
                       float *o_lat);
    /* Causal MLA attention in the expanded ("naive") form for T new tokens of
     * one sequence at positions pos0..pos0+T-1 over ctx = pos0+T cached tokens:
     * q [T, H, nope+rope] (pe roped), kvb [ctx, H, nope+v] (kv_b_proj of the cached
     * latents), k_pe [ctx, rope]; o [T, H, v]. */
    void (*mla_prefill)(backend *be, int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                        const float *kvb, const float *k_pe, float scale, float *o);

    /* Batch-invariant mode (optional; NULL: the backend has none): on, every
     * row of linear / linear_t / linear_batch / mla_decode is computed with the
     * same arithmetic whatever the other rows of the call are and however many
     * there are (bit-identical to the row alone). */
    void (*set_batch_invariant)(backend *be, int on);
    /* BF16-activation mode (optional; NULL: the backend has none): on, the
     * weight products may round their activations to bf16 (fp32 sums) where
     * that is faster. Returns 0, or -1 with err when this backend instance
     * cannot (e.g. the CPU lacks bf16 dot products). */
    int (*set_bf16_activations)(backend *be, int on, ms_err *err);
} backend_ops;

struct backend {
    const backend_ops *ops;
    void *impl;
};

#endif
