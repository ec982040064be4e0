/* cpu/cpu_bf16dot_avx512.c — see cpu_bf16dot.h. Compiled with the AVX-512
 * flags (incl. AVX512_BF16); runs only where cpu_bf16dot_usable() said yes.
 *
 * Rows of x go BD_M at a time (a "pass"). A pass's rows are converted once per
 * 128-row block of W into bf16 in scratch (FP8: times the block's scales and
 * 2^64), then every row of W of the task streams past them, R rows at a time:
 * 32 weights per step, converted in registers (FP8: three integer ops), each
 * multiplied into all the pass's rows, one fp32 accumulator vector per (row of
 * W, row of x). The task's rows of W stay in L2 between passes.
 *
 * FP8 e4m3 → bf16 bits (f8_to_bf16): the code's 7 magnitude bits land in the
 * bf16 exponent and mantissa fields as they are (exponent e, mantissa mmm0000), which is the
 * value × 2^-120 for every normal code; subnormal codes (e = 0) become bf16
 * subnormals, which vdpbf16ps reads as zero. The 2^-120 is paid back as 2^64
 * in the scaled x and 2^56 on the sum (neither can overflow: |x·s| < 2^64). */
#include "cpu/cpu_bf16dot.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "cpu/cpu_kernels.h"

#define BD_M 8           /* rows of x per pass */
#define BD_MAX_R 4       /* rows of W per step, at most */
#define XPAD 32          /* x rows in scratch are K + XPAD apart (L1 set spread) */
#define L1_DEFAULT 32768 /* L1 data cache bytes when the system does not say */
#ifndef PF_BYTES
#define PF_BYTES 8192 /* software read-ahead of the weight rows (as cpu_kernels.inc) */
#endif
#define F8_X_SCALE 18446744073709551616.0f /* 2^64 */
#define F8_Y_SCALE 72057594037927936.0f    /* 2^56 */

static int usable;
static int64_t l1_x_bytes; /* converted x a pass may keep in L1: 3/4 of it (32 KiB: 24 KiB; Zen 5's 48: 36) */
static pthread_once_t usable_once = PTHREAD_ONCE_INIT;

/* Also off when the AVX-512 kernels are (MLASERVE_CPU_SIMD=avx2|scalar). */
static void probe(void) {
    __builtin_cpu_init();
    const cpu_kernels *k = cpu_kernels_get();
    usable = k && !strcmp(k->name, "avx512") && __builtin_cpu_supports("avx512bf16");
    long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    l1_x_bytes = (l1 >= 16384 && l1 <= (1 << 20) ? l1 : L1_DEFAULT) / 4 * 3;
}

int cpu_bf16dot_usable(void) {
    pthread_once(&usable_once, probe);
    return usable;
}

int cpu_bf16dot_fits(const weight *w) {
    return (w->dtype == DTYPE_F8_E4M3 || w->dtype == DTYPE_BF16) && w->cols > 0 && w->cols % 32 == 0;
}

size_t cpu_bf16dot_scratch_elems(const weight *w) { return (size_t)BD_M * (size_t)(w->cols + XPAD); }

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Sign-extended to 16 bits and shifted left by 4, a code s eeee mmm has its
 * sign in bits 15..11 and its magnitude bits in 10..4; the mask keeps bit 15
 * and bits 10..4: the bf16 pattern s 0000eeee mmm0000 (value × 2^-120). */
ALWAYS_INLINE __m512bh f8_to_bf16(const uint8_t *p) {
    __m512i c = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
    return (__m512bh)_mm512_and_si512(_mm512_slli_epi16(c, 4), _mm512_set1_epi16((short)0x87f0));
}

ALWAYS_INLINE __m512bh w_step(int fp8, const void *row, int64_t k) {
    if (fp8) return f8_to_bf16((const uint8_t *)row + k);
    return (__m512bh)_mm512_loadu_si512((const uint16_t *)row + k);
}

/* xb[i][k] = bf16(x[i][k] · s(k)) for i < mg, where s is 1 (scales NULL) or
 * scales[k / 128] · 2^64. */
static void convert_x(const float *x, int64_t ldx, int mg, int64_t K, const float *scales, uint16_t *xb) {
    for (int i = 0; i < mg; i++) {
        const float *xi = x + (size_t)i * (size_t)ldx;
        uint16_t *bi = xb + (size_t)i * (size_t)(K + XPAD);
        for (int64_t k = 0; k < K; k += 32) {
            const __m512 s = _mm512_set1_ps(scales ? scales[k / 128] * F8_X_SCALE : 1.0f);
            const __m512 lo = _mm512_mul_ps(_mm512_loadu_ps(xi + k), s);
            const __m512 hi = _mm512_mul_ps(_mm512_loadu_ps(xi + k + 16), s);
            _mm512_storeu_si512(bi + k, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

/* out[q][i] = Σ_k xb[i][k]·W_q[k] × ys for q < R rows of W, i < M rows of x. */
ALWAYS_INLINE void dot_rows(int fp8, int M, int R, const void *const *rows, const uint16_t *xb, int64_t K, float ys,
                            float *y, int64_t ldy) {
    __m512 acc[BD_MAX_R][BD_M]; /* all in registers: the loops below unroll fully */
#pragma GCC unroll 4
    for (int q = 0; q < R; q++)
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) acc[q][i] = _mm512_setzero_ps();
    const int64_t ldb = K + XPAD;
    for (int64_t k = 0; k < K; k += 32) {
        __m512bh wv[BD_MAX_R];
#pragma GCC unroll 4
        for (int q = 0; q < R; q++) {
            /* read-ahead into L2, one cache line per 64 bytes of the row */
            if (fp8 ? (k & 63) == 0 : 1) __builtin_prefetch((const char *)rows[q] + k * (fp8 ? 1 : 2) + PF_BYTES, 0, 1);
            wv[q] = w_step(fp8, rows[q], k);
        }
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(xb + (size_t)i * (size_t)ldb + k);
#pragma GCC unroll 4
            for (int q = 0; q < R; q++) acc[q][i] = _mm512_dpbf16_ps(acc[q][i], xv, wv[q]);
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < R; q++)
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) y[(size_t)i * (size_t)ldy + q] = _mm512_reduce_add_ps(acc[q][i]) * ys;
}

/* One pass: rows [n0, n1) of W against mg <= BD_M rows of x. */
ALWAYS_INLINE void pass(int fp8, int M, int R, const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                        int64_t n0, int64_t n1, uint16_t *xb) {
    const int64_t K = w->cols;
    const size_t esz = fp8 ? 1 : 2;
    const float ys = fp8 ? F8_Y_SCALE : 1.0f;
    int64_t block = -1;
    if (!fp8) convert_x(x, ldx, M, K, NULL, xb);
    for (int64_t n = n0; n < n1;) {
        const int64_t b = (w->row0 + n) / 128;
        if (fp8 && b != block) {
            convert_x(x, ldx, M, K, w->scale + b * weight_scale_cols(w), xb);
            block = b;
        }
        /* a group of R rows shares its FP8 row block (one converted x) */
        const int g = n1 - n >= R && (!fp8 || (w->row0 + n + R - 1) / 128 == b) ? R : 1;
        const void *rows[BD_MAX_R];
        for (int q = 0; q < g; q++) rows[q] = (const char *)w->data + (size_t)((w->row0 + n + q) * K) * esz;
        if (g == R) dot_rows(fp8, M, R, rows, xb, K, ys, y + n, ldy);
        else dot_rows(fp8, M, 1, rows, xb, K, ys, y + n, ldy);
        n += g;
    }
}

/* Rows of W per step: enough independent accumulators (M·R >= 8) to cover the
 * dot product's latency. */
#define BD_R(M) ((M) == 1 ? 4 : (M) <= 3 ? 3 : 2)
#define PASS_CASE(FP8, M)                                                       \
    case M: pass(FP8, M, BD_R(M), w, x, ldx, y, ldy, n0, n1, xb); break;
#define PASS_FN(NAME, FP8)                                                                                    \
    static void NAME(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int mg, int64_t n0, \
                     int64_t n1, uint16_t *xb) {                                                              \
        switch (mg) {                                                                                         \
            PASS_CASE(FP8, 1) PASS_CASE(FP8, 2) PASS_CASE(FP8, 3) PASS_CASE(FP8, 4)                           \
            PASS_CASE(FP8, 5) PASS_CASE(FP8, 6) PASS_CASE(FP8, 7) PASS_CASE(FP8, 8)                           \
        default: break;                                                                                       \
        }                                                                                                     \
    }
PASS_FN(pass_f8, 1)
PASS_FN(pass_bf16, 0)

/* Rows of x per pass. BF16 weights need no conversion per pass, so when BD_M
 * converted rows would not stay in L1 beside the weight rows (K = 2048: 33 KB)
 * fewer rows per pass are cheaper (the task's rows of W come again from L2);
 * down to 4, below which rereading W costs more than it saves. FP8 weights
 * are converted again in every pass: always BD_M. */
static int pass_rows(const weight *w) {
    pthread_once(&usable_once, probe);
    const int64_t fit = l1_x_bytes / ((w->cols + XPAD) * (int64_t)sizeof(uint16_t));
    return w->dtype != DTYPE_BF16 || fit >= BD_M || fit < 4 ? BD_M : (int)fit;
}

void cpu_bf16dot_rows(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t n0,
                      int64_t n1, uint16_t *scratch) {
    const int P = pass_rows(w);
    for (int i0 = 0; i0 < m; i0 += P) {
        const int mg = m - i0 < P ? m - i0 : P;
        const float *xg = x + (size_t)i0 * (size_t)ldx;
        float *yg = y + (size_t)i0 * (size_t)ldy;
        if (w->dtype == DTYPE_F8_E4M3) pass_f8(w, xg, ldx, yg, ldy, mg, n0, n1, scratch);
        else pass_bf16(w, xg, ldx, yg, ldy, mg, n0, n1, scratch);
    }
}
