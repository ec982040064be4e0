/* fuzz/fuzz_tokenizer.c — tokenizer_encode on arbitrary bytes, tokenizer_decode
 * and the incremental detokenizer on arbitrary ids.
 *
 * Byte 0 of the input picks the mode, the rest is the payload:
 *   even: encode the payload. Invalid UTF-8 must fail with a message; valid
 *         UTF-8 must round-trip: decode(encode(x), keep specials) == x (the
 *         DeepSeek-V3 tokenizer has no normalizer and byte-level BPE is
 *         lossless), every id inside the vocabulary.
 *   odd:  decode the payload as little-endian int32 ids (any value: negative,
 *         out of range, specials), skip_special = bit 1. Decode must give valid
 *         UTF-8 of the length it reports, and detok_push/detok_flush must
 *         concatenate to exactly that text, each piece valid UTF-8 on its own
 *         (common/tokenizer.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/tokenizer.h"
#include "common/utf8.h"
#include "fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_tokenizer();
    return 0;
}

static void check_detok(const tokenizer *tok, const int32_t *ids, size_t n, int skip, const char *want,
                        size_t want_len) {
    detok d;
    detok_init(&d, tok, skip);
    size_t got = 0;
    for (size_t i = 0; i <= n; i++) {
        size_t len;
        const char *piece = i < n ? detok_push(&d, ids[i], &len) : detok_flush(&d, &len);
        FUZZ_CHECK(piece, "detok out of memory");
        FUZZ_CHECK(utf8_validate(piece, len) == len, "detok piece %zu is not valid UTF-8", i);
        FUZZ_CHECK(got + len <= want_len && memcmp(want + got, piece, len) == 0,
                   "detok pieces differ from decode at byte %zu (id %zu)", got, i);
        got += len;
    }
    FUZZ_CHECK(got == want_len, "detok gave %zu bytes, decode %zu", got, want_len);
    detok_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const tokenizer *tok = fuzz_tokenizer();
    const char *payload = (const char *)data + 1;
    size_t len = size - 1;
    if ((data[0] & 1) == 0) {
        int32_t *ids = NULL;
        size_t n = 0;
        ms_err err = {{0}};
        int valid = utf8_validate(payload, len) == len;
        int rc = tokenizer_encode(tok, payload, len, &ids, &n, &err);
        FUZZ_CHECK(rc == 0 || err.msg[0], "encode failed without a message");
        FUZZ_CHECK(valid ? rc == 0 : rc != 0, "valid UTF-8 %d but encode rc %d (%s)", valid, rc, err.msg);
        if (rc == 0) {
            for (size_t i = 0; i < n; i++)
                FUZZ_CHECK(ids[i] >= 0 && ids[i] < tokenizer_vocab_size(tok), "id %d out of range", ids[i]);
            size_t out_len = 0;
            char *text = tokenizer_decode_len(tok, ids, n, 0, &out_len);
            FUZZ_CHECK(text, "decode out of memory");
            FUZZ_CHECK(out_len == len && memcmp(text, payload, len) == 0,
                       "round trip changed the text (%zu bytes -> %zu ids -> %zu bytes)", len, n, out_len);
            check_detok(tok, ids, n, 0, text, out_len);
            free(text);
        }
        free(ids);
    } else {
        size_t n = len / 4;
        int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
        if (!ids) return 0;
        memcpy(ids, payload, n * 4);
        int skip = (data[0] >> 1) & 1;
        size_t out_len = 0;
        char *text = tokenizer_decode_len(tok, ids, n, skip, &out_len);
        FUZZ_CHECK(text, "decode out of memory");
        FUZZ_CHECK(utf8_validate(text, out_len) == out_len, "decode gave invalid UTF-8");
        FUZZ_CHECK(text[out_len] == 0, "decode result not NUL-terminated");
        check_detok(tok, ids, n, skip, text, out_len);
        free(text);
        free(ids);
    }
    return 0;
}
