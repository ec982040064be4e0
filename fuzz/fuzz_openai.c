/* fuzz/fuzz_openai.c — the OpenAI request parser (server/openai.h:
 * oai_parse_request) on arbitrary request bodies.
 *
 * Byte 0 picks the endpoint (bit 7: /v1/responses, through
 * server/oai_responses.h; else bit 0: /v1/completions, else
 * /v1/chat/completions) and the chat template (((byte & 0x7f) >> 1) % 3: V3,
 * R1, V3.1);
 * the rest is the body, exactly as the HTTP layer passes it (bytes + length,
 * not NUL-terminated: the copy here has no terminator so ASan sees any read
 * past len). The context is the server's for a small model (max_model_len
 * 256). Properties (server/openai.h): failure fills a 4xx status, a type and a
 * message — never 5xx for anything a client sends; success gives 1..64 prompts
 * of in-vocabulary ids, 1 <= n <= OAI_MAX_N (n_return <= n: best_of, only on
 * unstreamed completions), max_tokens >= 1 (0 only to score a prompt) with
 * every prompt + max_tokens within the context, and every choice maps to a
 * sched_request. A Responses body parses into one chat choice; its Response
 * object and streaming events for a short made-up output are built (under
 * ASan), the stream ending in exactly one terminal event. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/oai_responses.h"
#include "server/openai.h"
#include "fuzz/fuzz_util.h"

#define FUZZ_MAX_MODEL_LEN 256

static cons_vocab *vocab; /* so response_format / forced tool calls reach the grammar compiler */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ms_err err = {{0}};
    vocab = cons_vocab_create(fuzz_tokenizer(), 1, 129280, &err);
    if (!vocab) abort();
    return 0;
}

/* A stored conversation for any previous_response_id starting "resp_" (others: not stored). */
static json_t *fuzz_history(void *cls, const char *id) {
    (void)cls;
    if (strncmp(id, "resp_", 5)) return NULL;
    if (!strncmp(id, "resp_run", 8)) return json_null(); /* stored without an answer: a background one running */
    return json_pack("[{s:s,s:s},{s:s,s:n,s:[{s:s,s:s,s:{s:s,s:s}}]},{s:s,s:s,s:s}]", "role", "user", "content", "Hi",
                     "role", "assistant", "content", "tool_calls", "id", "call_1", "type", "function", "function", "name",
                     "f", "arguments", "{}", "role", "tool", "tool_call_id", "call_1", "content", "ok");
}

/* The Response object and the events of a made-up output: "<think>a</think>b", finished by the limit. */
static void check_responses_output(const oai_request *r, const tokenizer *tok) {
    oai_choice c;
    oai_resp_stream s;
    FUZZ_CHECK(oai_choice_init(&c, r, NULL) == 0 && c.out, "no split output for a Responses choice");
    FUZZ_CHECK(oai_resp_stream_init(&s, "resp_0", 1) == 0, "stream init");
    json_t *events = oai_resp_stream_begin(&s, r);
    const char *texts[] = {"<think>", "a", "</think>", "b", NULL};
    for (int i = 0; i < 5; i++) {
        sched_event ev;
        memset(&ev, 0, sizeof ev);
        ev.token = texts[i] ? 1 : -1;
        ev.text = (char *)texts[i];
        ev.text_len = texts[i] ? strlen(texts[i]) : 0;
        ev.completion_tokens = i < 4 ? i + 1 : 4;
        ev.finish = texts[i] ? FINISH_NONE : FINISH_LENGTH;
        json_t *some = oai_resp_stream_event(&s, r, &c, tok, &ev);
        json_array_extend(events, some);
        json_decref(some);
    }
    int terminal = 0;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        const char *type = json_string_value(json_object_get(e, "type"));
        FUZZ_CHECK(type && json_integer_value(json_object_get(e, "sequence_number")) == (json_int_t)i, "event %zu", i);
        terminal += !strcmp(type, "response.completed") || !strcmp(type, "response.incomplete");
    }
    FUZZ_CHECK(terminal == 1, "%d terminal events", terminal);
    json_t *whole = oai_resp_stream_final(&s);
    FUZZ_CHECK(json_is_array(json_object_get(whole, "output")), "Response without output");
    json_decref(whole);
    json_decref(events);
    oai_resp_stream_free(&s);
    oai_choice_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const tokenizer *tok = fuzz_tokenizer();
    oai_ctx ctx = {.tok = tok, .served_model = "tiny", .max_model_len = FUZZ_MAX_MODEL_LEN, .vocab_size = 129280,
                   .variant = (chat_template_variant)(((data[0] & 0x7f) >> 1) % 3), .vocab = vocab};
    int responses = (data[0] & 0x80) != 0;
    ctx.resp_history = fuzz_history;
    oai_kind kind = (data[0] & 1) && !responses ? OAI_COMPLETION : OAI_CHAT;
    size_t len = size - 1;
    char *body = malloc(len ? len : 1);
    if (!body) return 0;
    memcpy(body, data + 1, len);
    oai_request r;
    oai_error err;
    memset(&err, 0, sizeof err);
    int rc = responses ? oai_responses_parse(body, len, &ctx, &r, &err) : oai_parse_request(kind, body, len, &ctx, &r, &err);
    if (rc == 0) {
        FUZZ_CHECK(r.responses == responses, "responses flag %d", r.responses);
        if (responses) {
            FUZZ_CHECK(r.n_prompts == 1 && r.n == 1 && json_is_object(r.resp_echo), "a Responses request is one chat choice");
            FUZZ_CHECK(!r.resp_store || (json_is_array(r.resp_history) && json_is_array(r.resp_items)),
                       "a stored request without its conversation or items");
            FUZZ_CHECK(!r.resp_background || (r.resp_store && !r.stream), "background unstored or streamed");
            check_responses_output(&r, tok);
        }
        FUZZ_CHECK(r.n_prompts >= 1 && r.n_prompts <= OAI_MAX_PROMPTS, "%d prompts", r.n_prompts);
        FUZZ_CHECK(r.n >= 1 && r.n <= OAI_MAX_N, "n = %d", r.n);
        /* 0 only to score a prompt: echoed on completions, or vLLM's prompt_logprobs */
        FUZZ_CHECK(r.max_tokens >= 1 || (r.max_tokens == 0 && ((kind == OAI_COMPLETION && r.echo) || r.prompt_top >= 0)),
                   "max_tokens = %d", r.max_tokens);
        FUZZ_CHECK(r.n_return >= 1 && r.n_return <= r.n, "n_return = %d of n = %d", r.n_return, r.n);
        FUZZ_CHECK(r.n_return == r.n || (kind == OAI_COMPLETION && !r.stream), "best_of on chat or streamed");
        FUZZ_CHECK(r.prompt_top >= -1 && r.prompt_top <= SCHED_MAX_TOP_LOGPROBS, "prompt_top = %d", r.prompt_top);
        FUZZ_CHECK(memchr(r.ignored, 0, sizeof r.ignored) != NULL, "ignored fields not terminated");
        FUZZ_CHECK(!r.prompt_logprobs || (r.echo && r.logprobs), "prompt logprobs without echo + logprobs");
        FUZZ_CHECK(r.n_stop >= 0 && r.n_stop <= SCHED_MAX_STOP, "n_stop = %d", r.n_stop);
        for (int p = 0; p < r.n_prompts; p++) {
            FUZZ_CHECK(r.prompts[p].n_ids >= 1, "empty prompt %d", p);
            FUZZ_CHECK(r.prompts[p].n_ids + r.max_tokens <= FUZZ_MAX_MODEL_LEN,
                       "prompt %d: %d + %d tokens exceed the context", p, r.prompts[p].n_ids, r.max_tokens);
            for (int i = 0; i < r.prompts[p].n_ids; i++)
                FUZZ_CHECK(r.prompts[p].ids[i] >= 0 && r.prompts[p].ids[i] < ctx.vocab_size, "id %d",
                           r.prompts[p].ids[i]);
        }
        for (int c = 0; c < r.n_prompts * r.n; c++) {
            sched_request sr;
            ms_err e = {{0}};
            FUZZ_CHECK(oai_sched_request(&r, c, 42, &sr, &e) == 0, "choice %d: %s", c, e.msg);
            if (sr.constraint.ctx) sr.constraint.free(sr.constraint.ctx);
        }
        oai_request_free(&r);
    } else {
        FUZZ_CHECK(err.status >= 400 && err.status < 500, "status %d for a client body (%s)", err.status,
                   err.message);
        FUZZ_CHECK(err.type && err.message[0], "error without type or message");
    }
    free(body);
    return 0;
}
