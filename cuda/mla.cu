/* cuda/mla.cu — the paged latent KV cache ops and MLA attention on the device;
 * the references are cpu_kv_write / cpu_kv_gather (cpu/backend_cpu.c) and
 * cpu_mla_decode / cpu_mla_prefill (cpu/mla.c).
 *
 *   kv_write / kv_gather: the block table (kv_seq, host) is turned into one
 *     int64 entry offset per token on the host and copied to device scratch;
 *     one block per token copies its kvr latent + rope values (kv->data is
 *     device memory).
 *   mla_decode (absorbed): seqs and ctx are host memory; per call the host
 *     builds [ctx[n] | first[n+1] | pages...] (each token's block table,
 *     ceil(ctx/64) pages) and copies it to the device. One 128-thread block per
 *     (token, head): q = [q_lat | q_pe] in shared memory; per 64-token page the
 *     4 warps compute the 64 scores (q·entry over kvr + rope, × scale), then an
 *     online softmax step identical to the CPU's acc_block (running max m,
 *     rescale = exp(m_old − m), p = exp(s − m)), each thread owning kvr/128
 *     output values in registers (kvr ≤ 1024). Output o_lat[t][h] = acc / sum.
 *   mla_prefill (expanded, causal): one 128-thread block per (token, head),
 *     same page-of-64 online softmax over keys 0..pos0+t, K rows from kvb
 *     [ctx, H, nope+v] and k_pe [ctx, rope], V = kvb[..., nope:]; vdim ≤ 1024.
 * Both read every key once per head (heads share it through L2): correct and
 * simple, far from the FlashMLA-style kernel planned in docs/cuda.md. A context
 * of 0 tokens gives NaN, as on the CPU (0/0). */
#include "cuda/cuda_internal.cuh"

#define PAGE KV_PAGE_TOKENS /* 64: one online-softmax block is one page */
#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_MAX_DIM 1024 /* kvr (decode) / vdim (prefill) */
#define ATT_ACC (ATT_MAX_DIM / ATT_THREADS)

/* ---- kv_write / kv_gather ------------------------------------------------------ */

/* Offsets (in floats) of the entries of positions pos0..pos0+n-1 of seq, in device scratch. */
static const int64_t *entry_offsets(backend *be, const kv_cache *kv, const kv_seq *seq, int layer, int pos0, int n,
                                    const char *op) {
    CUDA_REQUIRE(layer >= 0 && layer < kv->n_layers, "%s: layer %d of %d", op, layer, kv->n_layers);
    CUDA_REQUIRE(pos0 >= 0 && (int64_t)pos0 + n <= (int64_t)seq->n_pages * PAGE,
                 "%s: positions [%d, %d) beyond the %d reserved pages", op, pos0, pos0 + n, seq->n_pages);
    int64_t *off = (int64_t *)cuda_host_scratch(be, SCR_I64, (size_t)n * sizeof *off);
    for (int i = 0; i < n; i++) {
        const int pos = pos0 + i;
        const int32_t page = seq->pages[pos / PAGE];
        CUDA_REQUIRE(page >= 0 && page < kv->n_pages, "%s: page %d of %d", op, page, kv->n_pages);
        off[i] = (((int64_t)page * kv->n_layers + layer) * PAGE + pos % PAGE) * kv->entry_dim;
    }
    return (const int64_t *)cuda_upload_scratch(be, SCR_I64, off, (size_t)n * sizeof *off);
}

__global__ void k_kv_write(float *data, const int64_t *off, const float *c, int kvr, const float *k_pe, int rope) {
    const int64_t i = blockIdx.x;
    float *e = data + off[i];
    for (int j = threadIdx.x; j < kvr + rope; j += blockDim.x)
        e[j] = j < kvr ? c[i * kvr + j] : k_pe[i * rope + (j - kvr)];
}

__global__ void k_kv_gather(const float *data, const int64_t *off, float *c, int kvr, float *k_pe, int rope) {
    const int64_t i = blockIdx.x;
    const float *e = data + off[i];
    for (int j = threadIdx.x; j < kvr + rope; j += blockDim.x) {
        if (j < kvr) c[i * kvr + j] = e[j];
        else k_pe[i * rope + (j - kvr)] = e[j];
    }
}

void cuda_kv_write(backend *be, kv_cache *kv, const kv_seq *seq, int layer, int pos0, int n, const float *c, int kvr,
                   const float *k_pe, int rope_dim) {
    if (n <= 0) return;
    CUDA_REQUIRE(kvr >= 0 && rope_dim >= 0 && kvr + rope_dim <= kv->entry_dim, "kv_write: %d + %d values, entry %d",
                 kvr, rope_dim, kv->entry_dim);
    const int64_t *off = entry_offsets(be, kv, seq, layer, pos0, n, "kv_write");
    k_kv_write<<<n, 128, 0, cuda_stream(be)>>>(kv->data, off, c, kvr, k_pe, rope_dim);
    CUDA_LAUNCHED(be);
}

void cuda_kv_gather(backend *be, const kv_cache *kv, const kv_seq *seq, int layer, int n, float *c, int kvr,
                    float *k_pe, int rope_dim) {
    if (n <= 0) return;
    CUDA_REQUIRE(kvr >= 0 && rope_dim >= 0 && kvr + rope_dim <= kv->entry_dim, "kv_gather: %d + %d values, entry %d",
                 kvr, rope_dim, kv->entry_dim);
    const int64_t *off = entry_offsets(be, kv, seq, layer, 0, n, "kv_gather");
    k_kv_gather<<<n, 128, 0, cuda_stream(be)>>>(kv->data, off, c, kvr, k_pe, rope_dim);
    CUDA_LAUNCHED(be);
}

/* ---- online softmax over one page of scores (shared by decode and prefill) ---------- */

/* Folds scores s[0..nt) (shared) into (m, sum, acc) exactly as cpu/mla.c's
 * acc_block: every thread runs the max and sum loops in the same order, so all
 * threads hold the same m and sum. p (shared) receives exp(s - m_new); the
 * value of key t for output d is vals[t * stride + d]. */
__device__ __forceinline__ void softmax_page(const float *s, float *p, int nt, float &m, float &sum,
                                             float (&acc)[ATT_ACC], const float *vals, int64_t stride, int dim) {
    float mn = m;
    for (int t = 0; t < nt; t++) mn = s[t] > mn ? s[t] : mn;
    const float rescale = expf(m - mn); /* exp(-inf) = 0 on the first page */
    for (int t = threadIdx.x; t < nt; t += ATT_THREADS) p[t] = expf(s[t] - mn);
    __syncthreads();
    sum *= rescale;
    for (int t = 0; t < nt; t++) sum += p[t];
#pragma unroll
    for (int j = 0; j < ATT_ACC; j++) {
        const int d = threadIdx.x + j * ATT_THREADS;
        if (d < dim) {
            float a = acc[j] * rescale;
            for (int t = 0; t < nt; t++) a += p[t] * vals[t * stride + d];
            acc[j] = a;
        }
    }
    m = mn;
}

/* ---- mla_decode --------------------------------------------------------------------- */

/* meta: ctx[n], first[n+1] (offsets into pages), pages[...]. */
__global__ void __launch_bounds__(ATT_THREADS)
    k_mla_decode(const float *kv_data, int n_layers, int entry, int kvr, int rope, int layer, const int32_t *meta,
                 int n, int H, const float *q_lat, const float *q_pe, float scale, float *o_lat) {
    extern __shared__ float q[]; /* [kvr + rope] */
    __shared__ float s[PAGE], p[PAGE];
    const int64_t th = blockIdx.x; /* token * H + head */
    const int i = (int)(th / H);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int d = threadIdx.x; d < kvr + rope; d += ATT_THREADS)
        q[d] = d < kvr ? q_lat[th * kvr + d] : q_pe[th * rope + (d - kvr)];
    const int ctx = meta[i];
    const int32_t *pages = meta + n + (n + 1) + meta[n + i];
    float acc[ATT_ACC];
#pragma unroll
    for (int j = 0; j < ATT_ACC; j++) acc[j] = 0.0f;
    float m = -INFINITY, sum = 0.0f;
    __syncthreads();
    for (int t0 = 0; t0 < ctx; t0 += PAGE) {
        const int nt = ctx - t0 < PAGE ? ctx - t0 : PAGE;
        const float *base = kv_data + (((int64_t)pages[t0 / PAGE] * n_layers + layer) * PAGE) * entry;
        for (int t = warp; t < nt; t += ATT_WARPS) {
            const float *e = base + (int64_t)t * entry;
            float dl = 0.0f, dp = 0.0f;
            for (int d = lane; d < kvr; d += 32) dl += q[d] * e[d];
            for (int d = lane; d < rope; d += 32) dp += q[kvr + d] * e[kvr + d];
            dl = warp_sum(dl);
            dp = warp_sum(dp);
            if (lane == 0) s[t] = (dl + dp) * scale;
        }
        __syncthreads();
        softmax_page(s, p, nt, m, sum, acc, base, entry, kvr);
        __syncthreads(); /* s and p are rewritten by the next page */
    }
    const float inv = 1.0f / sum;
    float *out = o_lat + th * kvr;
#pragma unroll
    for (int j = 0; j < ATT_ACC; j++) {
        const int d = threadIdx.x + j * ATT_THREADS;
        if (d < kvr) out[d] = acc[j] * inv;
    }
}

void cuda_mla_decode(backend *be, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs, const int32_t *ctx,
                     int n_heads, const float *q_lat, const float *q_pe, float scale, float *o_lat) {
    if (n <= 0 || n_heads <= 0) return;
    const int kvr = kv->kv_lora_rank, rope = kv->rope_dim;
    CUDA_REQUIRE(kvr >= 1 && kvr <= ATT_MAX_DIM, "mla_decode: kv_lora_rank %d (at most %d)", kvr, ATT_MAX_DIM);
    CUDA_REQUIRE(layer >= 0 && layer < kv->n_layers, "mla_decode: layer %d of %d", layer, kv->n_layers);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        CUDA_REQUIRE(ctx[i] >= 0 && ctx[i] <= seqs[i]->n_pages * PAGE, "mla_decode: token %d: context %d, %d pages", i,
                     ctx[i], seqs[i]->n_pages);
        total += (ctx[i] + PAGE - 1) / PAGE;
    }
    const int64_t words = (int64_t)n + (n + 1) + total;
    CUDA_REQUIRE(words < (1ll << 31), "mla_decode: block tables too large");
    int32_t *meta = (int32_t *)cuda_host_scratch(be, SCR_I32, (size_t)words * sizeof *meta);
    int32_t *first = meta + n, *pages = meta + n + (n + 1);
    int32_t at = 0;
    for (int i = 0; i < n; i++) {
        meta[i] = ctx[i];
        first[i] = at;
        for (int b = 0; b < (ctx[i] + PAGE - 1) / PAGE; b++) {
            const int32_t page = seqs[i]->pages[b];
            CUDA_REQUIRE(page >= 0 && page < kv->n_pages, "mla_decode: page %d of %d", page, kv->n_pages);
            pages[at++] = page;
        }
    }
    first[n] = at;
    const int32_t *d_meta = (const int32_t *)cuda_upload_scratch(be, SCR_I32, meta, (size_t)words * sizeof *meta);
    const size_t smem = (size_t)(kvr + rope) * sizeof(float);
    CUDA_REQUIRE(smem <= 48 * 1024, "mla_decode: entry of %d values too large", kvr + rope);
    k_mla_decode<<<(unsigned)((int64_t)n * n_heads), ATT_THREADS, smem, cuda_stream(be)>>>(
        kv->data, kv->n_layers, kv->entry_dim, kvr, rope, layer, d_meta, n, n_heads, q_lat, q_pe, scale, o_lat);
    CUDA_LAUNCHED(be);
}

/* ---- mla_prefill -------------------------------------------------------------------- */

__global__ void __launch_bounds__(ATT_THREADS)
    k_mla_prefill(int pos0, int H, int nope, int rope, int vdim, const float *q_all, const float *kvb,
                  const float *k_pe, float scale, float *o) {
    extern __shared__ float q[]; /* [nope + rope] */
    __shared__ float s[PAGE], p[PAGE];
    const int64_t th = blockIdx.x; /* token * H + head */
    const int t = (int)(th / H), h = (int)(th % H);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int qdim = nope + rope, kvdim = nope + vdim;
    const int64_t kv_stride = (int64_t)H * kvdim;
    for (int d = threadIdx.x; d < qdim; d += ATT_THREADS) q[d] = q_all[th * qdim + d];
    const float *k = kvb + (int64_t)h * kvdim;
    float acc[ATT_ACC];
#pragma unroll
    for (int j = 0; j < ATT_ACC; j++) acc[j] = 0.0f;
    float m = -INFINITY, sum = 0.0f;
    const int ctx = pos0 + t + 1; /* causal: keys 0..pos */
    __syncthreads();
    for (int s0 = 0; s0 < ctx; s0 += PAGE) {
        const int nt = ctx - s0 < PAGE ? ctx - s0 : PAGE;
        for (int u = warp; u < nt; u += ATT_WARPS) {
            const float *kr = k + (int64_t)(s0 + u) * kv_stride;
            const float *pe = k_pe + (int64_t)(s0 + u) * rope;
            float dn = 0.0f, dp = 0.0f;
            for (int d = lane; d < nope; d += 32) dn += q[d] * kr[d];
            for (int d = lane; d < rope; d += 32) dp += q[nope + d] * pe[d];
            dn = warp_sum(dn);
            dp = warp_sum(dp);
            if (lane == 0) s[u] = (dn + dp) * scale;
        }
        __syncthreads();
        softmax_page(s, p, nt, m, sum, acc, k + (int64_t)s0 * kv_stride + nope, kv_stride, vdim);
        __syncthreads();
    }
    const float inv = 1.0f / sum;
    float *out = o + th * vdim;
#pragma unroll
    for (int j = 0; j < ATT_ACC; j++) {
        const int d = threadIdx.x + j * ATT_THREADS;
        if (d < vdim) out[d] = acc[j] * inv;
    }
}

void cuda_mla_prefill(backend *be, int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                      const float *kvb, const float *k_pe, float scale, float *o) {
    if (T <= 0 || n_heads <= 0) return;
    CUDA_REQUIRE(vdim >= 1 && vdim <= ATT_MAX_DIM, "mla_prefill: v_head_dim %d (at most %d)", vdim, ATT_MAX_DIM);
    CUDA_REQUIRE(pos0 >= 0 && nope >= 0 && rope >= 0, "mla_prefill: pos0 %d, nope %d, rope %d", pos0, nope, rope);
    const size_t smem = (size_t)(nope + rope) * sizeof(float);
    CUDA_REQUIRE(smem <= 48 * 1024, "mla_prefill: query of %d values too large", nope + rope);
    k_mla_prefill<<<(unsigned)((int64_t)T * n_heads), ATT_THREADS, smem ? smem : 4, cuda_stream(be)>>>(
        pos0, n_heads, nope, rope, vdim, q, kvb, k_pe, scale, o);
    CUDA_LAUNCHED(be);
}
