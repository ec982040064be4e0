/* common/tokenizer.c — byte-level BPE tokenizer loaded from HF tokenizer.json.
 *
 * Owns every table of a `tokenizer`; see tokenizer.h for the semantics and the
 * thread-safety contract (immutable after load; all scratch memory lives in a
 * per-call `enc_ctx`). Layout:
 *   per id:   spelling (str_off into str_blob), decoded bytes (bytes_off/len into
 *             bytes_blob), flags (present / added / special)
 *   str_tab:  open-addressing hash, spelling -> id (added tokens win, like HF)
 *   merges:   open-addressing hash of packed 8-byte (left, right, rank) entries,
 *             merge_id[rank] -> merged id (the table is BPE's cache-miss hot spot)
 *   trie[2]:  byte tries of the added tokens, pass 0 = not normalized, pass 1 =
 *             normalized (HF AddedVocabulary extracts them in that order)
 *   re[]:     the Split regexes of the pre_tokenizer Sequence, PCRE2 (UTF|UCP, JIT).
 * Encode = split_added (pass 0, pass 1) -> pretokenize (regex levels, recursive,
 * no piece lists) -> bpe (array BPE for short pieces, heap BPE as in HF for long
 * ones; inputs >= 2 KB also get a per-call piece -> ids cache). Differences from
 * HF worth knowing: lstrip/rstrip of added tokens absorb ASCII whitespace only;
 * single_word is ignored (neither is used by the DeepSeek files); PCRE2's \s is
 * Unicode White_Space (+U+180E), like Oniguruma's. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "common/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

#define TOK_PRESENT 1u
#define TOK_ADDED 2u
#define TOK_SPECIAL 4u
#define MAX_SPLITS 8
#define NO_OFF UINT32_MAX

/* A merge packed in 8 bytes, so that the table (the hot, cache-missing part of
 * BPE) is half the size: left id << 40 | right id << 20 | rank; all ones =
 * empty. Ids and ranks must be below 2^20 (checked at load). */
typedef uint64_t merge_slot;
#define MERGE_BITS 20
#define MERGE_MAX ((1 << MERGE_BITS) - 1)
#define MERGE_EMPTY UINT64_MAX

/* Byte trie over added-token contents: children as sibling lists. */
typedef struct {
    int32_t child;   /* first child node, -1 none */
    int32_t sibling; /* next sibling, -1 none */
    int32_t token;   /* index into added[] when a token ends here, else -1 */
    unsigned char byte;
} trie_node;

typedef struct {
    trie_node *nodes;
    size_t n, cap;
    uint8_t first[256]; /* 1 if some token starts with this byte */
    int n_first;        /* how many such bytes; 1 lets split_added use memchr */
    unsigned char first_byte;
} trie;

typedef struct {
    int32_t id;
    uint32_t len;
    const char *content; /* into str_blob */
    unsigned char lstrip, rstrip;
} added_token;

typedef struct {
    char *p;
    size_t n, cap;
} buf;

typedef struct {
    uint32_t hash; /* low bits of hash_bytes, for a cheap first compare */
    int32_t id;    /* -1 = empty */
} str_slot;

struct tokenizer {
    int32_t n_ids;
    uint8_t *flags;      /* [n_ids] TOK_* */
    uint32_t *str_off;   /* [n_ids] into str_blob, NO_OFF if absent */
    uint32_t *bytes_off; /* [n_ids] into bytes_blob */
    uint32_t *bytes_len; /* [n_ids] */
    buf str_blob, bytes_blob;

    uint32_t *str_len; /* [n_ids] spelling length in bytes */
    str_slot *str_tab; /* [str_mask+1] */
    uint32_t str_mask;

    merge_slot *merges; /* [merge_mask+1] */
    uint32_t merge_mask;
    int32_t *merge_id; /* [n merges] rank -> merged token id */

    int32_t byte_id[256]; /* id of the single-byte token for each byte */

    added_token *added;
    size_t n_added;
    trie trie[2];

    pcre2_code *re[MAX_SPLITS];
    int re_jit[MAX_SPLITS];
    int n_re;

    int32_t bos_id, eos_id, pad_id;
    int add_bos, add_eos;
    char *bos_token, *eos_token, *chat_template;
};

/* ---------------------------------------------------------------- helpers */

static int buf_add(buf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static uint32_t table_size(size_t n) {
    uint32_t s = 1024;
    while (s < 2 * n) s <<= 1;
    return s;
}

/* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256+k. */
static void bytelevel_tables(uint32_t byte_cp[256], int16_t cp_byte[512]) {
    for (int i = 0; i < 512; i++) cp_byte[i] = -1;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + k++);
        cp_byte[byte_cp[b]] = (int16_t)b;
    }
}

/* ByteLevel decoder on one token: the mapped bytes when every char is a
 * byte-level char, else the token's own UTF-8 bytes (as HF does). */
static int bytelevel_decode(const char *s, size_t n, const int16_t cp_byte[512], buf *out) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_decode_one(u + i, n - i, &cp);
        if (!l || cp >= 512 || cp_byte[cp] < 0) return buf_add(out, s, n);
        i += l;
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += utf8_decode_one(u + i, n - i, &cp);
        unsigned char b = (unsigned char)cp_byte[cp];
        if (buf_add(out, &b, 1)) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- lookup tables */

static const char *id_str(const tokenizer *t, int32_t id) { return t->str_blob.p + t->str_off[id]; }

static int32_t str_lookup_h(const tokenizer *t, const char *s, size_t n, uint32_t h) {
    for (uint32_t i = h & t->str_mask;; i = (i + 1) & t->str_mask) {
        str_slot e = t->str_tab[i];
        if (e.id < 0) return -1;
        if (e.hash == h && t->str_len[e.id] == n && !memcmp(id_str(t, e.id), s, n)) return e.id;
    }
}

static int32_t str_lookup(const tokenizer *t, const char *s, size_t n) {
    return str_lookup_h(t, s, n, (uint32_t)hash_bytes(s, n));
}

static void str_insert(tokenizer *t, int32_t id) {
    const char *s = id_str(t, id);
    size_t n = t->str_len[id];
    uint32_t h = (uint32_t)hash_bytes(s, n);
    if (str_lookup_h(t, s, n, h) >= 0) return; /* first one (added token) wins */
    uint32_t i = h & t->str_mask;
    while (t->str_tab[i].id >= 0) i = (i + 1) & t->str_mask;
    t->str_tab[i] = (str_slot){h, id};
}

static uint64_t merge_key(int32_t a, int32_t b) { return ((uint64_t)a << MERGE_BITS | (uint64_t)b) << MERGE_BITS; }

/* Rank of the merge (a, b), -1 if none. */
static int32_t merge_lookup(const tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = merge_key(a, b);
    for (uint32_t i = (uint32_t)hash_u64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        merge_slot m = t->merges[i];
        if ((m & ~(uint64_t)MERGE_MAX) == key && m != MERGE_EMPTY) return (int32_t)(m & MERGE_MAX);
        if (m == MERGE_EMPTY) return -1;
    }
}

static void merge_insert(tokenizer *t, int32_t a, int32_t b, int32_t rank) {
    uint64_t key = merge_key(a, b);
    uint32_t i = (uint32_t)hash_u64(key) & t->merge_mask;
    while (t->merges[i] != MERGE_EMPTY) {
        if ((t->merges[i] & ~(uint64_t)MERGE_MAX) == key) return; /* duplicate merge: first rank wins */
        i = (i + 1) & t->merge_mask;
    }
    t->merges[i] = key | (uint64_t)rank;
}

static int trie_add(trie *tr, const char *s, size_t n, int32_t token) {
    if (tr->n == 0) {
        tr->cap = 256;
        tr->nodes = malloc(tr->cap * sizeof *tr->nodes);
        if (!tr->nodes) return -1;
        tr->nodes[0] = (trie_node){-1, -1, -1, 0};
        tr->n = 1;
    }
    int32_t node = 0;
    if (!tr->first[(unsigned char)s[0]]) {
        tr->first[(unsigned char)s[0]] = 1;
        tr->n_first++;
        tr->first_byte = (unsigned char)s[0];
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t ch = tr->nodes[node].child;
        while (ch >= 0 && tr->nodes[ch].byte != c) ch = tr->nodes[ch].sibling;
        if (ch < 0) {
            if (tr->n == tr->cap) {
                trie_node *q = realloc(tr->nodes, 2 * tr->cap * sizeof *q);
                if (!q) return -1;
                tr->nodes = q;
                tr->cap *= 2;
            }
            ch = (int32_t)tr->n++;
            tr->nodes[ch] = (trie_node){-1, tr->nodes[node].child, -1, c};
            tr->nodes[node].child = ch;
        }
        node = ch;
    }
    if (tr->nodes[node].token < 0) tr->nodes[node].token = token;
    return 0;
}

/* Longest added token starting at s[0..n): its index in added[], or -1. */
static int32_t trie_longest(const trie *tr, const unsigned char *s, size_t n, size_t *match_len) {
    if (tr->n == 0) return -1;
    int32_t node = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t ch = tr->nodes[node].child;
        while (ch >= 0 && tr->nodes[ch].byte != s[i]) ch = tr->nodes[ch].sibling;
        if (ch < 0) break;
        node = ch;
        if (tr->nodes[node].token >= 0) {
            best = tr->nodes[node].token;
            *match_len = i + 1;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- loading */

static json_t *load_json(const char *path, int required, ms_err *err, int *missing) {
    *missing = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT && !required) {
            *missing = 1;
            return NULL;
        }
        ms_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    /* json_loadb on the whole file is ~2x faster than json_loadf's getc loop */
    json_error_t je;
    json_t *root = NULL;
    char *data = NULL;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)size + 1)) &&
        fread(data, 1, (size_t)size, f) == (size_t)size) {
        root = json_loadb(data, (size_t)size, 0, &je);
    } else {
        fclose(f);
        free(data);
        ms_err_set(err, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    free(data);
    fclose(f);
    if (!root) {
        ms_err_set(err, "%s: invalid JSON at line %d column %d: %s", path, je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        ms_err_set(err, "%s: top level is not a JSON object", path);
        return NULL;
    }
    return root;
}

static int grow_ids(tokenizer *t, int32_t n_ids) {
    if (n_ids <= t->n_ids) return 0;
    uint8_t *fl = realloc(t->flags, (size_t)n_ids);
    uint32_t *so = fl ? realloc(t->str_off, (size_t)n_ids * 4) : NULL;
    if (fl) t->flags = fl;
    if (so) t->str_off = so;
    if (!fl || !so) return -1;
    for (int32_t i = t->n_ids; i < n_ids; i++) {
        t->flags[i] = 0;
        t->str_off[i] = NO_OFF;
    }
    t->n_ids = n_ids;
    return 0;
}

static int set_token(tokenizer *t, int32_t id, const char *s, size_t n, unsigned flags) {
    if (grow_ids(t, id + 1)) return -1;
    uint32_t off = (uint32_t)t->str_blob.n;
    if (buf_add(&t->str_blob, s, n) || buf_add(&t->str_blob, "", 1)) return -1;
    t->str_off[id] = off;
    t->flags[id] = (uint8_t)(t->flags[id] | flags | TOK_PRESENT);
    return 0;
}

static int load_vocab(tokenizer *t, json_t *model, const char *path, ms_err *err) {
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return ms_err_set(err, "%s: model.vocab is not an object", path);
    const char *key;
    json_t *v;
    int32_t max_id = -1;
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id > INT32_MAX / 2)
            return ms_err_set(err, "%s: model.vocab[\"%s\"] is not a valid id", path, key);
        if (id > max_id) max_id = (int32_t)id;
    }
    if (grow_ids(t, max_id + 1)) return ms_err_set(err, "%s: out of memory", path);
    json_object_foreach(vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        if (t->flags[id] & TOK_PRESENT)
            return ms_err_set(err, "%s: model.vocab: id %d used twice", path, (int)id);
        if (set_token(t, id, key, strlen(key), 0)) return ms_err_set(err, "%s: out of memory", path);
    }
    return 0;
}

static int load_added(tokenizer *t, json_t *root, const char *path, ms_err *err) {
    json_t *arr = json_object_get(root, "added_tokens");
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return ms_err_set(err, "%s: added_tokens is not an array", path);
    size_t n = json_array_size(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return ms_err_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(arr, i);
        json_t *jid = json_object_get(a, "id"), *jc = json_object_get(a, "content");
        if (!json_is_integer(jid) || json_integer_value(jid) < 0 || json_integer_value(jid) > INT32_MAX / 2 ||
            !json_is_string(jc) || json_string_length(jc) == 0)
            return ms_err_set(err, "%s: added_tokens[%zu]: needs an integer id and a non-empty content", path, i);
        int32_t id = (int32_t)json_integer_value(jid);
        const char *c = json_string_value(jc);
        size_t len = json_string_length(jc);
        unsigned fl = TOK_ADDED | (json_is_true(json_object_get(a, "special")) ? TOK_SPECIAL : 0);
        if (set_token(t, id, c, len, fl)) return ms_err_set(err, "%s: out of memory", path);
        t->added[i] = (added_token){id, (uint32_t)len, NULL, (unsigned char)json_is_true(json_object_get(a, "lstrip")),
                                    (unsigned char)json_is_true(json_object_get(a, "rstrip"))};
        int normalized = json_is_true(json_object_get(a, "normalized"));
        if (trie_add(&t->trie[normalized ? 1 : 0], c, len, (int32_t)i))
            return ms_err_set(err, "%s: out of memory", path);
    }
    t->n_added = n;
    for (size_t i = 0; i < n; i++) t->added[i].content = id_str(t, t->added[i].id);
    return 0;
}

static int build_tables(tokenizer *t, const char *path, ms_err *err) {
    uint32_t byte_cp[256];
    int16_t cp_byte[512];
    bytelevel_tables(byte_cp, cp_byte);
    t->bytes_off = calloc((size_t)t->n_ids, 4);
    t->bytes_len = calloc((size_t)t->n_ids, 4);
    t->str_len = calloc((size_t)t->n_ids, 4);
    size_t n_present = 0;
    for (int32_t id = 0; id < t->n_ids; id++) n_present += t->flags[id] & TOK_PRESENT;
    t->str_mask = table_size(n_present) - 1;
    t->str_tab = malloc(((size_t)t->str_mask + 1) * sizeof *t->str_tab);
    if (!t->bytes_off || !t->bytes_len || !t->str_len || !t->str_tab) return ms_err_set(err, "%s: out of memory", path);
    memset(t->str_tab, 0xff, ((size_t)t->str_mask + 1) * sizeof *t->str_tab);
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->flags[id] & TOK_PRESENT) t->str_len[id] = (uint32_t)strlen(id_str(t, id));
    for (size_t i = 0; i < t->n_added; i++) str_insert(t, t->added[i].id);
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->flags[id] & TOK_PRESENT)) continue;
        str_insert(t, id);
        const char *s = id_str(t, id);
        t->bytes_off[id] = (uint32_t)t->bytes_blob.n;
        if (bytelevel_decode(s, t->str_len[id], cp_byte, &t->bytes_blob)) return ms_err_set(err, "%s: out of memory", path);
        t->bytes_len[id] = (uint32_t)(t->bytes_blob.n - t->bytes_off[id]);
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t n = utf8_encode(byte_cp[b], s);
        t->byte_id[b] = str_lookup(t, s, n);
        if (t->byte_id[b] < 0)
            return ms_err_set(err, "%s: model.vocab lacks the byte-level token for byte 0x%02x", path, b);
    }
    return 0;
}

/* A merge is "A B" (one space) or ["A", "B"]. */
static int merge_parts(json_t *m, const char **a, size_t *na, const char **b, size_t *nb) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ')) return -1;
        *a = s, *na = (size_t)(sp - s), *b = sp + 1, *nb = strlen(sp + 1);
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0)), *na = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1)), *nb = json_string_length(json_array_get(m, 1));
        return 0;
    }
    return -1;
}

static int load_merges(tokenizer *t, json_t *model, const char *path, ms_err *err) {
    json_t *arr = json_object_get(model, "merges");
    if (!json_is_array(arr)) return ms_err_set(err, "%s: model.merges is not an array", path);
    size_t n = json_array_size(arr);
    t->merge_mask = table_size(n) - 1;
    if (n > MERGE_MAX || t->n_ids > MERGE_MAX)
        return ms_err_set(err, "%s: more than %d merges or token ids are not supported", path, MERGE_MAX);
    t->merges = malloc(((size_t)t->merge_mask + 1) * sizeof *t->merges);
    t->merge_id = malloc((n ? n : 1) * sizeof *t->merge_id);
    if (!t->merges || !t->merge_id) return ms_err_set(err, "%s: out of memory", path);
    for (size_t i = 0; i <= t->merge_mask; i++) t->merges[i] = MERGE_EMPTY;
    buf cat = {0};
    int rc = 0;
    if (buf_add(&cat, "", 0)) return ms_err_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *a, *b;
        size_t na, nb;
        if (merge_parts(json_array_get(arr, i), &a, &na, &b, &nb)) {
            rc = ms_err_set(err, "%s: model.merges[%zu] is not \"A B\" or [\"A\", \"B\"]", path, i);
            break;
        }
        int32_t ia = str_lookup(t, a, na), ib = str_lookup(t, b, nb);
        cat.n = 0;
        if (buf_add(&cat, a, na) || buf_add(&cat, b, nb)) {
            rc = ms_err_set(err, "%s: out of memory", path);
            break;
        }
        int32_t im = str_lookup(t, cat.p, cat.n);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = ms_err_set(err, "%s: model.merges[%zu] (\"%.*s\" \"%.*s\") uses a token not in model.vocab", path, i,
                            (int)na, a, (int)nb, b);
            break;
        }
        t->merge_id[i] = im;
        merge_insert(t, ia, ib, (int32_t)i);
    }
    free(cat.p);
    return rc;
}

static int check_model(json_t *root, const char *path, ms_err *err) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return ms_err_set(err, "%s: no \"model\" object", path);
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type && strcmp(type, "BPE")) return ms_err_set(err, "%s: model.type \"%s\" is not supported (BPE only)", path, type);
    if (json_is_true(json_object_get(model, "byte_fallback")))
        return ms_err_set(err, "%s: model.byte_fallback is not supported", path);
    json_t *cs = json_object_get(model, "continuing_subword_prefix"), *ew = json_object_get(model, "end_of_word_suffix");
    if ((cs && !json_is_null(cs)) || (ew && !json_is_null(ew)))
        return ms_err_set(err, "%s: continuing_subword_prefix / end_of_word_suffix are not supported", path);
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const char *nt = json_string_value(json_object_get(norm, "type"));
        json_t *list = json_object_get(norm, "normalizers");
        if (!nt || strcmp(nt, "Sequence") || json_array_size(list) != 0)
            return ms_err_set(err, "%s: normalizer is not supported (only none or an empty Sequence)", path);
    }
    return 0;
}

static int add_split(tokenizer *t, json_t *p, const char *path, size_t idx, ms_err *err) {
    const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
    const char *beh = json_string_value(json_object_get(p, "behavior"));
    if (!re) return ms_err_set(err, "%s: pre_tokenizer %zu: Split needs pattern.Regex", path, idx);
    if (!beh || strcmp(beh, "Isolated"))
        return ms_err_set(err, "%s: pre_tokenizer %zu: Split behavior \"%s\" not supported (Isolated only)", path, idx,
                          beh ? beh : "?");
    if (json_is_true(json_object_get(p, "invert")))
        return ms_err_set(err, "%s: pre_tokenizer %zu: Split invert not supported", path, idx);
    if (t->n_re == MAX_SPLITS) return ms_err_set(err, "%s: more than %d Split pre-tokenizers", path, MAX_SPLITS);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)re, strlen(re), PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return ms_err_set(err, "%s: pre_tokenizer %zu: regex error at offset %zu: %s", path, idx, (size_t)eo, (char *)msg);
    }
    t->re_jit[t->n_re] = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    t->re[t->n_re++] = code;
    return 0;
}

static int load_pretokenizer(tokenizer *t, json_t *root, const char *path, ms_err *err) {
    json_t *pt = json_object_get(root, "pre_tokenizer");
    const char *type = json_string_value(json_object_get(pt, "type"));
    json_t *list = NULL;
    if (type && !strcmp(type, "Sequence")) list = json_object_get(pt, "pretokenizers");
    if (!json_is_array(list)) return ms_err_set(err, "%s: pre_tokenizer must be a Sequence of Split + ByteLevel", path);
    int saw_bytelevel = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *p = json_array_get(list, i);
        const char *pty = json_string_value(json_object_get(p, "type"));
        if (pty && !strcmp(pty, "Split") && !saw_bytelevel) {
            if (add_split(t, p, path, i, err)) return -1;
        } else if (pty && !strcmp(pty, "ByteLevel") && !saw_bytelevel) {
            if (json_is_true(json_object_get(p, "add_prefix_space")) || json_is_true(json_object_get(p, "use_regex")))
                return ms_err_set(err, "%s: pre_tokenizer %zu: ByteLevel with add_prefix_space/use_regex not supported",
                                  path, i);
            saw_bytelevel = 1;
        } else {
            return ms_err_set(err, "%s: pre_tokenizer %zu (\"%s\") not supported here", path, i, pty ? pty : "?");
        }
    }
    if (!saw_bytelevel) return ms_err_set(err, "%s: pre_tokenizer has no ByteLevel step", path);
    return 0;
}

/* bos_token etc. may be a string or {"content": ...}. */
static char *config_token(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static int load_config(tokenizer *t, const char *dir, ms_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    int missing;
    json_t *cfg = load_json(path, 0, err, &missing);
    if (!cfg) return missing ? 0 : -1;
    t->add_bos = json_is_true(json_object_get(cfg, "add_bos_token"));
    t->add_eos = json_is_true(json_object_get(cfg, "add_eos_token"));
    t->bos_token = config_token(cfg, "bos_token");
    t->eos_token = config_token(cfg, "eos_token");
    char *pad = config_token(cfg, "pad_token");
    json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) t->chat_template = strdup(json_string_value(ct));
    json_decref(cfg);
    t->bos_id = t->bos_token ? tokenizer_token_id(t, t->bos_token) : -1;
    t->eos_id = t->eos_token ? tokenizer_token_id(t, t->eos_token) : -1;
    t->pad_id = pad ? tokenizer_token_id(t, pad) : -1;
    int rc = 0;
    if ((t->bos_token && t->bos_id < 0) || (t->eos_token && t->eos_id < 0) || (pad && t->pad_id < 0))
        rc = ms_err_set(err, "%s: bos/eos/pad token is not in the vocabulary of tokenizer.json", path);
    free(pad);
    return rc;
}

tokenizer *tokenizer_load(const char *dir, ms_err *err) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= (int)sizeof path) {
        ms_err_set(err, "%s: path too long", dir);
        return NULL;
    }
    int missing;
    json_t *root = load_json(path, 1, err, &missing);
    if (!root) return NULL;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        ms_err_set(err, "%s: out of memory", path);
        return NULL;
    }
    t->bos_id = t->eos_id = t->pad_id = -1;
    json_t *model = json_object_get(root, "model");
    int rc = check_model(root, path, err);
    if (!rc) rc = load_vocab(t, model, path, err);
    if (!rc) rc = load_added(t, root, path, err);
    if (!rc) rc = build_tables(t, path, err);
    if (!rc) rc = load_merges(t, model, path, err);
    if (!rc) rc = load_pretokenizer(t, root, path, err);
    json_decref(root);
    if (!rc) rc = load_config(t, dir, err);
    if (rc) {
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->flags);
    free(t->str_off);
    free(t->bytes_off);
    free(t->bytes_len);
    free(t->str_blob.p);
    free(t->bytes_blob.p);
    free(t->str_tab);
    free(t->str_len);
    free(t->merges);
    free(t->merge_id);
    free(t->added);
    free(t->trie[0].nodes);
    free(t->trie[1].nodes);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->bos_token);
    free(t->eos_token);
    free(t->chat_template);
    free(t);
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    int32_t id, prev, next, len; /* len 0: merged away */
} bpe_sym;

typedef struct {
    int32_t rank, pos, id;
} bpe_item;

/* Per-call cache of pre-token -> ids: the ids are the ones already emitted at
 * ids[off .. off+n), the key is the piece inside the caller's text. */
typedef struct {
    const char *s; /* NULL = empty slot */
    uint32_t len, hash, off, n;
} word_slot;

#define BPE_SMALL 64        /* pieces up to this many bytes: array BPE, else heap */
#define CACHE_MIN_TEXT 2048 /* texts shorter than this are encoded without a cache */
#define CACHE_MAX_PIECE 64

typedef struct {
    const tokenizer *tok;
    pcre2_match_data *md;
    int32_t *ids;
    size_t n, cap;
    bpe_sym *syms;
    bpe_item *heap;
    size_t scratch_cap;
    word_slot *cache;
    uint32_t cache_mask, cache_used;
    ms_err *err;
} enc_ctx;

static int emit(enc_ctx *c, int32_t id) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 256;
        int32_t *p = realloc(c->ids, cap * sizeof *p);
        if (!p) return ms_err_set(c->err, "tokenizer_encode: out of memory");
        c->ids = p;
        c->cap = cap;
    }
    c->ids[c->n++] = id;
    return 0;
}

static int item_less(bpe_item a, bpe_item b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(bpe_item *h, size_t *n, bpe_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!item_less(it, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static bpe_item heap_pop(bpe_item *h, size_t *n) {
    bpe_item top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        bpe_item best = last;
        if (l < *n && item_less(h[l], best)) m = l, best = h[l];
        if (r < *n && item_less(h[r], best)) m = r;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = last;
    return top;
}

static void push_pair(const tokenizer *t, bpe_sym *s, int32_t pos, bpe_item *h, size_t *nh) {
    int32_t nx = s[pos].next;
    if (nx < 0) return;
    int32_t rank = merge_lookup(t, s[pos].id, s[nx].id);
    if (rank >= 0) heap_push(h, nh, (bpe_item){rank, pos, t->merge_id[rank]});
}

/* BPE of one pre-token (raw bytes), as HF Word::merge_all: repeatedly apply the
 * lowest-ranked merge (leftmost on ties), skipping stale queue entries. */
static int bpe_heap(enc_ctx *c, const unsigned char *s, size_t n) {
    const tokenizer *t = c->tok;
    if (n > c->scratch_cap) {
        size_t cap = n < 256 ? 256 : 2 * n;
        bpe_sym *ns = realloc(c->syms, cap * sizeof *ns);
        if (ns) c->syms = ns;
        /* The queue starts with n-1 pairs and each merge pops one entry and pushes
         * at most two, so it never holds more than 2(n-1) entries. */
        bpe_item *nh = ns ? realloc(c->heap, 2 * cap * sizeof *nh) : NULL;
        if (nh) c->heap = nh;
        if (!ns || !nh) return ms_err_set(c->err, "tokenizer_encode: out of memory");
        c->scratch_cap = cap;
    }
    bpe_sym *sy = c->syms;
    bpe_item *h = c->heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++)
        sy[i] = (bpe_sym){t->byte_id[s[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, 1};
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, sy, (int32_t)i, h, &nh);
    while (nh) {
        bpe_item top = heap_pop(h, &nh);
        bpe_sym *a = &sy[top.pos];
        if (a->len == 0 || a->next < 0) continue;
        bpe_sym *b = &sy[a->next];
        int32_t rank = merge_lookup(t, a->id, b->id);
        if (rank < 0 || t->merge_id[rank] != top.id) continue;
        a->id = top.id;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) sy[a->next].prev = top.pos;
        if (a->prev >= 0) push_pair(t, sy, a->prev, h, &nh);
        push_pair(t, sy, top.pos, h, &nh);
    }
    for (int32_t i = 0; i >= 0; i = sy[i].next)
        if (emit(c, sy[i].id)) return -1;
    return 0;
}

static int32_t pair_rank(const tokenizer *t, int32_t a, int32_t b, int32_t *merged) {
    int32_t rank = merge_lookup(t, a, b);
    if (rank < 0) return INT32_MAX;
    *merged = t->merge_id[rank];
    return rank;
}

/* The same BPE for short pieces on flat arrays: the lowest rank, leftmost,
 * is merged first, which is exactly the order of HF's queue (a stale queue
 * entry can never name the current pair: symbols only grow to the right). */
static int bpe_small(enc_ctx *c, const unsigned char *s, size_t n) {
    const tokenizer *t = c->tok;
    int32_t id[BPE_SMALL], rank[BPE_SMALL], merged[BPE_SMALL];
    size_t m = n;
    for (size_t i = 0; i < n; i++) id[i] = t->byte_id[s[i]];
    for (size_t i = 0; i + 1 < m; i++) rank[i] = pair_rank(t, id[i], id[i + 1], &merged[i]);
    while (m > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == INT32_MAX) break;
        id[best] = merged[best];
        m--;
        size_t tail = m - best - 1; /* entries after the removed symbol best+1 */
        memmove(id + best + 1, id + best + 2, tail * sizeof *id);
        memmove(rank + best + 1, rank + best + 2, tail * sizeof *rank);
        memmove(merged + best + 1, merged + best + 2, tail * sizeof *merged);
        if (best > 0) rank[best - 1] = pair_rank(t, id[best - 1], id[best], &merged[best - 1]);
        if (best + 1 < m) rank[best] = pair_rank(t, id[best], id[best + 1], &merged[best]);
    }
    for (size_t i = 0; i < m; i++)
        if (emit(c, id[i])) return -1;
    return 0;
}

static word_slot *cache_find(enc_ctx *c, const char *s, uint32_t len, uint32_t h) {
    for (uint32_t i = h & c->cache_mask;; i = (i + 1) & c->cache_mask) {
        word_slot *w = &c->cache[i];
        if (!w->s || (w->hash == h && w->len == len && !memcmp(w->s, s, len))) return w;
    }
}

static int bpe(enc_ctx *c, const unsigned char *s, size_t n) {
    if (n == 1) return emit(c, c->tok->byte_id[s[0]]);
    word_slot *w = NULL;
    uint32_t h = 0;
    if (c->cache && n <= CACHE_MAX_PIECE) {
        h = (uint32_t)hash_bytes((const char *)s, n);
        w = cache_find(c, (const char *)s, (uint32_t)n, h);
        if (w->s) {
            for (uint32_t i = 0; i < w->n; i++)
                if (emit(c, c->ids[w->off + i])) return -1;
            return 0;
        }
    }
    size_t start = c->n;
    if ((n <= BPE_SMALL ? bpe_small(c, s, n) : bpe_heap(c, s, n)) != 0) return -1;
    if (w && 4 * (c->cache_used + 1) <= 3 * (c->cache_mask + 1)) { /* full: stop adding */
        *w = (word_slot){(const char *)s, (uint32_t)n, h, (uint32_t)start, (uint32_t)(c->n - start)};
        c->cache_used++;
    }
    return 0;
}

static int regex_next(enc_ctx *c, int level, const char *s, size_t n, size_t off, size_t *ms, size_t *me) {
    const tokenizer *t = c->tok;
    int rc = t->re_jit[level] ? pcre2_jit_match(t->re[level], (PCRE2_SPTR)s, n, off, 0, c->md, NULL)
                              : pcre2_match(t->re[level], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, c->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return ms_err_set(c->err, "tokenizer_encode: pre-tokenizer regex %d failed: %s", level, (char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* Split s by regex `level` with "Isolated" behaviour (matches and the gaps
 * between them are separate pieces), recursing into the next level. */
static int pretokenize(enc_ctx *c, int level, const char *s, size_t n) {
    if (n == 0) return 0;
    if (level == c->tok->n_re) return bpe(c, (const unsigned char *)s, n);
    size_t pos = 0, off = 0;
    while (off < n) {
        size_t ms, me;
        int r = regex_next(c, level, s, n, off, &ms, &me);
        if (r < 0) return -1;
        if (r == 0) break;
        if (me == ms) { /* empty match: no piece; step over one character */
            off = ms + 1;
            while (off < n && ((unsigned char)s[off] & 0xC0) == 0x80) off++;
            continue;
        }
        if (ms > pos && pretokenize(c, level + 1, s + pos, ms - pos)) return -1;
        if (pretokenize(c, level + 1, s + ms, me - ms)) return -1;
        pos = off = me;
    }
    return pretokenize(c, level + 1, s + pos, n - pos);
}

static int is_space(unsigned char ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r'); }

/* Extracts the added tokens of trie `pass` from s (leftmost-longest); the text
 * between them goes to the next pass, then to the pre-tokenizer. */
static int split_added(enc_ctx *c, int pass, const char *s, size_t n) {
    if (pass == 2) return pretokenize(c, 0, s, n);
    const tokenizer *t = c->tok;
    const trie *tr = &t->trie[pass];
    const unsigned char *u = (const unsigned char *)s;
    size_t pos = 0;
    if (tr->n_first == 0) return split_added(c, pass + 1, s, n);
    for (size_t i = 0; i < n; i++) {
        if (tr->n_first == 1) { /* the usual case: every added token starts with '<' */
            const unsigned char *p = memchr(u + i, tr->first_byte, n - i);
            if (!p) break;
            i = (size_t)(p - u);
        } else if (!tr->first[u[i]]) {
            continue;
        }
        size_t mlen = 0;
        int32_t k = trie_longest(tr, u + i, n - i, &mlen);
        if (k < 0) continue;
        size_t a = i, b = i + mlen;
        if (t->added[k].lstrip)
            while (a > pos && is_space(u[a - 1])) a--;
        if (t->added[k].rstrip)
            while (b < n && is_space(u[b])) b++;
        if (a > pos && split_added(c, pass + 1, s + pos, a - pos)) return -1;
        if (emit(c, t->added[k].id)) return -1;
        pos = b;
        i = b - 1;
    }
    return split_added(c, pass + 1, s + pos, n - pos);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids_out, size_t *n_out,
                     ms_err *err) {
    *ids_out = NULL;
    *n_out = 0;
    size_t bad = utf8_validate(text, len);
    if (bad < len) return ms_err_set(err, "tokenizer_encode: invalid UTF-8 at byte %zu", bad);
    enc_ctx c = {.tok = t, .err = err};
    c.md = pcre2_match_data_create(1, NULL);
    if (!c.md) return ms_err_set(err, "tokenizer_encode: out of memory");
    if (len >= CACHE_MIN_TEXT && len < UINT32_MAX) {
        uint32_t slots = len >= (1u << 18) ? (1u << 16) : (1u << 12);
        c.cache = calloc(slots, sizeof *c.cache); /* no cache if this fails */
        c.cache_mask = slots - 1;
    }
    int rc = split_added(&c, 0, text, len);
    pcre2_match_data_free(c.md);
    free(c.cache);
    free(c.syms);
    free(c.heap);
    if (rc) {
        free(c.ids);
        return -1;
    }
    *ids_out = c.ids;
    *n_out = c.n;
    return 0;
}

/* ---------------------------------------------------------------- decoding and queries */

static int valid_id(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & TOK_PRESENT);
}

char *tokenizer_decode_len(const tokenizer *t, const int32_t *ids, size_t n, int skip_special, size_t *len_out) {
    buf raw = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (!valid_id(t, id) || (skip_special && (t->flags[id] & TOK_SPECIAL))) continue;
        if (buf_add(&raw, t->bytes_blob.p + t->bytes_off[id], t->bytes_len[id])) {
            free(raw.p);
            return NULL;
        }
    }
    char *out = malloc(3 * raw.n + 1);
    if (!out) {
        free(raw.p);
        return NULL;
    }
    size_t m = utf8_lossy(raw.p ? raw.p : "", raw.n, out, 1, NULL);
    out[m] = 0;
    free(raw.p);
    if (len_out) *len_out = m;
    return out;
}

char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, int skip_special) {
    return tokenizer_decode_len(t, ids, n, skip_special, NULL);
}

int32_t tokenizer_token_id(const tokenizer *t, const char *s) { return str_lookup(t, s, strlen(s)); }

const char *tokenizer_token_bytes(const tokenizer *t, int32_t id, size_t *len) {
    if (!valid_id(t, id)) return NULL;
    if (len) *len = t->bytes_len[id];
    return t->bytes_blob.p + t->bytes_off[id];
}

const char *tokenizer_token_string(const tokenizer *t, int32_t id) { return valid_id(t, id) ? id_str(t, id) : NULL; }
int tokenizer_is_special(const tokenizer *t, int32_t id) { return valid_id(t, id) && (t->flags[id] & TOK_SPECIAL); }
int tokenizer_is_added(const tokenizer *t, int32_t id) { return valid_id(t, id) && (t->flags[id] & TOK_ADDED); }
int32_t tokenizer_vocab_size(const tokenizer *t) { return t->n_ids; }
int32_t tokenizer_bos_id(const tokenizer *t) { return t->bos_id; }
int32_t tokenizer_eos_id(const tokenizer *t) { return t->eos_id; }
int32_t tokenizer_pad_id(const tokenizer *t) { return t->pad_id; }
int tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
int tokenizer_add_eos(const tokenizer *t) { return t->add_eos; }
const char *tokenizer_bos_token(const tokenizer *t) { return t->bos_token; }
const char *tokenizer_eos_token(const tokenizer *t) { return t->eos_token; }
const char *tokenizer_chat_template(const tokenizer *t) { return t->chat_template; }

/* ---------------------------------------------------------------- incremental detokenizer */

void detok_init(detok *d, const tokenizer *tok, int skip_special) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->skip_special = skip_special;
}

static int detok_reserve(detok *d, size_t n) {
    if (n <= d->cap) return 0;
    size_t cap = d->cap ? d->cap : 64;
    while (cap < n) cap *= 2;
    char *p = realloc(d->buf, cap);
    if (!p) return -1;
    d->buf = p;
    d->cap = cap;
    return 0;
}

/* Converts pending + (p, n) into d->buf, keeping an unfinished tail pending. */
static const char *detok_run(detok *d, const char *p, size_t n, int final, size_t *len) {
    size_t total = d->n_pending + n;
    /* input copy after the output area: output <= 3 * input */
    if (detok_reserve(d, 4 * total + 1)) return NULL;
    char *in = d->buf + 3 * total + 1;
    memcpy(in, d->pending, d->n_pending);
    if (n) memcpy(in + d->n_pending, p, n);
    size_t used;
    size_t m = utf8_lossy(in, total, d->buf, final, &used);
    d->n_pending = total - used; /* <= 3: only a truncated sequence stays */
    memcpy(d->pending, in + used, d->n_pending);
    d->buf[m] = 0;
    if (len) *len = m;
    return d->buf;
}

const char *detok_push(detok *d, int32_t id, size_t *len) {
    const tokenizer *t = d->tok;
    size_t n = 0;
    const char *p = "";
    if (valid_id(t, id) && !(d->skip_special && (t->flags[id] & TOK_SPECIAL))) p = tokenizer_token_bytes(t, id, &n);
    return detok_run(d, p, n, 0, len);
}

const char *detok_flush(detok *d, size_t *len) { return detok_run(d, "", 0, 1, len); }

void detok_free(detok *d) {
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
}
