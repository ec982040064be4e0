/* bench/bench_cpu_ops.c — throughput of the CPU kernels (cpu/cpu_ops.h), one
 * table row per configuration:
 *   membw          memory read bandwidth, read the way the decode kernels read
 *                  (widest vector loads, every thread of the pool) over a buffer
 *                  far larger than L3; best of several passes
 *   linear m=1,8   decode: GB/s of weights streamed and % of membw (the row
 *                  counts: --decode-m, default 1,8)
 *   linear F8s3, F8s2   the same decode rows for FP8 weights with one code
 *                  in 10^3 (s3) or 10^2 (s2) subnormal, as real checkpoints
 *                  have (cpu_f8_load in the header: "bits" runs into the cost
 *                  of subnormal floats on Intel cores, "half" does not)
 *   linear m=512   prefill: GFLOP/s (2·m·N·K per call)
 *   linear_t       the absorbed-MLA product [128, 512], GFLOP/s
 * Weights are laid out as many copies in one large arena and successive calls use
 * successive copies, so decode numbers come from DRAM, as in a real model whose
 * layers never fit in cache.
 * Usage: bench_cpu_ops [--threads N] [--quick] [--membw-only] [--bf16-activations]
 *                      [--decode-m M,M,...]
 * (N defaults to 2). --membw-only prints just the bandwidth in GB/s (best of 10
 * passes), for scripts. --bf16-activations times every product with the flag
 * `serve --bf16-activations` sets (CPU_BF16_ACT: the non-transposed products on
 * AVX512_BF16 dot products; needs a CPU that has them). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dtype.h"
#include "common/threadpool.h"
#include "cpu/cpu_bf16dot.h"
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_ops.h"

#define ARENA_BYTES ((size_t)1 << 30)
#define CPU_BENCH_DECODE_M 8                    /* above this, calls are compute-bound */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *alloc_or_die(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes) != 0) {
        fprintf(stderr, "bench_cpu_ops: cannot allocate %zu MiB\n", bytes >> 20);
        exit(1);
    }
    return p;
}

/* Bytes that are ordinary numbers both as e4m3 codes and as bf16 halves. */
static void fill_weights(uint8_t *p, size_t n) {
    static const uint8_t pattern[8] = {0x3C, 0x35, 0xBB, 0x31, 0x3A, 0xB4, 0x38, 0xB6};
    for (size_t i = 0; i < n; i++) p[i] = pattern[(i * 7 + (i >> 9)) & 7];
}

/* Every code whose index hashes to 0 modulo `one_in` made a subnormal e4m3
 * (exponent 0: 0x03, or 0x85 negative). */
static void sprinkle_subnormals(uint8_t *p, size_t n, uint32_t one_in) {
    for (size_t i = 0; i < n; i++)
        if ((uint32_t)(i * 2654435761u) % one_in == 0) p[i] = i & 1 ? 0x85 : 0x03;
}

static float *floats_filled(size_t n, float v) {
    float *p = alloc_or_die(n * sizeof(float) + 64);
    for (size_t i = 0; i < n; i++) p[i] = v * (float)((i % 13) + 1) / 13.0f;
    return p;
}

static void print_header(void) {
    printf("%-9s %-5s %-14s %4s %10s %8s %7s %9s\n", "op", "dtype", "shape", "m", "time_us", "GB/s",
           "%bw", "GFLOP/s");
}

/* Best 64 MiB slice (≫ L3) over several passes through the 1 GiB buffer: the
 * machine may be shared, and the best slice is the least disturbed one. */
static double bench_membw(threadpool *pool, const uint8_t *arena, int passes, int print_row) {
    const size_t slice = (size_t)64 << 20;
    double best = 1e30, sink = 0;
    for (int p = 0; p < passes; p++)
        for (size_t off = 0; off + slice <= ARENA_BYTES; off += slice) {
            double t0 = now_s();
            sink += cpu_mem_read(pool, arena + off, slice);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
        }
    double gbs = (double)slice / best / 1e9;
    if (print_row)
        printf("%-9s %-5s %-14s %4s %10.0f %8.2f %7s %9s\n", "membw", "-", "64MiB slices", "-", best * 1e6, gbs,
           "100.0", "-");
    if (sink == 12345.678) printf(" ");
    return gbs;
}

typedef struct { const char *name; int64_t rows, cols; } bench_shape;

/* Kernel flags of every timed product (--bf16-activations: CPU_BF16_ACT). */
static int g_flags;

static void run_linear(threadpool *pool, const weight *w, const float *x, float *y, int m, int transposed) {
    if (transposed) cpu_linear_t_flags(pool, w, x, y, m, g_flags);
    else cpu_linear_flags(pool, w, x, y, m, g_flags);
}

/* Times the product on copies of W laid out back to back in the arena (each call
 * reads a copy not touched since the previous round, so from DRAM, as the
 * layers of a model are); returns the mean time per call of the best of
 * `rounds` rounds through all the copies (back-to-back calls, as in a model). */
static double time_linear(threadpool *pool, dtype_t dt, const bench_shape *s, int m, uint8_t *arena,
                          const float *scale, const float *x, float *y, int rounds, int transposed) {
    size_t bytes = (size_t)(s->rows * s->cols) * dtype_size(dt);
    size_t stride = (bytes + 4095) & ~(size_t)4095;
    int copies = (int)(ARENA_BYTES / stride); /* decode weights cycle through 1 GiB: more than any L3 */
    if (copies < 1) copies = 1;
    if (m > CPU_BENCH_DECODE_M) copies = copies < 2 ? copies : 2; /* compute-bound: cache is fine */
    weight w = {.dtype = dt, .rows = s->rows, .cols = s->cols, .scale = scale};
    w.data = arena; /* warm-up */
    run_linear(pool, &w, x, y, m, transposed);
    double best = 1e30;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        for (int c = 0; c < copies; c++) {
            w.data = arena + (size_t)c * stride;
            run_linear(pool, &w, x, y, m, transposed);
        }
        double dt = (now_s() - t0) / copies;
        if (dt < best) best = dt;
    }
    return best;
}

static void bench_linear_as(const char *label, threadpool *pool, dtype_t dt, const bench_shape *s, int m,
                            uint8_t *arena, const float *scale, double membw, int rounds, int transposed) {
    int64_t in = transposed ? s->rows : s->cols, out = transposed ? s->cols : s->rows;
    float *x = floats_filled((size_t)(m * in), 0.5f), *y = floats_filled((size_t)(m * out), 0);
    double t = time_linear(pool, dt, s, m, arena, scale, x, y, rounds, transposed);
    double gbs = (double)(s->rows * s->cols) * dtype_size(dt) / t / 1e9;
    double gflops = 2.0 * m * (double)s->rows * (double)s->cols / t / 1e9;
    char shape[32];
    snprintf(shape, sizeof shape, "%s", s->name);
    printf("%-9s %-5s %-14s %4d %10.1f %8.2f %7.1f %9.1f\n", transposed ? "linear_t" : "linear",
           label ? label : dt == DTYPE_F8_E4M3 ? "F8" : dtype_name(dt), shape, m, t * 1e6, gbs, 100.0 * gbs / membw, gflops);
    fflush(stdout);
    free(x);
    free(y);
}

static void bench_linear(threadpool *pool, dtype_t dt, const bench_shape *s, int m, uint8_t *arena,
                         const float *scale, double membw, int rounds, int transposed) {
    bench_linear_as(NULL, pool, dt, s, m, arena, scale, membw, rounds, transposed);
}

/* "1,4,8" -> ms[]; the count, or -1 when a value is not in 1..CPU_DECODE_MAX_M. */
static int parse_ms(const char *s, int *ms) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > CPU_DECODE_MAX_M || n == CPU_DECODE_MAX_M) return -1;
        ms[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

int main(int argc, char **argv) {
    int threads = 2, quick = 0, membw_only = 0;
    int decode_ms[CPU_DECODE_MAX_M] = {1, 8}, n_decode_ms = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--decode-m") == 0 && i + 1 < argc) n_decode_ms = parse_ms(argv[++i], decode_ms);
        else if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--membw-only") == 0) membw_only = 1;
        else if (strcmp(argv[i], "--bf16-activations") == 0) g_flags |= CPU_BF16_ACT;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--quick] [--membw-only] [--bf16-activations] [--decode-m M,M,...]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n_decode_ms < 1) {
        fprintf(stderr, "bench_cpu_ops: --decode-m takes 1 to %d row counts in 1..%d, e.g. 1,4,8\n", CPU_DECODE_MAX_M,
                CPU_DECODE_MAX_M);
        return 2;
    }
    threadpool *pool = threadpool_create(threads);
    if (!pool) {
        fprintf(stderr, "bench_cpu_ops: cannot create a pool of %d threads\n", threads);
        return 1;
    }
    uint8_t *arena = alloc_or_die(ARENA_BYTES);
    fill_weights(arena, ARENA_BYTES);
    /* scales for the largest FP8 shape (129280 x 2048 would need 1010 x 16) */
    float *scale = floats_filled(1024 * 64, 0.01f);

    if (membw_only) {
        printf("%.2f\n", bench_membw(pool, arena, 10, 0));
        free(scale);
        free(arena);
        threadpool_free(pool);
        return 0;
    }
    if ((g_flags & CPU_BF16_ACT) && !cpu_bf16dot_usable()) {
        fprintf(stderr, "bench_cpu_ops: --bf16-activations needs a CPU with AVX512_BF16 (simd=%s)\n",
                cpu_simd_level());
        return 2;
    }
    printf("# bench_cpu_ops: simd=%s fp8_load=%s threads=%d activations=%s\n", cpu_simd_level(), cpu_f8_load(),
           threads, g_flags & CPU_BF16_ACT ? "bf16 (non-transposed products)" : "fp32");
    print_header();
    const int rounds = quick ? 2 : 5;
    double membw = bench_membw(pool, arena, quick ? 3 : 6, 1);

    static const bench_shape decode_shapes[] = {
        {"[1408x2048]", 1408, 2048},  /* expert gate/up */
        {"[2048x1408]", 2048, 1408},  /* expert down */
        {"[10944x2048]", 10944, 2048}, /* dense gate/up */
        {"[3072x768]", 3072, 768},    /* q_b: 16 heads x 192, q_lora 768 */
    };
    const dtype_t dts[2] = {DTYPE_F8_E4M3, DTYPE_BF16};
    for (int d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof decode_shapes / sizeof *decode_shapes; s++)
            for (int mi = 0; mi < n_decode_ms; mi++)
                bench_linear(pool, dts[d], &decode_shapes[s], decode_ms[mi], arena, scale, membw, rounds, 0);
    static const struct { const char *label; uint32_t one_in; } subnormal[2] = {{"F8s3", 1000}, {"F8s2", 100}};
    for (int v = 0; v < 2; v++) {
        sprinkle_subnormals(arena, ARENA_BYTES, subnormal[v].one_in);
        for (int mi = 0; mi < n_decode_ms; mi++)
            bench_linear_as(subnormal[v].label, pool, DTYPE_F8_E4M3, &decode_shapes[2], decode_ms[mi], arena, scale,
                            membw, rounds, 0);
    }
    fill_weights(arena, ARENA_BYTES);
    static const bench_shape lm_head = {"[129280x2048]", 129280, 2048};
    for (int mi = 0; mi < n_decode_ms; mi++)
        bench_linear(pool, DTYPE_BF16, &lm_head, decode_ms[mi], arena, scale, membw, quick ? 1 : 2, 0);

    static const bench_shape prefill_shapes[] = {
        {"[1408x2048]", 1408, 2048},
        {"[2048x1408]", 2048, 1408},
        {"[3072x768]", 3072, 768},
    };
    for (int d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof prefill_shapes / sizeof *prefill_shapes; s++)
            bench_linear(pool, dts[d], &prefill_shapes[s], 512, arena, scale, membw, quick ? 1 : 3, 0);

    static const bench_shape w_uk = {"[128x512]", 128, 512};
    const int t_ms[3] = {1, 16, 128};
    for (int d = 0; d < 2; d++)
        for (int mi = 0; mi < 3; mi++)
            bench_linear(pool, dts[d], &w_uk, t_ms[mi], arena, scale, membw, rounds, 1);

    free(scale);
    free(arena);
    threadpool_free(pool);
    return 0;
}
