/* cpu/cpu_attn.h — CPU kernels for MLA attention, RoPE and the MoE router.
 * Semantics are those of the matching ops in engine/backend.h (fp32
 * accumulation, online softmax over 64-token pages so no per-context buffer is
 * needed). The attention ops use the SIMD variant's helpers and the pool; their
 * `_ref` twins are plain C, single-threaded, the test oracle. */
#ifndef MS_CPU_ATTN_H
#define MS_CPU_ATTN_H

#include "common/threadpool.h"
#include "engine/backend.h"

void cpu_mla_decode(threadpool *pool, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                    const int32_t *ctx, int n_heads, const float *q_lat, const float *q_pe, float scale,
                    float *o_lat);
/* The same, batch-invariant: a head's result does not depend on n or on the
 * other tokens of the call (serve --batch-invariant). */
void cpu_mla_decode_invariant(threadpool *pool, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                              const int32_t *ctx, int n_heads, const float *q_lat, const float *q_pe, float scale,
                              float *o_lat);
void cpu_mla_prefill(threadpool *pool, int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                     const float *kvb, const float *k_pe, float scale, float *o);
void cpu_mla_decode_ref(const kv_cache *kv, int layer, int n, const kv_seq *const *seqs, const int32_t *ctx,
                        int n_heads, const float *q_lat, const float *q_pe, float scale, float *o_lat);
void cpu_mla_prefill_ref(int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                         const float *kvb, const float *k_pe, float scale, float *o);
void cpu_rope(const rope_params *rp, float *x, int n_tok, int n_vec, int64_t tok_stride, int64_t vec_stride,
              const int32_t *pos);
void cpu_router(const router_params *rp, const float *logits, int n, int32_t *idx, float *w);

#endif
