/* test/cuda/test_cuda_ops.c — every op of the CUDA backend against the CPU
 * backend (the oracle): linear and rmsnorm against the plain-C references
 * (backend_cpu_use_reference: float64 sums), embedding against
 * cpu_embedding_ref, the other ops against the CPU backend's only
 * implementation. Fresh random inputs each run (the seed is printed; --seed N
 * repeats a run), device outputs poisoned with NaN bytes (0xFF) before every
 * op, awkward shapes. Error: ‖out − ref‖ / ‖ref‖ in double; NaN or Inf never
 * passes; copies and the router's expert ids must match exactly.
 *
 * Plain C with no libmicrohttpd / jansson / Criterion, so it runs as is on a GPU
 * machine. Each group of cases runs in its own child process (forked before
 * anything touches CUDA) with a time limit, so a device fault or a hang in one
 * kernel is reported against the case that was running (the child tells the
 * parent each case's name before it starts) and the other groups still run.
 * Without a device: one SKIPPED line, exit 0. Output: one line per case, then
 * "N passed, N failed"; exit 1 if anything failed.
 * Usage: test_cuda_ops [--seed N] [--only GROUP[,GROUP...]] [--quiet] [--cpu-as-device] */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/dtype.h"
#include "cpu/backend_cpu.h"
#include "cpu/cpu_attn.h"
#include "cpu/cpu_ops.h"
#include "cuda/backend_cuda.h"

#define GROUP_TIMEOUT_S 240

/* --cpu-as-device: the CPU backend stands in for the GPU, so the harness itself
 * (shapes, references, tolerances, bookkeeping) can be checked on a machine
 * without a GPU. Not a test of the CUDA backend. */
static int cpu_as_device;
/* --quiet: print failing cases and the totals only. */
static int quiet;

typedef struct {
    backend *gpu, *cpu, *ref; /* ref: the CPU backend with its *_ref kernels */
    int is_cuda;              /* 0 in --cpu-as-device mode (the harness checking itself) */
    uint64_t rng;
    int passed, failed;
    int fd;              /* pipe to the parent: "passed failed" after every case */
    const char *current; /* case being run (named when CUDA reports an error) */
} ctx;

/* ---- randomness ------------------------------------------------------------------ */

static uint64_t next_u64(ctx *c) { /* splitmix64 */
    uint64_t z = (c->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double urand(ctx *c) { return (double)(next_u64(c) >> 11) * 0x1p-53; } /* [0, 1) */
static float frand(ctx *c) { return (float)(urand(c) * 2.0 - 1.0); }         /* [-1, 1) */
static int irand(ctx *c, int n) { return (int)(next_u64(c) % (uint64_t)n); }
static void fill(ctx *c, float *v, int64_t n) { for (int64_t i = 0; i < n; i++) v[i] = frand(c); }

/* ---- checking ---------------------------------------------------------------------- */

/* Ends the group's child process (after a CUDA error the context is unusable). */
static void die(void) {
    fflush(stdout);
    _exit(3);
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { printf("test_cuda_ops: out of memory (%zu bytes)\n", bytes); die(); }
    return p;
}

/* Tells the parent the counts so far ("P passed failed") or the case starting
 * ("C name"); it keeps the last of each, so a crash is reported against its case. */
static void tell_parent(ctx *c, const char *line) {
    size_t len = strlen(line);
    if (write(c->fd, line, len) != (ssize_t)len) die();
}

static void progress(ctx *c) {
    char buf[64];
    snprintf(buf, sizeof buf, "P %d %d\n", c->passed, c->failed);
    tell_parent(c, buf);
}

/* ‖a − b‖ / ‖b‖ in double; NaN or Inf anywhere gives +inf. */
static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void report(ctx *c, const char *name, double err, double tol) {
    int ok = err <= tol; /* false for NaN */
    if (!ok || !quiet) printf("  %-64s %s  rel err %.2e (tol %.0e)\n", name, ok ? "ok  " : "FAIL", err, tol);
    if (ok) c->passed++; else c->failed++;
    progress(c);
}

static void report_exact(ctx *c, const char *name, int64_t mismatches, int64_t n) {
    if (mismatches || !quiet) printf("  %-64s %s  %lld of %lld differ (must be 0)\n", name, mismatches ? "FAIL" : "ok  ", (long long)mismatches,
           (long long)n);
    if (mismatches) c->failed++; else c->passed++;
    progress(c);
}

/* Announces a case before its GPU op runs (a crash then names it). */
static void begin(ctx *c, const char *name) {
    char buf[256];
    c->current = name;
    snprintf(buf, sizeof buf, "C %s\n", name);
    tell_parent(c, buf);
}

/* Waits for the GPU; a CUDA error ends the group (the context is unusable after a fault). */
static void gpu_wait(ctx *c) {
    ms_err err = {{0}};
    if (c->is_cuda && backend_cuda_sync(c->gpu, &err) != 0) {
        printf("  %-64s FAIL  CUDA error: %s\n", c->current ? c->current : "?", err.msg);
        die();
    }
}

/* ---- device memory helpers (through the op table, so --cpu-as-device works) ------------ */

static void *dev_alloc(ctx *c, size_t bytes) {
    void *p = c->gpu->ops->alloc(c->gpu, bytes);
    if (!p) { printf("  device allocation of %zu bytes failed\n", bytes); die(); }
    return p;
}

/* Fills with 0xFF bytes: every float a NaN. */
static void dev_poison(ctx *c, void *p, size_t bytes) {
    if (c->is_cuda) {
        ms_err err = {{0}};
        if (backend_cuda_memset(c->gpu, p, 0xFF, bytes, &err) != 0) { printf("  memset: %s\n", err.msg); die(); }
        return;
    }
    void *h = xmalloc(bytes);
    memset(h, 0xFF, bytes);
    c->gpu->ops->upload(c->gpu, p, h, bytes);
    free(h);
}

static void *dev_from(ctx *c, const void *host, size_t bytes) {
    void *d = dev_alloc(c, bytes);
    c->gpu->ops->upload(c->gpu, d, host, bytes);
    gpu_wait(c);
    return d;
}

/* A poisoned device buffer of n floats. */
static float *dev_out(ctx *c, int64_t n) {
    float *d = dev_alloc(c, (size_t)n * sizeof(float));
    dev_poison(c, d, (size_t)n * sizeof(float));
    return d;
}

static void to_host(ctx *c, void *host, const void *dev, size_t bytes) {
    gpu_wait(c);
    c->gpu->ops->download(c->gpu, host, dev, bytes);
    gpu_wait(c);
}

static void dev_free(ctx *c, void *p) { c->gpu->ops->free(c->gpu, p); }

/* ---- weights of every dtype ----------------------------------------------------------- */

typedef struct {
    weight host, dev;
} test_weight;

/* A random half: normal values 2^-7 .. 2^8 and some subnormals, never Inf/NaN. */
static uint16_t rand_f16(ctx *c) {
    uint16_t sign = (uint16_t)((next_u64(c) & 1) << 15), mant = (uint16_t)(next_u64(c) & 0x3ff);
    int e = irand(c, 10) == 0 ? 0 : 8 + irand(c, 16);
    return (uint16_t)(sign | (e << 10) | mant);
}

/* A random e4m3 code from values ±2^-10 .. ±2^8.5 (subnormals, saturation at 448 included). */
static uint8_t rand_e4m3(ctx *c) {
    double mag = exp2(urand(c) * 18.5 - 10.0);
    return e4m3_from_f32((float)((next_u64(c) & 1) ? -mag : mag));
}

/* A [rows, cols] view starting at physical row row0 of a matrix with extra rows
 * after it; random values; FP8 scales 2^-4 .. 2^4 so a wrong block shows. */
static void weight_make(ctx *c, test_weight *tw, dtype_t dt, int64_t rows, int64_t cols, int64_t row0) {
    int64_t phys = row0 + rows + 3;
    size_t n = (size_t)(phys * cols);
    void *data = xmalloc(n * dtype_size(dt));
    float *scale = NULL;
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case DTYPE_F32: ((float *)data)[i] = frand(c); break;
        case DTYPE_BF16: ((uint16_t *)data)[i] = f32_to_bf16(frand(c)); break;
        case DTYPE_F16: ((uint16_t *)data)[i] = rand_f16(c); break;
        default: ((uint8_t *)data)[i] = rand_e4m3(c); break;
        }
    }
    weight w = {.dtype = dt, .rows = rows, .cols = cols, .data = data, .scale = NULL, .row0 = row0};
    if (dt == DTYPE_F8_E4M3) {
        size_t ns = (size_t)((phys + 127) / 128 * weight_scale_cols(&w));
        scale = xmalloc(ns * sizeof *scale);
        for (size_t i = 0; i < ns; i++) scale[i] = (float)exp2(urand(c) * 8.0 - 4.0) * (float)(1.0 + urand(c));
        w.scale = scale;
    }
    tw->host = w;
    /* the device copy of physical rows [0, phys), through the seam's weight_place */
    tw->dev = w;
    tw->dev.data = c->gpu->ops->weight_place(c->gpu, data, n * dtype_size(dt));
    if (scale) {
        size_t ns = (size_t)((phys + 127) / 128 * weight_scale_cols(&w));
        tw->dev.scale = c->gpu->ops->weight_place(c->gpu, scale, ns * sizeof *scale);
    }
    if (!tw->dev.data || (scale && !tw->dev.scale)) {
        printf("  weight_place failed (%zu bytes)\n", n * dtype_size(dt));
        die();
    }
}

static void weight_drop(ctx *c, test_weight *tw) {
    c->gpu->ops->weight_release(c->gpu, tw->dev.data);
    if (tw->dev.scale) c->gpu->ops->weight_release(c->gpu, tw->dev.scale);
    free((void *)tw->host.data);
    free((void *)tw->host.scale);
}

static const dtype_t all_dtypes[] = {DTYPE_F32, DTYPE_BF16, DTYPE_F16, DTYPE_F8_E4M3};

/* ---- group: memory and elementwise ----------------------------------------------------- */

static void test_memory(ctx *c) {
    char name[160];
    /* the table's upload / download / weight_place round trips */
    int64_t n = 100003;
    float *h = xmalloc((size_t)n * 4), *back = xmalloc((size_t)n * 4);
    fill(c, h, n);
    snprintf(name, sizeof name, "upload+download ops n=%lld", (long long)n);
    begin(c, name);
    float *d = dev_out(c, n);
    c->gpu->ops->upload(c->gpu, d, h, (size_t)n * 4);
    memset(back, 0xFF, (size_t)n * 4);
    c->gpu->ops->download(c->gpu, back, d, (size_t)n * 4);
    gpu_wait(c);
    report_exact(c, name, memcmp(back, h, (size_t)n * 4) != 0, 1);
    snprintf(name, sizeof name, "weight_place+download n=%lld", (long long)n);
    begin(c, name);
    const void *placed = c->gpu->ops->weight_place(c->gpu, h, (size_t)n * 4);
    if (!placed) { report_exact(c, name, 1, 1); }
    else {
        memset(back, 0xFF, (size_t)n * 4);
        c->gpu->ops->download(c->gpu, back, placed, (size_t)n * 4);
        gpu_wait(c);
        report_exact(c, name, memcmp(back, h, (size_t)n * 4) != 0, 1);
        c->gpu->ops->weight_release(c->gpu, placed);
    }
    dev_free(c, d);
    free(h);
    free(back);
}

static void test_elementwise(ctx *c, int64_t n) {
    char name[160];
    float *x = xmalloc(n * 4), *y = xmalloc(n * 4), *ref = xmalloc(n * 4), *out = xmalloc(n * 4);
    fill(c, x, n);
    fill(c, y, n);
    float *dx = dev_from(c, x, n * 4), *dy = dev_from(c, y, n * 4);

    snprintf(name, sizeof name, "axpy n=%lld", (long long)n);
    begin(c, name);
    memcpy(ref, y, n * 4);
    c->cpu->ops->axpy(c->cpu, 0.37f, x, ref, n);
    c->gpu->ops->axpy(c->gpu, 0.37f, dx, dy, n);
    to_host(c, out, dy, n * 4);
    report(c, name, rel_err(out, ref, n), 1e-6);

    snprintf(name, sizeof name, "silu_mul n=%lld", (long long)n);
    begin(c, name);
    float *dg = dev_from(c, x, n * 4), *du = dev_from(c, y, n * 4), *dout = dev_out(c, n);
    c->ref->ops->silu_mul(c->ref, x, y, ref, n);
    c->gpu->ops->silu_mul(c->gpu, dg, du, dout, n);
    to_host(c, out, dout, n * 4);
    report(c, name, rel_err(out, ref, n), 1e-6);

    snprintf(name, sizeof name, "silu_mul in place (y = gate) n=%lld", (long long)n);
    begin(c, name);
    c->gpu->ops->silu_mul(c->gpu, dg, du, dg, n);
    to_host(c, out, dg, n * 4);
    report(c, name, rel_err(out, ref, n), 1e-6);

    snprintf(name, sizeof name, "zero n=%lld", (long long)n);
    begin(c, name);
    dev_poison(c, dout, n * 4);
    c->gpu->ops->zero(c->gpu, dout, n);
    to_host(c, out, dout, n * 4);
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) nz += out[i] != 0.0f || signbit(out[i]);
    report_exact(c, name, nz, n);

    dev_free(c, dx); dev_free(c, dy); dev_free(c, dg); dev_free(c, du); dev_free(c, dout);
    free(x); free(y); free(ref); free(out);
}

static void test_copy_2d(ctx *c, int64_t rows, int64_t cols, int64_t dst_stride, int64_t src_stride) {
    char name[160];
    snprintf(name, sizeof name, "copy_2d rows=%lld cols=%lld dst_stride=%lld src_stride=%lld", (long long)rows,
             (long long)cols, (long long)dst_stride, (long long)src_stride);
    begin(c, name);
    int64_t src_n = (rows - 1) * src_stride + cols, dst_n = (rows - 1) * dst_stride + cols;
    float *src = xmalloc(src_n * 4), *ref = xmalloc(dst_n * 4), *out = xmalloc(dst_n * 4);
    fill(c, src, src_n);
    memset(ref, 0xFF, dst_n * 4); /* untouched gaps stay poisoned on both sides */
    c->cpu->ops->copy_2d(c->cpu, ref, dst_stride, src, src_stride, rows, cols);
    float *dsrc = dev_from(c, src, src_n * 4), *ddst = dev_out(c, dst_n);
    c->gpu->ops->copy_2d(c->gpu, ddst, dst_stride, dsrc, src_stride, rows, cols);
    to_host(c, out, ddst, dst_n * 4);
    report_exact(c, name, memcmp(out, ref, dst_n * 4) != 0, 1);
    dev_free(c, dsrc); dev_free(c, ddst);
    free(src); free(ref); free(out);
}

/* copy_rows (gather with src_idx, scatter with a permutation as dst_idx, both,
 * neither) and axpy_rows with y rows named several times (their terms must add
 * in the op's order) against the CPU backend. */
static void test_rows(ctx *c, int n, int64_t d, int y_rows) {
    char name[160];
    int src_rows = n + 3;
    int32_t *si = xmalloc((size_t)n * 4), *di = xmalloc((size_t)n * 4), *yi = xmalloc((size_t)n * 4);
    float *a = xmalloc((size_t)n * 4), *src = xmalloc((size_t)src_rows * d * 4);
    float *ref = xmalloc((size_t)src_rows * d * 4), *out = xmalloc((size_t)src_rows * d * 4);
    for (int i = 0; i < n; i++) si[i] = irand(c, src_rows), di[i] = i, yi[i] = irand(c, y_rows), a[i] = frand(c);
    for (int i = n - 1; i > 0; i--) { int j = irand(c, i + 1), t = di[i]; di[i] = di[j]; di[j] = t; }
    fill(c, src, (int64_t)src_rows * d);
    float *dsrc = dev_from(c, src, (size_t)src_rows * d * 4), *ddst = dev_out(c, (int64_t)src_rows * d);
    for (int mode = 0; mode < 4; mode++) {
        const int32_t *dx = mode & 1 ? di : NULL, *sx = mode & 2 ? si : NULL;
        snprintf(name, sizeof name, "copy_rows n=%d d=%lld%s%s", n, (long long)d, dx ? " dst_idx" : "", sx ? " src_idx" : "");
        begin(c, name);
        memset(ref, 0xFF, (size_t)n * d * 4);
        c->cpu->ops->copy_rows(c->cpu, ref, dx, src, sx, n, d);
        dev_poison(c, ddst, (size_t)n * d * 4);
        c->gpu->ops->copy_rows(c->gpu, ddst, dx, dsrc, sx, n, d);
        to_host(c, out, ddst, (size_t)n * d * 4);
        report_exact(c, name, memcmp(out, ref, (size_t)n * d * 4) != 0, 1);
    }
    snprintf(name, sizeof name, "axpy_rows n=%d d=%lld into %d rows (repeated, in order)", n, (long long)d, y_rows);
    begin(c, name);
    fill(c, ref, (int64_t)y_rows * d);
    float *dy = dev_from(c, ref, (size_t)y_rows * d * 4);
    c->cpu->ops->axpy_rows(c->cpu, ref, yi, src, si, a, n, d);
    c->gpu->ops->axpy_rows(c->gpu, dy, yi, dsrc, si, a, n, d);
    to_host(c, out, dy, (size_t)y_rows * d * 4);
    report(c, name, rel_err(out, ref, (int64_t)y_rows * d), 1e-6);
    dev_free(c, dsrc); dev_free(c, ddst); dev_free(c, dy);
    free(si); free(di); free(yi); free(a); free(src); free(ref); free(out);
}

static void group_elementwise(ctx *c) {
    test_memory(c);
    int64_t sizes[] = {1, 129, 4096 * 7 + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) test_elementwise(c, sizes[i]);
    test_copy_2d(c, 5, 7, 9, 13);
    test_copy_2d(c, 1, 3072, 0, 0);   /* attn_absorb's one-row copies with stride 0 */
    test_copy_2d(c, 300, 576, 600, 576);
    test_copy_2d(c, 17, 64, 64, 576); /* k_pe out of kv_a rows */
    test_rows(c, 1, 5, 1);
    test_rows(c, 37, 129, 9);         /* uneven: several terms per y row */
    test_rows(c, 2048, 512, 256);     /* MoE combine: 8 terms per token */
}

/* ---- group: linear ---------------------------------------------------------------------- */

static void test_linear(ctx *c, int transposed, dtype_t dt, int m, int64_t rows, int64_t cols, int64_t row0) {
    char name[160];
    snprintf(name, sizeof name, "%s %-7s m=%d rows=%lld cols=%lld row0=%lld", transposed ? "linear_t" : "linear",
             dtype_name(dt), m, (long long)rows, (long long)cols, (long long)row0);
    begin(c, name);
    test_weight w;
    weight_make(c, &w, dt, rows, cols, row0);
    int64_t in = transposed ? rows : cols, outn = transposed ? cols : rows;
    float *x = xmalloc((size_t)m * in * 4), *ref = xmalloc((size_t)m * outn * 4), *out = xmalloc((size_t)m * outn * 4);
    fill(c, x, (int64_t)m * in);
    float *dx = dev_from(c, x, (size_t)m * in * 4), *dy = dev_out(c, (int64_t)m * outn);
    if (transposed) {
        c->ref->ops->linear_t(c->ref, &w.host, x, ref, m);
        c->gpu->ops->linear_t(c->gpu, &w.dev, dx, dy, m);
    } else {
        c->ref->ops->linear(c->ref, &w.host, x, ref, m);
        c->gpu->ops->linear(c->gpu, &w.dev, dx, dy, m);
    }
    to_host(c, out, dy, (size_t)m * outn * 4);
    report(c, name, rel_err(out, ref, (int64_t)m * outn), 1e-4);
    dev_free(c, dx); dev_free(c, dy);
    free(x); free(ref); free(out);
    weight_drop(c, &w);
}

static void group_linear(ctx *c) {
    static const struct { int m; int64_t rows, cols, row0; } lin[] = {
        {1, 257, 300, 0},   {1, 2112, 7168, 0}, {3, 200, 129, 100}, {8, 130, 1000, 127},
        {16, 64, 130, 1},   {17, 96, 200, 0},   {64, 384, 515, 5},  {300, 129, 257, 130},
        {300, 300, 1100, 60},
    };
    static const struct { int m; int64_t rows, cols, row0; } lint[] = {
        {1, 128, 512, 768}, {3, 200, 129, 100}, {8, 130, 300, 127}, {64, 130, 300, 127}, {300, 257, 129, 3},
    };
    for (size_t d = 0; d < 4; d++) {
        for (size_t i = 0; i < sizeof lin / sizeof *lin; i++)
            test_linear(c, 0, all_dtypes[d], lin[i].m, lin[i].rows, lin[i].cols, lin[i].row0);
        for (size_t i = 0; i < sizeof lint / sizeof *lint; i++)
            test_linear(c, 1, all_dtypes[d], lint[i].m, lint[i].rows, lint[i].cols, lint[i].row0);
    }
}

/* ---- group: rmsnorm, embedding, rope -------------------------------------------------------- */

static void test_rmsnorm(ctx *c, dtype_t dt, int m, int d, int64_t row0, int in_place) {
    char name[160];
    snprintf(name, sizeof name, "rmsnorm %-7s m=%d d=%d row0=%lld%s", dtype_name(dt), m, d, (long long)row0,
             in_place ? " in place" : "");
    begin(c, name);
    test_weight g;
    weight_make(c, &g, dt, 1, d, row0);
    int64_t n = (int64_t)m * d;
    float *x = xmalloc(n * 4), *ref = xmalloc(n * 4), *out = xmalloc(n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = frand(c) * (float)(1 + i % 7); /* rows of different norms */
    float *dx = dev_from(c, x, n * 4), *dy = in_place ? dx : dev_out(c, n);
    c->ref->ops->rmsnorm(c->ref, &g.host, x, ref, m, d, 1e-6f);
    c->gpu->ops->rmsnorm(c->gpu, &g.dev, dx, dy, m, d, 1e-6f);
    to_host(c, out, dy, n * 4);
    report(c, name, rel_err(out, ref, n), 1e-5);
    dev_free(c, dx);
    if (!in_place) dev_free(c, dy);
    free(x); free(ref); free(out);
    weight_drop(c, &g);
}

static void test_embedding(ctx *c, dtype_t dt, int64_t V, int64_t D, int n, int64_t row0) {
    char name[160];
    snprintf(name, sizeof name, "embedding %-7s V=%lld D=%lld n=%d row0=%lld", dtype_name(dt), (long long)V,
             (long long)D, n, (long long)row0);
    begin(c, name);
    test_weight t;
    weight_make(c, &t, dt, V, D, row0);
    int32_t *ids = xmalloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = i == 0 ? 0 : i == 1 ? (int32_t)(V - 1) : irand(c, (int)V);
    float *ref = xmalloc((size_t)n * D * 4), *out = xmalloc((size_t)n * D * 4);
    float *dy = dev_out(c, (int64_t)n * D);
    cpu_embedding_ref(&t.host, ids, n, ref);
    c->gpu->ops->embedding(c->gpu, &t.dev, ids, n, dy); /* ids: host memory */
    memset(ids, 0x7F, (size_t)n * sizeof *ids);          /* the op must have copied them */
    to_host(c, out, dy, (size_t)n * D * 4);
    report(c, name, rel_err(out, ref, (int64_t)n * D), 1e-7);
    dev_free(c, dy);
    free(ids); free(ref); free(out);
    weight_drop(c, &t);
}

/* x laid out as attn_query does: n_tok tokens of n_vec vectors, the rotated part at offset `at`. */
static void test_rope(ctx *c, int n_tok, int n_vec, int vec_dim, int at, int dim, double attn_factor) {
    char name[160];
    snprintf(name, sizeof name, "rope n_tok=%d n_vec=%d vec=%d at=%d dim=%d af=%.2f", n_tok, n_vec, vec_dim, at, dim,
             attn_factor);
    begin(c, name);
    int64_t vec_stride = vec_dim, tok_stride = (int64_t)n_vec * vec_dim, n = (int64_t)n_tok * tok_stride;
    float *x = xmalloc(n * 4), *ref = xmalloc(n * 4), *out = xmalloc(n * 4);
    fill(c, x, n);
    memcpy(ref, x, n * 4);
    double *inv_freq = xmalloc((size_t)(dim / 2) * sizeof *inv_freq);
    for (int i = 0; i < dim / 2; i++) inv_freq[i] = pow(10000.0, -2.0 * i / dim) * (0.5 + urand(c));
    int32_t *pos = xmalloc((size_t)n_tok * sizeof *pos);
    for (int t = 0; t < n_tok; t++) pos[t] = t == 0 ? 0 : irand(c, 163840);
    rope_params rp = {dim, inv_freq, attn_factor};
    c->cpu->ops->rope(c->cpu, &rp, ref + at, n_tok, n_vec, tok_stride, vec_stride, pos);
    float *dx = dev_from(c, x, n * 4);
    c->gpu->ops->rope(c->gpu, &rp, dx + at, n_tok, n_vec, tok_stride, vec_stride, pos);
    memset(pos, 0x7F, (size_t)n_tok * sizeof *pos); /* host arrays must have been copied by the op */
    memset(inv_freq, 0x7F, (size_t)(dim / 2) * sizeof *inv_freq);
    to_host(c, out, dx, n * 4);
    report(c, name, rel_err(out, ref, n), 1e-6);
    dev_free(c, dx);
    free(x); free(ref); free(out); free(pos); free(inv_freq);
}

static void group_norm_rope(ctx *c) {
    static const struct { int m, d; } rn[] = {{1, 7168}, {3, 512}, {300, 1536}, {5, 100}};
    for (size_t d = 0; d < 4; d++)
        for (size_t i = 0; i < sizeof rn / sizeof *rn; i++) test_rmsnorm(c, all_dtypes[d], rn[i].m, rn[i].d, 0, 0);
    test_rmsnorm(c, DTYPE_BF16, 7, 512, 0, 1);
    test_rmsnorm(c, DTYPE_F32, 64, 1536, 0, 1);
    test_rmsnorm(c, DTYPE_F8_E4M3, 3, 300, 130, 0); /* one row of a bigger FP8 matrix */
    test_rmsnorm(c, DTYPE_F32, 2, 256, 5, 0);
    for (size_t d = 0; d < 4; d++) {
        test_embedding(c, all_dtypes[d], 1000, 300, 7, 0);
        test_embedding(c, all_dtypes[d], 300, 7168, 3, 0);
    }
    test_embedding(c, DTYPE_F8_E4M3, 200, 257, 64, 70);
    test_rope(c, 5, 16, 192, 128, 64, 1.0);  /* q: H=16 heads of nope 128 + rope 64 */
    test_rope(c, 300, 1, 64, 0, 64, 1.0);    /* k_pe */
    test_rope(c, 1, 128, 192, 128, 64, 1.0); /* V3's 128 heads, one token */
    test_rope(c, 3, 3, 30, 10, 16, 0.9);
}

/* ---- group: router ------------------------------------------------------------------------- */

typedef struct {
    const char *what;
    int E, K, G, topk_group, sigmoid, sum_top2, renorm, bias, n;
    float scale;
    int ties;        /* logits on a coarse grid: many exact ties */
    int host_bias;   /* bias passed in host memory */
} router_case;

static void test_router(ctx *c, const router_case *rc) {
    char name[160];
    snprintf(name, sizeof name, "router %s E=%d K=%d G=%d/%d %s%s n=%d%s%s", rc->what, rc->E, rc->K, rc->G,
             rc->topk_group, rc->sigmoid ? "sigmoid" : "softmax", rc->bias ? "+bias" : "", rc->n,
             rc->ties ? " ties" : "", rc->host_bias ? " host-bias" : "");
    begin(c, name);
    int E = rc->E, K = rc->K, n = rc->n;
    float *logits = xmalloc((size_t)n * E * 4), *bias = xmalloc((size_t)E * 4);
    for (int64_t i = 0; i < (int64_t)n * E; i++)
        logits[i] = rc->ties ? (float)(irand(c, 5) - 2) * 0.5f : frand(c) * 4.0f;
    for (int e = 0; e < E; e++) bias[e] = rc->ties ? (float)(irand(c, 3)) * 0.25f : frand(c) * 0.1f;
    router_params rp = {E, K, rc->G, rc->topk_group, rc->sigmoid, rc->sum_top2, rc->renorm, rc->scale,
                        rc->bias ? bias : NULL};
    int32_t *idx_ref = xmalloc((size_t)n * K * 4), *idx = xmalloc((size_t)n * K * 4);
    float *w_ref = xmalloc((size_t)n * K * 4), *w = xmalloc((size_t)n * K * 4);
    c->cpu->ops->router(c->cpu, &rp, logits, n, idx_ref, w_ref);
    float *dlog = dev_from(c, logits, (size_t)n * E * 4), *dbias = dev_from(c, bias, (size_t)E * 4);
    int32_t *didx = dev_alloc(c, (size_t)n * K * 4);
    float *dw = dev_out(c, (int64_t)n * K);
    dev_poison(c, didx, (size_t)n * K * 4);
    if (rc->bias && !rc->host_bias) rp.bias = dbias;
    c->gpu->ops->router(c->gpu, &rp, dlog, n, didx, dw);
    to_host(c, idx, didx, (size_t)n * K * 4);
    to_host(c, w, dw, (size_t)n * K * 4);
    int64_t bad = 0;
    for (int64_t i = 0; i < (int64_t)n * K; i++) bad += idx[i] != idx_ref[i];
    char sub[200];
    snprintf(sub, sizeof sub, "%s: expert ids", name);
    report_exact(c, sub, bad, (int64_t)n * K);
    snprintf(sub, sizeof sub, "%s: weights", name);
    report(c, sub, rel_err(w, w_ref, (int64_t)n * K), 1e-6);
    dev_free(c, dlog); dev_free(c, dbias); dev_free(c, didx); dev_free(c, dw);
    free(logits); free(bias); free(idx_ref); free(idx); free(w_ref); free(w);
}

static void group_router(ctx *c) {
    static const router_case cases[] = {
        /* what        E    K  G  tg sig s2 rn bias n    scale ties host */
        {"tiny-v3",    16,  4, 4, 2, 1, 1, 1, 1, 1,   2.5f, 0, 0},
        {"tiny-v3",    16,  4, 4, 2, 1, 1, 1, 1, 3,   2.5f, 0, 0},
        {"tiny-v3",    16,  4, 4, 2, 1, 1, 1, 1, 300, 2.5f, 0, 0},
        {"tiny-v3",    16,  4, 4, 2, 1, 1, 1, 1, 64,  2.5f, 0, 1},
        {"tiny-v3",    16,  4, 4, 2, 1, 1, 1, 1, 300, 2.5f, 1, 0},
        {"bench-7b",   64,  6, 8, 4, 1, 1, 1, 1, 300, 2.5f, 0, 0},
        {"bench-7b",   64,  6, 8, 4, 1, 1, 1, 1, 100, 2.5f, 1, 0},
        {"v3",         256, 8, 8, 4, 1, 1, 1, 1, 64,  2.5f, 0, 0},
        {"v2",         12,  3, 1, 1, 0, 0, 0, 0, 300, 1.0f, 0, 0},
        {"v2",         12,  3, 1, 1, 0, 0, 0, 0, 50,  1.0f, 1, 0},
        {"v2-greedy",  160, 6, 8, 3, 0, 0, 0, 0, 50,  16.0f, 0, 0},
        {"k>kept",     16,  6, 4, 1, 1, 1, 1, 1, 20,  1.0f, 0, 0}, /* -inf experts picked by lowest id */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) test_router(c, &cases[i]);
}

/* ---- group: kv cache and mla_decode -------------------------------------------------------- */

#define N_LAYERS 3
#define LAYER 1

typedef struct {
    kv_cache host, dev; /* same bookkeeping; dev.data is device memory */
    kv_seq seqs[8];
    int n_seqs;
} test_kv;

/* A cache with sequences of the given lengths whose pages interleave (reserved a
 * page at a time, round robin), all values NaN-poisoned. */
static void kv_make(ctx *c, test_kv *t, int kvr, int rope, const int *lens, int n_seqs) {
    ms_err err = {{0}};
    int pages = 0;
    for (int s = 0; s < n_seqs; s++) pages += kv_pages_for(lens[s]);
    memset(t, 0, sizeof *t);
    if (kv_cache_init(&t->host, NULL, N_LAYERS, kvr, rope, pages + 2, &err) != 0) {
        printf("  kv_cache_init: %s\n", err.msg);
        die();
    }
    t->n_seqs = n_seqs;
    for (int done = 0; !done;) {
        done = 1;
        for (int s = 0; s < n_seqs; s++) {
            int want = (t->seqs[s].n_pages + 1) * KV_PAGE_TOKENS;
            if (t->seqs[s].n_pages < kv_pages_for(lens[s])) {
                if (kv_seq_reserve(&t->host, &t->seqs[s], want, &err) != 0) { printf("  %s\n", err.msg); die(); }
                done = 0;
            }
        }
    }
    for (int s = 0; s < n_seqs; s++) t->seqs[s].n_tokens = lens[s];
    size_t bytes = (size_t)t->host.n_pages * N_LAYERS * KV_PAGE_TOKENS * t->host.entry_dim * sizeof(float);
    memset(t->host.data, 0xFF, bytes);
    t->dev = t->host;
    t->dev.data = dev_alloc(c, bytes);
}

static size_t kv_bytes(const test_kv *t) {
    return (size_t)t->host.n_pages * N_LAYERS * KV_PAGE_TOKENS * t->host.entry_dim * sizeof(float);
}

/* Random entries at positions < len of each sequence in LAYER; the rest stays NaN. */
static void kv_fill(ctx *c, test_kv *t) {
    for (int s = 0; s < t->n_seqs; s++)
        for (int p = 0; p < t->seqs[s].n_tokens; p++) fill(c, kv_entry(&t->host, &t->seqs[s], LAYER, p), t->host.entry_dim);
    c->gpu->ops->upload(c->gpu, t->dev.data, t->host.data, kv_bytes(t));
}

static void kv_drop(ctx *c, test_kv *t) {
    dev_free(c, t->dev.data);
    t->dev.data = NULL;
    for (int s = 0; s < t->n_seqs; s++) kv_seq_release(&t->host, &t->seqs[s]);
    kv_cache_free(&t->host);
}

static void test_kv_write(ctx *c, int kvr, int rope, int len, int pos0, int n) {
    char name[160];
    snprintf(name, sizeof name, "kv_write kvr=%d rope=%d seq=%d pos0=%d n=%d", kvr, rope, len, pos0, n);
    begin(c, name);
    int lens[3] = {130, len, 70};
    test_kv t;
    kv_make(c, &t, kvr, rope, lens, 3);
    dev_poison(c, t.dev.data, kv_bytes(&t)); /* same 0xFF bytes as the host copy */
    float *cc = xmalloc((size_t)n * kvr * 4), *pe = xmalloc((size_t)n * rope * 4);
    fill(c, cc, (int64_t)n * kvr);
    fill(c, pe, (int64_t)n * rope);
    c->cpu->ops->kv_write(c->cpu, &t.host, &t.seqs[1], LAYER, pos0, n, cc, kvr, pe, rope);
    float *dc = dev_from(c, cc, (size_t)n * kvr * 4), *dpe = dev_from(c, pe, (size_t)n * rope * 4);
    c->gpu->ops->kv_write(c->gpu, &t.dev, &t.seqs[1], LAYER, pos0, n, dc, kvr, dpe, rope);
    float *back = xmalloc(kv_bytes(&t));
    to_host(c, back, t.dev.data, kv_bytes(&t));
    int64_t words = (int64_t)(kv_bytes(&t) / 4), bad = 0;
    for (int64_t i = 0; i < words; i++) bad += memcmp(&back[i], &t.host.data[i], 4) != 0;
    report_exact(c, name, bad, words);
    dev_free(c, dc); dev_free(c, dpe);
    free(cc); free(pe); free(back);
    kv_drop(c, &t);
}

static void test_kv_gather(ctx *c, int kvr, int rope, int n) {
    char name[160];
    snprintf(name, sizeof name, "kv_gather kvr=%d rope=%d n=%d", kvr, rope, n);
    begin(c, name);
    int lens[2] = {200, n};
    test_kv t;
    kv_make(c, &t, kvr, rope, lens, 2);
    kv_fill(c, &t);
    float *cr = xmalloc((size_t)n * kvr * 4), *pr = xmalloc((size_t)n * rope * 4);
    float *co = xmalloc((size_t)n * kvr * 4), *po = xmalloc((size_t)n * rope * 4);
    c->cpu->ops->kv_gather(c->cpu, &t.host, &t.seqs[1], LAYER, n, cr, kvr, pr, rope);
    float *dc = dev_out(c, (int64_t)n * kvr), *dp = dev_out(c, (int64_t)n * rope);
    c->gpu->ops->kv_gather(c->gpu, &t.dev, &t.seqs[1], LAYER, n, dc, kvr, dp, rope);
    to_host(c, co, dc, (size_t)n * kvr * 4);
    to_host(c, po, dp, (size_t)n * rope * 4);
    int64_t bad = 0;
    for (int64_t i = 0; i < (int64_t)n * kvr; i++) bad += memcmp(&co[i], &cr[i], 4) != 0;
    for (int64_t i = 0; i < (int64_t)n * rope; i++) bad += memcmp(&po[i], &pr[i], 4) != 0;
    report_exact(c, name, bad, (int64_t)n * (kvr + rope));
    dev_free(c, dc); dev_free(c, dp);
    free(cr); free(pr); free(co); free(po);
    kv_drop(c, &t);
}

/* One decode token per sequence, context = the sequence's length. */
static void test_mla_decode(ctx *c, int kvr, int rope, int H, const int *lens, int n) {
    char name[160];
    int at = snprintf(name, sizeof name, "mla_decode kvr=%d rope=%d H=%d ctx=", kvr, rope, H);
    for (int i = 0; i < n && at < (int)sizeof name - 8; i++)
        at += snprintf(name + at, sizeof name - at, "%s%d", i ? "," : "", lens[i]);
    begin(c, name);
    test_kv t;
    kv_make(c, &t, kvr, rope, lens, n);
    kv_fill(c, &t);
    const kv_seq *seqs[8];
    int32_t ctxs[8];
    for (int i = 0; i < n; i++) {
        seqs[i] = &t.seqs[i];
        ctxs[i] = lens[i];
    }
    int64_t nl = (int64_t)n * H * kvr, np = (int64_t)n * H * rope;
    float *ql = xmalloc(nl * 4), *qp = xmalloc(np * 4), *ref = xmalloc(nl * 4), *out = xmalloc(nl * 4);
    fill(c, ql, nl);
    fill(c, qp, np);
    for (int64_t i = 0; i < nl; i++) ql[i] *= 3.0f; /* peaky enough softmax */
    float scale = 1.0f / sqrtf(192.0f);
    c->cpu->ops->mla_decode(c->cpu, &t.host, LAYER, n, seqs, ctxs, H, ql, qp, scale, ref);
    float *dql = dev_from(c, ql, nl * 4), *dqp = dev_from(c, qp, np * 4), *dout = dev_out(c, nl);
    c->gpu->ops->mla_decode(c->gpu, &t.dev, LAYER, n, seqs, ctxs, H, dql, dqp, scale, dout);
    memset(ctxs, 0x7F, sizeof ctxs); /* host arrays must have been copied by the op */
    to_host(c, out, dout, nl * 4);
    report(c, name, rel_err(out, ref, nl), 1e-4);
    dev_free(c, dql); dev_free(c, dqp); dev_free(c, dout);
    free(ql); free(qp); free(ref); free(out);
    kv_drop(c, &t);
}

static void group_kv(ctx *c) {
    test_kv_write(c, 512, 64, 1, 0, 1);
    test_kv_write(c, 512, 64, 100, 63, 2);   /* crosses a page */
    test_kv_write(c, 512, 64, 400, 5, 300);
    test_kv_write(c, 100, 12, 70, 0, 70);
    test_kv_gather(c, 512, 64, 1);
    test_kv_gather(c, 512, 64, 63);
    test_kv_gather(c, 512, 64, 64);
    test_kv_gather(c, 512, 64, 65);
    test_kv_gather(c, 512, 64, 1000);
    test_kv_gather(c, 100, 12, 130);
}

static void group_mla_decode(ctx *c) {
    static const int l1[] = {1}, l5[] = {1, 63, 64, 65, 1000}, l2[] = {300, 129}, l3[] = {1, 64, 130};
    static const int l7[] = {65, 2, 700, 64, 1, 128, 33};
    test_mla_decode(c, 512, 64, 16, l1, 1);
    test_mla_decode(c, 512, 64, 16, l5, 5);
    test_mla_decode(c, 512, 64, 128, l2, 2);
    test_mla_decode(c, 512, 64, 1, l7, 7);
    test_mla_decode(c, 100, 12, 3, l3, 3);
    test_mla_decode(c, 1024, 64, 2, l3, 3);
}

/* ---- group: mla_prefill --------------------------------------------------------------------- */

static void test_mla_prefill(ctx *c, int T, int pos0, int H, int nope, int rope, int vdim) {
    char name[160];
    snprintf(name, sizeof name, "mla_prefill T=%d pos0=%d H=%d nope=%d rope=%d v=%d", T, pos0, H, nope, rope, vdim);
    begin(c, name);
    int ctxn = pos0 + T;
    int64_t nq = (int64_t)T * H * (nope + rope), nkv = (int64_t)ctxn * H * (nope + vdim);
    int64_t npe = (int64_t)ctxn * rope, no = (int64_t)T * H * vdim;
    float *q = xmalloc(nq * 4), *kvb = xmalloc(nkv * 4), *pe = xmalloc((npe ? npe : 1) * 4);
    float *ref = xmalloc(no * 4), *out = xmalloc(no * 4);
    fill(c, q, nq);
    fill(c, kvb, nkv);
    fill(c, pe, npe);
    for (int64_t i = 0; i < nq; i++) q[i] *= 2.0f;
    float scale = 1.0f / sqrtf((float)(nope + rope));
    c->cpu->ops->mla_prefill(c->cpu, T, pos0, H, nope, rope, vdim, q, kvb, pe, scale, ref);
    float *dq = dev_from(c, q, nq * 4), *dkv = dev_from(c, kvb, nkv * 4), *dpe = dev_from(c, pe, (npe ? npe : 1) * 4);
    float *dout = dev_out(c, no);
    c->gpu->ops->mla_prefill(c->gpu, T, pos0, H, nope, rope, vdim, dq, dkv, dpe, scale, dout);
    to_host(c, out, dout, no * 4);
    report(c, name, rel_err(out, ref, no), 1e-4);
    dev_free(c, dq); dev_free(c, dkv); dev_free(c, dpe); dev_free(c, dout);
    free(q); free(kvb); free(pe); free(ref); free(out);
}

static void group_mla_prefill(ctx *c) {
    test_mla_prefill(c, 1, 0, 2, 128, 64, 128);
    test_mla_prefill(c, 3, 62, 4, 128, 64, 128);
    test_mla_prefill(c, 65, 0, 3, 128, 64, 128);
    test_mla_prefill(c, 64, 0, 16, 128, 64, 128);
    test_mla_prefill(c, 5, 1000, 2, 128, 64, 128);
    test_mla_prefill(c, 70, 10, 2, 24, 8, 40);
    test_mla_prefill(c, 2, 0, 1, 16, 0, 8);
    test_mla_prefill(c, 4, 1, 1, 192, 64, 1024);
}

/* ---- driver: one child process per group ---------------------------------------------------- */

typedef struct {
    const char *name;
    void (*run)(ctx *c);
} group;

static const group groups[] = {
    {"elementwise", group_elementwise}, {"linear", group_linear},     {"norm_rope", group_norm_rope},
    {"router", group_router},           {"kv", group_kv},             {"mla_decode", group_mla_decode},
    {"mla_prefill", group_mla_prefill},
};

/* Child: creates the backends and runs the group; counts go to fd as it goes. */
static void child_run(const group *g, uint64_t seed, int fd) {
    alarm(GROUP_TIMEOUT_S);
    ms_err err = {{0}};
    ctx c = {0};
    c.rng = seed;
    c.fd = fd;
    c.is_cuda = !cpu_as_device;
    c.gpu = c.is_cuda ? backend_cuda_create(0, &err) : backend_cpu_create(0, &err);
    if (!c.gpu) { printf("  %s: %s\n", g->name, err.msg); die(); }
    c.cpu = backend_cpu_create(0, &err);
    c.ref = backend_cpu_create(1, &err);
    if (!c.cpu || !c.ref) { printf("  %s: %s\n", g->name, err.msg); die(); }
    backend_cpu_use_reference(c.ref, 1);
    g->run(&c);
    gpu_wait(&c);
    if (c.is_cuda) backend_cuda_free(c.gpu);
    else backend_cpu_free(c.gpu);
    backend_cpu_free(c.cpu);
    backend_cpu_free(c.ref);
    fflush(stdout);
    _exit(0);
}

/* Runs fn in a child; returns its exit status (or 128 + signal). *passed and
 * *failed are the child's last counts; last_case the last case it started. */
static int in_child(void (*fn)(const group *, uint64_t, int), const group *g, uint64_t seed, int *passed,
                    int *failed, char *last_case, size_t last_case_size) {
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); exit(2); }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) {
        close(fds[0]);
        fn(g, seed, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    *passed = *failed = 0;
    if (last_case_size) last_case[0] = 0;
    char buf[1024];
    size_t have = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + have, sizeof buf - 1 - have)) > 0) {
        have += (size_t)r;
        buf[have] = 0;
        char *nl;
        while ((nl = strchr(buf, '\n'))) {
            *nl = 0;
            if (buf[0] == 'P') sscanf(buf + 1, "%d %d", passed, failed);
            else if (buf[0] == 'C' && last_case_size) {
                size_t n = strlen(buf + 2) < last_case_size - 1 ? strlen(buf + 2) : last_case_size - 1;
                memcpy(last_case, buf + 2, n);
                last_case[n] = 0;
            }
            size_t len = (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, have - len + 1);
            have -= len;
        }
        if (have == sizeof buf - 1) have = 0; /* a line longer than the buffer: drop it */
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {}
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

static void count_devices(const group *g, uint64_t seed, int fd) {
    (void)g;
    (void)seed;
    char buf[32];
    int len = snprintf(buf, sizeof buf, "P %d 0\n", backend_cuda_device_count());
    if (write(fd, buf, (size_t)len) != len) _exit(5);
    _exit(0);
}

/* Whether name is one of the comma-separated names in list. */
static int in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else if (strcmp(argv[i], "--cpu-as-device") == 0) cpu_as_device = 1;
        else if (strcmp(argv[i], "--quiet") == 0) quiet = 1;
        else {
            fprintf(stderr, "usage: %s [--seed N] [--only GROUP] [--quiet] [--cpu-as-device]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int n_dev = 0, unused = 0;
    if (!cpu_as_device && (in_child(count_devices, NULL, 0, &n_dev, &unused, NULL, 0) != 0 || n_dev == 0)) {
        printf("test_cuda_ops: SKIPPED: no CUDA device on this machine\n");
        return 0;
    }
    printf("test_cuda_ops: seed %llu (repeat with --seed %llu)%s\n", (unsigned long long)seed,
           (unsigned long long)seed, cpu_as_device ? ", CPU backend standing in for the device" : "");
    int passed = 0, failed = 0, matched = 0;
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++) {
        if (only && !in_list(only, groups[i].name)) continue;
        matched++;
        printf("== %s\n", groups[i].name);
        int p = 0, f = 0;
        char last[256];
        int rc = in_child(child_run, &groups[i], seed + 1000003ull * i, &p, &f, last, sizeof last);
        passed += p;
        failed += f;
        if (rc != 0) {
            failed++;
            char what[320];
            snprintf(what, sizeof what, "%s (during: %s)", groups[i].name, last[0] ? last : "setup");
            if (rc == 128 + SIGALRM)
                printf("  %-64s FAIL  timed out after %d s\n", what, GROUP_TIMEOUT_S);
            else if (rc > 128)
                printf("  %-64s FAIL  crashed with signal %d\n", what, rc - 128);
            else
                printf("  %-64s FAIL  ended early (status %d)\n", what, rc);
        }
        printf("   %s: %d passed, %d failed\n", groups[i].name, p, f + (rc != 0));
    }
    if (only && !matched) {
        fprintf(stderr, "no group among %s (groups: elementwise linear norm_rope router kv mla_decode mla_prefill)\n", only);
        return 2;
    }
    printf("\n%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
