/* test/unit/test_toolcall.c — server/toolcall: DeepSeek tool-call parsing.
 *
 * References: the marker strings are the tokenizer's added tokens 128806-128814
 * (tokenizer.json); the call layout is the one common/chat_template.c renders
 * (DeepSeek-V3's template) plus DeepSeek-V3.1's. Expected content and calls
 * are hand-written from the rules in server/toolcall.h. The streaming parser
 * is checked against them for the whole text in one piece, cut at every
 * position, at every pair of positions up to 40 bytes apart, byte by byte
 * and character by character: the event sequence (adjacent CONTENT merged)
 * and the warning must equal those of the one-piece run, the content emitted
 * so far must always be a prefix of the expected content (only certain text
 * is emitted), and deltas of character-aligned pieces must be valid UTF-8.
 * server/ is not part of libmlaserve.a, so the module is compiled in here. */
#include <criterion/criterion.h>

#include <string.h>

#include "common/utf8.h"
#include "server/toolcall.c"

#define V3CALL(name, args) CALL_BEGIN "function" SEP name "\n```json\n" args "\n```" CALL_END
#define V31CALL(name, args) CALL_BEGIN name SEP args CALL_END
#define NAME64 "a123456789b123456789c123456789d123456789e123456789f123456789abcd"

typedef struct tcase {
    const char *what;
    const char *text;
    const char *content;    /* expected */
    int n_calls;
    const char *calls[3][2]; /* name, arguments */
    int warns;               /* a warning is expected */
} tcase;

static const tcase CASES[] = {
    {"one call", CALLS_BEGIN V3CALL("get_weather", "{\"location\": \"Tokyo\", \"unit\": \"c\"}") CALLS_END, "", 1,
     {{"get_weather", "{\"location\": \"Tokyo\", \"unit\": \"c\"}"}}, 0},
    {"two parallel calls",
     CALLS_BEGIN V3CALL("get_weather", "{\"location\": \"Tokyo\"}") "\n" V3CALL("get_time", "{\"tz\": \"JST\"}") CALLS_END,
     "", 2, {{"get_weather", "{\"location\": \"Tokyo\"}"}, {"get_time", "{\"tz\": \"JST\"}"}}, 0},
    {"three parallel calls",
     CALLS_BEGIN V3CALL("a", "{}") "\n" V3CALL("b.c", "{\"x\": [1, 2]}") "\n" V3CALL("d-e_f", "{\"q\": \"x\", \"n\": 3}")
         CALLS_END,
     "", 3, {{"a", "{}"}, {"b.c", "{\"x\": [1, 2]}"}, {"d-e_f", "{\"q\": \"x\", \"n\": 3}"}}, 0},
    {"braces, brackets, backticks, fences and escapes in strings",
     CALLS_BEGIN V3CALL("run", "{\"code\": \"```python\\nprint(\\\"}{][\\\")\\n```\", \"nested\": [1, {\"a\": \"`\"}, []], "
                               "\"q\": \"\\\\\\\"\", \"end\": \"```\"}") CALLS_END,
     "", 1,
     {{"run", "{\"code\": \"```python\\nprint(\\\"}{][\\\")\\n```\", \"nested\": [1, {\"a\": \"`\"}, []], "
              "\"q\": \"\\\\\\\"\", \"end\": \"```\"}"}}, 0},
    {"unicode arguments", CALLS_BEGIN V3CALL("geo", "{\"city\": \"東京\", \"note\": \"😀 \\u00e9\"}") CALLS_END, "", 1,
     {{"geo", "{\"city\": \"東京\", \"note\": \"😀 \\u00e9\"}"}}, 0},
    {"content before the calls",
     "Let me check the weather in 東京.\n\n" CALLS_BEGIN V3CALL("get_weather", "{\"location\": \"Tokyo\"}") CALLS_END,
     "Let me check the weather in 東京.\n\n", 1, {{"get_weather", "{\"location\": \"Tokyo\"}"}}, 0},
    {"V3.1 form", CALLS_BEGIN V31CALL("get_weather", "{\"location\": \"Paris\"}") CALLS_END, "", 1,
     {{"get_weather", "{\"location\": \"Paris\"}"}}, 0},
    {"V3.1 form, two calls back to back",
     CALLS_BEGIN V31CALL("a", "{}") V31CALL("b.c-d_e", "{\"x\":[]}") CALLS_END, "", 2,
     {{"a", "{}"}, {"b.c-d_e", "{\"x\":[]}"}}, 0},
    {"no fence", CALLS_BEGIN CALL_BEGIN "function" SEP "get_weather\n{\"a\":1}" CALL_END CALLS_END, "", 1,
     {{"get_weather", "{\"a\":1}"}}, 0},
    {"whitespace around everything, plain ``` fence",
     CALLS_BEGIN "\n" CALL_BEGIN " function " SEP " get_weather  \n\n```  \n  {\"a\":1}  \n```  \n" CALL_END "\n\n" CALLS_END,
     "", 1, {{"get_weather", "{\"a\":1}"}}, 0},
    {"fence without newlines, other language word",
     CALLS_BEGIN CALL_BEGIN "function" SEP "f```JSON{\"a\":1}```" CALL_END CALLS_END, "", 1, {{"f", "{\"a\":1}"}}, 0},
    {"no closing fence", CALLS_BEGIN CALL_BEGIN "function" SEP "f\n```json\n{\"a\":1}\n" CALL_END CALLS_END, "", 1,
     {{"f", "{\"a\":1}"}}, 0},
    {"multi-line arguments kept verbatim", CALLS_BEGIN V3CALL("f", "{\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}") CALLS_END,
     "", 1, {{"f", "{\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}"}}, 0},
    {"marker-like text in a string", CALLS_BEGIN V3CALL("f", "{\"s\": \"<｜tool▁call▁end\"}") CALLS_END, "", 1,
     {{"f", "{\"s\": \"<｜tool▁call▁end\"}"}}, 0},
    {"missing calls_end", CALLS_BEGIN V3CALL("f", "{\"a\": 1}"), "", 1, {{"f", "{\"a\": 1}"}}, 0},
    {"missing calls_end, trailing whitespace", CALLS_BEGIN V3CALL("f", "{}") "\n \n", "", 1, {{"f", "{}"}}, 0},
    {"text after the calls", CALLS_BEGIN V3CALL("f", "{}") CALLS_END "\n\nDone.", "Done.", 1, {{"f", "{}"}}, 0},
    {"content before and after", "A" CALLS_BEGIN V3CALL("f", "{}") CALLS_END " B ", "AB ", 1, {{"f", "{}"}}, 0},
    {"bare call_begin without the section marker", "Sure." V31CALL("f", "{}"), "Sure.", 1, {{"f", "{}"}}, 0},
    {"two sections", CALLS_BEGIN V3CALL("a", "{}") CALLS_END "mid" CALLS_BEGIN V3CALL("b", "{}") CALLS_END, "mid", 2,
     {{"a", "{}"}, {"b", "{}"}}, 0},
    {"64-byte name", CALLS_BEGIN V31CALL(NAME64, "{}") CALLS_END, "", 1, {{NAME64, "{}"}}, 0},
    {"no markers, near-markers in content", "a < b <｜tool▁ c <｜tool▁calls▁begi", "a < b <｜tool▁ c <｜tool▁calls▁begi",
     0, {{0}}, 0},
    {"end markers in content are literal", "x " CALL_END " y " CALLS_END, "x " CALL_END " y " CALLS_END, 0, {{0}}, 0},
    {"empty output", "", "", 0, {{0}}, 0},
    {"empty section", CALLS_BEGIN CALLS_END, "", 0, {{0}}, 0},
    {"section begin only", "Hi" CALLS_BEGIN, "Hi", 0, {{0}}, 0},

    /* malformed: the raw call text becomes content, with a warning */
    {"call_end inside a JSON string",
     CALLS_BEGIN CALL_BEGIN "function" SEP "f\n```json\n{\"s\": \"" CALL_END "\"}\n```" CALL_END CALLS_END,
     CALL_BEGIN "function" SEP "f\n```json\n{\"s\": \"" CALL_END "\"}\n```" CALL_END, 0, {{0}}, 1},
    {"bad JSON", CALLS_BEGIN V3CALL("get_weather", "{\"a\": }") CALLS_END, V3CALL("get_weather", "{\"a\": }"), 0, {{0}},
     1},
    {"good, bad, good",
     CALLS_BEGIN V3CALL("a", "{}") "\n" V3CALL("b", "{bad") "\n" V3CALL("c", "{\"x\":1}") CALLS_END,
     V3CALL("b", "{bad"), 2, {{"a", "{}"}, {"c", "{\"x\":1}"}}, 1},
    {"empty name (V3)", CALLS_BEGIN CALL_BEGIN "function" SEP "\n```json\n{}\n```" CALL_END CALLS_END,
     CALL_BEGIN "function" SEP "\n```json\n{}\n```" CALL_END, 0, {{0}}, 1},
    {"empty name (V3.1)", CALLS_BEGIN V31CALL("", "{}") CALLS_END, V31CALL("", "{}"), 0, {{0}}, 1},
    {"name with a space (V3.1)", CALLS_BEGIN V31CALL("get weather", "{}") CALLS_END, V31CALL("get weather", "{}"), 0,
     {{0}}, 1},
    {"name with a space (V3)", CALLS_BEGIN V3CALL("get weather", "{}") CALLS_END, V3CALL("get weather", "{}"), 0,
     {{0}}, 1},
    {"65-byte name", CALLS_BEGIN V31CALL(NAME64 "x", "{}") CALLS_END, V31CALL(NAME64 "x", "{}"), 0, {{0}}, 1},
    {"no separator", CALLS_BEGIN CALL_BEGIN "get_weather{}" CALL_END CALLS_END, CALL_BEGIN "get_weather{}" CALL_END, 0,
     {{0}}, 1},
    {"arguments are an array", CALLS_BEGIN V3CALL("f", "[1, 2]") CALLS_END, V3CALL("f", "[1, 2]"), 0, {{0}}, 1},
    {"arguments are a string", CALLS_BEGIN V31CALL("f", "\"x\"") CALLS_END, V31CALL("f", "\"x\""), 0, {{0}}, 1},
    {"empty arguments", CALLS_BEGIN V31CALL("f", "") CALLS_END, V31CALL("f", ""), 0, {{0}}, 1},
    {"text after the closing fence",
     CALLS_BEGIN CALL_BEGIN "function" SEP "f\n```json\n{}\n```\nextra" CALL_END CALLS_END,
     CALL_BEGIN "function" SEP "f\n```json\n{}\n```\nextra" CALL_END, 0, {{0}}, 1},
    {"unterminated call at the end", "Hi " CALLS_BEGIN CALL_BEGIN "function" SEP "f\n```json\n{\"a\": ",
     "Hi " CALL_BEGIN "function" SEP "f\n```json\n{\"a\": ", 0, {{0}}, 1},
    {"unterminated call ending in a marker prefix",
     CALLS_BEGIN CALL_BEGIN "function" SEP "f\n```json\n{\"a\": 1}\n```<｜tool▁call▁e",
     CALL_BEGIN "function" SEP "f\n```json\n{\"a\": 1}\n```<｜tool▁call▁e", 0, {{0}}, 1},
    {"calls_end inside a call", CALLS_BEGIN CALL_BEGIN "function" SEP "f\n{" CALLS_END "after",
     CALL_BEGIN "function" SEP "f\n{" "after", 0, {{0}}, 1},
    {"call_begin inside a call", CALLS_BEGIN CALL_BEGIN "function" SEP "f\n{" V31CALL("g", "{}") CALLS_END,
     CALL_BEGIN "function" SEP "f\n{", 1, {{"g", "{}"}}, 1},
    {"text between calls", CALLS_BEGIN V3CALL("a", "{}") "\nhmm,  wait \n" V3CALL("b", "{}") CALLS_END, "hmm,  wait", 2,
     {{"a", "{}"}, {"b", "{}"}}, 1},
    {"text before the first call", CALLS_BEGIN " oops " V31CALL("a", "{}") CALLS_END, "oops", 1, {{"a", "{}"}}, 1},
    {"section ends in a marker prefix", CALLS_BEGIN V31CALL("a", "{}") "<｜tool▁calls▁en", "<｜tool▁calls▁en", 1,
     {{"a", "{}"}}, 1},
    {"text after a bare call", V31CALL("f", "{}") " Done.", "Done.", 1, {{"f", "{}"}}, 1},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

/* ---- recording events ---- */

typedef struct rec {
    rbuf log;       /* "\x1e" C text | "\x1e" F index ":" name ":" args, adjacent CONTENT merged */
    rbuf content;
    int n_calls;
    int last_content;
    int aligned;     /* pieces are whole characters: deltas must be valid UTF-8 */
    int bad_utf8;
    int fail;        /* the callback returns this */
} rec;

static int record(void *ctx, const toolcall_event *ev) {
    rec *r = ctx;
    if (ev->kind == TOOLCALL_CONTENT) {
        if (ev->len == 0) return -1;
        if (r->aligned && utf8_validate(ev->text, ev->len) != ev->len) r->bad_utf8 = 1;
        if (!r->last_content) rbuf_append(&r->log, "\x1e" "C", 2);
        rbuf_append(&r->log, ev->text, ev->len);
        rbuf_append(&r->content, ev->text, ev->len);
        r->last_content = 1;
        return r->fail;
    }
    char head[32];
    int n = snprintf(head, sizeof head, "\x1e" "F%d:", ev->index);
    rbuf_append(&r->log, head, (size_t)n);
    rbuf_append(&r->log, ev->name, strlen(ev->name));
    rbuf_append(&r->log, ":", 1);
    rbuf_append(&r->log, ev->arguments, ev->arguments_len);
    if (ev->index != r->n_calls || strlen(ev->arguments) != ev->arguments_len) r->bad_utf8 = 2;
    r->n_calls++;
    r->last_content = 0;
    return r->fail;
}

static void rec_free(rec *r) {
    rbuf_free(&r->log);
    rbuf_free(&r->content);
}

typedef struct run {
    rec r;
    char warning[256];
    int count;
} run;

static int is_char_start(const char *s, size_t i) { return ((unsigned char)s[i] & 0xC0) != 0x80; }

static int content_is_prefix(const rec *r, const char *want) {
    return r->content.len <= strlen(want) && (r->content.len == 0 || !memcmp(r->content.p, want, r->content.len));
}

/* Streams c->text cut at cuts[0..n_cuts) (ascending); fills out. */
static void stream(const tcase *c, const size_t *cuts, int n_cuts, run *out) {
    size_t len = strlen(c->text), from = 0;
    memset(out, 0, sizeof *out);
    out->r.aligned = 1;
    for (int i = 0; i < n_cuts; i++) out->r.aligned &= is_char_start(c->text, cuts[i]) || cuts[i] == len;
    toolcall_parser *p = toolcall_new(record, &out->r);
    cr_assert(p);
    cr_assert_null(toolcall_warning(p));
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        cr_assert_eq(toolcall_push(p, c->text + from, to - from), 0);
        if (!content_is_prefix(&out->r, c->content))
            cr_assert_fail("%s: emitted content '%s' is not a prefix of '%s'", c->what, out->r.content.p, c->content);
        from = to;
    }
    cr_assert_eq(toolcall_finish(p), 0);
    out->count = toolcall_count(p);
    snprintf(out->warning, sizeof out->warning, "%s", toolcall_warning(p) ? toolcall_warning(p) : "");
    toolcall_free(p);
    if (out->r.bad_utf8) cr_assert_fail("%s: a delta ends inside a character, or a bad CALL event", c->what);
}

/* The run of cuts must equal the one-piece reference run. */
static void expect_same(const tcase *c, const size_t *cuts, int n_cuts, const run *ref) {
    run got;
    stream(c, cuts, n_cuts, &got);
    const char *log = got.r.log.p ? got.r.log.p : "", *ref_log = ref->r.log.p ? ref->r.log.p : "";
    if (strcmp(log, ref_log) || strcmp(got.warning, ref->warning) || got.count != ref->count)
        cr_assert_fail("%s: cut at %d places (first %zu, last %zu): events '%s' warning '%s', one piece: '%s' / '%s'",
                       c->what, n_cuts, n_cuts ? cuts[0] : 0, n_cuts ? cuts[n_cuts - 1] : 0, log, got.warning,
                       ref_log, ref->warning);
    rec_free(&got.r);
}

/* The one-piece run, checked against the hand-written expectation. */
static void reference(const tcase *c, run *ref) {
    stream(c, NULL, 0, ref);
    cr_assert_str_eq(ref->r.content.p ? ref->r.content.p : "", c->content, "%s", c->what);
    cr_assert_eq(ref->count, c->n_calls, "%s", c->what);
    cr_assert_eq(ref->warning[0] != 0, c->warns, "%s: warning '%s'", c->what, ref->warning);
}

/* ---- tests ---- */

Test(toolcall, marker_strings_match_the_tokenizer) {
    /* tokenizer.json added tokens 128806..128814; U+FF5C and U+2581 */
    cr_expect_str_eq(CALLS_BEGIN, "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>");
    cr_expect_str_eq(CALL_END, "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>");
    cr_expect_str_eq(SEP, "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>");
    for (int m = 0; m < M_NONE; m++) cr_expect_lt(strlen(MARKER_TEXT[m]), MARKER_MAX);
}

Test(toolcall, parse_matches_expected) {
    for (size_t k = 0; k < N_CASES; k++) {
        const tcase *c = &CASES[k];
        toolcall_result res;
        cr_assert_eq(toolcall_parse(c->text, strlen(c->text), &res), 0);
        cr_expect_str_eq(res.content, c->content, "%s", c->what);
        cr_expect_eq(res.content_len, strlen(c->content), "%s", c->what);
        cr_expect_eq(res.warning[0] != 0, c->warns, "%s: warning '%s'", c->what, res.warning);
        cr_assert_eq(res.n_calls, c->n_calls, "%s", c->what);
        for (int i = 0; i < res.n_calls; i++) {
            cr_expect_str_eq(res.calls[i].name, c->calls[i][0], "%s: call %d", c->what, i);
            cr_expect_str_eq(res.calls[i].arguments, c->calls[i][1], "%s: call %d", c->what, i);
        }
        toolcall_result_free(&res);
    }
}

Test(toolcall, expected_calls_are_json_objects) {
    for (size_t k = 0; k < N_CASES; k++)
        for (int i = 0; i < CASES[k].n_calls; i++) {
            json_t *j = json_loads(CASES[k].calls[i][1], 0, NULL);
            cr_expect(json_is_object(j), "%s: call %d: test data is not an object", CASES[k].what, i);
            json_decref(j);
        }
}

Test(toolcall, stream_every_cut) {
    for (size_t k = 0; k < N_CASES; k++) {
        run ref;
        reference(&CASES[k], &ref);
        for (size_t i = 0; i <= strlen(CASES[k].text); i++) expect_same(&CASES[k], &i, 1, &ref);
        rec_free(&ref.r);
    }
}

Test(toolcall, stream_every_near_pair_of_cuts) {
    for (size_t k = 0; k < N_CASES; k++) {
        run ref;
        reference(&CASES[k], &ref);
        size_t n = strlen(CASES[k].text);
        for (size_t i = 0; i <= n; i++)
            for (size_t j = i; j <= n && j <= i + 40; j++) expect_same(&CASES[k], (size_t[]){i, j}, 2, &ref);
        rec_free(&ref.r);
    }
}

/* Pieces of one byte, or of one character, each. */
static void expect_pieces(const tcase *c, int by_char, const run *ref) {
    size_t n = strlen(c->text), cuts[1024];
    int n_cuts = 0;
    cr_assert_lt(n, sizeof cuts / sizeof cuts[0]);
    for (size_t i = 1; i < n; i++)
        if (!by_char || is_char_start(c->text, i)) cuts[n_cuts++] = i;
    expect_same(c, cuts, n_cuts, ref);
}

Test(toolcall, stream_byte_and_char_pieces) {
    for (size_t k = 0; k < N_CASES; k++) {
        run ref;
        reference(&CASES[k], &ref);
        expect_pieces(&CASES[k], 0, &ref);
        expect_pieces(&CASES[k], 1, &ref);
        rec_free(&ref.r);
    }
}

/* Content goes out as soon as it cannot be a marker; checked by hand. */
Test(toolcall, content_streams_before_the_call) {
    rec r = {0};
    toolcall_parser *p = toolcall_new(record, &r);
    cr_assert(p);
    cr_assert_eq(toolcall_push(p, "Hello <", 7), 0);
    cr_expect_eq(r.content.len, 6, "'<' may start a marker: held");
    cr_assert_eq(toolcall_push(p, "b>", 2), 0);
    cr_expect_str_eq(r.content.p, "Hello <b>");
    const char *rest = " " CALLS_BEGIN CALL_BEGIN "f" SEP "{\"a\":";
    cr_assert_eq(toolcall_push(p, rest, strlen(rest)), 0);
    cr_expect_str_eq(r.content.p, "Hello <b> ");
    cr_expect_eq(toolcall_count(p), 0, "the call is incomplete");
    const char *end = "1}" CALL_END;
    cr_assert_eq(toolcall_push(p, end, strlen(end)), 0);
    cr_expect_eq(toolcall_count(p), 1, "a call is emitted as soon as its end marker arrives");
    cr_expect_str_eq(r.log.p, "\x1e" "CHello <b> \x1e" "F0:f:{\"a\":1}");
    cr_assert_eq(toolcall_finish(p), 0);
    cr_expect_null(toolcall_warning(p));
    toolcall_free(p);
    rec_free(&r);
}

Test(toolcall, warning_names_the_problem) {
    toolcall_result res;
    const char *text = CALLS_BEGIN V3CALL("f", "[1]") CALLS_END;
    cr_assert_eq(toolcall_parse(text, strlen(text), &res), 0);
    cr_expect(strstr(res.warning, "not a JSON object"), "%s", res.warning);
    toolcall_result_free(&res);
    text = CALLS_BEGIN CALL_BEGIN "function" SEP "f\n{";
    cr_assert_eq(toolcall_parse(text, strlen(text), &res), 0);
    cr_expect(strstr(res.warning, "unterminated"), "%s", res.warning);
    toolcall_result_free(&res);
}

Test(toolcall, callback_failure_fails_the_push) {
    rec r = {.fail = 1};
    toolcall_parser *p = toolcall_new(record, &r);
    cr_assert(p);
    cr_expect_eq(toolcall_push(p, "Hi", 2), -1);
    toolcall_free(p);
    rec_free(&r);

    rec r2 = {.fail = 1};
    p = toolcall_new(record, &r2);
    const char *text = V31CALL("f", "{}");
    cr_expect_eq(toolcall_push(p, text, strlen(text)), -1);
    toolcall_free(p);
    rec_free(&r2);
}

Test(toolcall, free_null) { toolcall_free(NULL); }
