/* common/dtype.c — see dtype.h. */
#include "common/dtype.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

static const char *const dtype_names[DTYPE_COUNT] = {"F32", "BF16", "F16", "F8_E4M3"};

const char *dtype_name(dtype_t t) { return (unsigned)t < DTYPE_COUNT ? dtype_names[t] : "?"; }

int dtype_parse(const char *s, dtype_t *out) {
    for (int i = 0; i < DTYPE_COUNT; i++)
        if (strcmp(s, dtype_names[i]) == 0) { *out = (dtype_t)i; return 0; }
    return -1;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    int exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    return f32_from_bits(sign | ((uint32_t)(exp - 15 + 127) << 23) | (mant << 13));
}

float e4m3_to_f32(uint8_t c) {
    int e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), e - 10);
    return (c & 0x80) ? -v : v;
}

static float e4m3_lut[256];
static pthread_once_t e4m3_once = PTHREAD_ONCE_INIT;
static void e4m3_fill(void) { for (int i = 0; i < 256; i++) e4m3_lut[i] = e4m3_to_f32((uint8_t)i); }

const float *e4m3_table(void) {
    pthread_once(&e4m3_once, e4m3_fill);
    return e4m3_lut;
}

uint8_t e4m3_from_f32(float x) {
    uint8_t sign = x < 0 ? 0x80 : 0x00; /* SPEC: -0.0 encodes as +0 */
    double a = fabs((double)x);
    if (a >= 448.0) return sign | 0x7E;
    if (a < 0x1p-6) return sign | (uint8_t)nearbyint(a * 512.0);
    int ex;
    frexp(a, &ex);
    int e = ex - 1;
    double t = ldexp(a, 3 - e);
    int q = (int)nearbyint(t);
    if (q == 16) { q = 8; e += 1; }
    return sign | (uint8_t)(((e + 7) << 3) | (q - 8));
}
