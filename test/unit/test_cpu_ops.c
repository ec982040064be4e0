/* test/unit/test_cpu_ops.c — the CPU kernels of cpu/cpu_ops.h.
 *
 * References: the plain-C `_ref` functions are checked against hand-computed
 * tiny cases and against an independent float64 computation (weights decoded
 * here with common/dtype, scale indexed by the physical row); every fast op is
 * then checked against its `_ref` on random inputs with fresh seeds (printed on
 * failure), all weight dtypes, awkward shapes (partial 128-blocks, m = 1..300)
 * and row-band views that cross FP8 block boundaries, through pools of 1, 2 and
 * 3 threads. Errors are measured as max|fast − ref| / max|ref|; NaN never passes. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/dtype.h"
#include "cpu/cpu_amx.h"
#include "cpu/cpu_attn.h"
#include "cpu/cpu_bf16dot.h"
#include "cpu/cpu_ops.h"
#include "engine/kv.h"

#define TOL 1e-5

/* ---- random numbers (xorshift64*, fresh seed per test) -------------------- */

typedef struct { uint64_t s; } rng;

static uint64_t rng_fresh_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
}

static uint64_t rng_next(rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi). */
static float rng_uniform(rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((rng_next(r) >> 40) * 0x1p-24);
}

static rng rng_start(uint64_t *seed_out) {
    uint64_t seed = rng_fresh_seed() | 1;
    *seed_out = seed;
    return (rng){seed};
}

/* ---- test weights ----------------------------------------------------------- */

typedef struct {
    weight w;        /* the full matrix (row0 = 0) */
    void *data;
    float *scale;
} test_weight;

/* Random finite values: every e4m3 code but NaN; f16 and bf16 of moderate range. */
static test_weight weight_random(rng *r, dtype_t dt, int64_t rows, int64_t cols) {
    test_weight t = {.w = {.dtype = dt, .rows = rows, .cols = cols}};
    size_t n = (size_t)(rows * cols);
    t.data = malloc(n * dtype_size(dt) + 1);
    cr_assert(t.data);
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case DTYPE_F8_E4M3: {
            uint8_t c;
            do c = (uint8_t)rng_next(r); while ((c & 0x7f) == 0x7f);
            ((uint8_t *)t.data)[i] = c;
            break;
        }
        case DTYPE_BF16: ((uint16_t *)t.data)[i] = f32_to_bf16(rng_uniform(r, -2, 2)); break;
        case DTYPE_F16: { /* exponent 5..20: magnitudes 2^-10 .. 2^6 */
            uint16_t e = (uint16_t)(5 + rng_next(r) % 16), m = (uint16_t)(rng_next(r) & 0x3ff);
            ((uint16_t *)t.data)[i] = (uint16_t)((rng_next(r) & 0x8000) | (e << 10) | m);
            break;
        }
        default: ((float *)t.data)[i] = rng_uniform(r, -2, 2); break;
        }
    }
    if (dt == DTYPE_F8_E4M3) {
        size_t ns = (size_t)(((rows + 127) / 128) * ((cols + 127) / 128));
        t.scale = malloc(ns * sizeof(float));
        cr_assert(t.scale);
        for (size_t i = 0; i < ns; i++) t.scale[i] = rng_uniform(r, 1e-4f, 1e-2f);
    }
    t.w.data = t.data;
    t.w.scale = t.scale;
    return t;
}

static void weight_free(test_weight *t) {
    free(t->data);
    free(t->scale);
}

static float *floats_random(rng *r, size_t n, float lo, float hi) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    cr_assert(p);
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform(r, lo, hi);
    return p;
}

static float *floats_alloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    cr_assert(p);
    for (size_t i = 0; i < n; i++) p[i] = NAN; /* anything not written shows up */
    return p;
}

/* ---- comparison --------------------------------------------------------------- */

/* max|got − want| / max|want| (max|want| at least 1e-30); +inf when anything is not finite. */
static double rel_err(const float *got, const float *want, size_t n) {
    double max_want = 1e-30, max_diff = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i])) return INFINITY;
        max_want = fmax(max_want, fabs((double)want[i]));
        max_diff = fmax(max_diff, fabs((double)got[i] - (double)want[i]));
    }
    return max_diff / max_want;
}

#define ASSERT_CLOSE(got, want, n, tol, fmt, ...)                                          \
    do {                                                                                   \
        double e_ = rel_err((got), (want), (n));                                           \
        cr_assert(e_ <= (tol), "rel err %.3g > %.1g: " fmt, e_, (double)(tol), __VA_ARGS__); \
    } while (0)

static const dtype_t all_dtypes[] = {DTYPE_F8_E4M3, DTYPE_BF16, DTYPE_F16, DTYPE_F32};

/* ---- independent float64 oracle -------------------------------------------------- */

static double f64_weight(const test_weight *t, int64_t prow, int64_t c) {
    size_t i = (size_t)(prow * t->w.cols + c);
    switch (t->w.dtype) {
    case DTYPE_F8_E4M3:
        return (double)e4m3_to_f32(((const uint8_t *)t->data)[i]) *
               t->scale[(prow / 128) * ((t->w.cols + 127) / 128) + c / 128];
    case DTYPE_BF16: return bf16_to_f32(((const uint16_t *)t->data)[i]);
    case DTYPE_F16: return f16_to_f32(((const uint16_t *)t->data)[i]);
    default: return ((const float *)t->data)[i];
    }
}

/* ---- the comparison test itself ---------------------------------------------------- */

Test(cpu_ops, rel_err_rejects_nan_and_inf) {
    float want[3] = {1, 2, 3}, got[3] = {1, 2, 3};
    cr_assert_eq(rel_err(got, want, 3), 0.0);
    got[1] = NAN;
    cr_assert(!(rel_err(got, want, 3) <= TOL));
    got[1] = INFINITY;
    cr_assert(!(rel_err(got, want, 3) <= TOL));
    got[1] = 2;
    want[2] = NAN;
    cr_assert(!(rel_err(got, want, 3) <= TOL), "a NaN reference must not pass either");
}

/* ---- references against hand-computed values ---------------------------------------- */

Test(cpu_ops, linear_ref_hand_f32) {
    const float w_data[6] = {1, 2, 3, 4, 5, 6}; /* [2, 3] */
    weight w = {.dtype = DTYPE_F32, .rows = 2, .cols = 3, .data = w_data};
    const float x[3] = {1, 0.5f, -1};
    float y[2], yf[2];
    cpu_linear_ref(&w, x, y, 1);
    cr_assert_float_eq(y[0], 1 + 1 - 3, 0); /* 1·1 + 2·0.5 + 3·(−1) */
    cr_assert_float_eq(y[1], 4 + 2.5f - 6, 0);
    cpu_linear(NULL, &w, x, yf, 1);
    cr_assert_float_eq(yf[0], y[0], 0);
    cr_assert_float_eq(yf[1], y[1], 0);

    const float xt[2] = {1, 2};
    float yt[3], ytf[3];
    cpu_linear_t_ref(&w, xt, yt, 1); /* [1, 2] · [[1,2,3],[4,5,6]] = [9, 12, 15] */
    cr_assert_float_eq(yt[0], 9, 0);
    cr_assert_float_eq(yt[1], 12, 0);
    cr_assert_float_eq(yt[2], 15, 0);
    cpu_linear_t(NULL, &w, xt, ytf, 1);
    for (int i = 0; i < 3; i++) cr_assert_float_eq(ytf[i], yt[i], 0);
}

Test(cpu_ops, linear_ref_hand_fp8_view) {
    /* Physical [130, 3] e4m3 matrix, scales [2, 1] = {2, 0.25}; the view is rows
     * 127..128, which straddle the block boundary: row 127 scales by 2, row 128 by 0.25.
     * Codes: 0x38 = 1, 0x40 = 2, 0xB0 = −0.5, 0x01 = 2^-9 (subnormal), 0x44 = 3. */
    uint8_t data[130 * 3] = {0};
    const uint8_t r127[3] = {0x38, 0x40, 0xB0}, r128[3] = {0x01, 0x44, 0x38};
    memcpy(data + 127 * 3, r127, 3);
    memcpy(data + 128 * 3, r128, 3);
    const float scale[2] = {2.0f, 0.25f};
    weight full = {.dtype = DTYPE_F8_E4M3, .rows = 130, .cols = 3, .data = data, .scale = scale};
    weight w = weight_rows(&full, 127, 2);
    const float x[3] = {1, 1, 2};
    float y[2], yf[2];
    cpu_linear_ref(&w, x, y, 1);
    cr_assert_float_eq(y[0], 2.0f * (1 + 2 - 1), 0);
    cr_assert_float_eq(y[1], 0.25f * (0x1p-9f + 3 + 2), 1e-9);
    cpu_linear(NULL, &w, x, yf, 1);
    cr_assert_float_eq(yf[0], y[0], 1e-6);
    cr_assert_float_eq(yf[1], y[1], 1e-6);
}

Test(cpu_ops, elementwise_ref_hand) {
    const float g_data[2] = {1, 2};
    weight g = {.dtype = DTYPE_F32, .rows = 1, .cols = 2, .data = g_data};
    const float x[2] = {3, 4}; /* mean square 12.5 */
    float y[2];
    cpu_rmsnorm_ref(&g, x, y, 1, 2, 0.0f);
    cr_assert_float_eq(y[0], 3 / sqrtf(12.5f), 1e-6);
    cr_assert_float_eq(y[1], 2 * 4 / sqrtf(12.5f), 1e-6);

    const float gate[2] = {0, 1}, up[2] = {5, 2};
    cpu_silu_mul_ref(gate, up, y, 2); /* silu(0) = 0, silu(1) = 1/(1+e^-1) */
    cr_assert_float_eq(y[0], 0, 0);
    cr_assert_float_eq(y[1], 2 / (1 + expf(-1)), 1e-6);

    const uint16_t table[4] = {0x3F80, 0x4000, 0xBF80, 0x4040}; /* bf16 1, 2, −1, 3 as [2, 2] */
    weight t = {.dtype = DTYPE_BF16, .rows = 2, .cols = 2, .data = table};
    const int32_t ids[3] = {1, 0, 1};
    float e[6];
    cpu_embedding_ref(&t, ids, 3, e);
    const float want[6] = {-1, 3, 1, 2, -1, 3};
    for (int i = 0; i < 6; i++) cr_assert_float_eq(e[i], want[i], 0);
}

/* ---- references against float64 on random data ---------------------------------------- */

Test(cpu_ops, linear_refs_vs_float64) {
    uint64_t seed;
    rng r = rng_start(&seed);
    for (size_t d = 0; d < sizeof all_dtypes / sizeof *all_dtypes; d++) {
        test_weight t = weight_random(&r, all_dtypes[d], 300, 200);
        weight w = weight_rows(&t.w, 100, 150); /* physical rows 100..249 */
        const int m = 3;
        float *x = floats_random(&r, (size_t)m * 200, -1, 1), *xt = floats_random(&r, (size_t)m * 150, -1, 1);
        float *y = floats_alloc((size_t)m * 150), *want = floats_alloc((size_t)m * 150);
        float *yt = floats_alloc((size_t)m * 200), *want_t = floats_alloc((size_t)m * 200);
        cpu_linear_ref(&w, x, y, m);
        cpu_linear_t_ref(&w, xt, yt, m);
        for (int i = 0; i < m; i++) {
            for (int n = 0; n < 150; n++) {
                double acc = 0;
                for (int k = 0; k < 200; k++) acc += (double)x[i * 200 + k] * f64_weight(&t, 100 + n, k);
                want[i * 150 + n] = (float)acc;
            }
            for (int c = 0; c < 200; c++) {
                double acc = 0;
                for (int n = 0; n < 150; n++) acc += (double)xt[i * 150 + n] * f64_weight(&t, 100 + n, c);
                want_t[i * 200 + c] = (float)acc;
            }
        }
        ASSERT_CLOSE(y, want, (size_t)m * 150, 1e-6, "linear_ref %s seed %llu", dtype_name(all_dtypes[d]),
                     (unsigned long long)seed);
        ASSERT_CLOSE(yt, want_t, (size_t)m * 200, 1e-6, "linear_t_ref %s seed %llu",
                     dtype_name(all_dtypes[d]), (unsigned long long)seed);
        free(x), free(xt), free(y), free(want), free(yt), free(want_t);
        weight_free(&t);
    }
}

/* ---- fast vs reference ------------------------------------------------------------------ */

typedef struct { int64_t phys_rows, row0, rows, cols; } shape;

/* View shapes: partial blocks, tiny, bands across 128-row boundaries. */
static const shape linear_shapes[] = {
    {1, 0, 1, 1},        {5, 0, 5, 7},          {64, 0, 64, 128},   {130, 0, 130, 300},
    {300, 100, 170, 200}, {257, 1, 255, 129},   {400, 120, 150, 33}, {96, 0, 96, 1000},
    /* columns a multiple of 32 (the AMX kernel takes these): partial 32-row
     * groups and 128-column blocks, bands starting at 16- and odd rows */
    {200, 16, 170, 416}, {48, 0, 33, 64},       {300, 144, 150, 160}, {70, 3, 61, 96},
};
static const int linear_ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 33, 64, 300};

static void check_linear(threadpool *pool, dtype_t dt, const shape *s, int m, rng *r, uint64_t seed,
                         int transposed) {
    test_weight t = weight_random(r, dt, s->phys_rows, s->cols);
    weight w = weight_rows(&t.w, s->row0, s->rows);
    const int64_t in = transposed ? w.rows : w.cols, out = transposed ? w.cols : w.rows;
    float *x = floats_random(r, (size_t)(m * in), -1, 1);
    float *y = floats_alloc((size_t)(m * out)), *want = floats_alloc((size_t)(m * out));
    if (transposed) {
        cpu_linear_t(pool, &w, x, y, m);
        cpu_linear_t_ref(&w, x, want, m);
    } else {
        cpu_linear(pool, &w, x, y, m);
        cpu_linear_ref(&w, x, want, m);
    }
    ASSERT_CLOSE(y, want, (size_t)(m * out), TOL,
                 "%s %s [%lld rows from %lld, %lld cols] m=%d threads=%d simd=%s seed %llu",
                 transposed ? "linear_t" : "linear", dtype_name(dt), (long long)s->rows,
                 (long long)s->row0, (long long)s->cols, m, threadpool_size(pool), cpu_simd_level(),
                 (unsigned long long)seed);
    free(x), free(y), free(want);
    weight_free(&t);
}

static void linear_sweep(int transposed) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pools[3] = {NULL, threadpool_create(2), threadpool_create(3)};
    cr_assert(pools[1] && pools[2]);
    int run = 0;
    for (size_t d = 0; d < sizeof all_dtypes / sizeof *all_dtypes; d++)
        for (size_t s = 0; s < sizeof linear_shapes / sizeof *linear_shapes; s++)
            for (size_t mi = 0; mi < sizeof linear_ms / sizeof *linear_ms; mi++) {
                const shape *sh = &linear_shapes[s];
                int m = linear_ms[mi];
                if (m == 300 && sh->rows * sh->cols > 40000) continue; /* keep the reference quick */
                check_linear(pools[run++ % 3], all_dtypes[d], sh, m, &r, seed, transposed);
            }
    threadpool_free(pools[1]);
    threadpool_free(pools[2]);
}

Test(cpu_ops, linear_vs_ref, .timeout = 120) { linear_sweep(0); }
Test(cpu_ops, linear_t_vs_ref, .timeout = 120) { linear_sweep(1); }

/* The model's absorbed-MLA shape: W_UK of one head [128, 512] (a band of kv_b_proj). */
Test(cpu_ops, linear_t_mla_shapes, .timeout = 60) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    const shape s = {1024, 256, 128, 512};
    const int ms[] = {1, 16, 100};
    for (size_t d = 0; d < sizeof all_dtypes / sizeof *all_dtypes; d++)
        for (size_t i = 0; i < 3; i++) check_linear(pool, all_dtypes[d], &s, ms[i], &r, seed, 1);
    threadpool_free(pool);
}

/* cpu_linear_batch: products of mixed dtype, direction, m (streamed and tiled)
 * and views, with rows of x and y strided inside shared buffers, must give
 * exactly what cpu_linear / cpu_linear_t give for each alone (the batch only
 * changes how tasks are spread over threads), and match the strided reference.
 * 70 products so the batch is split (CPU_BATCH_MAX). */
Test(cpu_ops, linear_batch_equals_each_alone, .timeout = 120) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pools[2] = {threadpool_create(2), threadpool_create(3)};
    cr_assert(pools[0] && pools[1]);
    enum { N = 70, PAD = 3 };
    test_weight tw[N];
    linear_op ops[N], refs[N];
    float *alone[N], *xs[N], *ybuf[N];
    for (int i = 0; i < N; i++) {
        const shape *sh = &linear_shapes[rng_next(&r) % (sizeof linear_shapes / sizeof *linear_shapes)];
        const dtype_t dt = i % 3 == 0 ? DTYPE_F8_E4M3 : all_dtypes[rng_next(&r) % 4];
        const int tr = (int)(rng_next(&r) % 2), m = i % 11 == 0 ? 9 + (int)(rng_next(&r) % 5) : 1 + (int)(rng_next(&r) % 8);
        tw[i] = weight_random(&r, dt, sh->phys_rows, sh->cols);
        const weight w = weight_rows(&tw[i].w, sh->row0, sh->rows);
        const int64_t in = tr ? w.rows : w.cols, out = tr ? w.cols : w.rows;
        const int64_t ldx = in + PAD * (i % 2), ldy = out + PAD * ((i / 2) % 2);
        xs[i] = floats_random(&r, (size_t)(m * ldx), -1, 1);
        ybuf[i] = floats_alloc((size_t)(m * ldy) * 2); /* [batch | reference] */
        ops[i] = (linear_op){.w = w, .x = xs[i], .y = ybuf[i], .m = m, .transposed = tr, .ldx = ldx, .ldy = ldy};
        refs[i] = ops[i];
        refs[i].y = ybuf[i] + (size_t)(m * ldy);
        /* alone: contiguous copy of x through the single-product entry point */
        float *xc = floats_alloc((size_t)(m * in));
        for (int j = 0; j < m; j++) memcpy(xc + (size_t)j * in, xs[i] + (size_t)j * ldx, (size_t)in * sizeof(float));
        alone[i] = floats_alloc((size_t)(m * out));
        if (tr) cpu_linear_t(pools[i % 2], &w, xc, alone[i], m);
        else cpu_linear(pools[i % 2], &w, xc, alone[i], m);
        free(xc);
    }
    cpu_linear_batch(pools[0], ops, N);
    cpu_linear_batch_ref(refs, N);
    for (int i = 0; i < N; i++) {
        const linear_op *op = &ops[i];
        const int64_t out = op->transposed ? op->w.cols : op->w.rows;
        for (int j = 0; j < op->m; j++) {
            cr_assert(memcmp(op->y + (size_t)j * op->ldy, alone[i] + (size_t)j * out, (size_t)out * sizeof(float)) == 0,
                      "product %d (%s %s, m=%d, row %d): batch differs from alone, simd=%s seed %llu", i,
                      op->transposed ? "linear_t" : "linear", dtype_name(op->w.dtype), op->m, j, cpu_simd_level(),
                      (unsigned long long)seed);
            ASSERT_CLOSE(op->y + (size_t)j * op->ldy, refs[i].y + (size_t)j * op->ldy, (size_t)out, TOL,
                         "product %d row %d vs strided reference seed %llu", i, j, (unsigned long long)seed);
            if (op->ldy > out) /* padding between rows untouched */
                cr_assert(isnan(op->y[(size_t)j * op->ldy + out]), "product %d wrote past its row", i);
        }
        free(alone[i]), free(xs[i]), free(ybuf[i]);
        weight_free(&tw[i]);
    }
    threadpool_free(pools[0]);
    threadpool_free(pools[1]);
}

/* Batch-invariant products: for every dtype, direction, view shape and m
 * (streamed and, without the mode, tiled or AMX), row i of y is bit for bit the
 * product of row i of x alone, also inside a linear_batch, and still close to
 * the reference. */
static void check_invariant(threadpool *pool, dtype_t dt, const shape *s, int m, rng *r, uint64_t seed, int tr) {
    test_weight t = weight_random(r, dt, s->phys_rows, s->cols);
    weight w = weight_rows(&t.w, s->row0, s->rows);
    const int64_t in = tr ? w.rows : w.cols, out = tr ? w.cols : w.rows;
    float *x = floats_random(r, (size_t)(m * in), -1, 1);
    float *y = floats_alloc((size_t)(m * out)), *yb = floats_alloc((size_t)(m * out)), *one = floats_alloc((size_t)out);
    float *want = floats_alloc((size_t)(m * out));
    if (tr) {
        cpu_linear_t_invariant(pool, &w, x, y, m);
        cpu_linear_t_ref(&w, x, want, m);
    } else {
        cpu_linear_invariant(pool, &w, x, y, m);
        cpu_linear_ref(&w, x, want, m);
    }
    linear_op ops[2] = {{.w = w, .x = x, .y = yb, .m = m, .transposed = tr, .ldx = in, .ldy = out},
                        {.w = w, .x = x, .y = one, .m = 1, .transposed = tr, .ldx = in, .ldy = out}};
    cpu_linear_batch_invariant(pool, ops, 2);
    ASSERT_CLOSE(y, want, (size_t)(m * out), TOL, "invariant %s %s m=%d seed %llu", tr ? "linear_t" : "linear",
                 dtype_name(dt), m, (unsigned long long)seed);
    cr_assert(memcmp(yb, y, (size_t)(m * out) * sizeof *y) == 0, "batch differs from alone: %s m=%d", dtype_name(dt), m);
    for (int i = 0; i < m; i += (m > 16 ? 7 : 1)) {
        if (tr) cpu_linear_t_invariant(pool, &w, x + (size_t)i * in, one, 1);
        else cpu_linear_invariant(pool, &w, x + (size_t)i * in, one, 1);
        cr_assert(memcmp(one, y + (size_t)i * out, (size_t)out * sizeof *one) == 0,
                  "%s %s [%lld rows from %lld, %lld cols] row %d of m=%d differs from the row alone, simd=%s seed %llu",
                  tr ? "linear_t" : "linear", dtype_name(dt), (long long)s->rows, (long long)s->row0,
                  (long long)s->cols, i, m, cpu_simd_level(), (unsigned long long)seed);
    }
    free(x), free(y), free(yb), free(one), free(want);
    weight_free(&t);
}

Test(cpu_ops, linear_invariant_rows_equal_alone, .timeout = 120) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pools[2] = {threadpool_create(2), threadpool_create(3)};
    cr_assert(pools[0] && pools[1]);
    int run = 0;
    for (size_t d = 0; d < sizeof all_dtypes / sizeof *all_dtypes; d++)
        for (size_t s = 0; s < sizeof linear_shapes / sizeof *linear_shapes; s++)
            for (size_t mi = 0; mi < sizeof linear_ms / sizeof *linear_ms; mi++) {
                const shape *sh = &linear_shapes[s];
                if (linear_ms[mi] == 300 && sh->rows * sh->cols > 40000) continue;
                check_invariant(pools[run % 2], all_dtypes[d], sh, linear_ms[mi], &r, seed, run % 3 == 0);
                run++;
            }
    threadpool_free(pools[0]);
    threadpool_free(pools[1]);
}

/* ---- bf16 activations (cpu/cpu_bf16dot.h) ---------------------------------------- */

/* x rounded to bf16 (round to nearest even), as a float. */
static float bf16_round(float x) { return bf16_to_f32(f32_to_bf16(x)); }

/* The contract of cpu_bf16dot_rows in float64: Σ_k bf16(x·s)·q, q the weight
 * without its scale (e4m3 subnormals read as 0), s the block scale (1: BF16). */
static double bf16dot_oracle(const test_weight *t, const weight *w, const float *x, int64_t n, double *mag) {
    const int64_t prow = w->row0 + n;
    double acc = 0, sum_abs = 0;
    for (int64_t k = 0; k < w->cols; k++) {
        size_t i = (size_t)(prow * w->cols + k);
        double q;
        float s = 1.0f;
        if (w->dtype == DTYPE_F8_E4M3) {
            uint8_t c = ((const uint8_t *)t->data)[i];
            q = (c & 0x78) ? (double)e4m3_to_f32(c) : 0.0;
            s = t->scale[(prow / 128) * weight_scale_cols(w) + k / 128];
        } else {
            q = (double)bf16_to_f32(((const uint16_t *)t->data)[i]);
        }
        double term = (double)bf16_round(x[k] * s) * q;
        acc += term;
        sum_abs += fabs(term);
    }
    *mag = sum_abs;
    return acc;
}

/* cpu_bf16dot_rows against its oracle (fp32 sums: 1e-5 of Σ|terms|), through
 * cpu_linear_flags and cpu_linear_batch_flags (equal bit for bit), and every
 * row equal to the row alone. CPU_INVARIANT pins the bf16 kernel for every m
 * (without it, AMX takes the products with many rows: the next test). */
Test(cpu_ops, bf16dot_vs_oracle_and_rows_alone, .timeout = 120) {
    if (!cpu_bf16dot_usable()) cr_skip_test("bf16-activation kernel not run: no AVX512_BF16 here (or MLASERVE_CPU_SIMD caps SIMD below AVX-512)");
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(3);
    const dtype_t dts[] = {DTYPE_F8_E4M3, DTYPE_BF16};
    const shape shapes[] = {{200, 16, 170, 416}, {48, 0, 33, 64}, {300, 144, 150, 160}, {70, 3, 61, 96},
                            {256, 0, 256, 2048}};
    const int ms[] = {1, 2, 3, 5, 8, 9, 17, 40};
    for (size_t d = 0; d < 2; d++)
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
            for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
                const shape *sh = &shapes[si];
                const int m = ms[mi];
                test_weight t = weight_random(&r, dts[d], sh->phys_rows, sh->cols);
                weight w = weight_rows(&t.w, sh->row0, sh->rows);
                cr_assert(cpu_bf16dot_fits(&w));
                float *x = floats_random(&r, (size_t)(m * w.cols), -3, 3);
                float *y = floats_alloc((size_t)(m * w.rows)), *yb = floats_alloc((size_t)(m * w.rows));
                float *one = floats_alloc((size_t)w.rows);
                cpu_linear_flags(pool, &w, x, y, m, CPU_BF16_ACT | CPU_INVARIANT);
                for (int i = 0; i < m; i++)
                    for (int64_t n = 0; n < w.rows; n++) {
                        double mag, want = bf16dot_oracle(&t, &w, x + (size_t)i * w.cols, n, &mag);
                        double got = y[(size_t)i * w.rows + n];
                        cr_assert(fabs(got - want) <= 1e-5 * mag + 1e-30, "bf16dot %s [%lld from %lld, %lld] m=%d row %d n %lld: %.9g vs %.9g seed %llu",
                                  dtype_name(dts[d]), (long long)sh->rows, (long long)sh->row0, (long long)sh->cols, m, i,
                                  (long long)n, got, want, (unsigned long long)seed);
                    }
                linear_op op = {.w = w, .x = x, .y = yb, .m = m, .ldx = w.cols, .ldy = w.rows};
                cpu_linear_batch_flags(pool, &op, 1, CPU_BF16_ACT | CPU_INVARIANT);
                cr_assert(memcmp(yb, y, (size_t)(m * w.rows) * sizeof *y) == 0, "linear_batch differs: m=%d", m);
                for (int i = 0; i < m; i++) {
                    cpu_linear_flags(pool, &w, x + (size_t)i * w.cols, one, 1, CPU_BF16_ACT | CPU_INVARIANT);
                    cr_assert(memcmp(one, y + (size_t)i * w.rows, (size_t)w.rows * sizeof *one) == 0,
                              "bf16dot %s row %d of m=%d differs from the row alone, seed %llu", dtype_name(dts[d]), i, m,
                              (unsigned long long)seed);
                }
                free(x), free(y), free(yb), free(one);
                weight_free(&t);
            }
    threadpool_free(pool);
}

/* bf16 activations without CPU_INVARIANT: whichever kernel takes a product
 * (the bf16 kernel, or AMX from 9 rows of x where the CPU has it) multiplies
 * bf16-rounded activations: within bf16 precision of the oracle (2^-7 of
 * Σ|terms|: the two round x·s or x, and sum in different orders), and
 * linear_batch gives the same bits as linear. */
Test(cpu_ops, bf16_activations_any_kernel_within_bf16, .timeout = 120) {
    if (!cpu_bf16dot_usable()) cr_skip_test("bf16-activation kernel not run: no AVX512_BF16 here (or MLASERVE_CPU_SIMD caps SIMD below AVX-512)");
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    const dtype_t dts[] = {DTYPE_F8_E4M3, DTYPE_BF16};
    const int ms[] = {1, 8, 9, 17, 64};
    for (size_t d = 0; d < 2; d++)
        for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
            const int m = ms[mi];
            test_weight t = weight_random(&r, dts[d], 256, 512);
            weight w = weight_rows(&t.w, 0, 256);
            float *x = floats_random(&r, (size_t)(m * w.cols), -3, 3);
            float *y = floats_alloc((size_t)(m * w.rows)), *yb = floats_alloc((size_t)(m * w.rows));
            cpu_linear_flags(pool, &w, x, y, m, CPU_BF16_ACT);
            for (int i = 0; i < m; i++)
                for (int64_t n = 0; n < w.rows; n++) {
                    double mag, want = bf16dot_oracle(&t, &w, x + (size_t)i * w.cols, n, &mag);
                    double got = y[(size_t)i * w.rows + n];
                    cr_assert(fabs(got - want) <= mag / 128 + 1e-30, "%s m=%d row %d n %lld: %.9g vs %.9g (Σ|terms| %.3g) seed %llu",
                              dtype_name(dts[d]), m, i, (long long)n, got, want, mag, (unsigned long long)seed);
                }
            linear_op op = {.w = w, .x = x, .y = yb, .m = m, .ldx = w.cols, .ldy = w.rows};
            cpu_linear_batch_flags(pool, &op, 1, CPU_BF16_ACT);
            cr_assert(memcmp(yb, y, (size_t)(m * w.rows) * sizeof *y) == 0, "%s linear_batch differs: m=%d",
                      dtype_name(dts[d]), m);
            free(x), free(y), free(yb);
            weight_free(&t);
        }
    threadpool_free(pool);
}

/* Every non-NaN e4m3 code through both linear paths and the row decoder, exactly. */
static void fp8_every_code_exact(void) {
    enum { CODES = 256, COLS = 64 };
    uint8_t *data = malloc(CODES * COLS);
    float scale[2 * 1] = {0.375f, 3.0f}; /* rows 0..127, 128..255 */
    for (int c = 0; c < CODES; c++) memset(data + c * COLS, c, COLS);
    weight w = {.dtype = DTYPE_F8_E4M3, .rows = CODES, .cols = COLS, .data = data, .scale = scale};
    float x[9 * COLS] = {0};
    for (int i = 0; i < 9; i++) x[i * COLS + 17 + i] = 1.0f; /* one-hot: y[i][c] = W[c][17+i] */
    float y[9 * CODES], e[CODES * COLS];
    int32_t ids[CODES];
    for (int c = 0; c < CODES; c++) ids[c] = c;
    cpu_embedding(NULL, &w, ids, CODES, e);
    for (int m = 1; m <= 9; m += (m == 1 ? 1 : 7)) { /* 1: AVX decode; 2, 9: AMX where the CPU has it */
        cpu_linear(NULL, &w, x, y, m);
        for (int c = 0; c < CODES; c++) {
            if ((c & 0x7f) == 0x7f) continue; /* NaN codes: see cpu_ops.h */
            float want = e4m3_to_f32((uint8_t)c) * scale[c / 128];
            for (int i = 0; i < m; i++)
                cr_assert_eq(y[i * CODES + c], want, "code 0x%02x m=%d: %g != %g", c, m, y[i * CODES + c], want);
            for (int k = 0; k < COLS; k++) cr_assert_eq(e[c * COLS + k], want, "embedding code 0x%02x", c);
        }
    }
    free(data);
}

Test(cpu_ops, fp8_every_code_exact) { fp8_every_code_exact(); }

/* The decode kernels' two FP8 loads (cpu_f8_load), each forced: every code
 * exact, and the FP8 products at decode sizes (plain and batch-invariant)
 * against the reference on random codes (one in sixteen has exponent 0).
 * Criterion runs each test in its own process, so the variable is read before
 * the variant is chosen. */
static void fp8_load_mode_vs_ref(const char *mode) {
    setenv("MLASERVE_CPU_F8_LOAD", mode, 1);
    if (strcmp(cpu_simd_level(), "scalar") == 0) cr_skip_test("no AVX2 here: the scalar path has no FP8 load modes");
#ifdef MS_TSAN_CRITERION_SHIM_H /* all tests in one process: the variant may be chosen already */
    if (strcmp(cpu_f8_load(), mode) != 0) cr_skip_test("variant chosen before setenv (no-fork mode)");
#endif
    cr_assert_str_eq(cpu_f8_load(), mode, "MLASERVE_CPU_F8_LOAD=%s not taken (variant chosen before setenv?)", mode);
    fp8_every_code_exact();
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    cr_assert(pool);
    for (size_t s = 0; s < sizeof linear_shapes / sizeof *linear_shapes; s++)
        for (int m = 1; m <= 9; m++) {
            check_linear(pool, DTYPE_F8_E4M3, &linear_shapes[s], m, &r, seed, 0);
            check_linear(pool, DTYPE_F8_E4M3, &linear_shapes[s], m, &r, seed, 1);
            check_invariant(pool, DTYPE_F8_E4M3, &linear_shapes[s], m, &r, seed, m % 2);
        }
    threadpool_free(pool);
}

Test(cpu_ops, fp8_half_load_vs_ref, .timeout = 60) { fp8_load_mode_vs_ref("half"); }
Test(cpu_ops, fp8_bits_load_vs_ref, .timeout = 60) { fp8_load_mode_vs_ref("bits"); }

Test(cpu_ops, rmsnorm_vs_ref) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    const int ds[] = {1, 7, 64, 2048, 7168}, ms[] = {1, 3, 17};
    for (size_t dt = 0; dt < 4; dt++)
        for (size_t di = 0; di < 5; di++)
            for (size_t mi = 0; mi < 3; mi++) {
                int d = ds[di], m = ms[mi];
                test_weight t = weight_random(&r, all_dtypes[dt], 3, d);
                weight g = weight_rows(&t.w, 2, 1);
                float *x = floats_random(&r, (size_t)m * d, -3, 3), *want = floats_alloc((size_t)m * d);
                float *y = floats_alloc((size_t)m * d);
                cpu_rmsnorm_ref(&g, x, want, m, d, 1e-6f);
                cpu_rmsnorm(pool, &g, x, y, m, d, 1e-6f);
                ASSERT_CLOSE(y, want, (size_t)m * d, TOL, "rmsnorm %s d=%d m=%d seed %llu",
                             dtype_name(all_dtypes[dt]), d, m, (unsigned long long)seed);
                cpu_rmsnorm(pool, &g, x, x, m, d, 1e-6f); /* in place */
                ASSERT_CLOSE(x, want, (size_t)m * d, TOL, "rmsnorm in place seed %llu", (unsigned long long)seed);
                free(x), free(y), free(want);
                weight_free(&t);
            }
    threadpool_free(pool);
}

Test(cpu_ops, silu_mul_vs_ref) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    const int64_t ns[] = {1, 7, 8, 9, 1000, 100003};
    for (size_t i = 0; i < 6; i++) {
        int64_t n = ns[i];
        float *g = floats_random(&r, (size_t)n, -20, 20), *u = floats_random(&r, (size_t)n, -2, 2);
        float *y = floats_alloc((size_t)n), *want = floats_alloc((size_t)n);
        if (n > 8) g[3] = -200, g[4] = 200, g[5] = -87.5f, g[6] = 0; /* clamp edges */
        cpu_silu_mul_ref(g, u, want, n);
        cpu_silu_mul(pool, g, u, y, n);
        /* elementwise: compare each value against its own magnitude (plus a floor) */
        for (int64_t k = 0; k < n; k++)
            cr_assert(fabsf(y[k] - want[k]) <= 4e-6f * fabsf(want[k]) + 1e-30f,
                      "silu_mul[%lld] g=%g: %g vs %g seed %llu", (long long)k, g[k], y[k], want[k],
                      (unsigned long long)seed);
        cpu_silu_mul(pool, g, u, g, n); /* in place */
        ASSERT_CLOSE(g, want, (size_t)n, TOL, "silu_mul in place seed %llu", (unsigned long long)seed);
        free(g), free(u), free(y), free(want);
    }
    threadpool_free(pool);
}

Test(cpu_ops, silu_mul_nan_propagates) {
    float g[8] = {NAN, 1, 2, 3, 4, 5, 6, 7}, u[8] = {1, 1, 1, 1, 1, 1, 1, NAN}, y[8];
    cpu_silu_mul(NULL, g, u, y, 8);
    cr_assert(isnan(y[0]) && isnan(y[7]));
}

Test(cpu_ops, embedding_vs_ref) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    const int64_t cols[] = {1, 200, 2048};
    for (size_t dt = 0; dt < 4; dt++)
        for (size_t ci = 0; ci < 3; ci++) {
            test_weight t = weight_random(&r, all_dtypes[dt], 300, cols[ci]);
            weight w = weight_rows(&t.w, 20, 270);
            int32_t ids[50];
            for (int i = 0; i < 50; i++) ids[i] = (int32_t)(rng_next(&r) % 270);
            float *y = floats_alloc(50 * (size_t)cols[ci]), *want = floats_alloc(50 * (size_t)cols[ci]);
            cpu_embedding_ref(&w, ids, 50, want);
            cpu_embedding(pool, &w, ids, 50, y);
            ASSERT_CLOSE(y, want, 50 * (size_t)cols[ci], 0, "embedding %s cols=%lld seed %llu",
                         dtype_name(all_dtypes[dt]), (long long)cols[ci], (unsigned long long)seed);
            free(y), free(want);
            weight_free(&t);
        }
    threadpool_free(pool);
}

/* ---- thread pool: every task exactly once over many short runs -------------------------- */

typedef struct { int *hits; } pool_job;
static void pool_task(void *ctx, int task, int thread) {
    (void)thread;
    __atomic_fetch_add(&((pool_job *)ctx)->hits[task], 1, __ATOMIC_RELAXED);
}

/* Runs back to back (workers spinning, joining late or not at all) and runs after
 * a pause long enough for the workers to fall asleep. */
Test(cpu_ops, threadpool_runs_each_task_once, .timeout = 60) {
    uint64_t seed;
    rng r = rng_start(&seed);
    for (int threads = 2; threads <= 3; threads++) {
        threadpool *pool = threadpool_create(threads);
        int hits[64];
        pool_job j = {hits};
        for (int run = 0; run < 20000; run++) {
            const int n = 1 + (int)(rng_next(&r) % 40);
            memset(hits, 0, sizeof hits);
            threadpool_run(pool, n, pool_task, &j);
            for (int t = 0; t < n; t++) cr_assert_eq(hits[t], 1, "run %d task %d of %d ran %d times", run, t, n, hits[t]);
            for (int t = n; t < 64; t++) cr_assert_eq(hits[t], 0);
            if (run % 5000 == 4999) usleep(20000); /* workers go to sleep */
        }
        threadpool_free(pool);
    }
}

/* ---- MLA attention: SIMD + threaded vs the plain-C references ------------------------ */

/* Absorbed decode over a paged cache: several sequences of awkward lengths
 * (1, partial pages, page boundaries), head counts that do not divide evenly
 * into the head groups, latent widths that leave SIMD tails. */
Test(cpu_ops, mla_decode_vs_ref, .timeout = 60) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pools[3] = {NULL, threadpool_create(2), threadpool_create(3)};
    const int dims[][3] = {{512, 64, 16}, {72, 8, 3}, {13, 5, 7}, {96, 32, 4}}; /* kvr, rope, heads */
    const int lens[] = {1, 63, 64, 65, 200};
    const int n = 5, layers = 2;
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
        const int kvr = dims[d][0], rope = dims[d][1], H = dims[d][2];
        kv_cache kv;
        ms_err err = {{0}};
        cr_assert(kv_cache_init(&kv, NULL, layers, kvr, rope, 16, &err) == 0, "%s", err.msg);
        kv_seq seqs[5];
        memset(seqs, 0, sizeof seqs);
        const kv_seq *sp[5];
        int32_t ctx[5];
        for (int i = 0; i < n; i++) {
            cr_assert(kv_seq_reserve(&kv, &seqs[i], lens[i], &err) == 0, "%s", err.msg);
            for (int l = 0; l < layers; l++)
                for (int t = 0; t < lens[i]; t++) {
                    float *e = kv_entry(&kv, &seqs[i], l, t);
                    for (int k = 0; k < kv.entry_dim; k++) e[k] = rng_uniform(&r, -1, 1);
                }
            sp[i] = &seqs[i];
            ctx[i] = lens[i];
        }
        float *ql = floats_random(&r, (size_t)n * H * kvr, -1, 1), *qp = floats_random(&r, (size_t)n * H * rope, -1, 1);
        float *want = floats_alloc((size_t)n * H * kvr), *got = floats_alloc((size_t)n * H * kvr);
        for (int nt = 1; nt <= n; nt += 4) /* batch of 1 and of 5 tokens */
            for (int pi = 0; pi < 3; pi++) {
                cpu_mla_decode_ref(&kv, 1, nt, sp, ctx, H, ql, qp, 0.3f, want);
                cpu_mla_decode(pools[pi], &kv, 1, nt, sp, ctx, H, ql, qp, 0.3f, got);
                ASSERT_CLOSE(got, want, (size_t)nt * H * kvr, TOL, "mla_decode kvr=%d rope=%d H=%d n=%d threads=%d seed %llu",
                             kvr, rope, H, nt, threadpool_size(pools[pi]), (unsigned long long)seed);
            }
        free(ql), free(qp), free(want), free(got);
        for (int i = 0; i < n; i++) kv_seq_release(&kv, &seqs[i]);
        kv_cache_free(&kv);
    }
    threadpool_free(pools[1]);
    threadpool_free(pools[2]);
}

/* Batch-invariant decode attention: each token's heads give the same bits
 * in a batch of 1 and of 5 (the fast decode groups heads by batch size), and
 * stay close to the reference. */
Test(cpu_ops, mla_decode_invariant_tokens_equal_alone, .timeout = 60) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    const int dims[][3] = {{512, 64, 16}, {72, 8, 3}, {96, 32, 6}}; /* kvr, rope, heads */
    const int lens[] = {1, 63, 64, 65, 200};
    enum { N = 5 };
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
        const int kvr = dims[d][0], rope = dims[d][1], H = dims[d][2];
        kv_cache kv;
        ms_err err = {{0}};
        cr_assert(kv_cache_init(&kv, NULL, 1, kvr, rope, 16, &err) == 0, "%s", err.msg);
        kv_seq seqs[N];
        memset(seqs, 0, sizeof seqs);
        const kv_seq *sp[N];
        int32_t ctx[N];
        for (int i = 0; i < N; i++) {
            cr_assert(kv_seq_reserve(&kv, &seqs[i], lens[i], &err) == 0, "%s", err.msg);
            for (int t = 0; t < lens[i]; t++) {
                float *e = kv_entry(&kv, &seqs[i], 0, t);
                for (int k = 0; k < kv.entry_dim; k++) e[k] = rng_uniform(&r, -1, 1);
            }
            sp[i] = &seqs[i];
            ctx[i] = lens[i];
        }
        float *ql = floats_random(&r, (size_t)N * H * kvr, -1, 1), *qp = floats_random(&r, (size_t)N * H * rope, -1, 1);
        float *all = floats_alloc((size_t)N * H * kvr), *one = floats_alloc((size_t)H * kvr);
        float *want = floats_alloc((size_t)N * H * kvr);
        cpu_mla_decode_invariant(pool, &kv, 0, N, sp, ctx, H, ql, qp, 0.3f, all);
        cpu_mla_decode_ref(&kv, 0, N, sp, ctx, H, ql, qp, 0.3f, want);
        ASSERT_CLOSE(all, want, (size_t)N * H * kvr, TOL, "invariant decode kvr=%d H=%d seed %llu", kvr, H,
                     (unsigned long long)seed);
        for (int i = 0; i < N; i++) {
            cpu_mla_decode_invariant(pool, &kv, 0, 1, sp + i, ctx + i, H, ql + (size_t)i * H * kvr,
                                     qp + (size_t)i * H * rope, 0.3f, one);
            cr_assert(memcmp(one, all + (size_t)i * H * kvr, (size_t)H * kvr * sizeof *one) == 0,
                      "token %d (kvr=%d H=%d): batch of %d differs from alone", i, kvr, H, N);
        }
        free(ql), free(qp), free(all), free(one), free(want);
        for (int i = 0; i < N; i++) kv_seq_release(&kv, &seqs[i]);
        kv_cache_free(&kv);
    }
    threadpool_free(pool);
}

/* Expanded causal prefill: a chunk continuing a cached prefix (pos0 > 0) and one from 0. */
Test(cpu_ops, mla_prefill_vs_ref, .timeout = 60) {
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    /* T pos0 H nope rope v: query blocks of 16 with a partial last one, chunks
     * continuing a prefix across page lines, widths that leave SIMD tails */
    const int cases[][6] = {{70, 0, 4, 128, 64, 128}, {9, 60, 3, 24, 8, 20}, {1, 0, 2, 5, 3, 7},
                            {100, 30, 5, 16, 8, 16},  {33, 95, 2, 72, 40, 72}, {130, 0, 4, 32, 32, 48}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int T = cases[c][0], pos0 = cases[c][1], H = cases[c][2], nope = cases[c][3], rope = cases[c][4],
                  v = cases[c][5], ctx = pos0 + T;
        float *q = floats_random(&r, (size_t)T * H * (nope + rope), -1, 1);
        float *kvb = floats_random(&r, (size_t)ctx * H * (nope + v), -1, 1), *pe = floats_random(&r, (size_t)ctx * rope, -1, 1);
        float *want = floats_alloc((size_t)T * H * v), *got = floats_alloc((size_t)T * H * v);
        cpu_mla_prefill_ref(T, pos0, H, nope, rope, v, q, kvb, pe, 0.2f, want);
        cpu_mla_prefill(pool, T, pos0, H, nope, rope, v, q, kvb, pe, 0.2f, got);
        ASSERT_CLOSE(got, want, (size_t)T * H * v, TOL, "mla_prefill case %zu seed %llu", c, (unsigned long long)seed);
        free(q), free(kvb), free(pe), free(want), free(got);
    }
    threadpool_free(pool);
}

/* The scalar fallback (what a CPU without AVX2 runs). Criterion runs each test in
 * its own process, so the variable is read before the variant is chosen. */
Test(cpu_ops, scalar_fallback_vs_ref) {
    setenv("MLASERVE_CPU_SIMD", "scalar", 1);
    if (strcmp(cpu_simd_level(), "scalar") != 0) cr_skip_test("variant chosen before setenv (no-fork mode)");
    uint64_t seed;
    rng r = rng_start(&seed);
    threadpool *pool = threadpool_create(2);
    const shape s = {300, 100, 170, 200};
    for (size_t d = 0; d < 4; d++) {
        check_linear(pool, all_dtypes[d], &s, 3, &r, seed, 0);
        check_linear(pool, all_dtypes[d], &s, 20, &r, seed, 1);
    }
    float g[100], u[100], y[100], want[100];
    for (int i = 0; i < 100; i++) g[i] = rng_uniform(&r, -5, 5), u[i] = rng_uniform(&r, -1, 1);
    cpu_silu_mul(pool, g, u, y, 100);
    cpu_silu_mul_ref(g, u, want, 100);
    ASSERT_CLOSE(y, want, 100, TOL, "scalar silu seed %llu", (unsigned long long)seed);
    threadpool_free(pool);
}

Test(cpu_ops, simd_level_names) {
    const char *l = cpu_simd_level();
    cr_assert(strcmp(l, "scalar") == 0 || strcmp(l, "avx2") == 0 || strcmp(l, "avx512") == 0, "%s", l);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !getenv("MLASERVE_CPU_SIMD"))
        cr_assert(strcmp(l, "scalar") != 0, "an AVX2 CPU must not fall back to scalar");
#endif
}

/* The AMX kernel directly (skips where the CPU has none): x whose low bits
 * matter (a split of x into fewer than three bf16 parts is off by ~1e-5
 * relative), every split of the outputs, m across the 16-row tiles. With one
 * part (bf16 activations) it equals the reference on x rounded to bf16. */
Test(cpu_ops, amx_kernel_vs_ref, .timeout = 60) {
    if (!cpu_amx_usable()) cr_skip_test("no AMX on this CPU (or MLASERVE_CPU_AMX=0): kernel not run");
    uint64_t seed;
    rng r = rng_start(&seed);
    const dtype_t dts[2] = {DTYPE_BF16, DTYPE_F8_E4M3};
    /* three virtual rows (bf16 parts) per row of x: m = 5, 6 fill and cross the
     * first tile; m = 600 spans two chunks of packed x */
    const int ms[] = {1, 2, 5, 6, 15, 16, 17, 40, 600};
    for (int d = 0; d < 2; d++)
        for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
            const int m = ms[mi];
            test_weight t = weight_random(&r, dts[d], 176, 288);
            weight w = weight_rows(&t.w, 16, 150);
            cr_assert(cpu_amx_fits(&w, m));
            float *x = floats_random(&r, (size_t)m * 288, 0.5f, 1);
            for (int i = 0; i < m * 288; i++) x[i] *= 1.0f + 0x1.0p-20f * (float)(i % 7);
            float *xr = floats_alloc((size_t)m * 288);
            for (int i = 0; i < m * 288; i++) xr[i] = bf16_round(x[i]);
            float *y = floats_alloc((size_t)m * 150), *want = floats_alloc((size_t)m * 150);
            for (int parts = 3; parts >= 1; parts -= 2) {
                uint16_t *xp = malloc(cpu_amx_xp_elems(m, 288, parts) * sizeof *xp);
                float *scratch = NULL;
                cr_assert(posix_memalign((void **)&scratch, 64, cpu_amx_scratch_floats(m, parts) * sizeof(float)) == 0);
                cpu_amx_pack_x(x, 288, m, 288, parts, xp);
                for (int64_t n0 = 0; n0 < 150; n0 += 37) /* splits not on 16- or 32-row lines */
                    cpu_amx_linear(&w, xp, m, parts, y, 150, n0, n0 + 37 < 150 ? n0 + 37 : 150, scratch);
                cpu_linear_ref(&w, parts == 3 ? x : xr, want, m);
                ASSERT_CLOSE(y, want, (size_t)m * 150, 1e-6, "amx %s m=%d parts %d seed %llu", dtype_name(dts[d]), m,
                             parts, (unsigned long long)seed);
                free(xp), free(scratch);
            }
            free(x), free(xr), free(y), free(want);
            weight_free(&t);
        }
}
