/* common/tokenizer.h — the DeepSeek-V3 byte-level BPE tokenizer (HF tokenizer.json).
 *
 * Owns: the vocabulary, merges, added tokens and compiled pre-tokenizer regexes
 * loaded from a directory holding tokenizer.json (+ tokenizer_config.json).
 * Callers: server commands (tokenize/detokenize/chat-template/generate), the
 * chat template, constrained decoding (tokenizer_token_bytes).
 *
 * Semantics follow Hugging Face `tokenizers` on the files of golden SPEC §8:
 *   encode = added tokens matched in the raw text (non-normalized ones first, then
 *   normalized ones, leftmost-longest) -> Split regexes (Sequence, "Isolated") ->
 *   ByteLevel (no prefix space) -> BPE by merge rank. Encode adds NO BOS/EOS:
 *   callers that want the HF-transformers behaviour prepend tokenizer_bos_id()
 *   when tokenizer_add_bos() is true (tokenizer_config.json "add_bos_token").
 *   decode = ByteLevel decoder -> bytes -> UTF-8 with every maximal invalid
 *   subsequence replaced by U+FFFD (like Rust String::from_utf8_lossy).
 *
 * Thread-safety: a loaded tokenizer is immutable; every function taking a
 * `const tokenizer *` may be called from many threads at once. A detok belongs to
 * one stream (one thread at a time). */
#ifndef MS_TOKENIZER_H
#define MS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct tokenizer tokenizer;

/* Loads DIR/tokenizer.json (required) and DIR/tokenizer_config.json (optional:
 * without it bos/eos ids are -1, add_bos is 0 and there is no chat template).
 * Errors name the file and what is wrong. */
tokenizer *tokenizer_load(const char *dir, ms_err *err);
void tokenizer_free(tokenizer *tok);

/* Encodes len bytes of UTF-8 text (special/added tokens are recognised) into a
 * malloc'd array *ids_out of *n_out ids (free() it; NULL when n is 0). Invalid
 * UTF-8 input is an error (message gives the byte offset). Returns 0 or -1. */
int tokenizer_encode(const tokenizer *tok, const char *text, size_t len, int32_t **ids_out,
                     size_t *n_out, ms_err *err);

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string (free() it); ids that are
 * not in the vocabulary are skipped (as HF does); special tokens are dropped when
 * skip_special. Returns NULL only when out of memory. The text may contain NUL
 * bytes (a token for byte 0): use tokenizer_decode_len to get its length. */
char *tokenizer_decode(const tokenizer *tok, const int32_t *ids, size_t n, int skip_special);
char *tokenizer_decode_len(const tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                           size_t *len_out);

/* Id of a token given in its tokenizer.json spelling: an added token's content
 * ("<｜User｜>") or a vocab key in byte-level form ("Ġthe"). -1 if absent. */
int32_t tokenizer_token_id(const tokenizer *tok, const char *token_string);

/* The raw bytes token `id` decodes to (not NUL-terminated, may be an incomplete
 * UTF-8 sequence), NULL if id is not a token. Valid as long as tok lives. */
const char *tokenizer_token_bytes(const tokenizer *tok, int32_t id, size_t *len);

/* The token's spelling in tokenizer.json (NUL-terminated), NULL if not a token. */
const char *tokenizer_token_string(const tokenizer *tok, int32_t id);

/* 1 if id is an added token marked "special": true (skipped by skip_special). */
int tokenizer_is_special(const tokenizer *tok, int32_t id);
/* 1 if id is any added token (special or not, e.g. <｜User｜>). */
int tokenizer_is_added(const tokenizer *tok, int32_t id);

/* Largest token id + 1 (128815 for DeepSeek-V3; config.json's vocab_size 129280
 * is padding beyond it). */
int32_t tokenizer_vocab_size(const tokenizer *tok);
/* From tokenizer_config.json; -1 when not configured. */
int32_t tokenizer_bos_id(const tokenizer *tok);
int32_t tokenizer_eos_id(const tokenizer *tok);
int32_t tokenizer_pad_id(const tokenizer *tok);
/* tokenizer_config.json add_bos_token / add_eos_token (0 when absent). */
int tokenizer_add_bos(const tokenizer *tok);
int tokenizer_add_eos(const tokenizer *tok);
/* tokenizer_config.json strings (NULL when absent): the BOS/EOS token text and the
 * Jinja chat_template. */
const char *tokenizer_bos_token(const tokenizer *tok);
const char *tokenizer_eos_token(const tokenizer *tok);
const char *tokenizer_chat_template(const tokenizer *tok);

/* Incremental detokenizer for streaming. The concatenation of every piece that
 * detok_push returns followed by detok_flush equals tokenizer_decode of all the
 * ids pushed; a piece never ends inside a UTF-8 character (an incomplete
 * sequence is held back until it completes or is found invalid).
 *
 *   detok d; detok_init(&d, tok, skip_special);
 *   for each id: { size_t n; const char *s = detok_push(&d, id, &n); write(s, n); }
 *   s = detok_flush(&d, &n); write(s, n); detok_free(&d);
 *
 * Returned pointers are NUL-terminated, owned by d and valid until the next call
 * on d; NULL only when out of memory. */
typedef struct detok {
    const tokenizer *tok;
    int skip_special;
    unsigned char pending[4]; /* bytes of an incomplete UTF-8 sequence */
    size_t n_pending;
    char *buf; /* output of the last call */
    size_t cap;
} detok;

void detok_init(detok *d, const tokenizer *tok, int skip_special);
const char *detok_push(detok *d, int32_t id, size_t *len);
const char *detok_flush(detok *d, size_t *len);
void detok_free(detok *d);

#endif
