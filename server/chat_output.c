/* server/chat_output.c — see chat_output.h. */
#include "server/chat_output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "server/openai.h"

static void random_call_id(char out[32]) {
    unsigned char b[12];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        unsigned long long x = (unsigned long long)time(NULL) ^ (unsigned long long)(uintptr_t)out;
        for (size_t i = 0; i < sizeof b; i++) x = x * 6364136223846793005ull + 1442695040888963407ull, b[i] = (unsigned char)(x >> 56);
    }
    memcpy(out, "call_", 5);
    for (int i = 0; i < 24; i++) out[5 + i] = "0123456789abcdef"[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[29] = 0;
}

static int add_call(chat_output *o, const toolcall_event *ev) {
    if (o->n_calls == o->cap_calls) {
        int cap = o->cap_calls ? 2 * o->cap_calls : 4;
        chat_tool_call *c = realloc(o->calls, (size_t)cap * sizeof *c);
        if (!c) return -1;
        o->calls = c, o->cap_calls = cap;
    }
    chat_tool_call *c = &o->calls[o->n_calls];
    random_call_id(c->id);
    c->name = strdup(ev->name);
    c->arguments = strndup(ev->arguments, ev->arguments_len);
    if (!c->name || !c->arguments) {
        free(c->name), free(c->arguments);
        return -1;
    }
    o->n_calls++;
    return 0;
}

static int on_toolcall_event(void *ctx, const toolcall_event *ev) {
    chat_output *o = ctx;
    int rc = ev->kind == TOOLCALL_CALL ? add_call(o, ev) : rbuf_append(&o->content, ev->text, ev->len);
    if (rc) o->failed = 1;
    return rc;
}

int chat_output_init(chat_output *o, const chat_output_opts *opts) {
    memset(o, 0, sizeof *o);
    o->opts = *opts;
    if (opts->parse_reasoning) reasoning_init(&o->rp, opts->starts_in_reasoning);
    if (opts->parse_tool_calls && !(o->tp = toolcall_new(on_toolcall_event, o))) return -1;
    return 0;
}

void chat_output_free(chat_output *o) {
    if (o->opts.parse_reasoning) reasoning_free(&o->rp);
    toolcall_free(o->tp);
    rbuf_free(&o->reasoning), rbuf_free(&o->content), rbuf_free(&o->scratch_r), rbuf_free(&o->scratch_c);
    for (int i = 0; i < o->n_calls; i++) free(o->calls[i].name), free(o->calls[i].arguments);
    free(o->calls);
    memset(o, 0, sizeof *o);
}

/* Non-reasoning text goes to the tool-call parser when there is one, else straight to content. */
static int push_answer(chat_output *o, const char *text, size_t len) {
    if (!len) return 0;
    if (!o->tp) return rbuf_append(&o->content, text, len);
    int rc = toolcall_push(o->tp, text, len);
    const char *w = toolcall_warning(o->tp);
    if (w) snprintf(o->warning, sizeof o->warning, "%s", w);
    return rc || o->failed ? -1 : 0;
}

/* Moves one reasoning-parser result (scratch buffers) on. */
static int route_scratch(chat_output *o) {
    int rc = 0;
    if (o->scratch_r.len) rc = rbuf_append(&o->reasoning, o->scratch_r.p, o->scratch_r.len);
    if (!rc) rc = push_answer(o, o->scratch_c.p, o->scratch_c.len);
    rbuf_clear(&o->scratch_r), rbuf_clear(&o->scratch_c);
    return rc;
}

int chat_output_push(chat_output *o, const char *text, size_t len, int is_token) {
    if (!o->opts.parse_reasoning) return push_answer(o, text, len);
    if (is_token && reasoning_in_progress(&o->rp)) o->reasoning_tokens++;
    if (reasoning_push(&o->rp, text, len, &o->scratch_r, &o->scratch_c) != 0) return -1;
    return route_scratch(o);
}

int chat_output_finish(chat_output *o) {
    if (o->opts.parse_reasoning && (reasoning_flush(&o->rp, &o->scratch_r, &o->scratch_c) != 0 || route_scratch(o) != 0))
        return -1;
    if (!o->tp) return 0;
    int rc = toolcall_finish(o->tp);
    const char *w = toolcall_warning(o->tp);
    if (w) snprintf(o->warning, sizeof o->warning, "%s", w);
    return rc || o->failed ? -1 : 0;
}

static json_t *call_json(const chat_tool_call *c, int index, int with_index) {
    json_t *o = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", c->id, "type", "function", "function", "name", c->name,
                          "arguments", c->arguments);
    if (o && with_index) json_object_set_new(o, "index", json_integer(index));
    return o;
}

static json_t *text_or_null(const rbuf *b) { return b->len ? oai_json_string_lossy(b->p, b->len) : json_null(); }

json_t *chat_output_message(const chat_output *o) {
    json_t *m = json_pack("{s:s}", "role", "assistant");
    if (!m) return NULL;
    json_object_set_new(m, "content", o->n_calls && !o->content.len ? json_null()
                                                                     : oai_json_string_lossy(o->content.p ? o->content.p : "",
                                                                                             o->content.len));
    if (o->opts.parse_reasoning && o->opts.include_reasoning)
        json_object_set_new(m, "reasoning_content", text_or_null(&o->reasoning));
    if (o->n_calls) {
        json_t *calls = json_array();
        for (int i = 0; i < o->n_calls; i++) json_array_append_new(calls, call_json(&o->calls[i], i, 0));
        json_object_set_new(m, "tool_calls", calls);
    }
    return m;
}

static void add_text_delta(json_t *arr, const char *key, const rbuf *b, size_t *taken) {
    if (b->len > *taken) json_array_append_new(arr, json_pack("{s:o}", key, oai_json_string_lossy(b->p + *taken, b->len - *taken)));
    *taken = b->len;
}

json_t *chat_output_take_deltas(chat_output *o) {
    json_t *arr = json_array();
    if (!arr) return NULL;
    if (o->opts.include_reasoning) add_text_delta(arr, "reasoning_content", &o->reasoning, &o->reasoning_taken);
    else o->reasoning_taken = o->reasoning.len;
    add_text_delta(arr, "content", &o->content, &o->content_taken);
    for (; o->calls_taken < o->n_calls; o->calls_taken++) {
        const chat_tool_call *c = &o->calls[o->calls_taken];
        json_t *head = json_pack("{s:i,s:s,s:s,s:{s:s,s:s}}", "index", o->calls_taken, "id", c->id, "type", "function",
                                 "function", "name", c->name, "arguments", "");
        json_t *args = json_pack("{s:i,s:{s:s}}", "index", o->calls_taken, "function", "arguments", c->arguments);
        json_array_append_new(arr, json_pack("{s:[o]}", "tool_calls", head));
        json_array_append_new(arr, json_pack("{s:[o]}", "tool_calls", args));
    }
    return arr;
}

const char *chat_output_finish_string(const chat_output *o, finish_reason f) {
    if (o->n_calls > 0 && f == FINISH_STOP) return "tool_calls";
    return oai_finish_string(f);
}
