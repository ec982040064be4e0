/* cpu/cpu_kernels_avx512.c — the AVX-512 (F/BW/VL/DQ) variant of the CPU kernels
 * (table cpu_kernels_avx512): vector primitives for 16-float vectors, then the
 * shared body cpu/cpu_kernels.inc, which is tested through the AVX2 variant.
 * Compiled with the Makefile's AVX-512 flags (*_avx512.c); only called after a
 * run-time CPU check in cpu/cpu_ops.c. No bf16 instructions are used, so CPUs
 * without AVX512_BF16 can run it. Stateless and thread-safe. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "cpu/cpu_kernels.h"

#define VW 16
#define MR 12 /* 12 x 32 micro-kernel: 24 accumulators of the 32 zmm registers */
#define DECODE_NA(M) ((M) <= 2 ? 4 : 2)
#define DECODE_R(M) ((M) <= 2 ? 1 : (M) <= 4 ? 4 : 2)
#define DECODE_MAX_R 4
#define ATT_K 4  /* attention: 4 queries x 4 keys / x 4 vectors of dims per register block */
#define ATT_DV 4
#define STREAM_MAX_M_16 CPU_STREAM_MAX_M /* tiles lag at every m here (cpu_ops.c stream_max_m) */
#ifdef F8_HALF_LOAD
#define VARIANT_TABLE cpu_kernels_avx512_f8half
#else
#define VARIANT_TABLE cpu_kernels_avx512
#endif
#define VARIANT_NAME "avx512"

typedef __m512 vf;

static inline vf v_zero(void) { return _mm512_setzero_ps(); }
static inline vf v_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf v_set1(float f) { return _mm512_set1_ps(f); }
static inline vf v_bcast(const float *p) { return _mm512_set1_ps(*p); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline float v_hsum(vf v) { return _mm512_reduce_add_ps(v); }

/* 32 e4m3 codes → value × 2^-8. Sign-extending a code to 16 bits and shifting
 * left by 7 puts s eeee mmm where a half keeps sign, exponent and mantissa
 * (s s eeee mmm 0000000); the mask clears the second copy of the sign in the
 * exponent's top bit. The half is then exactly value × 2^-8, subnormals
 * included (three ops per 32 codes: the AVX2 variant's bit move, one shift
 * fewer). */
static inline void w_load2_f8(const uint8_t *p, vf *a, vf *b) {
    __m512i h = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
    h = _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16((short)0xBFFF));
    *a = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    *b = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

#ifndef F8_HALF_LOAD /* else cpu/cpu_kernels.inc: w_load2_f8 in natural order */
/* The decode kernels' FP8 load: 32 e4m3 codes → value × 2^-120
 * in dot order, five ops and no half-float conversion (the conversions were
 * the limit: 17 → 28 G weights/s per Zen 4 core in cache). Sign-extended and
 * shifted left by 4, a code lies as s eeee mmm at bits 15, 10..4 of a 16-bit
 * word once the mask clears the sign's copies: a bf16 of value × 2^-120 (its
 * exponent bias is 127, e4m3's 7), subnormals included. Unpacking those words
 * with zero makes them the high halves of floats, in-lane: a holds codes
 * 0-3, 8-11, 16-19, 24-27 and b the others — x_dot2 gives x the same order. */
#define F8_DOT_WSHIFT 120
static inline void w_dot2_f8(const uint8_t *p, vf *a, vf *b) {
    __m512i h = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
    h = _mm512_and_si512(_mm512_slli_epi16(h, 4), _mm512_set1_epi16((short)0x87F0));
    *a = _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), h));
    *b = _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), h));
}

/* 32 floats of x in w_dot2_f8's order: 128-bit lanes 0, 2 of each half, then 1, 3. */
static inline void x_dot2(const float *x, vf *a, vf *b) {
    const vf x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    *a = _mm512_shuffle_f32x4(x0, x1, 0x88);
    *b = _mm512_shuffle_f32x4(x0, x1, 0xDD);
}
#endif

static inline vf bf16x16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

static inline void w_load2_bf16(const uint16_t *p, vf *a, vf *b) {
    *a = bf16x16(p);
    *b = bf16x16(p + 16);
}

static inline void w_load2_f16(const uint16_t *p, vf *a, vf *b) {
    *a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    *b = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 16)));
}

static inline void w_load2_f32(const float *p, vf *a, vf *b) {
    *a = _mm512_loadu_ps(p);
    *b = _mm512_loadu_ps(p + 16);
}

/* e^x as in the AVX2 variant (Cephes polynomial, inputs clamped to [-87, 88]). */
static inline vf v_exp(vf x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    vf n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    vf p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

static inline vf v_silu_mul(vf g, vf u) {
    vf den = _mm512_add_ps(_mm512_set1_ps(1.0f), v_exp(_mm512_sub_ps(_mm512_setzero_ps(), g)));
    return _mm512_div_ps(_mm512_mul_ps(g, u), den);
}

#include "cpu/cpu_kernels.inc"
