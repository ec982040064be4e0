/* cuda/backend_cuda.cu — the CUDA backend (see backend_cuda.h): device
 * selection, memory and weight placement, the op table, scratch buffers, and the
 * small elementwise ops (zero, axpy, silu_mul, copy_2d, copy_rows, axpy_rows). The kernel families
 * live beside it: linear.cu, norm_rope.cu (rmsnorm, embedding, rope),
 * router.cu, mla.cu (kv_write, kv_gather, mla_decode, mla_prefill).
 * Everything runs on one non-blocking stream per backend; ops return before
 * their kernels finish except upload / download / weight_place, which complete.
 * Every op makes the backend's device current first (cuda_st), so whichever
 * thread drives the backend reaches the right GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.cuh"

/* ---- launch checking and scratch --------------------------------------------- */

void cuda_after_launch(backend *be, const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && cuda_st(be)->sync_each_launch) e = cudaStreamSynchronize(cuda_stream(be));
    if (e != cudaSuccess) {
        fprintf(stderr, "mlaserve: kernel launched at %s:%d failed: %s\n", file, line, cudaGetErrorString(e));
        abort();
    }
}

void *cuda_dev_scratch(backend *be, int slot, size_t bytes) {
    cuda_state *st = cuda_st(be);
    if (bytes == 0) bytes = 1;
    if (st->dev_cap[slot] < bytes) {
        size_t cap = st->dev_cap[slot] ? st->dev_cap[slot] : 4096;
        while (cap < bytes) cap *= 2;
        if (st->dev_scratch[slot]) {
            CUDA_CHECK(cudaStreamSynchronize(st->stream)); /* kernels may still read the old buffer */
            CUDA_CHECK(cudaFree(st->dev_scratch[slot]));
            st->dev_scratch[slot] = NULL;
            st->dev_cap[slot] = 0;
        }
        CUDA_CHECK(cudaMalloc(&st->dev_scratch[slot], cap));
        st->dev_cap[slot] = cap;
    }
    return st->dev_scratch[slot];
}

void *cuda_host_scratch(backend *be, int slot, size_t bytes) {
    cuda_state *st = cuda_st(be);
    if (bytes == 0) bytes = 1;
    if (st->host_cap[slot] < bytes) {
        size_t cap = st->host_cap[slot] ? st->host_cap[slot] : 4096;
        while (cap < bytes) cap *= 2;
        void *p = realloc(st->host_scratch[slot], cap);
        CUDA_REQUIRE(p, "out of host memory (%zu bytes of scratch)", cap);
        st->host_scratch[slot] = p;
        st->host_cap[slot] = cap;
    }
    return st->host_scratch[slot];
}

void *cuda_upload_scratch(backend *be, int slot, const void *host, size_t bytes) {
    void *d = cuda_dev_scratch(be, slot, bytes);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, cuda_stream(be)));
    return d;
}

/* ---- memory ---------------------------------------------------------------------- */

static void *cuda_alloc(backend *be, size_t bytes) {
    void *p = NULL;
    (void)cuda_st(be); /* allocate on the backend's device */
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* clear the (non-sticky) allocation error */
        return NULL;
    }
    return p;
}

static void cuda_free_op(backend *be, void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be))); /* no kernel may still use it */
    CUDA_CHECK(cudaFree(p));
}

static void cuda_upload_op(backend *be, void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cuda_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));
}

static void cuda_download_op(backend *be, void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));
}

static const void *cuda_weight_place(backend *be, const void *host, size_t bytes) {
    void *d = cuda_alloc(be, bytes);
    if (!d) return NULL;
    if (bytes && (cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, cuda_stream(be)) != cudaSuccess ||
                  cudaStreamSynchronize(cuda_stream(be)) != cudaSuccess)) {
        cudaFree(d);
        return NULL;
    }
    return d;
}

static void cuda_weight_release(backend *be, const void *placed) { cuda_free_op(be, (void *)placed); }

/* ---- elementwise --------------------------------------------------------------------- */

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

/* dst[r][c] = src[r][c], one thread per element (any strides, including 0 for one row). */
__global__ void k_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                          int64_t cols) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    int64_t r = i / cols, c = i % cols;
    dst[r * dst_stride + c] = src[r * src_stride + c];
}

/* Row i of the op: block i copies row idx[n + i] of src to row idx[i] of dst. */
__global__ void k_copy_rows(float *dst, const float *src, const int32_t *idx, int n, int64_t d) {
    const float *s = src + (int64_t)idx[n + blockIdx.x] * d;
    float *t = dst + (int64_t)idx[blockIdx.x] * d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) t[c] = s[c];
}

/* One block per distinct y row (seg[k] = its row, seg[n_seg + 1 + k] the first
 * of its terms), its terms in the op's order: xrow[j], a[j] (as float bits). */
__global__ void k_axpy_rows(float *y, const float *x, const int32_t *buf, int n, int n_seg, int64_t d) {
    const int32_t *xrow = buf, *seg = buf + 2 * n, *start = seg + n_seg;
    const float *a = (const float *)(buf + n);
    float *t = y + (int64_t)seg[blockIdx.x] * d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = t[c];
        for (int j = start[blockIdx.x]; j < start[blockIdx.x + 1]; j++) acc += a[j] * x[(int64_t)xrow[j] * d + c];
        t[c] = acc;
    }
}

static void cuda_zero(backend *be, float *y, int64_t n) {
    if (n <= 0) return;
    CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)n * sizeof *y, cuda_stream(be)));
}

static void cuda_axpy(backend *be, float a, const float *x, float *y, int64_t n) {
    if (n <= 0) return;
    k_axpy<<<cuda_blocks_for(n, 256), 256, 0, cuda_stream(be)>>>(a, x, y, n);
    CUDA_LAUNCHED(be);
}

static void cuda_silu_mul(backend *be, const float *g, const float *u, float *y, int64_t n) {
    if (n <= 0) return;
    k_silu_mul<<<cuda_blocks_for(n, 256), 256, 0, cuda_stream(be)>>>(g, u, y, n);
    CUDA_LAUNCHED(be);
}

static void cuda_copy_2d(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                         int64_t rows, int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
    k_copy_2d<<<cuda_blocks_for(rows * cols, 256), 256, 0, cuda_stream(be)>>>(dst, dst_stride, src, src_stride, rows,
                                                                               cols);
    CUDA_LAUNCHED(be);
}

static void cuda_copy_rows(backend *be, float *dst, const int32_t *dst_idx, const float *src, const int32_t *src_idx,
                           int n, int64_t d) {
    if (n <= 0 || d <= 0) return;
    int32_t *h = (int32_t *)cuda_host_scratch(be, SCR_ROWS, 2 * (size_t)n * sizeof *h);
    for (int i = 0; i < n; i++) {
        h[i] = dst_idx ? dst_idx[i] : i;
        h[n + i] = src_idx ? src_idx[i] : i;
    }
    const int32_t *idx = (const int32_t *)cuda_upload_scratch(be, SCR_ROWS, h, 2 * (size_t)n * sizeof *h);
    k_copy_rows<<<n, 256, 0, cuda_stream(be)>>>(dst, src, idx, n, d);
    CUDA_LAUNCHED(be);
}

/* The terms grouped by y row (a stable counting sort, so each row keeps the
 * op's order) and uploaded as one buffer: xrow[n], a[n] (bits), the distinct y
 * rows [n_seg], their first terms [n_seg + 1]. */
static void cuda_axpy_rows(backend *be, float *y, const int32_t *y_idx, const float *x, const int32_t *x_idx,
                           const float *a, int n, int64_t d) {
    if (n <= 0 || d <= 0) return;
    int32_t rows = 0;
    for (int i = 0; i < n; i++) {
        int32_t r = y_idx ? y_idx[i] : i;
        CUDA_REQUIRE(r >= 0, "axpy_rows: negative row %d", r);
        if (r + 1 > rows) rows = r + 1;
    }
    size_t words = 4 * (size_t)n + 1 + (size_t)rows + 1;
    int32_t *h = (int32_t *)cuda_host_scratch(be, SCR_ROWS, words * sizeof *h);
    int32_t *xrow = h, *aw = h + n, *seg = h + 2 * n, *count = h + 4 * (size_t)n + 1; /* count: [rows + 1] */
    memset(count, 0, ((size_t)rows + 1) * sizeof *count);
    for (int i = 0; i < n; i++) count[(y_idx ? y_idx[i] : i) + 1]++;
    int n_seg = 0;
    for (int32_t r = 0; r < rows; r++) n_seg += count[r + 1] > 0;
    int32_t *start = seg + n_seg;
    for (int32_t r = 0, k = 0; r < rows; r++) { /* count[r] becomes row r's next slot */
        int32_t c = count[r + 1];
        count[r + 1] = count[r] + c;
        if (c) seg[k] = r, start[k++] = count[r];
    }
    start[n_seg] = n;
    for (int i = 0; i < n; i++) {
        int32_t j = count[y_idx ? y_idx[i] : i]++;
        xrow[j] = x_idx ? x_idx[i] : i;
        memcpy(&aw[j], &a[i], sizeof aw[j]);
    }
    size_t bytes = (2 * (size_t)n + 2 * (size_t)n_seg + 1) * sizeof *h;
    const int32_t *buf = (const int32_t *)cuda_upload_scratch(be, SCR_ROWS, h, bytes);
    k_axpy_rows<<<n_seg, 256, 0, cuda_stream(be)>>>(y, x, buf, n, n_seg, d);
    CUDA_LAUNCHED(be);
}

/* ---- the table -------------------------------------------------------------------------- */

static backend_ops make_table(void) {
    backend_ops t = {};
    t.name = "cuda";
    t.alloc = cuda_alloc;
    t.free = cuda_free_op;
    t.upload = cuda_upload_op;
    t.download = cuda_download_op;
    t.weight_place = cuda_weight_place;
    t.weight_release = cuda_weight_release;
    t.linear = cuda_linear;
    t.linear_t = cuda_linear_t;
    t.rmsnorm = cuda_rmsnorm;
    t.embedding = cuda_embedding;
    t.silu_mul = cuda_silu_mul;
    t.zero = cuda_zero;
    t.axpy = cuda_axpy;
    t.copy_2d = cuda_copy_2d;
    t.copy_rows = cuda_copy_rows;
    t.axpy_rows = cuda_axpy_rows;
    t.rope = cuda_rope;
    t.router = cuda_router;
    t.kv_write = cuda_kv_write;
    t.kv_gather = cuda_kv_gather;
    t.mla_decode = cuda_mla_decode;
    t.mla_prefill = cuda_mla_prefill;
    return t;
}

static const backend_ops cuda_table = make_table();

/* ---- device and backend lifetime ------------------------------------------------------- */

extern "C" int backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
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
    snprintf(st->name, sizeof st->name, "%s (sm_%d%d, %d SMs, %.0f GiB)", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
    st->n_sm = prop.multiProcessorCount;
    const char *sync = getenv("MLASERVE_CUDA_SYNC");
    st->sync_each_launch = sync && strcmp(sync, "1") == 0;
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
    cuda_state *st = cuda_st(be);
    cudaStreamSynchronize(st->stream);
    for (int i = 0; i < SCR_COUNT; i++) {
        if (st->dev_scratch[i]) cudaFree(st->dev_scratch[i]);
        free(st->host_scratch[i]);
    }
    cudaStreamDestroy(st->stream);
    free(st);
    free(be);
}

extern "C" int backend_cuda_upload(backend *be, void *dst, const void *src, size_t bytes, ms_err *err) {
    if (!bytes) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream(be)), err);
    CUDA_TRY(cudaStreamSynchronize(cuda_stream(be)), err);
    return 0;
}

extern "C" int backend_cuda_download(backend *be, void *dst, const void *src, size_t bytes, ms_err *err) {
    if (!bytes) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream(be)), err);
    CUDA_TRY(cudaStreamSynchronize(cuda_stream(be)), err);
    return 0;
}

extern "C" int backend_cuda_memset(backend *be, void *dst, int byte, size_t bytes, ms_err *err) {
    if (!bytes) return 0;
    CUDA_TRY(cudaMemsetAsync(dst, byte, bytes, cuda_stream(be)), err);
    return 0;
}

extern "C" int backend_cuda_sync(backend *be, ms_err *err) {
    CUDA_TRY(cudaStreamSynchronize(cuda_stream(be)), err);
    CUDA_TRY(cudaGetLastError(), err);
    return 0;
}

extern "C" int backend_cuda_weight_upload(backend *be, const weight *host, weight *dev, ms_err *err) {
    int64_t phys_rows = host->row0 + host->rows;
    size_t bytes = (size_t)phys_rows * (size_t)host->cols * dtype_size(host->dtype);
    (void)cuda_st(be); /* allocate on the backend's device */
    *dev = *host;
    dev->data = NULL;
    dev->scale = NULL;
    void *d = NULL, *s = NULL;
    CUDA_TRY(cudaMalloc(&d, bytes ? bytes : 1), err);
    dev->data = d;
    if (bytes) CUDA_TRY(cudaMemcpyAsync(d, host->data, bytes, cudaMemcpyHostToDevice, cuda_stream(be)), err);
    if (host->dtype == DTYPE_F8_E4M3) {
        size_t sbytes = (size_t)((phys_rows + 127) / 128) * (size_t)weight_scale_cols(host) * sizeof(float);
        CUDA_TRY(cudaMalloc(&s, sbytes ? sbytes : 1), err);
        dev->scale = (const float *)s;
        if (sbytes) CUDA_TRY(cudaMemcpyAsync(s, host->scale, sbytes, cudaMemcpyHostToDevice, cuda_stream(be)), err);
    }
    CUDA_TRY(cudaStreamSynchronize(cuda_stream(be)), err);
    return 0;
}

extern "C" void backend_cuda_weight_free(backend *be, weight *dev) {
    if (dev->data) cuda_free_op(be, (void *)dev->data);
    if (dev->scale) cuda_free_op(be, (void *)dev->scale);
    dev->data = NULL;
    dev->scale = NULL;
}

extern "C" const char *backend_cuda_device_name(const backend *be) { return ((const cuda_state *)be->impl)->name; }

extern "C" void *backend_cuda_stream(backend *be) { return (void *)cuda_stream(be); }
