/* test/unit/test_constrain.c — common/constrain + common/json_schema.
 *
 * References: hand-written accept/reject strings per JSON / schema feature (fed
 * byte by byte through the single-byte tokens); jansson's parser plus
 * cons_json_validate for the outputs of random walks (a uniformly random allowed
 * token at each step, fixed seeds) over ~35 schemas and the tool-call format;
 * cons_token_allowed (one token at a time, no fast paths) for the mask itself.
 * The tokenizer comes from $MLASERVE_TOKENIZER (scripts/run-tests.sh sets it). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/constrain.h"
#include "common/tokenizer.h"

static tokenizer *tok;
static cons_vocab *voc;
static int32_t n_logits, eos_id, byte_tok[256];

static void setup(void) {
    const char *dir = getenv("MLASERVE_TOKENIZER");
    cr_assert(dir && *dir, "MLASERVE_TOKENIZER is not set (run through scripts/run-tests.sh)");
    ms_err err = {{0}};
    tok = tokenizer_load(dir, &err);
    cr_assert(tok, "tokenizer_load: %s", err.msg);
    eos_id = tokenizer_eos_id(tok);
    n_logits = tokenizer_vocab_size(tok) + 465; /* padded like config.json's 129280 */
    voc = cons_vocab_create(tok, eos_id, n_logits, &err);
    cr_assert(voc, "cons_vocab_create: %s", err.msg);
    for (int b = 0; b < 256; b++) byte_tok[b] = -1;
    for (int32_t id = 0; id < tokenizer_vocab_size(tok); id++) {
        size_t len;
        const char *s = tokenizer_token_bytes(tok, id, &len);
        if (s && len == 1 && !tokenizer_is_special(tok, id) && byte_tok[(unsigned char)*s] < 0)
            byte_tok[(unsigned char)*s] = id;
    }
}

static void teardown(void) {
    cons_vocab_free(voc);
    tokenizer_free(tok);
}

static json_t *parse(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    cr_assert(j, "bad JSON in the test itself: %s: %s", text, e.text);
    return j;
}

static cons_grammar *grammar(const char *schema_text) {
    ms_err err = {{0}};
    json_t *s = schema_text ? parse(schema_text) : NULL;
    cons_grammar *g = cons_grammar_json(s, &err);
    cr_assert(g, "cons_grammar_json(%s): %s", schema_text ? schema_text : "NULL", err.msg);
    json_decref(s);
    return g;
}

static cons_state *state(const cons_grammar *g, int after_think) {
    ms_err err = {{0}};
    cons_state *st = cons_state_create(g, voc, after_think, &err);
    cr_assert(st, "cons_state_create: %s", err.msg);
    return st;
}

/* ---- schema errors ------------------------------------------------------------- */

static void expect_error(const char *schema, const char *needle) {
    ms_err err = {{0}};
    json_t *s = parse(schema);
    cons_grammar *g = cons_grammar_json(s, &err);
    json_decref(s);
    cr_expect_null(g, "%s should be rejected", schema);
    cons_grammar_free(g);
    cr_expect(strstr(err.msg, needle), "%s: error '%s' should mention '%s'", schema, err.msg, needle);
}

Test(constrain, unsupported_keywords_are_named) {
    expect_error("{\"type\":\"number\",\"multipleOf\":0}", "'multipleOf' must be a positive number");
    expect_error("{\"type\":\"number\",\"multipleOf\":1e-12}", "at most 9 decimal places");
    expect_error("{\"type\":\"integer\",\"multipleOf\":100000}", "automaton states");
    expect_error("{\"type\":\"integer\",\"multipleOf\":7,\"minimum\":1,\"maximum\":6}", "multiple of 7 within the bounds");
    expect_error("{\"allOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", "no common type");
    expect_error("{\"allOf\":[{\"properties\":{\"a\":{\"type\":\"string\"}}},{\"properties\":{\"a\":{\"type\":"
                 "\"integer\"}}}]}",
                 "property 'a' differently");
    expect_error("{\"allOf\":[{\"properties\":{\"a\":{}},\"additionalProperties\":false},{\"properties\":{\"b\":{}}}]}",
                 "additionalProperties false");
    expect_error("{\"allOf\":[{\"pattern\":\"a\"},{\"pattern\":\"b\"}]}", "different 'pattern'");
    expect_error("{\"allOf\":[]}", "'allOf' must be an array of 1 to 64");
    expect_error("{\"$defs\":{\"n\":{\"allOf\":[{\"$ref\":\"#/$defs/n\"}]}},\"$ref\":\"#/$defs/n\"}", "recursive $ref");
    expect_error("{\"type\":\"string\",\"pattern\":\"(a\"}", "'pattern' (a: regex: '(' without ')'");
    expect_error("{\"type\":\"string\",\"pattern\":\"^\\\"$\"}", "nothing can match");
    expect_error("{\"type\":\"string\",\"pattern\":\"(?=a)\"}", "(?...)");
    expect_error("{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no integer");
    expect_error("{\"type\":\"integer\",\"minimum\":\"0\"}", "must be numbers");
    expect_error("{\"not\":{\"type\":\"string\"}}", "'not'");
    expect_error("{\"if\":{},\"then\":{}}", "'if'");
    expect_error("{\"type\":\"object\",\"patternProperties\":{}}", "'patternProperties'");
    expect_error("{\"type\":\"array\",\"uniqueItems\":true}", "'uniqueItems'");
    expect_error("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"multipleOf\":\"2\"}}}", "'multipleOf'");
    expect_error("{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"}],\"minItems\":2}", "exactly its 1 items");
    expect_error("{\"type\":\"array\",\"prefixItems\":{}}", "'prefixItems' must be an array");
    expect_error("{\"$ref\":\"http://example.com/s.json\"}", "$ref 'http://example.com/s.json' is not supported");
    expect_error("{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#/$defs/n\"}},"
                 "\"required\":[\"next\"]}},\"$ref\":\"#/$defs/n\"}",
                 "no finite value");
    expect_error("{\"$ref\":\"#\"}", "no finite value");
    /* fine with one expansion (the inner alternative is dropped), two overlap */
    expect_error("{\"$defs\":{\"n\":{\"anyOf\":[{\"$ref\":\"#/$defs/n\"},{\"type\":\"object\"}]}},\"$ref\":\"#/$defs/n\"}",
                 "'anyOf' alternatives");
    expect_error("{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{\"a\":{}}}]}",
                 "'anyOf' alternatives that can start with the same character");
    expect_error("{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", "'oneOf' alternatives");
    expect_error("{\"type\":\"strin\"}", "unknown 'type' 'strin'");
    expect_error("{\"type\":\"string\",\"minLength\":5,\"maxLength\":2}", "'minLength' 5 is above 'maxLength' 2");
    expect_error("{\"type\":\"string\",\"maxLength\":-1}", "'maxLength' must be a non-negative integer");
    expect_error("false", "schema false");
    expect_error("{\"enum\":[]}", "'enum' must be a non-empty array");
    expect_error("{\"type\":\"integer\",\"enum\":[\"a\"]}", "no value satisfies");
    expect_error("{\"type\":[\"array\",\"null\"],\"minItems\":1000000000}", "at least");
    expect_error("{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"minLength\":2000000}}}",
                 "at least 2000002 bytes");
    /* 40 nested arrays: more frames than the matcher has */
    char deep[1024] = "";
    for (int i = 0; i < 40; i++) strcat(deep, "{\"type\":\"array\",\"items\":");
    strcat(deep, "{\"type\":\"integer\"}");
    for (int i = 0; i < 40; i++) strcat(deep, "}");
    expect_error(deep, "nesting needs");
}

Test(constrain, tool_call_argument_errors) {
    ms_err err = {{0}};
    const char *dup[] = {"f", "f"};
    const json_t *none[] = {NULL, NULL};
    cr_expect_null(cons_grammar_tool_calls(dup, none, 2, 0, CONS_TOOLS_V3, &err));
    cr_expect(strstr(err.msg, "'f' appears twice"), "%s", err.msg);
    const char *nl[] = {"a\nb"};
    cr_expect_null(cons_grammar_tool_calls(nl, none, 1, 0, CONS_TOOLS_V3, &err));
    cr_expect(strstr(err.msg, "newline"), "%s", err.msg);
    cr_expect_null(cons_grammar_tool_calls(nl, none, 0, 0, CONS_TOOLS_V31, &err));
    const char *one[] = {"get"};
    json_t *bad = parse("{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"array\",\"format\":\"x\",\"uniqueItems\":true}}}");
    const json_t *params[] = {bad};
    cr_expect_null(cons_grammar_tool_calls(one, params, 1, 0, CONS_TOOLS_V3, &err));
    cr_expect(strstr(err.msg, "tool 'get' parameters: json_schema keyword 'uniqueItems' is not supported"), "%s", err.msg);
    json_decref(bad);
}

/* ---- the byte matcher, through single-byte tokens -------------------------------- */

/* Feeds text byte by byte: 'A' all accepted and complete, 'P' all accepted but
 * incomplete, 'R' some byte rejected. */
static char feed(const char *schema, int after_think, const char *text, size_t len) {
    cons_grammar *g = grammar(schema);
    cons_state *st = state(g, after_think);
    char r = 'A';
    for (size_t i = 0; i < len && r == 'A'; i++) {
        int32_t t = byte_tok[(unsigned char)text[i]];
        cr_assert(t >= 0);
        if (cons_accept(st, t) < 0) r = 'R';
    }
    if (r == 'A' && !cons_is_complete(st)) r = 'P';
    if (r == 'A') cr_expect_eq(cons_accept(st, eos_id), 0, "EOS after a complete document");
    cons_state_free(st);
    cons_grammar_free(g);
    return r;
}

typedef struct bcase {
    const char *schema; /* NULL: json_object mode */
    const char *text;
    char expect;
} bcase;

#define S_STR "{\"type\":\"string\"}"
#define S_LEN "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}"
#define S_NUM "{\"type\":\"number\"}"
#define S_INT "{\"type\":\"integer\"}"
#define S_OBJ \
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}},\"required\":[\"b\"]}"
#define S_ARR "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}"
#define S_ENUM "{\"enum\":[\"red\",\"green\",\"dark red\"]}"
#define S_NENUM "{\"type\":\"object\",\"properties\":{\"n\":{\"enum\":[1,12,null]}},\"required\":[\"n\"]}"

static const bcase byte_cases[] = {
    /* strings: escapes, \u with surrogate pairs, control bytes, UTF-8 */
    {S_STR, "\"abc\"", 'A'},
    {S_STR, "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", 'A'},
    {S_STR, "\"\\u00e9\\uD83D\\uDE00\\uFFFF\"", 'A'},
    {S_STR, "\"\\uD83D\"", 'R'},       /* lone high surrogate */
    {S_STR, "\"\\uD83D\\u0041\"", 'R'}, /* high surrogate + non-low */
    {S_STR, "\"\\uDE00\"", 'R'},        /* lone low surrogate */
    {S_STR, "\"\\u0000\"", 'R'},        /* jansson refuses it */
    {S_STR, "\"\\u12G4\"", 'R'},
    {S_STR, "\"\\x\"", 'R'},
    {S_STR, "\"a\nb\"", 'R'}, /* raw control byte */
    {S_STR, "\"a\tb\"", 'R'},
    {S_STR, "\"\x7f\"", 'A'},
    {S_STR, "\"é中😀\"", 'A'},
    {S_STR, "\"\xC3\"", 'R'},             /* truncated character */
    {S_STR, "\"\xC0\x80\"", 'R'},         /* overlong */
    {S_STR, "\"\xED\xA0\x80\"", 'R'},     /* surrogate in UTF-8 */
    {S_STR, "\"\xF4\x90\x80\x80\"", 'R'}, /* above U+10FFFF */
    {S_STR, "\"\xFF\"", 'R'},
    {S_STR, "\"abc", 'P'},
    {S_STR, " \n\t\"x\"", 'A'}, /* leading whitespace slot */
    {S_STR, "\"x\" ", 'R'},     /* nothing after the value */
    {S_STR, "x", 'R'},
    {S_LEN, "\"a\"", 'R'},
    {S_LEN, "\"ab\"", 'A'},
    {S_LEN, "\"abc\"", 'A'},
    {S_LEN, "\"abcd\"", 'R'},
    {S_LEN, "\"é中\"", 'A'},             /* code points, not bytes */
    {S_LEN, "\"\\n\\t\\u0041\"", 'A'},    /* an escape is one character */
    {S_LEN, "\"\\uD83D\\uDE00x\"", 'A'},  /* a surrogate pair is one */
    {S_LEN, "\"\\uD83D\\uDE00xyz\"", 'R'},
    /* numbers (a top-level number may go on after its first digit) */
    {S_NUM, "0", 'A'},
    {S_NUM, "-0", 'A'},
    {S_NUM, "01", 'R'},
    {S_NUM, "1.5e+10", 'A'},
    {S_NUM, "12.25E-3", 'A'},
    {S_NUM, "1.", 'P'},
    {S_NUM, "-", 'P'},
    {S_NUM, ".5", 'R'},
    {S_NUM, "+1", 'R'},
    {S_NUM, "1e", 'P'},
    {S_NUM, "1.e5", 'R'},
    {S_NUM, "123456789012345678", 'A'},
    {S_NUM, "1234567890123456789", 'R'}, /* 19 digits */
    {S_NUM, "1e99", 'A'},
    {S_NUM, "1e123", 'R'},
    {S_INT, "42", 'A'},
    {S_INT, "-7", 'A'},
    {S_INT, "1.0", 'R'},
    {S_INT, "1e5", 'R'},
    /* literals */
    {"{\"type\":\"boolean\"}", "true", 'A'},
    {"{\"type\":\"boolean\"}", "false", 'A'},
    {"{\"type\":\"boolean\"}", "tru", 'P'},
    {"{\"type\":\"boolean\"}", "null", 'R'},
    {"{\"type\":\"null\"}", "null", 'A'},
    {S_ENUM, "\"red\"", 'A'},
    {S_ENUM, "\"dark red\"", 'A'},
    {S_ENUM, "\"re\"", 'R'},
    {S_ENUM, "\"blue\"", 'R'},
    {S_NENUM, "{\"n\":1}", 'A'},
    {S_NENUM, "{\"n\":12}", 'A'},
    {S_NENUM, "{\"n\": null }", 'A'},
    {S_NENUM, "{\"n\":123}", 'R'},
    {S_NENUM, "{\"n\":2}", 'R'},
    {"{\"const\":\"point\"}", "\"point\"", 'A'},
    {"{\"const\":\"point\"}", "\"poin\"", 'R'},
    {"{\"const\":{\"a\":[1,true]}}", "{\"a\":[1,true]}", 'A'},
    /* objects: declared order, required, whitespace */
    {S_OBJ, "{\"a\":1,\"b\":\"x\"}", 'A'},
    {S_OBJ, "{\"b\":\"x\"}", 'A'},
    {S_OBJ, "{ \"a\" : -1 , \"b\" : \"x\" }", 'A'},
    {S_OBJ, "{\n  \"a\": 1,\n  \"b\": \"x\"\n}", 'A'},
    {S_OBJ, "{\"b\":\"x\",\"a\":1}", 'R'}, /* order */
    {S_OBJ, "{\"a\":1}", 'R'},             /* b is required */
    {S_OBJ, "{}", 'R'},
    {S_OBJ, "{\"c\":1}", 'R'},
    {S_OBJ, "{\"a\":1,}", 'R'},
    {S_OBJ, "{\"b\":\"x\",", 'R'}, /* nothing may follow b */
    {S_OBJ, "{\"a\":\"1\"", 'R'},
    {S_OBJ, "{\"b\"", 'P'},
    {S_OBJ, "{                                \"b\":\"x\"}", 'A'}, /* 32 spaces */
    {S_OBJ, "{                                 \"b\":\"x\"}", 'R'}, /* 33 */
    {"{\"type\":\"object\"}", "{\"k\":[1,{\"x\":null}],\"k\":\"v\",\"\":-0.5e3}", 'A'},
    {"{\"type\":\"object\"}", "[1]", 'R'},
    {NULL, "{}", 'A'},
    {NULL, "{\"a\":{\"b\":[true,false,null,\"s\",{}]}}", 'A'},
    {NULL, "\"s\"", 'R'},
    {NULL, "{\"k\":}", 'R'},
    {NULL, "{\"k\" 1}", 'R'},
    {NULL, "{'k':1}", 'R'},
    {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}", "{\"x\":1,\"y\":-2}", 'A'},
    {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}", "{\"x\":\"s\"}", 'R'},
    {"{\"type\":\"object\",\"additionalProperties\":false}", "{ }", 'A'},
    {"{\"type\":\"object\",\"additionalProperties\":false}", "{\"a\":1}", 'R'},
    {"{\"type\":\"object\",\"properties\":{\"名\":{},\"q\\\"k\":{}},\"required\":[\"名\",\"q\\\"k\"]}",
     "{\"名\":[],\"q\\\"k\":0}", 'A'},
    /* arrays */
    {S_ARR, "[]", 'R'},
    {S_ARR, "[1]", 'A'},
    {S_ARR, "[ 1 , 2 ]", 'A'},
    {S_ARR, "[1,2,3]", 'R'},
    {S_ARR, "[1,]", 'R'},
    {S_ARR, "[\"1\"]", 'R'},
    {"{\"type\":\"array\",\"maxItems\":0}", "[ ]", 'A'},
    {"{\"type\":\"array\",\"maxItems\":0}", "[1", 'R'},
    {"{\"type\":\"array\"}", "[[],[[1]],{\"a\":\"b\"}]", 'A'},
    /* unions */
    {"{\"type\":[\"string\",\"null\"]}", "null", 'A'},
    {"{\"type\":[\"string\",\"null\"]}", "\"x\"", 'A'},
    {"{\"type\":[\"string\",\"null\"]}", "1", 'R'},
    {"{\"type\":[\"integer\",\"number\"]}", "1.5", 'A'},
    {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":{\"x\":{}},\"required\":[\"x\"]}]}",
     "{\"x\":5}", 'A'},
    {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":{\"x\":{}},\"required\":[\"x\"]}]}", "5",
     'A'},
    {"{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"array\"}]}", "true", 'R'},
    {"{\"$defs\":{\"p\":{\"type\":\"integer\"}},\"type\":\"object\",\"properties\":{\"x\":{\"$ref\":\"#/$defs/p\"}},"
     "\"required\":[\"x\"]}",
     "{\"x\":3}", 'A'},
    {"{\"definitions\":{\"p\":{\"type\":\"integer\"}},\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/p\"}}",
     "[\"3\"]", 'R'},
};

Test(constrain, byte_matcher_cases, .init = setup, .fini = teardown) {
    for (size_t i = 0; i < sizeof byte_cases / sizeof *byte_cases; i++) {
        const bcase *c = &byte_cases[i];
        char got = feed(c->schema, 0, c->text, strlen(c->text));
        cr_expect_eq(got, c->expect, "case %zu: schema %s, text '%s': got %c, want %c", i,
                     c->schema ? c->schema : "NULL", c->text, got, c->expect);
    }
    /* a NUL byte is never raw text inside a string */
    cr_expect_eq(feed(S_STR, 0, "\"a\0\"", 4), 'R');
    /* after_think: free text, then the grammar */
    const char *t1 = "<think>\nfree < text </thin </think>{\"b\":\"x\"}";
    cr_expect_eq(feed(S_OBJ, 1, t1, strlen(t1)), 'A');
    const char *t2 = "no json yet {\"b\":";
    cr_expect_eq(feed(S_OBJ, 1, t2, strlen(t2)), 'P');
    const char *t3 = "x</think>nope";
    cr_expect_eq(feed(S_OBJ, 1, t3, strlen(t3)), 'R');
    const char *t4 = "<</think>\n{\"b\":\"\"}";
    cr_expect_eq(feed(S_OBJ, 1, t4, strlen(t4)), 'A');
}

/* Feeds the tokens of text (added tokens recognised): 'A', 'P' or 'R' as feed(). */
static char feed_tokens(const cons_grammar *g, int after_think, const char *text) {
    ms_err err = {{0}};
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(tok, text, strlen(text), &ids, &n, &err), 0, "%s", err.msg);
    cons_state *st = state(g, after_think);
    char r = 'A';
    for (size_t i = 0; i < n && r == 'A'; i++)
        if (cons_accept(st, ids[i]) < 0) r = 'R';
    if (r == 'A' && !cons_is_complete(st)) r = 'P';
    free(ids);
    cons_state_free(st);
    return r;
}

#define CALL(name, args) \
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>" name "\n```json\n" args "\n```<｜tool▁call▁end｜>"

Test(constrain, tool_call_texts, .init = setup, .fini = teardown) {
    const char *names[] = {"get_weather", "get", "search"};
    json_t *p0 = parse("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}");
    json_t *p2 = parse("{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"},\"n\":{\"type\":\"integer\"}},"
                       "\"required\":[\"q\"],\"additionalProperties\":false}");
    const json_t *params[] = {p0, NULL, p2};
    ms_err err = {{0}};
    cons_grammar *one = cons_grammar_tool_calls(names, params, 3, 0, CONS_TOOLS_V3, &err);
    cons_grammar *par = cons_grammar_tool_calls(names, params, 3, 1, CONS_TOOLS_V3, &err);
    cr_assert(one && par, "%s", err.msg);
    const char *single = "<｜tool▁calls▁begin｜>" CALL("get_weather", "{\"city\": \"Paris\"}") "<｜tool▁calls▁end｜>";
    const char *two = "<｜tool▁calls▁begin｜>" CALL("search", "{\"q\":\"x\",\"n\":3}") "\n" CALL("get", "{}") "<｜tool▁calls▁end｜>";
    cr_expect_eq(feed_tokens(one, 0, single), 'A');
    cr_expect_eq(feed_tokens(par, 0, single), 'A');
    cr_expect_eq(feed_tokens(par, 0, two), 'A');
    cr_expect_eq(feed_tokens(one, 0, two), 'R'); /* parallel = 0: exactly one call */
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL("nope", "{}") "<｜tool▁calls▁end｜>"), 'R');
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL("get_weather", "{\"town\":\"x\"}")), 'R');
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL("get", "[]")), 'R');
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL("get", "{}")), 'P');
    cr_expect_eq(feed_tokens(one, 0, "Sure! <｜tool▁calls▁begin｜>"), 'R');
    cr_expect_eq(feed_tokens(one, 1, "<think>hmm</think><｜tool▁calls▁begin｜>" CALL("get", "{}") "<｜tool▁calls▁end｜>"), 'A');
    /* the markers' spelling in bytes is not a marker */
    const char *m = "<｜tool▁calls▁begin｜>";
    cr_expect_eq(feed(NULL, 0, m, strlen(m)), 'R');
    cons_state *st = state(one, 0);
    cr_expect_eq(cons_accept(st, byte_tok['<']), -1);
    cons_state_free(st);
    /* and markers are never allowed inside JSON */
    cons_grammar *js = grammar(S_STR);
    cr_expect_eq(feed_tokens(js, 0, "\"a<｜tool▁sep｜>b\""), 'R');
    cons_grammar_free(js);
    cons_grammar_free(one);
    cons_grammar_free(par);
    json_decref(p0);
    json_decref(p2);
}

#define CALL31(name, args) "<｜tool▁call▁begin｜>" name "<｜tool▁sep｜>" args "<｜tool▁call▁end｜>"

/* DeepSeek-V3.1's format: no "function", no json fences, calls back to back. */
Test(constrain, tool_call_texts_v31, .init = setup, .fini = teardown) {
    const char *names[] = {"get_weather", "get", "search"};
    json_t *p0 = parse("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}");
    const json_t *params[] = {p0, NULL, NULL};
    ms_err err = {{0}};
    cons_grammar *one = cons_grammar_tool_calls(names, params, 3, 0, CONS_TOOLS_V31, &err);
    cons_grammar *par = cons_grammar_tool_calls(names, params, 3, 1, CONS_TOOLS_V31, &err);
    cr_assert(one && par, "%s", err.msg);
    const char *single = "<｜tool▁calls▁begin｜>" CALL31("get_weather", "{\"city\": \"Paris\"}") "<｜tool▁calls▁end｜>";
    const char *two = "<｜tool▁calls▁begin｜>" CALL31("search", "{\"q\":1}") CALL31("get", "{}") "<｜tool▁calls▁end｜>";
    cr_expect_eq(feed_tokens(one, 0, single), 'A');
    cr_expect_eq(feed_tokens(par, 0, single), 'A');
    cr_expect_eq(feed_tokens(par, 0, two), 'A');
    cr_expect_eq(feed_tokens(one, 0, two), 'R'); /* parallel = 0: exactly one call */
    cr_expect_eq(feed_tokens(par, 0, "<｜tool▁calls▁begin｜>" CALL31("get", "{}") "\n" CALL31("get", "{}")), 'R');
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL("get", "{}") "<｜tool▁calls▁end｜>"), 'R'); /* V3's */
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL31("nope", "{}") "<｜tool▁calls▁end｜>"), 'R');
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL31("get_weather", "{\"town\":\"x\"}")), 'R');
    cr_expect_eq(feed_tokens(one, 0, "<｜tool▁calls▁begin｜>" CALL31("get", "{}")), 'P');
    char r31 = feed_tokens(one, 1, "<think>hmm</think><｜tool▁calls▁begin｜>" CALL31("get", "{}") "<｜tool▁calls▁end｜>");
    cr_expect_eq(r31, 'A', "got %c", r31);
    char r31b = feed_tokens(one, 1, "<think>hmm</think><｜tool▁calls▁begin｜>" CALL31("get_weather", "{\"city\":\"x\"}") "<｜tool▁calls▁end｜>");
    cr_expect_eq(r31b, 'A', "got %c", r31b);
    char r31c = feed_tokens(one, 1, "<think>hmm</think>" "<｜tool▁calls▁begin｜>");
    cr_expect_eq(r31c, 'P', "got %c", r31c);
    cons_grammar_free(one);
    cons_grammar_free(par);
    json_decref(p0);
}

/* Schema-less values nest up to the frame limit: beyond it '[' is refused, and the
 * document can still be closed. */
static void nesting_limit_for_any_values(void) {
    cons_grammar *g = grammar(NULL);
    cons_state *st = state(g, 0);
    const char *head = "{\"a\":";
    for (const char *p = head; *p; p++) cr_assert_eq(cons_accept(st, byte_tok[(unsigned char)*p]), 0);
    int depth = 0;
    while (depth < 100 && cons_accept(st, byte_tok['[']) == 0) depth++;
    cr_expect_eq(depth, 30, "root + object + 30 arrays = 32 frames");
    cr_expect_eq(cons_accept(st, byte_tok['{']), -1);
    cr_expect_eq(cons_accept(st, byte_tok['"']), -1, "no frame left for any item");
    cr_expect_eq(cons_accept(st, byte_tok['1']), -1);
    cr_expect_eq(cons_min_tokens(st), depth + 1);
    for (int i = 0; i < depth; i++) cr_assert_eq(cons_accept(st, byte_tok[']']), 0);
    cr_expect_eq(cons_accept(st, byte_tok['}']), 0);
    cr_expect(cons_is_complete(st));
    cons_state_free(st);
    cons_grammar_free(g);
}

Test(constrain, accept_of_a_disallowed_token_and_limits, .init = setup, .fini = teardown) {
    cons_grammar *g = grammar(S_OBJ);
    cons_state *st = state(g, 0);
    int before = cons_min_tokens(st);
    cr_expect_eq(before, 8); /* {"b":""} */
    cr_expect_eq(cons_accept(st, eos_id), -1);
    cr_expect_eq(cons_accept(st, byte_tok['x']), -1);
    cr_expect_eq(cons_accept(st, tokenizer_bos_id(tok)), -1); /* special */
    cr_expect_eq(cons_accept(st, n_logits - 1), -1);           /* padding id */
    cr_expect_eq(cons_accept(st, n_logits), -1);
    cr_expect_eq(cons_min_tokens(st), before, "a failed accept leaves the state unchanged");
    cr_expect_eq(cons_accept(st, byte_tok['{']), 0);
    cr_expect_eq(cons_min_tokens(st), before - 1);
    float *logits = calloc((size_t)n_logits, sizeof *logits);
    int n = cons_mask(st, logits, 100);
    cr_expect_gt(n, 0);
    cr_expect(isinf(logits[byte_tok['x']]) && isinf(logits[eos_id]) && isinf(logits[n_logits - 1]));
    cr_expect(!isinf(logits[byte_tok['"']]) && !isinf(logits[byte_tok[' ']]));
    free(logits);
    cons_state_free(st);
    cons_grammar_free(g);
    nesting_limit_for_any_values();
}

/* ---- random walks ---------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct walk_opts {
    int budget;
    uint64_t seed;
    int check_every; /* > 0: compare the mask with cons_token_allowed every that many steps */
} walk_opts;

/* Compares cons_mask's result with the one-token reference for every id. */
static void check_mask(const cons_state *st, const float *logits, int tokens_left, const char *what) {
    int bad = 0;
    for (int32_t id = 0; id < n_logits && bad < 5; id++) {
        int m = !isinf(logits[id]), r = cons_token_allowed(st, id, tokens_left);
        if (m != r) {
            size_t len;
            const char *b = tokenizer_token_bytes(tok, id, &len);
            cr_expect_eq(m, r, "%s: token %d ('%.*s') mask %d reference %d (tokens_left %d)", what, id,
                         b ? (int)len : 0, b ? b : "", m, r, tokens_left);
            bad++;
        }
    }
}

/* Walks from a fresh state: each step a uniformly random allowed token. Returns the
 * decoded text (malloc'd); asserts EOS came within the budget. */
static char *walk(const cons_grammar *g, int after_think, walk_opts o, const char *what) {
    cons_state *st = state(g, after_think);
    int budget = o.budget;
    if (budget < cons_min_tokens(st) + 1) budget = cons_min_tokens(st) + 1;
    float *logits = malloc((size_t)n_logits * sizeof *logits);
    int32_t *ids = malloc((size_t)budget * sizeof *ids), *allowed = malloc((size_t)n_logits * sizeof *allowed);
    int n = 0, eos = 0;
    uint64_t rng = o.seed;
    while (n < budget && !eos) {
        for (int32_t i = 0; i < n_logits; i++) logits[i] = 0.0f;
        int left = budget - n, count = cons_mask(st, logits, left);
        cr_assert_gt(count, 0, "%s: nothing allowed after %d tokens", what, n);
        if (o.check_every && n % o.check_every == 0) check_mask(st, logits, left, what);
        int m = 0;
        for (int32_t i = 0; i < n_logits; i++)
            if (!isinf(logits[i])) allowed[m++] = i;
        cr_assert_eq(m, count, "%s: count", what);
        int32_t t = allowed[rng_next(&rng) % (uint64_t)m];
        cr_assert_eq(cons_accept(st, t), 0, "%s: an allowed token (%d) was not accepted", what, t);
        if (t == eos_id) eos = 1;
        else ids[n++] = t;
        if (eos) cr_assert(cons_is_complete(st));
    }
    cr_assert(eos, "%s: no EOS within %d tokens (min was %d)", what, budget, cons_min_tokens(st));
    cr_assert_eq(cons_mask(st, logits, 1), 0, "%s: nothing after EOS", what);
    char *text = tokenizer_decode(tok, ids, (size_t)n, 0);
    if (getenv("MLASERVE_TEST_PRINT")) { /* one escaped line per walk */
        json_t *j = json_string(text);
        char *line = json_dumps(j, JSON_ENCODE_ANY);
        fprintf(stderr, "%s (%d tokens): %s\n", what, n, line);
        free(line);
        json_decref(j);
    }
    free(ids);
    free(allowed);
    free(logits);
    cons_state_free(st);
    return text;
}

static const char *json_part(const char *text, int after_think, const char *what) {
    if (!after_think) return text;
    const char *e = strstr(text, "</think>");
    cr_assert(e, "%s: no </think> in %s", what, text);
    return e + 8;
}

static void check_json(const char *schema_text, const char *text, const char *what) {
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    cr_assert(v, "%s: jansson cannot parse the output (%s): %s", what, e.text, text);
    json_t *s = schema_text ? parse(schema_text) : NULL;
    char why[512];
    cr_expect(cons_json_validate(s, v, why, sizeof why), "%s: %s: %s", what, why, text);
    json_decref(s);
    json_decref(v);
}

static const char *const walk_schemas[] = {
    /* 0 */ "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"}},"
            "\"required\":[\"name\",\"age\"]}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"object\","
    "\"properties\":{\"c\":{\"type\":\"boolean\"}},\"required\":[\"c\"]}},\"required\":[\"b\"]}},\"required\":[\"a\"]}",
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"tags\":{"
    "\"type\":\"array\",\"items\":{\"type\":\"string\"}}},\"required\":[\"id\"]},\"minItems\":1,\"maxItems\":4}",
    "{\"type\":\"object\",\"properties\":{\"color\":{\"enum\":[\"red\",\"green\",\"blue\",\"dark red\"]}},"
    "\"required\":[\"color\"]}",
    "{\"enum\":[1,12,1.5,\"x\",true,null,{\"k\":[1,2]}]}",
    /* 5 */ "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"},\"y\":{\"type\":\"number\"},\"n\":{"
            "\"type\":\"integer\"}},\"required\":[\"x\",\"y\",\"n\"]}",
    "{\"type\":\"object\",\"properties\":{\"code\":{\"type\":\"string\",\"minLength\":3,\"maxLength\":5},\"note\":{"
    "\"type\":\"string\",\"maxLength\":10}},\"required\":[\"code\",\"note\"]}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"},\"c\":{\"type\":"
    "\"boolean\"},\"d\":{\"type\":\"null\"}},\"required\":[\"c\"]}",
    "{\"type\":\"object\",\"properties\":{\"p\":{\"type\":\"string\"},\"q\":{\"type\":\"integer\"}}}",
    "{\"type\":\"object\",\"properties\":{\"v\":{\"type\":[\"string\",\"null\",\"integer\"]}},\"required\":[\"v\"]}",
    /* 10 */ NULL,
    "{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"}},\"required\":[\"ok\"]},{"
    "\"type\":\"array\",\"items\":{\"type\":\"integer\"}},{\"type\":\"null\"}]}",
    "{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"point\"},\"x\":{\"type\":\"number\"}},\"required\":"
    "[\"kind\",\"x\"]}",
    "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}",
    "{\"type\":\"object\",\"additionalProperties\":false}",
    /* 15 */ "{\"$defs\":{\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"},\"y\":{\"type\":"
             "\"integer\"}},\"required\":[\"x\",\"y\"]}},\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/"
             "pt\"},\"b\":{\"$ref\":\"#/$defs/pt\"}},\"required\":[\"a\"]}",
    "{\"type\":\"string\"}",
    "{\"type\":\"integer\"}",
    "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"maxItems\":3},\"maxItems\":3}",
    "{\"type\":\"object\"}",
    /* 20 */ "{}",
    "{\"type\":\"object\",\"properties\":{\"name\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}],\"default\":"
    "null,\"title\":\"Name\"}},\"required\":[\"name\"],\"title\":\"M\"}",
    "{\"type\":\"object\",\"properties\":{\"名前\":{\"type\":\"string\"},\"with \\\"quote\\\"\":{\"type\":\"integer\"}},"
    "\"required\":[\"名前\",\"with \\\"quote\\\"\"]}",
    "{\"type\":\"boolean\"}",
    "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":3}",
    /* 25 */ "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":"
             "\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"array\","
             "\"items\":{\"type\":\"string\"}}}}}}}}",
    "{\"type\":\"object\",\"properties\":{\"steps\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
    "{\"explanation\":{\"type\":\"string\"},\"output\":{\"type\":\"string\"}},\"required\":[\"explanation\","
    "\"output\"],\"additionalProperties\":false}},\"final_answer\":{\"type\":\"string\"}},\"required\":[\"steps\","
    "\"final_answer\"],\"additionalProperties\":false,\"strict\":true}",
    "{\"type\":\"string\",\"minLength\":4}",
    "{\"type\":\"array\",\"maxItems\":0}",
    "{\"type\":\"object\",\"properties\":{\"p0\":{},\"p1\":{\"type\":\"integer\"},\"p2\":{\"type\":\"string\"},\"p3\":{"
    "\"type\":\"boolean\"},\"p4\":{},\"p5\":{\"type\":\"number\"},\"p6\":{\"type\":\"null\"},\"p7\":{\"type\":"
    "\"string\"},\"p8\":{},\"p9\":{\"type\":\"integer\"}},\"required\":[\"p3\",\"p7\"]}",
    /* 30 */ "{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"ab\",\"abc\"]},\"maxItems\":5}",
    "{\"title\":\"T\",\"description\":\"d\",\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\","
    "\"description\":\"x\",\"examples\":[1]}},\"required\":[\"x\"],\"$schema\":\"http://json-schema.org/draft-07/"
    "schema#\"}",
    "{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"maxLength\":1}},\"required\":[\"s\"]}",
    "{\"type\":[\"object\",\"array\",\"string\",\"number\",\"boolean\",\"null\"]}",
};
#define N_WALK_SCHEMAS (sizeof walk_schemas / sizeof *walk_schemas)

static void walk_schema(size_t k, int after_think, int budget, uint64_t seed, int check_every) {
    char what[96];
    snprintf(what, sizeof what, "schema %zu%s budget %d seed %llu", k, after_think ? " (think)" : "", budget,
             (unsigned long long)seed);
    cons_grammar *g = grammar(walk_schemas[k]);
    char *text = walk(g, after_think, (walk_opts){budget, seed, check_every}, what);
    check_json(walk_schemas[k], json_part(text, after_think, what), what);
    free(text);
    cons_grammar_free(g);
}

Test(constrain, walks_schemas_first_half, .init = setup, .fini = teardown) {
    for (size_t k = 0; k < N_WALK_SCHEMAS / 2; k++)
        for (int b = 0; b < 3; b++) walk_schema(k, 0, (int[]){24, 64, 200}[b], 1000 * k + (uint64_t)b, 0);
}

Test(constrain, walks_schemas_second_half, .init = setup, .fini = teardown) {
    for (size_t k = N_WALK_SCHEMAS / 2; k < N_WALK_SCHEMAS; k++)
        for (int b = 0; b < 3; b++) walk_schema(k, 0, (int[]){24, 64, 200}[b], 1000 * k + (uint64_t)b, 0);
}

Test(constrain, walks_after_think, .init = setup, .fini = teardown) {
    size_t pick[] = {0, 6, 10, 16, 17};
    for (size_t i = 0; i < sizeof pick / sizeof *pick; i++) {
        walk_schema(pick[i], 1, 40, 7 + i, 0);
        walk_schema(pick[i], 1, 120, 77 + i, 0);
    }
}

/* The mask's fast paths (bulk strings, think text, closing) against the reference. */
Test(constrain, mask_matches_reference, .init = setup, .fini = teardown) {
    walk_schema(0, 0, 60, 1, 4);
    walk_schema(6, 0, 40, 2, 3);  /* maxLength strings */
    walk_schema(10, 0, 50, 3, 5); /* json_object */
    walk_schema(27, 0, 30, 4, 3); /* minLength */
    walk_schema(22, 1, 40, 5, 4); /* think text */
    walk_schema(16, 0, 12, 6, 2); /* closing from the first step */
}

/* States the walks rarely reach, each after a byte prefix, at several budgets. */
Test(constrain, mask_matches_reference_at_edges, .init = setup, .fini = teardown) {
    static const struct {
        const char *schema;
        int think;
        const char *prefix;
    } cases[] = {
        {S_OBJ, 1, "abc</thi"},            /* inside "</think>" */
        {S_OBJ, 1, "<"},
        {S_OBJ, 1, "x</think>"},           /* grammar just started */
        {S_OBJ, 0, "{\"b\":\"\xE4"},       /* inside a UTF-8 character */
        {S_OBJ, 0, "{\"b\":\"\xF0\x9F"},
        {S_LEN, 0, "\"a"},                 /* maxLength about to bite */
        {S_LEN, 0, "\"abc"},
        {S_STR, 0, "\"\\u"},              /* \u escapes and surrogates */
        {S_STR, 0, "\"\\uD8"},
        {S_STR, 0, "\"\\uD83D"},
        {S_STR, 0, "\"\\uD83D\\u"},
        {S_NUM, 0, "1"},                   /* complete, yet may go on */
        {S_NUM, 0, "-0.5e"},
        {NULL, 0, "{\"k\":[{\"\":"},
        {NULL, 0, "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}, /* 30 '[': the frame limit */
        {S_NENUM, 0, "{\"n\":1"},
        {S_OBJ, 0, "{  "},
    };
    static const int budgets[] = {1, 12, 1000};
    float *logits = malloc((size_t)n_logits * sizeof *logits);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cons_grammar *g = grammar(cases[i].schema);
        cons_state *st = state(g, cases[i].think);
        for (const char *p = cases[i].prefix; *p; p++)
            cr_assert_eq(cons_accept(st, byte_tok[(unsigned char)*p]), 0, "case %zu: prefix byte %zu", i,
                         (size_t)(p - cases[i].prefix));
        for (size_t b = 0; b < sizeof budgets / sizeof *budgets; b++) {
            char what[64];
            snprintf(what, sizeof what, "edge case %zu budget %d", i, budgets[b]);
            for (int32_t id = 0; id < n_logits; id++) logits[id] = 0.0f;
            int n = cons_mask(st, logits, budgets[b]);
            cr_expect_gt(n, 0, "%s", what);
            check_mask(st, logits, budgets[b], what);
        }
        cons_state_free(st);
        cons_grammar_free(g);
    }
    free(logits);
}

/* Tool calls: the output has the DeepSeek-V3 structure and valid arguments. */
static void check_tool_text(const char *text, const char *const *names, const char *const *params, int n_tools,
                            int parallel, cons_tool_format format, const char *what) {
    const int v31 = format == CONS_TOOLS_V31;
    const char *p = text, *mk_calls = "<｜tool▁calls▁begin｜>", *mk_end = "<｜tool▁calls▁end｜>";
    const char *head = v31 ? "<｜tool▁call▁begin｜>" : "<｜tool▁call▁begin｜>function<｜tool▁sep｜>";
    const char *after_name = v31 ? "<｜tool▁sep｜>" : "\n```json\n";
    const char *tail = v31 ? "<｜tool▁call▁end｜>" : "\n```<｜tool▁call▁end｜>";
    const char *between = v31 ? "" : "\n";
    cr_assert(!strncmp(p, mk_calls, strlen(mk_calls)), "%s: %s", what, text);
    p += strlen(mk_calls);
    int calls = 0;
    for (;;) {
        cr_assert(!strncmp(p, head, strlen(head)), "%s: call %d: %s", what, calls, text);
        p += strlen(head);
        const char *nl = strstr(p, after_name);
        cr_assert(nl, "%s: %s", what, text);
        int k = 0;
        while (k < n_tools && ((size_t)(nl - p) != strlen(names[k]) || strncmp(p, names[k], (size_t)(nl - p)))) k++;
        cr_assert(k < n_tools, "%s: unknown tool name in %s", what, text);
        p = nl + strlen(after_name);
        const char *end = strstr(p, tail);
        cr_assert(end, "%s: %s", what, text);
        char *args = strndup(p, (size_t)(end - p));
        json_t *a = parse(args);
        cr_expect(json_is_object(a), "%s: args %s", what, args);
        json_t *s = params[k] ? parse(params[k]) : NULL;
        char why[256];
        cr_expect(cons_json_validate(s, a, why, sizeof why), "%s: %s: %s", what, why, args);
        json_decref(s);
        json_decref(a);
        free(args);
        p = end + strlen(tail);
        calls++;
        if (strncmp(p, between, strlen(between)) || !strncmp(p + strlen(between), mk_end, strlen(mk_end))) break;
        p += strlen(between);
    }
    cr_expect(parallel || calls == 1, "%s: %d calls", what, calls);
    cr_expect_str_eq(p, mk_end, "%s", what);
}

Test(constrain, walks_tool_calls, .init = setup, .fini = teardown) {
    const char *names[] = {"get_weather", "get", "search"};
    const char *params[] = {
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{\"enum\":[\"c\",\"f\"]}},"
        "\"required\":[\"city\"]}",
        NULL,
        "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\",\"maxLength\":8},\"n\":{\"type\":\"integer\"}},"
        "\"required\":[\"q\",\"n\"],\"additionalProperties\":false}",
    };
    for (int v31 = 0; v31 <= 1; v31++)
    for (int n_tools = 1; n_tools <= 3; n_tools += 2)
        for (int parallel = 0; parallel <= 1; parallel++) {
            const cons_tool_format format = v31 ? CONS_TOOLS_V31 : CONS_TOOLS_V3;
            json_t *pj[3] = {0};
            for (int k = 0; k < n_tools; k++) pj[k] = params[k] ? parse(params[k]) : NULL;
            ms_err err = {{0}};
            cons_grammar *g = cons_grammar_tool_calls(names, (const json_t *const *)pj, n_tools, parallel, format, &err);
            cr_assert(g, "%s", err.msg);
            for (int b = 0; b < 3; b++)
                for (int think = 0; think <= (b == 1); think++) {
                    char what[96];
                    int budget = (int[]){40, 100, 200}[b];
                    snprintf(what, sizeof what, "%s tools %d parallel %d budget %d think %d", v31 ? "v3.1" : "v3", n_tools,
                             parallel, budget, think);
                    char *text = walk(g, think, (walk_opts){budget, 500u + (uint64_t)(b * 10 + n_tools + parallel), 0}, what);
                    check_tool_text(json_part(text, think, what), names, params, n_tools, parallel, format, what);
                    free(text);
                }
            cons_grammar_free(g);
            for (int k = 0; k < 3; k++) json_decref(pj[k]);
        }
}

/* With exactly min + 1 tokens every walk must end with EOS as its last token. */
Test(constrain, tight_budget_completes, .init = setup, .fini = teardown) {
    size_t pick[] = {0, 2, 5, 6, 15, 22, 24, 26, 29};
    for (size_t i = 0; i < sizeof pick / sizeof *pick; i++)
        for (uint64_t seed = 0; seed < 3; seed++) walk_schema(pick[i], seed == 2, 1, 900 + seed, 0);
}

/* ---- validator -------------------------------------------------------------------- */

static int valid(const char *schema, const char *value, char *why, size_t n) {
    json_t *s = parse(schema), *v = parse(value);
    int r = cons_json_validate(s, v, why, n);
    json_decref(s);
    json_decref(v);
    return r;
}

Test(constrain, validator) {
    char why[256];
    cr_expect(valid(S_OBJ, "{\"b\":\"x\",\"extra\":1}", why, sizeof why)); /* extra keys: allowed by the spec */
    cr_expect(!valid(S_OBJ, "{\"a\":1}", why, sizeof why));
    cr_expect(strstr(why, "required property 'b'"), "%s", why);
    cr_expect(!valid(S_OBJ, "{\"b\":\"x\",\"a\":\"1\"}", why, sizeof why));
    cr_expect(strstr(why, "$.a"), "%s", why);
    cr_expect(!valid("{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":1}}", "[\"a\",\"中文\"]", why, sizeof why));
    cr_expect(strstr(why, "[1]"), "%s", why);
    cr_expect(valid("{\"type\":\"integer\"}", "3.0", why, sizeof why));
    cr_expect(!valid("{\"type\":\"integer\"}", "3.5", why, sizeof why));
    cr_expect(valid("{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}", "null", why, sizeof why));
    cr_expect(!valid("{\"oneOf\":[{\"type\":\"number\"},{\"type\":\"integer\"}]}", "1", why, sizeof why));
    cr_expect(!valid("{\"type\":\"object\",\"additionalProperties\":false}", "{\"a\":1}", why, sizeof why));
    cr_expect(valid("{\"type\":\"string\",\"pattern\":\"a\"}", "\"xay\"", why, sizeof why), "a search: %s", why);
    cr_expect(!valid("{\"type\":\"string\",\"pattern\":\"^a\"}", "\"xa\"", why, sizeof why));
    cr_expect(strstr(why, "does not match"), "%s", why);
    cr_expect(!valid("{\"type\":\"string\",\"format\":\"date\"}", "\"2024-13-01\"", why, sizeof why));
    cr_expect(valid("{\"type\":\"string\",\"format\":\"date\"}", "\"2024-12-01\"", why, sizeof why));
    cr_expect(!valid("{\"type\":\"integer\",\"minimum\":1}", "0", why, sizeof why));
    cr_expect(strstr(why, "below the minimum"), "%s", why);
    cr_expect(!valid("{\"type\":\"number\",\"exclusiveMaximum\":1}", "1", why, sizeof why));
    cr_expect(valid("{\"type\":\"number\",\"maximum\":1,\"exclusiveMaximum\":false}", "1", why, sizeof why));
    cr_expect(!valid("{\"type\":\"number\",\"maximum\":1,\"exclusiveMaximum\":true}", "1", why, sizeof why));
    cr_expect(valid("{\"enum\":[{\"a\":1,\"b\":2}]}", "{\"b\":2,\"a\":1}", why, sizeof why));
    cr_expect(valid("{\"type\":\"number\",\"multipleOf\":0.01}", "0.07", why, sizeof why), "%s", why);
    cr_expect(!valid("{\"type\":\"number\",\"multipleOf\":0.01}", "0.075", why, sizeof why));
    cr_expect(strstr(why, "not a multiple of 0.01"), "%s", why);
    cr_expect(valid("{\"type\":\"integer\",\"multipleOf\":3}", "-9", why, sizeof why), "%s", why);
    cr_expect(!valid("{\"type\":\"integer\",\"multipleOf\":3}", "10", why, sizeof why));
    cr_expect(valid("{\"allOf\":[{\"minimum\":1},{\"maximum\":3}]}", "2", why, sizeof why), "%s", why);
    cr_expect(!valid("{\"allOf\":[{\"minimum\":1},{\"maximum\":3}]}", "4", why, sizeof why));
    cr_expect(valid("{\"prefixItems\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "[1,\"a\",null]", why, sizeof why), "%s", why);
    cr_expect(!valid("{\"prefixItems\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "[1,2]", why, sizeof why));
    cr_expect(!valid("{\"items\":[{\"type\":\"integer\"}],\"additionalItems\":false}", "[1,2]", why, sizeof why));
    cr_expect(strstr(why, "$[1]") || strstr(why, "item 1"), "%s", why);
    const char *list = "{\"type\":\"object\",\"properties\":{\"n\":{\"anyOf\":[{\"$ref\":\"#\"},{\"type\":\"null\"}]}},"
                       "\"required\":[\"n\"]}";
    cr_expect(valid(list, "{\"n\":{\"n\":{\"n\":null}}}", why, sizeof why), "%s", why);
    cr_expect(!valid(list, "{\"n\":{\"n\":{\"n\":1}}}", why, sizeof why));
    json_t *o = parse("{}"), *a = parse("[]");
    cr_expect(cons_json_validate(NULL, o, why, sizeof why));
    cr_expect(!cons_json_validate(NULL, a, NULL, 0));
    json_decref(o);
    json_decref(a);
}

/* Walks each schema at four budgets, checking every output with the validator:
 * the second budget compares the mask with the reference every check_every
 * steps; think_last: the fourth walk starts before "</think>". */
static void walk_each(const char *label, const char *const *schemas, size_t n, const int budgets[4], uint64_t seed,
                      int think_last, int check_every) {
    for (size_t k = 0; k < n; k++) {
        cons_grammar *g = grammar(schemas[k]);
        for (int b = 0; b < 4; b++) {
            char what[96];
            const int think = think_last && b == 3;
            snprintf(what, sizeof what, "%s %zu budget %d", label, k, budgets[b]);
            char *text = walk(g, think, (walk_opts){budgets[b], seed + 10 * k + (uint64_t)b, b == 1 ? check_every : 0}, what);
            check_json(schemas[k], json_part(text, think, what), what);
            free(text);
        }
        cons_grammar_free(g);
    }
}

/* ---- recursive $ref ------------------------------------------------------------------ */

static const char *const rec_schemas[] = {
    /* a tree through "#" (OpenAI's UI example) */
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":3},\"children\":{\"type\":"
    "\"array\",\"items\":{\"$ref\":\"#\"},\"maxItems\":3}},\"required\":[\"name\",\"children\"],"
    "\"additionalProperties\":false}",
    /* a linked list: next is a node or null */
    "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"next\":{\"anyOf\":"
    "[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},\"required\":[\"v\",\"next\"]}},\"$ref\":\"#/$defs/node\"}",
    /* mutual recursion */
    "{\"$defs\":{\"a\":{\"type\":\"object\",\"properties\":{\"b\":{\"$ref\":\"#/$defs/b\"}}},\"b\":{\"type\":"
    "\"array\",\"items\":{\"$ref\":\"#/$defs/a\"},\"maxItems\":2}},\"$ref\":\"#/$defs/a\"}",
    /* a binary tree: two recursive refs a level, so the node limit decides the depth */
    "{\"$defs\":{\"t\":{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":"
    "9},\"l\":{\"$ref\":\"#/$defs/t\"},\"r\":{\"$ref\":\"#/$defs/t\"}},\"required\":[\"k\"]}},\"$ref\":\"#/$defs/t\"}",
    /* pydantic: an Optional["N"] field with a description (allOf around the $ref) */
    "{\"$defs\":{\"N\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"boolean\"},\"child\":{\"anyOf\":[{"
    "\"allOf\":[{\"$ref\":\"#/$defs/N\"}],\"description\":\"c\"},{\"type\":\"null\"}]}},\"required\":[\"x\","
    "\"child\"]}},\"$ref\":\"#/$defs/N\"}",
    /* a recursive property in additionalProperties (a nested dictionary) */
    "{\"$defs\":{\"d\":{\"type\":\"object\",\"additionalProperties\":{\"anyOf\":[{\"$ref\":\"#/$defs/d\"},{\"type\":"
    "\"integer\"}]}}},\"$ref\":\"#/$defs/d\"}",
};

/* Random walks: the validator (which follows $ref as deep as the value goes)
 * accepts each output; the mask equals the reference along the way. */
Test(constrain, recursive_ref_walks, .init = setup, .fini = teardown) {
    walk_each("recursive schema", rec_schemas, sizeof rec_schemas / sizeof *rec_schemas, (const int[]){1, 40, 120, 300}, 5000, 0, 2);
}

/* s = prefix^n + leaf + suffix^n. */
static char *nest(const char *prefix, const char *leaf, const char *suffix, int n) {
    size_t len = strlen(leaf) + (size_t)n * (strlen(prefix) + strlen(suffix)) + 1;
    char *s = malloc(len);
    s[0] = 0;
    for (int i = 0; i < n; i++) strcat(s, prefix);
    strcat(s, leaf);
    for (int i = 0; i < n; i++) strcat(s, suffix);
    return s;
}

/* The recursion goes as deep as the limits allow, and no deeper: a tree (two
 * frames a level) to the matcher's 32 frames, a list to 16 expansions. */
Test(constrain, recursive_ref_depth, .init = setup, .fini = teardown) {
    const struct {
        int schema, depth;
        char expect;
    } cases[] = {{0, 1, 'A'}, {0, 5, 'A'}, {0, 15, 'A'}, {0, 16, 'R'}, {0, 40, 'R'}, /* frames: 2 a level */
                 {1, 1, 'A'}, {1, 16, 'A'}, {1, 17, 'R'},                             /* MAX_RECURSION */
                 {4, 14, 'A'}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *doc = cases[i].schema == 0   ? nest("{\"name\":\"a\",\"children\":[", "{\"name\":\"b\",\"children\":[]}", "]}", cases[i].depth - 1)
                    : cases[i].schema == 1 ? nest("{\"v\":1,\"next\":", "null", "}", cases[i].depth)
                                           : nest("{\"x\":true,\"child\":", "null", "}", cases[i].depth);
        char got = feed(rec_schemas[cases[i].schema], 0, doc, strlen(doc));
        cr_expect_eq(got, cases[i].expect, "schema %d depth %d: %c, expected %c", cases[i].schema, cases[i].depth, got,
                     cases[i].expect);
        json_t *s = parse(rec_schemas[cases[i].schema]), *v = parse(doc);
        cr_expect(cons_json_validate(s, v, NULL, 0), "the validator accepts depth %d", cases[i].depth);
        json_decref(s);
        json_decref(v);
        free(doc);
    }
}

/* Tool parameters may be recursive too. */
Test(constrain, recursive_tool_parameters, .init = setup, .fini = teardown) {
    json_t *p = parse(rec_schemas[1]);
    const char *names[] = {"walk"};
    const json_t *params[] = {p};
    ms_err err = {{0}};
    cons_grammar *g = cons_grammar_tool_calls(names, params, 1, 0, CONS_TOOLS_V3, &err);
    cr_assert(g, "%s", err.msg);
    cons_grammar_free(g);
    json_t *bad = parse("{\"$ref\":\"#\"}");
    params[0] = bad;
    cr_expect(!cons_grammar_tool_calls(names, params, 1, 0, CONS_TOOLS_V3, &err));
    cr_expect(strstr(err.msg, "tool 'walk' parameters") && strstr(err.msg, "no finite value"), "%s", err.msg);
    json_decref(bad);
    json_decref(p);
}

/* ---- property counts and names -------------------------------------------------------- */

static const char *const prop_schemas[] = {
    /* keys by pattern, at most 3 pairs */
    "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"},\"propertyNames\":{\"pattern\":"
    "\"^[a-z]{1,3}$\"},\"maxProperties\":3}",
    /* pydantic's dict[Literal['x','y','z'], bool] = Field(min_length=1) */
    "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"boolean\"},\"propertyNames\":{\"enum\":[\"x\","
    "\"y\",\"z\"]},\"minProperties\":1}",
    /* an update with at least one field */
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\","
    "\"maxLength\":4}},\"minProperties\":1,\"additionalProperties\":false}",
    /* a declared name propertyNames refuses is never written; keys through a $ref */
    "{\"$defs\":{\"k\":{\"type\":\"string\",\"pattern\":\"^[a-z]+$\"}},\"type\":\"object\",\"properties\":{"
    "\"ok\":{\"type\":\"integer\"},\"Bad\":{\"type\":\"integer\"}},\"propertyNames\":{\"$ref\":\"#/$defs/k\"}}",
    /* maps of maps, two pairs each at most; an empty map only */
    "{\"type\":\"object\",\"properties\":{\"m\":{\"type\":\"object\",\"additionalProperties\":{\"type\":"
    "\"object\",\"maxProperties\":2},\"maxProperties\":2},\"e\":{\"type\":\"object\",\"maxProperties\":0}},"
    "\"required\":[\"m\",\"e\"]}",
};

/* Random walks: every output has its counts and key names (the validator). */
Test(constrain, property_count_and_name_walks, .init = setup, .fini = teardown) {
    walk_each("property schema", prop_schemas, sizeof prop_schemas / sizeof *prop_schemas, (const int[]){1, 30, 80, 200},
              7000, 1, 2);
}

/* The exact limits, fed byte by byte; the validator agrees. */
Test(constrain, property_count_and_name_limits, .init = setup, .fini = teardown) {
    const struct {
        int schema;
        const char *doc;
        char expect;
    } cases[] = {{0, "{\"a\":1,\"bc\":2,\"def\":3}", 'A'}, {0, "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}", 'R'},
                 {0, "{\"abcd\":1}", 'R'},                       {0, "{\"A\":1}", 'R'},
                 {0, "{}", 'A'},                                 {1, "{}", 'R'},
                 {1, "{\"y\":true}", 'A'},                       {1, "{\"w\":true}", 'R'},
                 {2, "{}", 'R'},                                 {2, "{\"b\":\"x\"}", 'A'},
                 {2, "{\"a\":1,\"b\":\"\"}", 'A'},                {3, "{\"ok\":1}", 'A'},
                 {3, "{\"Bad\":1}", 'R'},                        {3, "{}", 'A'},
                 {4, "{\"m\":{\"p\":{},\"q\":{\"r\":1,\"s\":2}},\"e\":{}}", 'A'},
                 {4, "{\"m\":{\"p\":{\"r\":1,\"s\":2,\"t\":3}},\"e\":{}}", 'R'},
                 {4, "{\"m\":{},\"e\":{\"x\":1}}", 'R'}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *schema = prop_schemas[cases[i].schema], *doc = cases[i].doc;
        char got = feed(schema, 0, doc, strlen(doc));
        cr_expect_eq(got, cases[i].expect, "schema %d, %s: %c, expected %c", cases[i].schema, doc, got, cases[i].expect);
        json_t *js = parse(schema), *v = parse(doc);
        cr_expect_eq(cons_json_validate(js, v, NULL, 0), cases[i].expect == 'A', "the validator on schema %d, %s",
                     cases[i].schema, doc);
        json_decref(js);
        json_decref(v);
    }
}

Test(constrain, property_count_and_name_errors) {
    expect_error("{\"type\":\"object\",\"minProperties\":2}", "keep its keys distinct");
    expect_error("{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{}},\"maxProperties\":1}",
                 "'maxProperties' below the number of properties");
    expect_error("{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{}},\"required\":[\"a\"],\"minProperties\":2}",
                 "'minProperties' above the required");
    expect_error("{\"type\":\"object\",\"minProperties\":3,\"maxProperties\":2}", "'minProperties' 3 is above 'maxProperties' 2");
    expect_error("{\"type\":\"object\",\"maxProperties\":-1}", "'maxProperties' must be a non-negative integer");
    expect_error("{\"type\":\"object\",\"propertyNames\":{\"type\":\"integer\"}}", "strings only");
    expect_error("{\"type\":\"object\",\"propertyNames\":{\"enum\":[\"a\",1]}}", "strings only");
    expect_error("{\"type\":\"object\",\"propertyNames\":{\"uniqueItems\":true}}", "'uniqueItems'");
    expect_error("{\"type\":\"object\",\"propertyNames\":false,\"minProperties\":1}", "no finite value");
    expect_error("{\"type\":\"object\",\"properties\":{\"A\":{}},\"required\":[\"A\"],\"propertyNames\":{"
                 "\"pattern\":\"^[a-z]+$\"}}",
                 "no finite value");
}

/* ---- guided choice ---------------------------------------------------------------- */

/* ---- patterns, formats, bounds (common/regex_dfa.h in the grammar) ---- */

static const char *const dfa_schemas[] = {
    "{\"type\":\"object\",\"properties\":{\"date\":{\"type\":\"string\",\"format\":\"date\"},\"id\":{\"type\":"
    "\"string\",\"format\":\"uuid\"},\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},\"score\":{"
    "\"type\":\"number\",\"minimum\":-1,\"exclusiveMaximum\":1}},\"required\":[\"date\",\"id\",\"age\",\"score\"]}",
    "{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-[0-9]{3,5}$\"}",
    "{\"type\":\"string\",\"pattern\":\"ab\",\"minLength\":3,\"maxLength\":6}",
    "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"exclusiveMinimum\":-5,\"maximum\":5},\"minItems\":2,"
    "\"maxItems\":4}",
    "{\"type\":\"string\",\"format\":\"date-time\"}",
    "{\"type\":\"string\",\"format\":\"email\"}",
    "{\"type\":\"integer\",\"minimum\":1000000}",
    "{\"anyOf\":[{\"type\":\"string\",\"pattern\":\"^x+$\"},{\"type\":\"null\"}]}",
    "{\"type\":\"string\",\"format\":\"ipv4\"}",
    "{\"type\":\"string\",\"pattern\":\"^(é+|中文)$\"}",
    "{\"type\":\"number\",\"minimum\":2.5}",
    "{\"type\":\"string\",\"pattern\":\"^[^,]*$\",\"maxLength\":5}",
    "{\"type\":\"integer\",\"multipleOf\":7,\"minimum\":-50,\"maximum\":100}",
    "{\"type\":\"array\",\"items\":{\"type\":\"number\",\"multipleOf\":0.05,\"minimum\":0,\"maximum\":20},"
    "\"minItems\":3,\"maxItems\":6}",
    "{\"type\":\"number\",\"multipleOf\":0.01}",
    "{\"type\":[\"integer\",\"null\"],\"multipleOf\":3}",
    /* pydantic's field with a description: allOf around a $ref */
    "{\"type\":\"object\",\"properties\":{\"pet\":{\"allOf\":[{\"$ref\":\"#/$defs/Pet\"}],\"description\":\"the "
    "pet\"},\"n\":{\"type\":\"integer\",\"allOf\":[{\"minimum\":1},{\"maximum\":9}]}},\"required\":[\"pet\",\"n\"],"
    "\"$defs\":{\"Pet\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},"
    "\"kind\":{\"enum\":[\"cat\",\"dog\"]}},\"required\":[\"name\",\"kind\"],\"additionalProperties\":false}}}",
    /* pydantic's Tuple[int, str, bool] (prefixItems), draft 4's array-form items */
    "{\"type\":\"object\",\"properties\":{\"t\":{\"type\":\"array\",\"prefixItems\":[{\"type\":\"integer\"},{\"type\":"
    "\"string\",\"maxLength\":4},{\"type\":\"boolean\"}],\"minItems\":3,\"maxItems\":3},\"e\":{\"prefixItems\":[]},"
    "\"d4\":{\"type\":\"array\",\"items\":[{\"enum\":[\"a\",\"b\"]},{\"type\":\"number\",\"minimum\":0.5,\"maximum\":0.75}],"
    "\"additionalItems\":false}},\"required\":[\"t\",\"e\",\"d4\"]}",
    /* an intersection of two object schemas */
    "{\"allOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]},"
    "{\"properties\":{\"b\":{\"type\":\"boolean\"}},\"required\":[\"b\"]},{\"type\":[\"object\",\"null\"]}]}",
};

/* Random walks through each: valid JSON that the validator (its own automaton
 * for the pattern / format, arithmetic for the bounds) accepts; the mask equals
 * the one-token reference along the way. */
Test(constrain, pattern_format_bound_walks, .init = setup, .fini = teardown) {
    walk_each("dfa schema", dfa_schemas, sizeof dfa_schemas / sizeof *dfa_schemas, (const int[]){1, 24, 64, 200}, 3000, 1, 3);
}

/* guided_regex: raw text matching the whole pattern, checked by glibc's POSIX
 * engine (an independent implementation); the mask equals the reference. */
Test(constrain, regex_walks, .init = setup, .fini = teardown) {
    const char *pats[] = {"[a-z]{2,5}-[0-9]+", "(yes|no|maybe)!?", "[A-Z][a-z]*( [A-Z][a-z]*){0,3}\\.",
                          "\\{\"k\": [0-9]{1,3}\\}"};
    const char *posix[] = {"^[a-z]{2,5}-[0-9]+$", "^(yes|no|maybe)!?$", "^[A-Z][a-z]*( [A-Z][a-z]*){0,3}\\.$",
                           "^\\{\"k\": [0-9]{1,3}\\}$"};
    for (int k = 0; k < 4; k++) {
        ms_err err = {{0}};
        cons_grammar *g = cons_grammar_regex(pats[k], &err);
        cr_assert(g, "%s: %s", pats[k], err.msg);
        regex_t re;
        cr_assert_eq(regcomp(&re, posix[k], REG_EXTENDED | REG_NOSUB), 0);
        for (uint64_t seed = 0; seed < 8; seed++) {
            char what[96];
            int think = seed == 7;
            snprintf(what, sizeof what, "regex %d seed %d", k, (int)seed);
            char *text = walk(g, think, (walk_opts){(int[]){1, 16, 40}[seed % 3], 5000 + seed, seed < 2 ? 2 : 0}, what);
            const char *out = json_part(text, think, what);
            cr_expect_eq(regexec(&re, out, 0, NULL, 0), 0, "%s: '%s' does not match %s", what, out, posix[k]);
            free(text);
        }
        regfree(&re);
        cons_grammar_free(g);
    }
    ms_err err0 = {{0}};
    cons_grammar *g = cons_grammar_regex("a+", &err0);
    cr_expect_eq(feed_tokens(g, 0, "aaa"), 'A');
    cr_expect_eq(feed_tokens(g, 0, "ab"), 'R');
    cons_grammar_free(g);
    ms_err err = {{0}};
    cr_expect_null(cons_grammar_regex("(a", &err));
    cr_expect(strstr(err.msg, "without ')'"), "%s", err.msg);
}

/* Random walks end on exactly one of the choices (also where one prefixes
 * another, and after "</think>"); the mask equals the one-token reference. */
Test(constrain, choice_walks, .init = setup, .fini = teardown) {
    const char *choices[] = {"yes", "yes, definitely", "no", "maybe 🤔", "Nein"};
    const int n = (int)(sizeof choices / sizeof *choices);
    ms_err err = {{0}};
    cons_grammar *g = cons_grammar_choice(choices, n, &err);
    cr_assert(g, "%s", err.msg);
    int seen[5] = {0};
    for (uint64_t seed = 0; seed < 40; seed++) {
        char what[64];
        int think = seed % 5 == 4;
        snprintf(what, sizeof what, "choice seed %d think %d", (int)seed, think);
        char *text = walk(g, think, (walk_opts){think ? 60 : 24, 700 + seed, seed < 3 ? 1 : 0}, what); /* room for the longest */
        const char *out = json_part(text, think, what);
        int k = 0;
        while (k < n && strcmp(out, choices[k])) k++;
        cr_expect_lt(k, n, "%s: '%s' is none of the choices", what, out);
        if (k < n) seen[k]++;
        free(text);
    }
    cr_expect(seen[0] && seen[1], "both the prefix and its extension came out (%d, %d)", seen[0], seen[1]);
    cr_expect_eq(feed_tokens(g, 0, "no"), 'A');
    cr_expect_eq(feed_tokens(g, 0, "yes, def"), 'P');
    cr_expect_eq(feed_tokens(g, 0, "nope"), 'R');
    cr_expect_eq(feed_tokens(g, 0, " yes"), 'R', "raw: no leading whitespace");
    cons_grammar_free(g);
}

Test(constrain, choice_errors) {
    ms_err err = {{0}};
    const char *dup[] = {"a", "b", "a"}, *empty[] = {"a", ""}, *bad_utf8[] = {"\xff"};
    cr_expect_null(cons_grammar_choice(dup, 3, &err));
    cr_expect(strstr(err.msg, "choice 2: 'a' appears twice"), "%s", err.msg);
    cr_expect_null(cons_grammar_choice(empty, 2, &err));
    cr_expect(strstr(err.msg, "choice 1: must be 1 to 1024 bytes"), "%s", err.msg);
    cr_expect_null(cons_grammar_choice(bad_utf8, 1, &err));
    cr_expect(strstr(err.msg, "not valid UTF-8"), "%s", err.msg);
    cr_expect_null(cons_grammar_choice(dup, 0, &err));
}
