/* common/utf8.c — see utf8.h. Stateless, thread-safe. */
#include "common/utf8.h"

/* Valid range for the second byte given the lead byte (Unicode Table 3-7);
 * returns the sequence length, 0 for a byte that cannot start a sequence. */
static size_t lead_info(unsigned char b, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b < 0x80) return 1;
    if (b < 0xC2) return 0;
    if (b < 0xE0) return 2;
    if (b < 0xF0) {
        if (b == 0xE0) *lo = 0xA0;
        if (b == 0xED) *hi = 0x9F;
        return 3;
    }
    if (b < 0xF5) {
        if (b == 0xF0) *lo = 0x90;
        if (b == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

size_t utf8_decode_one(const unsigned char *s, size_t len, uint32_t *cp) {
    if (len == 0) return 0;
    unsigned char lo, hi;
    size_t n = lead_info(s[0], &lo, &hi);
    if (n == 0 || n > len) return 0;
    if (n == 1) {
        if (cp) *cp = s[0];
        return 1;
    }
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (cp) {
        uint32_t c = s[0] & (0x7F >> n);
        for (size_t i = 1; i < n; i++) c = (c << 6) | (s[i] & 0x3F);
        *cp = c;
    }
    return n;
}

size_t utf8_invalid_len(const unsigned char *s, size_t len, int *truncated) {
    unsigned char lo, hi;
    size_t n = lead_info(s[0], &lo, &hi);
    if (truncated) *truncated = 0;
    if (n <= 1) return 1;
    size_t i = 1;
    for (; i < n && i < len; i++) {
        unsigned char b = s[i];
        int ok = i == 1 ? (b >= lo && b <= hi) : ((b & 0xC0) == 0x80);
        if (!ok) return i;
    }
    if (truncated && i == len && i < n) *truncated = 1;
    return i;
}

size_t utf8_validate(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) { i++; continue; }
        size_t n = utf8_decode_one(u + i, len - i, NULL);
        if (n == 0) return i;
        i += n;
    }
    return len;
}

size_t utf8_complete_len(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    /* Only the last 3 bytes can hold an unfinished sequence. */
    size_t start = len > 3 ? len - 3 : 0;
    for (size_t i = start; i < len; i++) {
        if (u[i] < 0x80 || (u[i] & 0xC0) == 0x80) continue;
        if (utf8_decode_one(u + i, len - i, NULL)) continue;
        int truncated;
        size_t n = utf8_invalid_len(u + i, len - i, &truncated);
        if (truncated && i + n == len) return i;
    }
    return len;
}

size_t utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t utf8_lossy(const char *in, size_t len, char *out, int final, size_t *consumed) {
    const unsigned char *u = (const unsigned char *)in;
    size_t i = 0, o = 0;
    while (i < len) {
        if (u[i] < 0x80) { out[o++] = (char)u[i++]; continue; }
        size_t n = utf8_decode_one(u + i, len - i, NULL);
        if (n) {
            for (size_t k = 0; k < n; k++) out[o++] = (char)u[i + k];
            i += n;
            continue;
        }
        int truncated;
        n = utf8_invalid_len(u + i, len - i, &truncated);
        if (truncated && !final) break;
        o += utf8_encode(0xFFFD, out + o);
        i += n;
    }
    if (consumed) *consumed = i;
    return o;
}
