/* cuda/linear.cu — linear (y = x·Wᵀ) and linear_t (y = x·W) for weights in
 * F32, BF16, F16 and F8_E4M3 with 128x128 block scales; the CPU reference is
 * cpu_linear_ref / cpu_linear_t_ref (cpu/cpu_ops.c).
 *
 * Algorithm (version 1: simple and correct, not fast):
 *   - every weight element is decoded as weight_get does (dw_get in
 *     cuda_internal.cuh): FP8 value × scale[physical_row/128][col/128], where the
 *     physical row is row0 + r, so views starting at any row are handled;
 *   - small m (≤ ROWS_MAX_M): linear runs one warp per output feature, lanes
 *     striding over K (coalesced), MB rows of x per pass, fp32 accumulation and a
 *     shuffle reduction; linear_t runs one thread per output column (consecutive
 *     threads read consecutive columns of a weight row), looping over W's rows;
 *   - larger m: one tiled shared-memory kernel for both (64x64 output tile,
 *     K step 16, 256 threads with 4x4 outputs each), weights decoded to fp32 while
 *     staged into shared memory, fp32 accumulation, every edge bounds-checked.
 * Limits: m < 2^31, rows/cols < 2^31 (grid sizes); no tensor cores, no FP8
 * activations. The fast paths (FP8 wgmma with TMA, cuBLASLt for BF16) are the
 * plan in docs/cuda.md. */
#include "cuda/cuda_internal.cuh"

#define ROWS_MAX_M 16 /* above this, the tiled kernel */
#define MB 8          /* x rows per pass of the small-m kernels */
#define ROWS_WARPS 8  /* warps per block of k_linear_rows */

/* y[i][n] = Σ_k x[i][k] W[n][k] for i in [i0, i0+MB) ∩ [0, m): one warp per n. */
template <int DT>
__global__ void __launch_bounds__(ROWS_WARPS * 32) k_linear_rows(dweight w, const float *x, float *y, int m) {
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * ROWS_WARPS + (threadIdx.x >> 5);
    const int i0 = blockIdx.y * MB;
    if (n >= w.rows) return; /* whole warps only: no shuffles are left waiting */
    const int64_t K = w.cols;
    float acc[MB];
#pragma unroll
    for (int i = 0; i < MB; i++) acc[i] = 0.0f;
    for (int64_t k = lane; k < K; k += 32) {
        const float wv = dw_get<DT>(w, n, k);
#pragma unroll
        for (int i = 0; i < MB; i++)
            if (i0 + i < m) acc[i] += wv * x[(int64_t)(i0 + i) * K + k];
    }
#pragma unroll
    for (int i = 0; i < MB; i++) {
        const float s = warp_sum(acc[i]);
        if (lane == 0 && i0 + i < m) y[(int64_t)(i0 + i) * w.rows + n] = s;
    }
}

/* y[i][c] = Σ_n x[i][n] W[n][c] for i in [i0, i0+MB) ∩ [0, m): one thread per c. */
template <int DT>
__global__ void __launch_bounds__(256) k_linear_t_rows(dweight w, const float *x, float *y, int m) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int i0 = blockIdx.y * MB;
    if (c >= w.cols) return;
    const int64_t N = w.rows;
    float acc[MB];
#pragma unroll
    for (int i = 0; i < MB; i++) acc[i] = 0.0f;
    for (int64_t n = 0; n < N; n++) {
        const float wv = dw_get<DT>(w, n, c);
#pragma unroll
        for (int i = 0; i < MB; i++)
            if (i0 + i < m) acc[i] += x[(int64_t)(i0 + i) * N + n] * wv;
    }
#pragma unroll
    for (int i = 0; i < MB; i++)
        if (i0 + i < m) y[(int64_t)(i0 + i) * w.cols + c] = acc[i];
}

#define TM 64
#define TN 64
#define TK 16

/* y[i][j] = Σ_k x[i][k] B(j, k) with B(j, k) = W[j][k] (linear, N = rows, K = cols)
 * or W[k][j] (TRANS: linear_t, N = cols, K = rows). Block: a TM x TN tile of y;
 * thread (ty, tx) of 16x16 computes rows ty*4.. and columns tx*4.. */
template <int DT, bool TRANS>
__global__ void __launch_bounds__(256) k_linear_tiled(dweight w, const float *x, float *y, int m) {
    __shared__ float xs[TK][TM + 4];
    __shared__ float ws[TK][TN + 4];
    const int64_t N = TRANS ? w.cols : w.rows, K = TRANS ? w.rows : w.cols;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int64_t i0 = (int64_t)blockIdx.y * TM, j0 = (int64_t)blockIdx.x * TN;
    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;

    for (int64_t k0 = 0; k0 < K; k0 += TK) {
        /* x tile: TM rows x TK columns, k fastest (consecutive threads, consecutive k) */
#pragma unroll
        for (int q = 0; q < (TM * TK) / 256; q++) {
            const int e = tid + 256 * q, r = e / TK, kk = e % TK;
            const int64_t i = i0 + r, k = k0 + kk;
            xs[kk][r] = (i < m && k < K) ? x[i * K + k] : 0.0f;
        }
        /* weight tile: TN outputs x TK, read along the weight's contiguous dimension */
#pragma unroll
        for (int q = 0; q < (TN * TK) / 256; q++) {
            const int e = tid + 256 * q;
            int jj, kk;
            if (TRANS) { jj = e % TN; kk = e / TN; } /* W[k][j]: j contiguous */
            else { jj = e / TK; kk = e % TK; }       /* W[j][k]: k contiguous */
            const int64_t j = j0 + jj, k = k0 + kk;
            float v = 0.0f;
            if (j < N && k < K) v = TRANS ? dw_get<DT>(w, k, j) : dw_get<DT>(w, j, k);
            ws[kk][jj] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TK; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                a[q] = xs[kk][ty * 4 + q];
                b[q] = ws[kk][tx * 4 + q];
            }
#pragma unroll
            for (int p = 0; p < 4; p++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[p][q] += a[p] * b[q];
        }
        __syncthreads();
    }
#pragma unroll
    for (int p = 0; p < 4; p++) {
        const int64_t i = i0 + ty * 4 + p;
        if (i >= m) continue;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int64_t j = j0 + tx * 4 + q;
            if (j < N) y[i * N + j] = acc[p][q];
        }
    }
}

static void check_weight(const weight *w, const char *op) {
    CUDA_REQUIRE(w->rows < (1ll << 31) && w->cols < (1ll << 31), "%s: weight [%lld, %lld] too large", op,
                 (long long)w->rows, (long long)w->cols);
    CUDA_REQUIRE(w->data, "%s: weight has no data", op);
    CUDA_REQUIRE(w->dtype != DTYPE_F8_E4M3 || w->scale, "%s: FP8 weight without scales", op);
}

void cuda_linear(backend *be, const weight *w, const float *x, float *y, int m) {
    if (m <= 0 || w->rows <= 0) return;
    if (w->cols <= 0) {
        CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)m * (size_t)w->rows * sizeof *y, cuda_stream(be)));
        return;
    }
    check_weight(w, "linear");
    const dweight dw = dweight_of(w);
    cudaStream_t s = cuda_stream(be);
    if (m <= ROWS_MAX_M) {
        dim3 grid(cuda_blocks_for(w->rows, ROWS_WARPS), cuda_blocks_for(m, MB));
        CUDA_DISPATCH_DTYPE(w->dtype, DT, (k_linear_rows<DT><<<grid, ROWS_WARPS * 32, 0, s>>>(dw, x, y, m)));
    } else {
        CUDA_REQUIRE(m / TM < 65535, "linear: m = %d too large", m);
        dim3 grid(cuda_blocks_for(w->rows, TN), cuda_blocks_for(m, TM));
        CUDA_DISPATCH_DTYPE(w->dtype, DT, (k_linear_tiled<DT, false><<<grid, 256, 0, s>>>(dw, x, y, m)));
    }
    CUDA_LAUNCHED(be);
}

void cuda_linear_t(backend *be, const weight *w, const float *x, float *y, int m) {
    if (m <= 0 || w->cols <= 0) return;
    if (w->rows <= 0) {
        CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)m * (size_t)w->cols * sizeof *y, cuda_stream(be)));
        return;
    }
    check_weight(w, "linear_t");
    const dweight dw = dweight_of(w);
    cudaStream_t s = cuda_stream(be);
    if (m <= ROWS_MAX_M) {
        dim3 grid(cuda_blocks_for(w->cols, 256), cuda_blocks_for(m, MB));
        CUDA_DISPATCH_DTYPE(w->dtype, DT, (k_linear_t_rows<DT><<<grid, 256, 0, s>>>(dw, x, y, m)));
    } else {
        CUDA_REQUIRE(m / TM < 65535, "linear_t: m = %d too large", m);
        dim3 grid(cuda_blocks_for(w->cols, TN), cuda_blocks_for(m, TM));
        CUDA_DISPATCH_DTYPE(w->dtype, DT, (k_linear_tiled<DT, true><<<grid, 256, 0, s>>>(dw, x, y, m)));
    }
    CUDA_LAUNCHED(be);
}
