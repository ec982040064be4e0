/* cpu/cpu_kernels.h — the seam between cpu/cpu_ops.c (references, dispatch,
 * threading) and the SIMD variants (cpu/cpu_kernels_avx2.c, cpu/cpu_kernels_avx512.c,
 * both generated from cpu/cpu_kernels.inc).
 *
 * A variant is a read-only table of single-threaded kernels that each work on a
 * slice of the output (a range of rows or columns); cpu_ops.c splits the work
 * over the thread pool and hands every thread its own scratch buffer. Internal
 * to cpu/ (and the unit test, which calls the variants directly). */
#ifndef MS_CPU_KERNELS_H
#define MS_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/weight.h"

/* The streaming "decode" kernel takes this many rows of x per pass over W
 * (the weights are read once, every row of x rides along). */
#define CPU_DECODE_MAX_M 8
/* cpu_linear and cpu_linear_t stream W for up to this many rows of x (in
 * passes of CPU_DECODE_MAX_M rows; a task's rows of W stay in L2 between
 * passes), fewer for FP8 (cpu_ops.c stream_max_m); above it the tiled GEMM. */
#define CPU_STREAM_MAX_M 64

/* The batch-invariant product decodes this many rows of W at a time into a
 * per-thread buffer shared by its passes over the rows of x. */
#define CPU_INV_BUF_ROWS 16

typedef struct cpu_kernels {
    const char *name;          /* "avx2", "avx512" */
    /* y[i][n] = Σ_k x[i][k]·W[n][k] for n in [n0, n1), i < m <= CPU_STREAM_MAX_M.
     * x: m rows of w->cols floats, ldx apart; y: m rows, ldy apart. */
    void (*linear_rows)(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t n0,
                        int64_t n1);
    /* The same for any m, tiled: W is dequantised into `scratch` (scratch_floats
     * floats, per thread); x comes packed by cpu_pack_x with this variant's mr. */
    void (*linear_tile)(const weight *w, const float *xp, float *y, int m, int64_t n0, int64_t n1,
                        float *scratch);
    /* y[i][c] = Σ_n x[i][n]·W[n][c] for c in [c0, c1): x: [m, w->rows] packed, y: [m, w->cols]. */
    void (*linear_t_tile)(const weight *w, const float *xp, float *y, int m, int64_t c0, int64_t c1,
                          float *scratch);
    size_t scratch_floats;     /* scratch size the tile kernels need, in floats */
    int mr;                    /* rows of x per micro-kernel (packing block) */
    /* Non-transposed products of 16-bit weights (BF16, F16) stream through
     * linear_rows up to this many rows of x (<= CPU_STREAM_MAX_M), tiles above. */
    int stream_max_m_16;
    /* 1 in the *_f8half tables: the decode kernels convert FP8 through half
     * floats, so no subnormal float ever enters an FMA (cpu_kernels.inc). */
    int f8_half_load;
    /* Row r of the view w, columns [c0, c0+n), dequantised into out. */
    void (*decode_row)(const weight *w, int64_t r, int64_t c0, int64_t n, float *out);
    float (*sum_squares)(const float *x, int64_t n);
    /* Σ x[i] with plain vector loads: the read pattern of the decode kernel, for
     * measuring memory bandwidth. */
    float (*read_sum)(const float *x, int64_t n);
    /* y[i] = x[i] * s * g[i] */
    void (*scale_mul)(const float *x, float s, const float *g, float *y, int64_t n);
    /* y[i] = silu(gate[i]) * up[i] */
    void (*silu_mul)(const float *gate, const float *up, float *y, int64_t n);

    /* Streaming transposed product for small m (<= CPU_STREAM_MAX_M):
     * y[i][c] = Σ_n x[i][n]·W[n][c] for c in [c0, c1), x: m rows of w->rows
     * floats ldx apart (not packed), y: m rows ldy apart; W is read once, row by
     * row (per group of four rows of x). `scratch` holds m·w->rows floats. */
    void (*linear_t_rows)(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t c0,
                          int64_t c1, float *scratch);

    /* Batch-invariant versions of linear_rows and linear_t_rows, for any m:
     * every output is summed in one order whatever m is and whichever rows of
     * x share the call (row i of y equals the call with row i of x alone, bit
     * for bit). */
    void (*linear_rows_inv)(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t n0,
                            int64_t n1, float *scratch); /* scratch: CPU_INV_BUF_ROWS * w->cols floats */
    void (*linear_t_rows_inv)(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t c0,
                              int64_t c1, float *scratch);
    /* Attention helpers (cpu/mla.c), all rows given with their strides: */
    /* s[i][j] = add·s[i][j] + scale · Σ_{c<dim} q[i][c]·k[j][c] for i < nq, j < n:
     * a block of queries scored against a block of keys */
    void (*attn_scores)(const float *q, int64_t ldq, int nq, const float *k, int64_t ldk, int n, int64_t dim,
                        float scale, int add, float *s, int64_t lds);
    /* p[j] = e^(s[j] − max) for j < n; returns Σ p[j] */
    float (*exp_sum)(const float *s, float max, float *p, int n);
    /* acc[i][d] = acc[i][d]·rescale[i] + Σ_{j<n} p[i][j]·v[j][d] for i < nq, d < dim
     * (the online-softmax accumulation of a block of queries) */
    void (*attn_accum)(float *acc, int64_t ldacc, const float *rescale, int nq, const float *p, int64_t ldp, int n,
                       const float *v, int64_t ldv, int64_t dim);
} cpu_kernels;

/* Packs x [m, k] for the tile kernels: blocks of mr rows, each [k][mr]
 * (xp[((i/mr)·k + c)·mr + i%mr] = x[i][c]); xp holds cpu_pack_x_floats(m, k, mr). */
void cpu_pack_x(const float *x, int m, int64_t k, int mr, float *xp);
static inline size_t cpu_pack_x_floats(int m, int64_t k, int mr) {
    return (size_t)((m + mr - 1) / mr) * (size_t)k * (size_t)mr;
}

extern const cpu_kernels cpu_kernels_avx2;
extern const cpu_kernels cpu_kernels_avx512;
extern const cpu_kernels cpu_kernels_avx2_f8half;   /* cpu_kernels_f8half_avx2.c */
extern const cpu_kernels cpu_kernels_avx512_f8half; /* cpu_kernels_f8half_avx512.c */

/* The variant in use (NULL = scalar). Chosen once from CPUID, capped by the
 * environment variable MLASERVE_CPU_SIMD=scalar|avx2|avx512 if set; the
 * *_f8half table of the level on Intel CPUs (subnormal floats are slow
 * there), the other elsewhere, or as MLASERVE_CPU_F8_LOAD=half|bits says. */
const cpu_kernels *cpu_kernels_get(void);

#endif
