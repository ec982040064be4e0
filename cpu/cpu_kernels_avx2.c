/* cpu/cpu_kernels_avx2.c — the AVX2 + FMA + F16C variant of the CPU kernels
 * (table cpu_kernels_avx2): vector primitives for 8-float vectors, then the
 * shared body cpu/cpu_kernels.inc. Compiled with -mavx2 -mfma -mf16c (Makefile
 * rule for *_avx2.c); only called after a run-time CPU check in cpu/cpu_ops.c.
 * Stateless and thread-safe. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "cpu/cpu_kernels.h"

#define VW 8
#define MR 6 /* 6 x 16 micro-kernel: 12 accumulators + 2 panel vectors + 1 broadcast */
/* 16 ymm registers. Up to 4 rows of x: two rows of W per pass (R·M
 * accumulators + 2·R converted weight vectors + x). From 5 rows of x one row
 * of W (M·NA accumulators): two rows would need 2·M accumulators, and at M >= 6
 * the spills halved the kernel (Zen 3, FP8 m = 8: 82 -> 101-130 GFLOP/s). */
#define DECODE_NA(M) ((M) <= 2 ? 4 : (M) <= 6 ? 2 : 1)
#define DECODE_R(M) ((M) <= 2 ? 1 : (M) <= 4 ? 2 : 1)
#define DECODE_MAX_R 2
#define ATT_K 2  /* attention: 4 queries x 2 keys / x 2 vectors of dims per register block */
#define ATT_DV 2
/* Zen 3, in cache, 2 threads, BF16 [1408x2048]: streaming 110.6 / 90.3 / 95.2
 * GFLOP/s at m = 32 / 48 / 64 against tiles 105.6 / 111.6 / 102.5. */
#define STREAM_MAX_M_16 40
#ifdef F8_HALF_LOAD
#define VARIANT_TABLE cpu_kernels_avx2_f8half
#else
#define VARIANT_TABLE cpu_kernels_avx2
#endif
#define VARIANT_NAME "avx2"

typedef __m256 vf;

static inline vf v_zero(void) { return _mm256_setzero_ps(); }
static inline vf v_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf v_set1(float f) { return _mm256_set1_ps(f); }
static inline vf v_bcast(const float *p) { return _mm256_broadcast_ss(p); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }

static inline float v_hsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 e4m3 codes → value × 2^-8. Unpacking with zero puts a code in the top byte
 * of a half (s eeee mmm 0…); an arithmetic shift right by one lines eeee mmm up
 * with the half's exponent and mantissa and copies the sign into bit 14, which
 * the mask clears. The half is then exactly value × 2^-8, subnormals included. */
static inline void w_load2_f8(const uint8_t *p, vf *a, vf *b) {
    const __m128i c = _mm_loadu_si128((const __m128i *)p);
    const __m128i zero = _mm_setzero_si128(), mask = _mm_set1_epi16((short)0xBFFF);
    const __m128i lo = _mm_and_si128(_mm_srai_epi16(_mm_unpacklo_epi8(zero, c), 1), mask);
    const __m128i hi = _mm_and_si128(_mm_srai_epi16(_mm_unpackhi_epi8(zero, c), 1), mask);
    *a = _mm256_cvtph_ps(lo);
    *b = _mm256_cvtph_ps(hi);
}

#ifndef F8_HALF_LOAD /* else cpu/cpu_kernels.inc: w_load2_f8 in natural order */
/* The decode kernels' FP8 load (cpu/cpu_kernels_avx512.c explains the
 * bits): 16 codes → value × 2^-120 as floats, a = the odd codes 1, 3, … 15
 * and b = the even codes 0, 2, … 14, without a half conversion. After the
 * sign extension and shift each 32-bit lane holds two bf16 patterns (code
 * 2j in its low half, 2j+1 in its high half, sign-extension bits still set
 * between them): the mask keeps the high one as a float, a 16-bit left
 * shift and the same mask make the low one a float. On Zen 3 that is 15-25%
 * faster in L2 than unpacking the halves with zero (two shuffles, the
 * pipes the sign extension also needs; docs/benchmarks.md, session 12);
 * x_dot2 orders x alike. */
#define F8_DOT_WSHIFT 120
static inline void w_dot2_f8(const uint8_t *p, vf *a, vf *b) {
    const __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)), 4);
    const __m256i m = _mm256_set1_epi32((int)0x87F00000u);
    *a = _mm256_castsi256_ps(_mm256_and_si256(h, m));
    *b = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(h, 16), m));
}

/* x[1], x[3], … x[15] and x[0], x[2], … x[14] (the in-lane shuffle gives
 * 1 3 9 11 | 5 7 13 15; the lane permutation puts them in order). */
static inline void x_dot2(const float *x, vf *a, vf *b) {
    const vf x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    *a = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(x0, x1, 0xDD), order);
    *b = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(x0, x1, 0x88), order);
}
#endif

static inline vf bf16x8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static inline void w_load2_bf16(const uint16_t *p, vf *a, vf *b) {
    *a = bf16x8(p);
    *b = bf16x8(p + 8);
}

static inline void w_load2_f16(const uint16_t *p, vf *a, vf *b) {
    *a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    *b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
}

static inline void w_load2_f32(const float *p, vf *a, vf *b) {
    *a = _mm256_loadu_ps(p);
    *b = _mm256_loadu_ps(p + 8);
}

/* 8x8 transpose of r[0..7] in place (unpack pairs, shuffle quads, swap lanes). */
#define HAVE_V_TRANSPOSE 1
static inline void v_transpose(vf r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* e^x, Cephes-style: x = n·ln2 + r, e^r by a degree-6 polynomial, 2^n by the
 * exponent bits. Relative error ~2 ulp on [-87, 88] (inputs are clamped there). */
static inline vf v_exp(vf x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    vf n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    vf p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* silu(g)·u = g·u / (1 + e^-g); g·u first so a NaN gate stays NaN. */
static inline vf v_silu_mul(vf g, vf u) {
    vf den = _mm256_add_ps(_mm256_set1_ps(1.0f), v_exp(_mm256_sub_ps(_mm256_setzero_ps(), g)));
    return _mm256_div_ps(_mm256_mul_ps(g, u), den);
}

#include "cpu/cpu_kernels.inc"
