/* cuda/backend_cuda.cu — CUDA backend skeleton (see backend_cuda.h): device
 * handling, memory, elementwise kernels. Kernels for GEMM / MLA are issue #4. */
#include <cuda_runtime.h>
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

/* For ops with no error return: a failed launch is a broken invariant. */
#define CUDA_CHECK(call)                                                                                \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess) {                                                                        \
            fprintf(stderr, "mlaserve: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
            abort();                                                                                    \
        }                                                                                               \
    } while (0)

typedef struct {
    int device;
    cudaStream_t stream;
    char name[768];
} cuda_state;

static cuda_state *state(backend *be) { return (cuda_state *)be->impl; }

static void *cuda_alloc(backend *be, size_t bytes) {
    void *p = NULL;
    (void)be;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) return NULL;
    return p;
}

static void cuda_free_op(backend *be, void *p) {
    (void)be;
    if (p) CUDA_CHECK(cudaFree(p));
}

static unsigned blocks_for(int64_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

__global__ void k_zero(float *y, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = 0.0f;
}

__global__ void k_axpy(float a, const float *x, float *y, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * x[i];
}

__global__ void k_silu_mul(const float *g, const float *u, float *y, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) {
        float z = g[i];
        y[i] = z / (1.0f + expf(-z)) * u[i];
    }
}

static void cuda_zero(backend *be, float *y, int64_t n) {
    if (n <= 0) return;
    k_zero<<<blocks_for(n, 256), 256, 0, state(be)->stream>>>(y, n);
    CUDA_CHECK(cudaGetLastError());
}

static void cuda_axpy(backend *be, float a, const float *x, float *y, int64_t n) {
    if (n <= 0) return;
    k_axpy<<<blocks_for(n, 256), 256, 0, state(be)->stream>>>(a, x, y, n);
    CUDA_CHECK(cudaGetLastError());
}

static void cuda_silu_mul(backend *be, const float *g, const float *u, float *y, int64_t n) {
    if (n <= 0) return;
    k_silu_mul<<<blocks_for(n, 256), 256, 0, state(be)->stream>>>(g, u, y, n);
    CUDA_CHECK(cudaGetLastError());
}

static void cuda_copy_2d(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                         int64_t rows, int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
    CUDA_CHECK(cudaMemcpy2DAsync(dst, (size_t)dst_stride * sizeof(float), src, (size_t)src_stride * sizeof(float),
                                 (size_t)cols * sizeof(float), (size_t)rows, cudaMemcpyDeviceToDevice,
                                 state(be)->stream));
}

static backend_ops make_table(void) {
    backend_ops t = {};
    t.name = "cuda";
    t.alloc = cuda_alloc;
    t.free = cuda_free_op;
    t.zero = cuda_zero;
    t.axpy = cuda_axpy;
    t.silu_mul = cuda_silu_mul;
    t.copy_2d = cuda_copy_2d;
    return t;
}

static const backend_ops cuda_table = make_table();

extern "C" int backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}

static int init_state(cuda_state *st, int device, ms_err *err) {
    int n = backend_cuda_device_count();
    if (n == 0) return ms_err_set(err, "no CUDA device is visible (driver missing or no GPU)");
    if (device < 0 || device >= n) return ms_err_set(err, "CUDA device %d does not exist (%d visible)", device, n);
    st->device = device;
    CUDA_TRY(cudaSetDevice(device), err);
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, device), err);
    snprintf(st->name, sizeof st->name, "%s (sm_%d%d, %.0f GiB)", prop.name, prop.major, prop.minor,
             prop.totalGlobalMem / 1073741824.0);
    CUDA_TRY(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking), err);
    return 0;
}

extern "C" backend *backend_cuda_create(int device, ms_err *err) {
    backend *be = (backend *)calloc(1, sizeof *be);
    cuda_state *st = (cuda_state *)calloc(1, sizeof *st);
    if (!be || !st) {
        free(be);
        free(st);
        ms_err_set(err, "out of memory");
        return NULL;
    }
    if (init_state(st, device, err) != 0) {
        free(be);
        free(st);
        return NULL;
    }
    be->ops = &cuda_table;
    be->impl = st;
    return be;
}

extern "C" void backend_cuda_free(backend *be) {
    if (!be) return;
    cudaStreamDestroy(state(be)->stream);
    free(be->impl);
    free(be);
}

extern "C" int backend_cuda_upload(backend *be, void *dst, const void *src, size_t bytes, ms_err *err) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, state(be)->stream), err);
    return 0;
}

extern "C" int backend_cuda_download(backend *be, void *dst, const void *src, size_t bytes, ms_err *err) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, state(be)->stream), err);
    CUDA_TRY(cudaStreamSynchronize(state(be)->stream), err);
    return 0;
}

extern "C" int backend_cuda_sync(backend *be, ms_err *err) {
    CUDA_TRY(cudaStreamSynchronize(state(be)->stream), err);
    return 0;
}

extern "C" const char *backend_cuda_device_name(const backend *be) { return ((const cuda_state *)be->impl)->name; }
