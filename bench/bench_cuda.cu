/* bench/bench_cuda.cu — timings of the CUDA backend's ops on the shapes of
 * issue #4, printed as markdown table rows beside the H200's limits:
 *   - linear with FP8 e4m3 128x128-block weights, M ∈ {64, 128, 4096} ×
 *     (N, K) ∈ DeepSeek-V3's projections; TFLOPS and % of the dense FP8 peak;
 *   - the same with BF16 weights for M = 128 (one row per shape);
 *   - "grouped" experts: 8 experts × 256 tokens, N=4096, K=7168, run as 8
 *     linear calls (there is no grouped op yet);
 *   - mla_decode: batch 128, one query token each, context 4096 / 8192,
 *     h_q ∈ {16, 128}, V3 latent (512 + 64) in the fp32 cache of the seam; GB/s
 *     of cache read once (the ideal traffic) and TFLOPS.
 * Times come from CUDA events on the backend's stream around `iters` calls
 * after one warm-up call. The whole run keeps to a time budget (--budget-s,
 * default 100): a row whose predicted time does not fit is printed as skipped.
 * Usage: bench_cuda [--budget-s S] [--device N]. Needs a GPU; exits 0 with one
 * line without one. Inputs are random; no result is checked here
 * (test/cuda/test_cuda_ops does that). */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/backend_cuda.h"

/* H200 SXM datasheet numbers (H200.md: leads, not measurements). */
#define PEAK_FP8_DENSE_TFLOPS 1979.0
#define PEAK_BF16_DENSE_TFLOPS 989.0
#define PEAK_FP32_TFLOPS 67.0
#define PEAK_HBM_TBS 4.8

#define CHECK(call)                                                                                     \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess) {                                                                        \
            fprintf(stderr, "bench_cuda: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__,          \
                    cudaGetErrorString(e_));                                                            \
            exit(1);                                                                                    \
        }                                                                                               \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double t_start, budget_s = 100.0;

static double budget_left(void) { return budget_s - (now_s() - t_start); }

/* Deterministic pseudo-random fill on the device (values in [-1, 1)). */
__global__ void k_fill_f32(float *p, int64_t n, uint32_t seed) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
        p[i] = (float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

/* Random bytes; for e4m3 the NaN codes 0x7F / 0xFF become 0x7E / 0xFE. */
__global__ void k_fill_u8(uint8_t *p, int64_t n, uint32_t seed, int e4m3) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
        uint8_t b = (uint8_t)(h >> 7);
        if (e4m3 && (b & 0x7F) == 0x7F) b ^= 1;
        p[i] = b;
    }
}

/* Random finite 16-bit floats of magnitude ~2^-4 .. 2^4 (bf16: exponent 123..131, f16: 11..19). */
__global__ void k_fill_16(uint16_t *p, int64_t n, uint32_t seed, int bf16) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
        uint32_t sign = (h >> 31) & 1, e = (h >> 20) % 9;
        p[i] = bf16 ? (uint16_t)(sign << 15 | (123 + e) << 7 | (h & 0x7f))
                    : (uint16_t)(sign << 15 | (11 + e) << 10 | (h & 0x3ff));
    }
}

static void fill_f32(float *p, int64_t n, uint32_t seed) {
    if (n <= 0) return;
    k_fill_f32<<<1024, 256>>>(p, n, seed);
    CHECK(cudaGetLastError());
}

static void fill_u8(void *p, int64_t n, uint32_t seed, int e4m3) {
    if (n <= 0) return;
    k_fill_u8<<<1024, 256>>>((uint8_t *)p, n, seed, e4m3);
    CHECK(cudaGetLastError());
}

static void *dalloc(size_t bytes) {
    void *p = NULL;
    CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

typedef struct {
    backend *be;
    cudaStream_t stream;
    cudaEvent_t e0, e1;
} bench;

/* A [rows, cols] weight of dtype dt on the device, random, scales ~1. */
static weight weight_dev(dtype_t dt, int64_t rows, int64_t cols, uint32_t seed) {
    weight w;
    memset(&w, 0, sizeof w);
    w.dtype = dt;
    w.rows = rows;
    w.cols = cols;
    size_t bytes = (size_t)(rows * cols) * dtype_size(dt);
    void *d = dalloc(bytes);
    if (dt == DTYPE_F32) fill_f32((float *)d, rows * cols, seed);
    else if (dt == DTYPE_BF16 || dt == DTYPE_F16) {
        k_fill_16<<<1024, 256>>>((uint16_t *)d, rows * cols, seed, dt == DTYPE_BF16);
        CHECK(cudaGetLastError());
    } else fill_u8(d, (int64_t)bytes, seed, 1);
    w.data = d;
    if (dt == DTYPE_F8_E4M3) {
        int64_t ns = (rows + 127) / 128 * weight_scale_cols(&w);
        float *s = (float *)dalloc((size_t)ns * sizeof *s);
        fill_f32(s, ns, seed ^ 0x5555u);
        w.scale = s;
    }
    CHECK(cudaDeviceSynchronize());
    return w;
}

static void weight_dev_free(weight *w) {
    CHECK(cudaFree((void *)w->data));
    if (w->scale) CHECK(cudaFree((void *)w->scale));
}

/* Seconds per call of fn(arg) over iters calls (after one warm-up call). */
typedef void (*bench_fn)(bench *b, void *arg);

static double time_calls(bench *b, bench_fn fn, void *arg, int *iters_out, double max_s) {
    double t0 = now_s();
    fn(b, arg); /* warm-up (module load, scratch growth) */
    CHECK(cudaStreamSynchronize(b->stream));
    double first = now_s() - t0;
    int iters = first > 0 ? (int)(max_s / first) : 10;
    if (iters < 1) iters = 1;
    if (iters > 20) iters = 20;
    CHECK(cudaEventRecord(b->e0, b->stream));
    for (int i = 0; i < iters; i++) fn(b, arg);
    CHECK(cudaEventRecord(b->e1, b->stream));
    CHECK(cudaEventSynchronize(b->e1));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, b->e0, b->e1));
    *iters_out = iters;
    return ms * 1e-3 / iters;
}

/* ---- linear ------------------------------------------------------------------------ */

typedef struct {
    weight w;
    const float *x;
    float *y;
    int m;
    int n_experts; /* > 0: that many calls on consecutive x / y slices (grouped) */
} linear_arg;

static void run_linear(bench *b, void *p) {
    linear_arg *a = (linear_arg *)p;
    if (a->n_experts <= 0) {
        b->be->ops->linear(b->be, &a->w, a->x, a->y, a->m);
        return;
    }
    for (int e = 0; e < a->n_experts; e++)
        b->be->ops->linear(b->be, &a->w, a->x + (size_t)e * a->m * a->w.cols, a->y + (size_t)e * a->m * a->w.rows,
                           a->m);
}

/* Measured TFLOPS per (N, K) at M = 128, to predict the M = 4096 rows. */
static double tflops_m128[8];

static void bench_linear(bench *b, dtype_t dt, int m, int64_t N, int64_t K, int shape, int experts) {
    const double flops = 2.0 * m * N * K * (experts > 0 ? experts : 1);
    const double peak = dt == DTYPE_F8_E4M3 ? PEAK_FP8_DENSE_TFLOPS : PEAK_BF16_DENSE_TFLOPS;
    char what[64];
    snprintf(what, sizeof what, "%s%s", experts > 0 ? "grouped 8x " : "", dtype_name(dt));
    if (m == 4096 && shape >= 0 && tflops_m128[shape] > 0) {
        double predicted_s = 2.0 * flops / (tflops_m128[shape] * 1e12); /* warm-up + one timed call */
        if (predicted_s > budget_left()) {
            printf("| linear %-18s | %5d | %6lld | %6lld | skipped: ~%.0f s predicted, %.0f s of budget left |\n",
                   what, m, (long long)N, (long long)K, predicted_s, budget_left());
            return;
        }
    }
    linear_arg a;
    memset(&a, 0, sizeof a);
    a.w = weight_dev(dt, N, K, (uint32_t)(N * 31 + K));
    int slices = experts > 0 ? experts : 1;
    float *x = (float *)dalloc((size_t)slices * m * K * sizeof(float));
    float *y = (float *)dalloc((size_t)slices * m * N * sizeof(float));
    fill_f32(x, (int64_t)slices * m * K, 7);
    CHECK(cudaDeviceSynchronize());
    a.x = x;
    a.y = y;
    a.m = m;
    a.n_experts = experts;
    int iters = 0;
    double s = time_calls(b, run_linear, &a, &iters, 0.3);
    double tf = flops / s * 1e-12;
    if (m == 128 && shape >= 0 && dt == DTYPE_F8_E4M3) tflops_m128[shape] = tf;
    printf("| linear %-18s | %5d | %6lld | %6lld | %9.3f ms | %7.2f TFLOPS | %5.2f%% of %4.0f | x%d |\n", what, m,
           (long long)N, (long long)K, s * 1e3, tf, 100.0 * tf / peak, peak, iters);
    CHECK(cudaFree(x));
    CHECK(cudaFree(y));
    weight_dev_free(&a.w);
}

/* ---- mla_decode --------------------------------------------------------------------------- */

typedef struct {
    kv_cache *kv;
    const kv_seq **seqs;
    int32_t *ctx;
    int n, H;
    float *q_lat, *q_pe, *o;
} decode_arg;

static void run_decode(bench *b, void *p) {
    decode_arg *a = (decode_arg *)p;
    b->be->ops->mla_decode(b->be, a->kv, 0, a->n, a->seqs, a->ctx, a->H, a->q_lat, a->q_pe, 0.07f, a->o);
}

static void bench_decode(bench *b, int batch, int ctx_len, int H) {
    const int kvr = 512, rope = 64;
    const double cache_bytes = (double)batch * ctx_len * (kvr + rope) * sizeof(float);
    const double flops = (double)batch * H * ctx_len * (2.0 * (kvr + rope) + 2.0 * kvr);
    if (budget_left() < 10) {
        printf("| mla_decode batch=%d ctx=%d h_q=%d | skipped: %.0f s of budget left |\n", batch, ctx_len, H,
               budget_left());
        return;
    }
    ms_err err = {{0}};
    kv_cache kv;
    int pages = batch * kv_pages_for(ctx_len);
    if (kv_cache_init(&kv, b->be, 1, kvr, rope, pages, &err) != 0) {
        printf("| mla_decode batch=%d ctx=%d h_q=%d | kv cache: %s |\n", batch, ctx_len, H, err.msg);
        return;
    }
    fill_f32(kv.data, (int64_t)pages * KV_PAGE_TOKENS * kv.entry_dim, 11);
    kv_seq *seqs = (kv_seq *)calloc((size_t)batch, sizeof *seqs);
    const kv_seq **sp = (const kv_seq **)calloc((size_t)batch, sizeof *sp);
    int32_t *ctx = (int32_t *)calloc((size_t)batch, sizeof *ctx);
    for (int i = 0; i < batch; i++) {
        if (kv_seq_reserve(&kv, &seqs[i], ctx_len, &err) != 0) {
            fprintf(stderr, "bench_cuda: %s\n", err.msg);
            exit(1);
        }
        seqs[i].n_tokens = ctx_len;
        sp[i] = &seqs[i];
        ctx[i] = ctx_len;
    }
    decode_arg a = {&kv, sp, ctx, batch, H, NULL, NULL, NULL};
    a.q_lat = (float *)dalloc((size_t)batch * H * kvr * sizeof(float));
    a.q_pe = (float *)dalloc((size_t)batch * H * rope * sizeof(float));
    a.o = (float *)dalloc((size_t)batch * H * kvr * sizeof(float));
    fill_f32(a.q_lat, (int64_t)batch * H * kvr, 3);
    fill_f32(a.q_pe, (int64_t)batch * H * rope, 5);
    CHECK(cudaDeviceSynchronize());
    int iters = 0;
    double s = time_calls(b, run_decode, &a, &iters, 0.5);
    double gbs = cache_bytes / s * 1e-9, tf = flops / s * 1e-12;
    printf("| mla_decode batch=%d ctx=%d h_q=%-3d | %9.3f ms | %8.1f GB/s (%5.1f%% of %.1f TB/s) | %6.2f TFLOPS "
           "(%5.1f%% of fp32 %.0f) | x%d |\n",
           batch, ctx_len, H, s * 1e3, gbs, 100.0 * gbs / (PEAK_HBM_TBS * 1e3), PEAK_HBM_TBS, tf,
           100.0 * tf / PEAK_FP32_TFLOPS, PEAK_FP32_TFLOPS, iters);
    CHECK(cudaFree(a.q_lat));
    CHECK(cudaFree(a.q_pe));
    CHECK(cudaFree(a.o));
    for (int i = 0; i < batch; i++) kv_seq_release(&kv, &seqs[i]);
    kv_cache_free(&kv);
    free(seqs);
    free(sp);
    free(ctx);
}

int main(int argc, char **argv) {
    int device = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--budget-s") == 0 && i + 1 < argc) budget_s = atof(argv[++i]);
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) device = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--budget-s S] [--device N]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (backend_cuda_device_count() == 0) {
        printf("bench_cuda: SKIPPED: no CUDA device on this machine\n");
        return 0;
    }
    t_start = now_s();
    ms_err err = {{0}};
    bench b;
    b.be = backend_cuda_create(device, &err);
    if (!b.be) {
        fprintf(stderr, "bench_cuda: %s\n", err.msg);
        return 1;
    }
    b.stream = (cudaStream_t)backend_cuda_stream(b.be);
    CHECK(cudaEventCreate(&b.e0));
    CHECK(cudaEventCreate(&b.e1));
    printf("bench_cuda: %s, budget %.0f s; peaks (datasheet): FP8 dense %.0f, BF16 dense %.0f, FP32 %.0f TFLOPS, "
           "HBM %.1f TB/s\n\n",
           backend_cuda_device_name(b.be), budget_s, PEAK_FP8_DENSE_TFLOPS, PEAK_BF16_DENSE_TFLOPS, PEAK_FP32_TFLOPS,
           PEAK_HBM_TBS);
    static const int64_t shapes[5][2] = {{2112, 7168}, {24576, 1536}, {7168, 2048}, {4096, 7168}, {7168, 16384}};
    printf("| op | M | N | K | time | rate | of peak | iters |\n|---|---|---|---|---|---|---|---|\n");
    for (int m = 64; m <= 128; m *= 2)
        for (int s = 0; s < 5; s++) bench_linear(&b, DTYPE_F8_E4M3, m, shapes[s][0], shapes[s][1], s, 0);
    for (int s = 0; s < 5; s++) bench_linear(&b, DTYPE_BF16, 128, shapes[s][0], shapes[s][1], -1, 0);
    bench_linear(&b, DTYPE_F8_E4M3, 256, 4096, 7168, -1, 8);
    printf("\n| op | time | bandwidth | compute | iters |\n|---|---|---|---|---|\n");
    bench_decode(&b, 128, 4096, 16);
    bench_decode(&b, 128, 8192, 16);
    bench_decode(&b, 128, 4096, 128);
    bench_decode(&b, 128, 8192, 128);
    printf("\n| op | M | N | K | time | rate | of peak | iters |\n|---|---|---|---|---|---|---|---|\n");
    static const int order[5] = {2, 0, 3, 1, 4}; /* smallest first, so the budget covers the most rows */
    for (int i = 0; i < 5; i++) bench_linear(&b, DTYPE_F8_E4M3, 4096, shapes[order[i]][0], shapes[order[i]][1], order[i], 0);
    if (backend_cuda_sync(b.be, &err) != 0) {
        fprintf(stderr, "bench_cuda: %s\n", err.msg);
        return 1;
    }
    printf("\nbench_cuda: done in %.1f s\n", now_s() - t_start);
    cudaEventDestroy(b.e0);
    cudaEventDestroy(b.e1);
    backend_cuda_free(b.be);
    return 0;
}
