/* fuzz/fuzz_agent.c — the agent-output machinery on arbitrary bytes:
 *   byte 0 % 3 == 0: a JSON Schema (the rest, if it parses as JSON) compiled by
 *     cons_grammar_json; when it compiles, a state is created and walked along
 *     the tokens that the mask allows first (bounded), and the schema is
 *     validated against itself (cons_json_validate must not crash);
 *   == 1: toolcall_parse on the rest as generated text: every call it returns
 *     has a valid name and arguments that parse as a JSON object;
 *   == 2: reasoning_split (both start modes): no tag in either output.
 * Properties from common/constrain.h, server/toolcall.h, server/reasoning.h. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/constrain.h"
#include "fuzz/fuzz_util.h"
#include "server/reasoning.h"
#include "server/toolcall.h"

#define N_LOGITS 129280

static cons_vocab *vocab;
static float *logits;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ms_err err = {{0}};
    vocab = cons_vocab_create(fuzz_tokenizer(), 1, N_LOGITS, &err);
    logits = malloc(N_LOGITS * sizeof *logits);
    if (!vocab || !logits) abort();
    return 0;
}

/* Greedy walk on a fixed pseudo-random preference: the first allowed token by
 * a hash order is accepted; at most 24 steps with a budget of 64 tokens. */
static void walk(const cons_grammar *g, int after_think) {
    ms_err err = {{0}};
    cons_state *st = cons_state_create(g, vocab, after_think, &err);
    if (!st) return;
    for (int step = 0; step < 24 && !cons_is_complete(st); step++) {
        for (int i = 0; i < N_LOGITS; i++) logits[i] = (float)((i * 2654435761u) >> 8 & 1023);
        int allowed = cons_mask(st, logits, 64 - step);
        if (allowed <= 0) break;
        int best = -1;
        for (int i = 0; i < N_LOGITS; i++)
            if (isfinite(logits[i]) && (best < 0 || logits[i] > logits[best])) best = i;
        FUZZ_CHECK(best >= 0, "mask said %d allowed but none is finite", allowed);
        FUZZ_CHECK(cons_accept(st, best) == 0, "an allowed token %d was refused", best);
    }
    cons_state_free(st);
}

static void fuzz_schema(const char *s, size_t n) {
    json_t *schema = json_loadb(s, n, 0, NULL);
    if (!schema) return;
    ms_err err = {{0}};
    cons_grammar *g = cons_grammar_json(schema, &err);
    if (g) {
        walk(g, 0);
        cons_grammar_free(g);
    } else {
        FUZZ_CHECK(err.msg[0], "a rejected schema needs a reason");
    }
    char why[256];
    cons_json_validate(schema, schema, why, sizeof why);
    json_decref(schema);
}

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (!n || n > TOOLCALL_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", s[i])) return 0;
    return 1;
}

static void fuzz_toolcall(const char *s, size_t n) {
    toolcall_result r;
    if (toolcall_parse(s, n, &r) != 0) return;
    for (int i = 0; i < r.n_calls; i++) {
        FUZZ_CHECK(valid_name(r.calls[i].name), "call %d: bad name '%s'", i, r.calls[i].name);
        json_t *a = json_loads(r.calls[i].arguments, JSON_DECODE_ANY, NULL);
        FUZZ_CHECK(json_is_object(a), "call %d: arguments are not a JSON object: %s", i, r.calls[i].arguments);
        json_decref(a);
    }
    toolcall_result_free(&r);
}

static void fuzz_reasoning(const char *s, size_t n) {
    for (int start = 0; start < 2; start++) {
        rbuf r = {0}, c = {0};
        if (reasoning_split(s, n, start, &r, &c) == 0)
            FUZZ_CHECK(!r.len || !memmem(r.p, r.len, "</think>", 8), "a closing tag inside reasoning");
        rbuf_free(&r), rbuf_free(&c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *body = malloc(size);
    if (!body) return 0;
    memcpy(body, data + 1, size - 1);
    switch (data[0] % 3) {
    case 0: fuzz_schema(body, size - 1); break;
    case 1: fuzz_toolcall(body, size - 1); break;
    default: fuzz_reasoning(body, size - 1); break;
    }
    free(body);
    return 0;
}
