/* common/sha256.h — SHA-256 (FIPS 180-4), streaming.
 *
 * sha256_init / sha256_update (any number of times, any lengths) / sha256_final
 * give the 32-byte digest; sha256_hex formats it as 64 lowercase hex digits.
 * Used to verify checkpoints against the golden kit's checksums. The context is
 * plain data owned by the caller: one context per thread, no global state. */
#ifndef MS_SHA256_H
#define MS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_BYTES 32
#define SHA256_HEX_CHARS 65 /* 64 digits + NUL */

typedef struct sha256_ctx {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[64];
    size_t block_len;
} sha256_ctx;

void sha256_init(sha256_ctx *ctx);
void sha256_update(sha256_ctx *ctx, const void *data, size_t n);
void sha256_final(sha256_ctx *ctx, uint8_t digest[SHA256_DIGEST_BYTES]);

/* digest -> "e3b0c442..." (lowercase, NUL-terminated). */
void sha256_hex(const uint8_t digest[SHA256_DIGEST_BYTES], char hex[SHA256_HEX_CHARS]);

/* One-shot: digest of n bytes. */
void sha256_of(const void *data, size_t n, uint8_t digest[SHA256_DIGEST_BYTES]);

/* One-shot: hex digest of n bytes. */
void sha256_hex_of(const void *data, size_t n, char hex[SHA256_HEX_CHARS]);

#endif
