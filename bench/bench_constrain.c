/* bench/bench_constrain.c — cost of constrained decoding per step (cons_mask over
 * the full DeepSeek-V3 vocabulary) in the situations that matter:
 *   string      inside a JSON string: nearly every token allowed (bulk bitmaps)
 *   string/max  inside a string with maxLength 100: each plain token checked
 *   value       after "key": (value position; structural DFS)
 *   key         after '{' of an object with declared keys
 *   json_object random walk in json_object mode (all positions mixed)
 *   schema walk random walk over a nested schema (all positions mixed)
 *   think       free text before "</think>"
 * plus the one-off costs (vocab build, grammar compile). Steps pick a uniformly
 * random allowed token (fixed seed), so the mix of positions is what a model
 * with random weights would produce.
 *   Usage: bench_constrain [TOKENIZER_DIR] [STEPS]   (default $MLASERVE_TOKENIZER, 200)
 * Prints one markdown table row per scenario (wall time, one thread). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/constrain.h"
#include "common/tokenizer.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct bench {
    const tokenizer *tok;
    const cons_vocab *voc;
    int32_t n_logits, eos;
    float *logits;
    int32_t *allowed;
    uint64_t rng;
} bench;

typedef struct stats {
    double total_ms, max_ms;
    long allowed;
    int steps;
} stats;

static void die(const char *what, const char *msg) {
    fprintf(stderr, "bench_constrain: %s: %s\n", what, msg);
    exit(1);
}

/* One timed mask; returns the number of allowed tokens (listed in b->allowed). */
static int timed_mask(bench *b, cons_state *st, int tokens_left, stats *s) {
    for (int32_t i = 0; i < b->n_logits; i++) b->logits[i] = 0.0f;
    double t0 = now_ms();
    int n = cons_mask(st, b->logits, tokens_left);
    double dt = now_ms() - t0;
    s->total_ms += dt;
    s->max_ms = dt > s->max_ms ? dt : s->max_ms;
    s->allowed += n;
    s->steps++;
    int m = 0;
    for (int32_t i = 0; i < b->n_logits; i++)
        if (!isinf(b->logits[i])) b->allowed[m++] = i;
    return m;
}

static int has_quote_or_backslash(const bench *b, int32_t id) {
    size_t len;
    const char *s = tokenizer_token_bytes(b->tok, id, &len);
    return !s || memchr(s, '"', len) || memchr(s, '\\', len);
}

static cons_state *start(bench *b, const cons_grammar *g, int after_think, const char *prefix) {
    ms_err err = {{0}};
    cons_state *st = cons_state_create(g, b->voc, after_think, &err);
    if (!st) die("cons_state_create", err.msg);
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(b->tok, prefix, strlen(prefix), &ids, &n, &err) < 0) die("encode", err.msg);
    for (size_t i = 0; i < n; i++)
        if (cons_accept(st, ids[i]) < 0) die("prefix", prefix);
    free(ids);
    return st;
}

static void row(const char *name, const stats *s) {
    printf("| %-12s | %5d | %8.3f | %8.3f | %8ld |\n", name, s->steps, s->total_ms / s->steps, s->max_ms,
           s->allowed / s->steps);
}

/* Stays inside the string: each step takes a random allowed token without '"' or
 * '\\' (starting over when only the closing quote is left: maxLength). */
static void in_string(bench *b, const cons_grammar *g, const char *name, int steps) {
    cons_state *st = start(b, g, 0, "{\"text\": \"");
    stats s = {0};
    while (s.steps < steps) {
        int m = timed_mask(b, st, 1 << 20, &s), tries = 0;
        int32_t t;
        do t = b->allowed[rng_next(&b->rng) % (uint64_t)m];
        while (has_quote_or_backslash(b, t) && ++tries < 1000);
        if (tries == 1000) {
            cons_state_free(st);
            st = start(b, g, 0, "{\"text\": \"");
        } else if (cons_accept(st, t) < 0) {
            die(name, "an allowed token was refused");
        }
    }
    row(name, &s);
    cons_state_free(st);
}

/* The same state masked again and again. */
static void fixed(bench *b, const cons_grammar *g, const char *prefix, const char *name, int steps) {
    cons_state *st = start(b, g, 0, prefix);
    stats s = {0};
    for (int i = 0; i < steps; i++) timed_mask(b, st, 1 << 20, &s);
    row(name, &s);
    cons_state_free(st);
}

/* Random walks of `budget` tokens each until `steps` masks were timed. */
static void walks(bench *b, const cons_grammar *g, int after_think, int budget, const char *name, int steps) {
    stats s = {0};
    while (s.steps < steps) {
        ms_err err = {{0}};
        cons_state *st = cons_state_create(g, b->voc, after_think, &err);
        if (!st) die("cons_state_create", err.msg);
        for (int n = 0; n < budget && s.steps < steps; n++) {
            int m = timed_mask(b, st, budget - n, &s);
            int32_t t = b->allowed[rng_next(&b->rng) % (uint64_t)m];
            if (cons_accept(st, t) < 0) die(name, "an allowed token was refused");
            if (t == b->eos) break;
        }
        cons_state_free(st);
    }
    row(name, &s);
}

static cons_grammar *compile(const char *schema_text, double *ms) {
    ms_err err = {{0}};
    json_t *s = schema_text ? json_loads(schema_text, 0, NULL) : NULL;
    double t0 = now_ms();
    cons_grammar *g = cons_grammar_json(s, &err);
    *ms = now_ms() - t0;
    json_decref(s);
    if (!g) die("cons_grammar_json", err.msg);
    return g;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : getenv("MLASERVE_TOKENIZER");
    int steps = argc > 2 ? atoi(argv[2]) : 200;
    if (!dir) die("usage", "bench_constrain [TOKENIZER_DIR] [STEPS]");
    ms_err err = {{0}};
    double t0 = now_ms();
    tokenizer *tok = tokenizer_load(dir, &err);
    if (!tok) die("tokenizer_load", err.msg);
    double t1 = now_ms();
    bench b = {.tok = tok, .eos = tokenizer_eos_id(tok), .n_logits = 129280, .rng = 42};
    cons_vocab *voc = cons_vocab_create(tok, b.eos, b.n_logits, &err);
    if (!voc) die("cons_vocab_create", err.msg);
    double t2 = now_ms(), compile_ms;
    b.voc = voc;
    b.logits = malloc((size_t)b.n_logits * sizeof *b.logits);
    b.allowed = malloc((size_t)b.n_logits * sizeof *b.allowed);

    const char *text_schema = "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"}},\"required\":[\"text\"]}";
    const char *max_schema =
        "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\",\"maxLength\":100}},\"required\":[\"text\"]}";
    const char *nested =
        "{\"type\":\"object\",\"properties\":{\"steps\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
        "{\"explanation\":{\"type\":\"string\"},\"output\":{\"type\":\"string\"},\"score\":{\"type\":\"number\"}},"
        "\"required\":[\"explanation\",\"output\"]}},\"final_answer\":{\"type\":\"string\"},\"ok\":{\"type\":\"boolean\"}},"
        "\"required\":[\"steps\",\"final_answer\"]}";
    cons_grammar *g_text = compile(text_schema, &compile_ms);
    cons_grammar *g_max = compile(max_schema, &compile_ms);
    cons_grammar *g_any = compile(NULL, &compile_ms);
    cons_grammar *g_nested = compile(nested, &compile_ms);

    printf("tokenizer_load %.0f ms, cons_vocab_create %.0f ms, cons_grammar_json (nested) %.3f ms\n\n", t1 - t0,
           t2 - t1, compile_ms);
    printf("| scenario     | steps | mean ms  | max ms   | allowed  |\n");
    printf("|--------------|-------|----------|----------|----------|\n");
    in_string(&b, g_text, "string", steps);
    in_string(&b, g_max, "string/max", steps);
    fixed(&b, g_text, "{\"text\":", "value", steps);
    fixed(&b, g_nested, "{", "key", steps);
    walks(&b, g_any, 0, 400, "json_object", steps);
    walks(&b, g_nested, 0, 400, "schema walk", steps);
    walks(&b, g_text, 1, 1 << 20, "think", steps);

    cons_grammar_free(g_text);
    cons_grammar_free(g_max);
    cons_grammar_free(g_any);
    cons_grammar_free(g_nested);
    free(b.logits);
    free(b.allowed);
    cons_vocab_free(voc);
    tokenizer_free(tok);
    return 0;
}
