/* common/dtype.h — scalar conversions between the checkpoint dtypes and float.
 *
 * BF16 and IEEE half are 16-bit patterns; F8_E4M3 ("e4m3fn": no infinities,
 * 0x7F/0xFF are NaN, max finite 448) is an 8-bit pattern. Encoders round to
 * nearest even exactly as SPEC §4.4 / §4.6 of the golden kit specify; the
 * e4m3 encoder saturates at ±448 and never produces NaN. Pure functions. */
#ifndef MS_DTYPE_H
#define MS_DTYPE_H

#include <stdint.h>
#include <string.h>

typedef enum {
    DTYPE_F32 = 0,
    DTYPE_BF16,
    DTYPE_F16,
    DTYPE_F8_E4M3,
    DTYPE_COUNT
} dtype_t;

/* Element size in bytes. */
static inline size_t dtype_size(dtype_t t) {
    static const size_t sizes[DTYPE_COUNT] = {4, 2, 2, 1};
    return sizes[t];
}

/* "F32", "BF16", "F16", "F8_E4M3" (safetensors spelling). */
const char *dtype_name(dtype_t t);
/* Parses a safetensors dtype string; returns -1 if unsupported. */
int dtype_parse(const char *s, dtype_t *out);

static inline float f32_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

/* Round-to-nearest-even; input must not be NaN (SPEC §4.4). */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t b = f32_bits(f);
    return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

float f16_to_f32(uint16_t h);

/* Decode one e4m3fn code (SPEC §4.6). NaN codes decode to NaN. */
float e4m3_to_f32(uint8_t c);
/* 256-entry decode table, filled once at first use (thread-safe). */
const float *e4m3_table(void);
/* Encode a finite float with RNE and saturation (SPEC §4.6). */
uint8_t e4m3_from_f32(float x);

#endif
