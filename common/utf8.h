/* common/utf8.h — UTF-8 helpers: validation, complete-prefix length, lossy decoding.
 *
 * "Lossy" follows the Unicode "maximal subpart" practice (the same as Rust's
 * String::from_utf8_lossy and the WHATWG decoder, which HF tokenizers use): each
 * maximal prefix of a would-be valid sequence that turns out invalid, and each byte
 * that cannot start a sequence, becomes one U+FFFD. Stateless, thread-safe. */
#ifndef MS_UTF8_H
#define MS_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid sequence at s (1..4), 0 if s[0..len) does not start with a
 * valid sequence. *cp (may be NULL) gets the code point. */
size_t utf8_decode_one(const unsigned char *s, size_t len, uint32_t *cp);

/* Number of bytes at s forming a valid-so-far but unfinished sequence, i.e. the
 * length of the maximal subpart (1..3 when the input is truncated or broken,
 * 0 never: an invalid lead byte gives 1). Call only when utf8_decode_one gave 0. */
size_t utf8_invalid_len(const unsigned char *s, size_t len, int *truncated);

/* Offset of the first invalid byte, or len if s[0..len) is valid UTF-8. */
size_t utf8_validate(const char *s, size_t len);

/* Length of the longest prefix of s that does not end inside a sequence that
 * could still be completed by more bytes (what a stream may emit now). */
size_t utf8_complete_len(const char *s, size_t len);

/* Writes the UTF-8 encoding of cp (<= 0x10FFFF) to out, returns 1..4. */
size_t utf8_encode(uint32_t cp, char *out);

/* Lossy conversion of in[0..len) to out (capacity >= 3*len). When `final` is 0, a
 * trailing sequence that is valid so far but unfinished is not converted:
 * *consumed (may be NULL) tells how many input bytes were used. Returns the
 * number of bytes written. */
size_t utf8_lossy(const char *in, size_t len, char *out, int final, size_t *consumed);

#endif
