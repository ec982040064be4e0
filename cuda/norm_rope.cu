/* cuda/norm_rope.cu — rmsnorm, embedding and RoPE on the device; the CPU
 * references are cpu_rmsnorm_ref, cpu_embedding_ref (cpu/cpu_ops.c) and
 * cpu_rope (cpu/router.c).
 *
 *   rmsnorm:   one 256-thread block per row; sum of squares in double (as the
 *              reference), scale 1/sqrt(mean + eps) in float, weight decoded per
 *              element (any dtype, one row, row0 honoured). y may alias x: each
 *              thread rewrites only the elements it read.
 *   embedding: ids are host memory, checked against the table (an id outside
 *              it aborts, like the CPU) and copied to device scratch; one block
 *              per token decodes its row (any dtype).
 *   rope:      positions (host) and inv_freq (host doubles) are copied to the
 *              device per call; one thread per (token, pair) computes the angle
 *              pos·inv_freq and its cos/sin in double, as the CPU does, rounds them
 *              to float and rotates that pair in all n_vec vectors, with separate
 *              multiply and add roundings (no FMA) like the CPU code. */
#include "cuda/cuda_internal.cuh"

template <int DT>
__global__ void __launch_bounds__(256) k_rmsnorm(dweight g, const float *x, float *y, int d, float eps) {
    __shared__ double part[8];
    const int64_t row = blockIdx.x;
    const float *xi = x + row * d;
    float *yi = y + row * d;
    double ss = 0.0;
    for (int c = threadIdx.x; c < d; c += 256) ss += (double)xi[c] * xi[c];
    ss = warp_sum_d(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    double total = 0.0;
#pragma unroll
    for (int w = 0; w < 8; w++) total += part[w];
    const double s = 1.0 / sqrt(total / d + eps);
    for (int c = threadIdx.x; c < d; c += 256) yi[c] = (float)(xi[c] * s * dw_get<DT>(g, 0, c));
}

void cuda_rmsnorm(backend *be, const weight *g, const float *x, float *y, int m, int d, float eps) {
    if (m <= 0 || d <= 0) return;
    CUDA_REQUIRE(g->data && (g->dtype != DTYPE_F8_E4M3 || g->scale), "rmsnorm: weight without data/scales");
    CUDA_REQUIRE(g->cols >= d, "rmsnorm: weight has %lld values for rows of %d", (long long)g->cols, d);
    const dweight dg = dweight_of(g);
    CUDA_DISPATCH_DTYPE(g->dtype, DT, (k_rmsnorm<DT><<<m, 256, 0, cuda_stream(be)>>>(dg, x, y, d, eps)));
    CUDA_LAUNCHED(be);
}

template <int DT>
__global__ void __launch_bounds__(256) k_embedding(dweight t, const int32_t *ids, float *y) {
    const int64_t i = blockIdx.x;
    const int64_t id = ids[i];
    float *out = y + i * t.cols;
    for (int64_t c = threadIdx.x; c < t.cols; c += 256) out[c] = dw_get<DT>(t, id, c);
}

void cuda_embedding(backend *be, const weight *table, const int32_t *ids, int n, float *y) {
    if (n <= 0 || table->cols <= 0) return;
    CUDA_REQUIRE(table->data && (table->dtype != DTYPE_F8_E4M3 || table->scale), "embedding: table without data");
    for (int i = 0; i < n; i++)
        CUDA_REQUIRE(ids[i] >= 0 && ids[i] < table->rows, "embedding: token id %d outside [0, %lld)", ids[i],
                     (long long)table->rows);
    const int32_t *d_ids = (const int32_t *)cuda_upload_scratch(be, SCR_I32, ids, (size_t)n * sizeof *ids);
    const dweight dt = dweight_of(table);
    CUDA_DISPATCH_DTYPE(table->dtype, DT, (k_embedding<DT><<<n, 256, 0, cuda_stream(be)>>>(dt, d_ids, y)));
    CUDA_LAUNCHED(be);
}

__global__ void k_rope(float *x, int n_tok, int half, int n_vec, int64_t tok_stride, int64_t vec_stride,
                       const int32_t *pos, const double *inv_freq, double attn_factor) {
    const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= (int64_t)n_tok * half) return;
    const int64_t t = idx / half;
    const int i = (int)(idx % half);
    const double angle = (double)pos[t] * inv_freq[i];
    double sd, cd;
    sincos(angle, &sd, &cd);
    const float c = (float)(cd * attn_factor), s = (float)(sd * attn_factor);
    for (int v = 0; v < n_vec; v++) {
        float *p = x + t * tok_stride + v * vec_stride + 2 * i;
        const float a = p[0], b = p[1];
        p[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        p[1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
}

void cuda_rope(backend *be, const rope_params *rp, float *x, int n_tok, int n_vec, int64_t tok_stride,
               int64_t vec_stride, const int32_t *pos) {
    const int half = rp->dim / 2;
    if (n_tok <= 0 || n_vec <= 0 || half <= 0) return;
    const int32_t *d_pos = (const int32_t *)cuda_upload_scratch(be, SCR_I32, pos, (size_t)n_tok * sizeof *pos);
    const double *d_freq = (const double *)cuda_upload_scratch(be, SCR_F64, rp->inv_freq, (size_t)half * sizeof(double));
    const int64_t threads = (int64_t)n_tok * half;
    k_rope<<<cuda_blocks_for(threads, 256), 256, 0, cuda_stream(be)>>>(x, n_tok, half, n_vec, tok_stride, vec_stride,
                                                                        d_pos, d_freq, rp->attn_factor);
    CUDA_LAUNCHED(be);
}
