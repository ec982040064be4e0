/* fuzz/fuzz_regex.c — the regex compiler (common/regex_dfa.h: rdfa_compile)
 * on arbitrary patterns, and the number-range automata on arbitrary bounds.
 *
 * Byte 0 picks the flags (bit 0 RDFA_SEARCH, bit 1 RDFA_JSON_TEXT) and, with
 * bit 7, the range automata instead (the next bytes as two doubles); the rest
 * is the pattern, NUL-terminated here. Properties (regex_dfa.h): failure says
 * why ("regex: ..." or a range message); success gives 1..RDFA_MAX_STATES
 * states whose transitions all lead to states with a finite cost, and the
 * shortest string read off the costs (each step to a byte whose target costs
 * one less) has exactly rem[0] bytes, is accepted, is valid UTF-8, and under
 * RDFA_JSON_TEXT holds no '"', '\\' or control byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/regex_dfa.h"
#include "common/utf8.h"
#include "fuzz/fuzz_util.h"

static void check_dfa(const rdfa *d, int flags) {
    FUZZ_CHECK(d->n >= 1 && d->n <= RDFA_MAX_STATES * 4, "%d states", d->n);
    for (size_t k = 0; k < (size_t)d->n * 256; k++) {
        int32_t t = d->next[k];
        FUZZ_CHECK(t >= -1 && t < d->n, "transition %zu to %d", k, t);
        FUZZ_CHECK(t < 0 || d->rem[t] + 1 >= d->rem[k / 256], "cost drops by more than one byte");
    }
    char buf[4096];
    uint32_t len = d->rem[0];
    if (len >= sizeof buf) return;
    int32_t s = 0;
    for (uint32_t i = 0; i < len; i++) {
        int c = 0;
        while (c < 256 && !(d->next[(size_t)s * 256 + (size_t)c] >= 0 && d->rem[d->next[(size_t)s * 256 + (size_t)c]] + 1 == d->rem[s])) c++;
        FUZZ_CHECK(c < 256, "state %d (cost %u): no step toward acceptance", s, d->rem[s]);
        buf[i] = (char)c;
        s = d->next[(size_t)s * 256 + (size_t)c];
    }
    FUZZ_CHECK(d->rem[s] == 0, "the shortest path ends in a state of cost %u", d->rem[s]);
    FUZZ_CHECK(rdfa_match(d, buf, len), "the shortest string is refused");
    FUZZ_CHECK(utf8_validate(buf, len) == len, "the shortest string is not valid UTF-8");
    for (uint32_t i = 0; (flags & RDFA_JSON_TEXT) && i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        FUZZ_CHECK(c >= 0x20 && c != '"' && c != '\\', "byte 0x%02x under RDFA_JSON_TEXT", c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > RDFA_MAX_PATTERN + 1) return 0;
    rdfa d;
    ms_err e = {{0}};
    if (data[0] & 0x80) {
        double b[2] = {0, 0};
        memcpy(b, data + 1, size - 1 < sizeof b ? size - 1 : sizeof b);
        int rc = rdfa_number_range(data[0] & 1, b[0], (data[0] >> 1) & 1, (data[0] >> 2) & 1, b[1], (data[0] >> 3) & 1, &d, &e);
        if (rc == 0) check_dfa(&d, 0), rdfa_free(&d);
        else FUZZ_CHECK(e.msg[0], "failure without a message");
        return 0;
    }
    char *pat = malloc(size);
    if (!pat) return 0;
    memcpy(pat, data + 1, size - 1);
    pat[size - 1] = 0;
    int flags = data[0] & 3;
    if (rdfa_compile(pat, flags, &d, &e) == 0) {
        check_dfa(&d, flags);
        rdfa_free(&d);
    } else {
        FUZZ_CHECK(!strncmp(e.msg, "regex: ", 7), "error '%s'", e.msg);
    }
    free(pat);
    return 0;
}
