/* cpu/backend_cpu.c — the CPU backend: engine/backend.h's table over the
 * kernels of cpu_ops.h (linear, norms: SIMD + threaded) and cpu_attn.h
 * (attention, rope, router). Owns a thread pool. */
#include "cpu/backend_cpu.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_attn.h"
#include "cpu/cpu_bf16dot.h"
#include "cpu/cpu_ops.h"

typedef struct {
    threadpool *pool;
    int reference; /* use the *_ref kernels */
    int invariant; /* batch-invariant kernels (set_batch_invariant) */
    int bf16;      /* bf16 activations in the products (set_bf16_activations) */
} cpu_state;


static cpu_state *state(backend *be) { return be->impl; }

/* cpu_ops.h flags of the products */
static int linear_flags(backend *be) {
    return (state(be)->invariant ? CPU_INVARIANT : 0) | (state(be)->bf16 ? CPU_BF16_ACT : 0);
}

static void *cpu_alloc(backend *be, size_t bytes) { (void)be; return malloc(bytes ? bytes : 1); }
static void cpu_free(backend *be, void *p) { (void)be; free(p); }

static void cpu_copy(backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}

static const void *cpu_weight_place(backend *be, const void *host, size_t bytes) {
    (void)be;
    (void)bytes;
    return host; /* the mmap is already where the CPU reads */
}

static void cpu_weight_release(backend *be, const void *placed) {
    (void)be;
    (void)placed;
}

static void cpu_linear_op(backend *be, const weight *w, const float *x, float *y, int m) {
    if (state(be)->reference) cpu_linear_ref(w, x, y, m);
    else cpu_linear_flags(state(be)->pool, w, x, y, m, linear_flags(be));
}

static void cpu_linear_t_op(backend *be, const weight *w, const float *x, float *y, int m) {
    if (state(be)->reference) cpu_linear_t_ref(w, x, y, m);
    else cpu_linear_t_flags(state(be)->pool, w, x, y, m, linear_flags(be));
}

static void cpu_linear_batch_op(backend *be, const linear_op *ops, int n) {
    if (state(be)->reference) cpu_linear_batch_ref(ops, n);
    else cpu_linear_batch_flags(state(be)->pool, ops, n, linear_flags(be));
}

static void cpu_rmsnorm_op(backend *be, const weight *g, const float *x, float *y, int m, int d, float eps) {
    if (state(be)->reference) cpu_rmsnorm_ref(g, x, y, m, d, eps);
    else cpu_rmsnorm(state(be)->pool, g, x, y, m, d, eps);
}

static void cpu_embedding_op(backend *be, const weight *table, const int32_t *ids, int n, float *y) {
    cpu_embedding(state(be)->pool, table, ids, n, y);
}

static void cpu_silu_mul_op(backend *be, const float *gate, const float *up, float *y, int64_t n) {
    if (state(be)->reference) cpu_silu_mul_ref(gate, up, y, n);
    else cpu_silu_mul(state(be)->pool, gate, up, y, n);
}

static void cpu_zero(backend *be, float *y, int64_t n) {
    (void)be;
    memset(y, 0, (size_t)n * sizeof *y);
}

static void cpu_axpy(backend *be, float a, const float *x, float *y, int64_t n) {
    (void)be;
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void cpu_copy_2d(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                        int64_t rows, int64_t cols) {
    (void)be;
    for (int64_t r = 0; r < rows; r++) memcpy(dst + r * dst_stride, src + r * src_stride, (size_t)cols * sizeof(float));
}

static void cpu_copy_rows(backend *be, float *dst, const int32_t *dst_idx, const float *src, const int32_t *src_idx,
                          int n, int64_t d) {
    (void)be;
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)(dst_idx ? dst_idx[i] : i) * d, src + (size_t)(src_idx ? src_idx[i] : i) * d,
               (size_t)d * sizeof(float));
}

static void cpu_axpy_rows(backend *be, float *y, const int32_t *y_idx, const float *x, const int32_t *x_idx,
                          const float *a, int n, int64_t d) {
    for (int i = 0; i < n; i++)
        cpu_axpy(be, a[i], x + (size_t)(x_idx ? x_idx[i] : i) * d, y + (size_t)(y_idx ? y_idx[i] : i) * d, d);
}

static void cpu_rope_op(backend *be, const rope_params *rp, float *x, int n_tok, int n_vec, int64_t tok_stride,
                        int64_t vec_stride, const int32_t *pos) {
    (void)be;
    cpu_rope(rp, x, n_tok, n_vec, tok_stride, vec_stride, pos);
}

static void cpu_router_op(backend *be, const router_params *rp, const float *logits, int n, int32_t *idx, float *w) {
    (void)be;
    cpu_router(rp, logits, n, idx, w);
}

static void cpu_kv_write(backend *be, kv_cache *kv, const kv_seq *seq, int layer, int pos0, int n, const float *c,
                         int kvr, const float *k_pe, int rope_dim) {
    (void)be;
    for (int i = 0; i < n; i++) {
        float *e = kv_entry(kv, seq, layer, pos0 + i);
        memcpy(e, c + (size_t)i * kvr, (size_t)kvr * sizeof(float));
        memcpy(e + kvr, k_pe + (size_t)i * rope_dim, (size_t)rope_dim * sizeof(float));
    }
}

static void cpu_kv_gather(backend *be, const kv_cache *kv, const kv_seq *seq, int layer, int n, float *c, int kvr,
                          float *k_pe, int rope_dim) {
    (void)be;
    for (int i = 0; i < n; i++) {
        const float *e = kv_entry(kv, seq, layer, i);
        memcpy(c + (size_t)i * kvr, e, (size_t)kvr * sizeof(float));
        memcpy(k_pe + (size_t)i * rope_dim, e + kvr, (size_t)rope_dim * sizeof(float));
    }
}

static void cpu_mla_decode_op(backend *be, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                              const int32_t *ctx, int n_heads, const float *q_lat, const float *q_pe, float scale,
                              float *o_lat) {
    if (state(be)->reference) cpu_mla_decode_ref(kv, layer, n, seqs, ctx, n_heads, q_lat, q_pe, scale, o_lat);
    else if (state(be)->invariant)
        cpu_mla_decode_invariant(state(be)->pool, kv, layer, n, seqs, ctx, n_heads, q_lat, q_pe, scale, o_lat);
    else cpu_mla_decode(state(be)->pool, kv, layer, n, seqs, ctx, n_heads, q_lat, q_pe, scale, o_lat);
}

static void cpu_mla_prefill_op(backend *be, int T, int pos0, int n_heads, int nope, int rope, int vdim,
                               const float *q, const float *kvb, const float *k_pe, float scale, float *o) {
    if (state(be)->reference) cpu_mla_prefill_ref(T, pos0, n_heads, nope, rope, vdim, q, kvb, k_pe, scale, o);
    else cpu_mla_prefill(state(be)->pool, T, pos0, n_heads, nope, rope, vdim, q, kvb, k_pe, scale, o);
}

static void cpu_set_batch_invariant(backend *be, int on) { state(be)->invariant = on; }

static int cpu_set_bf16_activations(backend *be, int on, ms_err *err) {
    if (on && !cpu_bf16dot_usable())
        return ms_err_set(err, "bf16 activations need the AVX-512 kernels with AVX512_BF16 dot products "
                                "(this CPU has none, or MLASERVE_CPU_SIMD caps SIMD below AVX-512)");
    state(be)->bf16 = on;
    return 0;
}

static const backend_ops cpu_ops_table = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .weight_place = cpu_weight_place,
    .weight_release = cpu_weight_release,
    .linear = cpu_linear_op,
    .linear_t = cpu_linear_t_op,
    .linear_batch = cpu_linear_batch_op,
    .rmsnorm = cpu_rmsnorm_op,
    .embedding = cpu_embedding_op,
    .silu_mul = cpu_silu_mul_op,
    .zero = cpu_zero,
    .axpy = cpu_axpy,
    .copy_2d = cpu_copy_2d,
    .copy_rows = cpu_copy_rows,
    .axpy_rows = cpu_axpy_rows,
    .rope = cpu_rope_op,
    .router = cpu_router_op,
    .kv_write = cpu_kv_write,
    .kv_gather = cpu_kv_gather,
    .mla_decode = cpu_mla_decode_op,
    .mla_prefill = cpu_mla_prefill_op,
    .set_batch_invariant = cpu_set_batch_invariant,
    .set_bf16_activations = cpu_set_bf16_activations,
};

backend *backend_cpu_create(int n_threads, ms_err *err) {
    backend *be = calloc(1, sizeof *be);
    cpu_state *st = calloc(1, sizeof *st);
    if (!be || !st) goto fail;
    st->pool = threadpool_create(n_threads);
    if (!st->pool) goto fail;
    be->ops = &cpu_ops_table;
    be->impl = st;
    return be;
fail:
    free(be);
    free(st);
    ms_err_set(err, "cpu backend: cannot create %d threads", n_threads);
    return NULL;
}

void backend_cpu_free(backend *be) {
    if (!be) return;
    threadpool_free(state(be)->pool);
    free(be->impl);
    free(be);
}

void backend_cpu_use_reference(backend *be, int on) { state(be)->reference = on; }
