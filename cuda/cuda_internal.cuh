/* cuda/cuda_internal.cuh — what the CUDA backend's translation units share:
 * the backend state, the checking macros, per-backend scratch buffers, and the
 * device-side view of a weight (dweight) with its element decoder.
 *
 * Owned by cuda/backend_cuda.cu (state, scratch); included by every .cu file of cuda/.
 * Not thread-safe: one engine thread drives one backend (engine/backend.h).
 *
 * Host data the model passes to ops (token ids, positions, block tables, rope
 * inv_freq, kv_seq page tables) is copied into device scratch inside the op,
 * on the backend's stream. A host->device copy from pageable memory returns
 * once the source has been staged, so the host buffers may be reused at once;
 * stream order makes the next op's copy wait for this op's kernels. */
#ifndef MS_CUDA_INTERNAL_CUH
#define MS_CUDA_INTERNAL_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda/backend_cuda.h"

/* Checks a CUDA call; on failure fills err (if any) with call, file, line and returns -1. */
#define CUDA_TRY(call, err)                                                                             \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess)                                                                          \
            return ms_err_set((err), "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
    } while (0)

/* For ops with no error return: a failed call is a broken invariant. */
#define CUDA_CHECK(call)                                                                                \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess) {                                                                        \
            fprintf(stderr, "mlaserve: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
            abort();                                                                                    \
        }                                                                                               \
    } while (0)

/* After a kernel launch: launch errors always; with MLASERVE_CUDA_SYNC=1 in the
 * environment also waits for the kernel so a fault names the launch that made it. */
#define CUDA_LAUNCHED(be) cuda_after_launch((be), __FILE__, __LINE__)

/* A host-side precondition of an op (bad shapes from the caller): abort with a message. */
#define CUDA_REQUIRE(cond, ...)                                                                         \
    do {                                                                                                \
        if (!(cond)) {                                                                                  \
            fprintf(stderr, "mlaserve cuda: ");                                                         \
            fprintf(stderr, __VA_ARGS__);                                                               \
            fprintf(stderr, " (%s:%d)\n", __FILE__, __LINE__);                                          \
            abort();                                                                                    \
        }                                                                                               \
    } while (0)

/* Scratch slots: each op uses distinct slots for the host data it uploads. */
enum {
    SCR_I32 = 0,   /* ids, positions, block tables */
    SCR_I64,       /* entry offsets (kv_write / kv_gather) */
    SCR_F64,       /* rope inv_freq */
    SCR_F32,       /* router bias given in host memory */
    SCR_ROWS,      /* copy_rows / axpy_rows: row indices and weights */
    SCR_COUNT
};

typedef struct {
    int device;
    int sync_each_launch; /* MLASERVE_CUDA_SYNC=1 */
    int n_sm;
    cudaStream_t stream;
    char name[768];
    void *dev_scratch[SCR_COUNT];
    size_t dev_cap[SCR_COUNT];
    void *host_scratch[SCR_COUNT];
    size_t host_cap[SCR_COUNT];
} cuda_state;

/* The backend's state, with its device made current on the calling thread: the
 * thread that drives a backend need not be the one that created it (serve's
 * engine thread, a rank thread of --ep), and every op reaches the state first. */
static inline cuda_state *cuda_st(backend *be) {
    cuda_state *st = (cuda_state *)be->impl;
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != st->device) CUDA_CHECK(cudaSetDevice(st->device));
    return st;
}
static inline cudaStream_t cuda_stream(backend *be) { return cuda_st(be)->stream; }

void cuda_after_launch(backend *be, const char *file, int line);
/* Device / host scratch of at least `bytes`, owned by the backend, valid until
 * the next call for the same slot. Growing a device buffer syncs the stream first. */
void *cuda_dev_scratch(backend *be, int slot, size_t bytes);
void *cuda_host_scratch(backend *be, int slot, size_t bytes);
/* Copies `bytes` of host memory into device scratch `slot` (stream-ordered). */
void *cuda_upload_scratch(backend *be, int slot, const void *host, size_t bytes);

static inline unsigned cuda_blocks_for(int64_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---- weights on the device -------------------------------------------------- */

/* The device-side copy of an engine/weight.h view (data and scale are device
 * pointers; logical row r is physical row row0 + r). Passed to kernels by value. */
struct dweight {
    int64_t rows, cols, row0, scale_cols;
    const void *data;
    const float *scale;
};

static inline dweight dweight_of(const weight *w) {
    dweight d;
    d.rows = w->rows;
    d.cols = w->cols;
    d.row0 = w->row0;
    d.scale_cols = weight_scale_cols(w);
    d.data = w->data;
    d.scale = w->scale;
    return d;
}

/* One e4m3fn code to float, exactly as common/dtype.c's e4m3_to_f32 (NaN codes give NaN). */
__device__ __forceinline__ float e4m3_decode(uint8_t c) {
    int e = (c >> 3) & 15, m = c & 7;
    float v;
    if (e == 15 && m == 7) v = __int_as_float(0x7fc00000);
    else if (e == 0) v = (float)m * (1.0f / 512.0f);                  /* m * 2^-9, exact */
    else v = __int_as_float(((e - 7 + 127) << 23) | (m << 20));     /* (8+m) * 2^(e-10) */
    return (c & 0x80) ? -v : v;
}

/* Element (r, c) of the logical view as float: weight_get of engine/weight.c. */
template <int DT>
__device__ __forceinline__ float dw_get(const dweight &w, int64_t r, int64_t c) {
    int64_t pr = w.row0 + r;
    int64_t i = pr * w.cols + c;
    if (DT == DTYPE_F32) return ((const float *)w.data)[i];
    if (DT == DTYPE_BF16) return __uint_as_float((uint32_t)((const uint16_t *)w.data)[i] << 16);
    if (DT == DTYPE_F16) return __half2float(((const __half *)w.data)[i]);
    /* F8_E4M3: value * scale[pr/128][c/128] */
    float s = w.scale[(pr / 128) * w.scale_cols + c / 128];
    return __fmul_rn(e4m3_decode(((const uint8_t *)w.data)[i]), s);
}

/* Calls body(std::integral_constant-like DT) for the weight's dtype; aborts on an unknown one. */
#define CUDA_DISPATCH_DTYPE(dtype, DT, ...)                                                             \
    do {                                                                                                \
        switch (dtype) {                                                                                \
        case DTYPE_F32: { constexpr int DT = DTYPE_F32; __VA_ARGS__; } break;                           \
        case DTYPE_BF16: { constexpr int DT = DTYPE_BF16; __VA_ARGS__; } break;                         \
        case DTYPE_F16: { constexpr int DT = DTYPE_F16; __VA_ARGS__; } break;                           \
        case DTYPE_F8_E4M3: { constexpr int DT = DTYPE_F8_E4M3; __VA_ARGS__; } break;                   \
        default: CUDA_REQUIRE(0, "unknown weight dtype %d", (int)(dtype));                               \
        }                                                                                               \
    } while (0)

/* ---- warp / block reductions ------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- op entry points (one file per kernel family) ------------------------------ */

/* cuda/linear.cu */
void cuda_linear(backend *be, const weight *w, const float *x, float *y, int m);
void cuda_linear_t(backend *be, const weight *w, const float *x, float *y, int m);
/* cuda/norm_rope.cu */
void cuda_rmsnorm(backend *be, const weight *g, const float *x, float *y, int m, int d, float eps);
void cuda_embedding(backend *be, const weight *table, const int32_t *ids, int n, float *y);
void cuda_rope(backend *be, const rope_params *rp, float *x, int n_tok, int n_vec, int64_t tok_stride,
               int64_t vec_stride, const int32_t *pos);
/* cuda/router.cu */
void cuda_router(backend *be, const router_params *rp, const float *logits, int n, int32_t *idx, float *w);
/* cuda/mla.cu */
void cuda_kv_write(backend *be, kv_cache *kv, const kv_seq *seq, int layer, int pos0, int n, const float *c, int kvr,
                   const float *k_pe, int rope_dim);
void cuda_kv_gather(backend *be, const kv_cache *kv, const kv_seq *seq, int layer, int n, float *c, int kvr,
                    float *k_pe, int rope_dim);
void cuda_mla_decode(backend *be, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs, const int32_t *ctx,
                     int n_heads, const float *q_lat, const float *q_pe, float scale, float *o_lat);
void cuda_mla_prefill(backend *be, int T, int pos0, int n_heads, int nope, int rope, int vdim, const float *q,
                      const float *kvb, const float *k_pe, float scale, float *o);

#endif
