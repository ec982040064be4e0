/* test/unit/test_chat_output.c — server/chat_output.c: generated text split into
 * reasoning_content / content / tool_calls, as a final message and as
 * streaming deltas. References: the OpenAI chat object and chunk shapes
 * (hand-written expectations below); the deltas of a stream must add up to
 * the final message. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/chat_output.h"

#define CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define CALLS_END "<｜tool▁calls▁end｜>"
#define CALL_BEGIN "<｜tool▁call▁begin｜>"
#define CALL_END "<｜tool▁call▁end｜>"
#define SEP "<｜tool▁sep｜>"

static const char *str(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* Feeds text in pieces of `step` bytes (0: one piece), collecting every delta. */
static json_t *run(const chat_output_opts *opts, const char *text, size_t step, json_t **deltas_out, chat_output *o) {
    cr_assert_eq(chat_output_init(o, opts), 0);
    json_t *all = json_array();
    size_t n = strlen(text), pos = 0;
    while (pos < n) {
        size_t k = step && n - pos > step ? step : n - pos;
        cr_assert_eq(chat_output_push(o, text + pos, k, 1), 0);
        pos += k;
        json_t *d = chat_output_take_deltas(o);
        json_array_extend(all, d);
        json_decref(d);
    }
    cr_assert_eq(chat_output_finish(o), 0);
    json_t *last = chat_output_take_deltas(o);
    json_array_extend(all, last);
    json_decref(last);
    *deltas_out = all;
    return chat_output_message(o);
}

/* Adds the deltas up the way the OpenAI SDKs do. */
static void accumulate(const json_t *deltas, char *reasoning, char *content, json_t *calls) {
    size_t i;
    json_t *d;
    json_array_foreach(deltas, i, d) {
        if (str(d, "reasoning_content")) strcat(reasoning, str(d, "reasoning_content"));
        if (str(d, "content")) strcat(content, str(d, "content"));
        json_t *tc = json_array_get(json_object_get(d, "tool_calls"), 0);
        if (!tc) continue;
        size_t idx = (size_t)json_integer_value(json_object_get(tc, "index"));
        json_t *fn = json_object_get(tc, "function");
        if (idx == json_array_size(calls)) {
            cr_assert(str(tc, "id") && str(fn, "name"), "first delta of a call has id and name");
            json_array_append_new(calls, json_pack("{s:s,s:s,s:s}", "id", str(tc, "id"), "name", str(fn, "name"), "arguments", ""));
        }
        json_t *c = json_array_get(calls, idx);
        char buf[1024];
        snprintf(buf, sizeof buf, "%s%s", str(c, "arguments"), str(fn, "arguments") ? str(fn, "arguments") : "");
        json_object_set_new(c, "arguments", json_string(buf));
    }
}

Test(chat_output, r1_reasoning_then_content_every_step) {
    chat_output_opts opts = {.parse_reasoning = 1, .starts_in_reasoning = 1, .include_reasoning = 1};
    const char *text = "Let me think.\n</think>\n\nThe answer is 4.";
    for (size_t step = 0; step < 12; step++) {
        chat_output o;
        json_t *deltas, *m = run(&opts, text, step, &deltas, &o);
        cr_expect_str_eq(str(m, "reasoning_content"), "Let me think.\n");
        cr_expect_str_eq(str(m, "content"), "The answer is 4.");
        cr_expect_null(json_object_get(m, "tool_calls"));
        char r[256] = "", c[256] = "";
        json_t *calls = json_array();
        accumulate(deltas, r, c, calls);
        cr_expect_str_eq(r, "Let me think.\n", "step %zu", step);
        cr_expect_str_eq(c, "The answer is 4.", "step %zu", step);
        cr_expect_gt(o.reasoning_tokens, 0);
        json_decref(calls), json_decref(deltas), json_decref(m);
        chat_output_free(&o);
    }
}

Test(chat_output, include_reasoning_false_hides_it) {
    chat_output_opts opts = {.parse_reasoning = 1, .starts_in_reasoning = 1, .include_reasoning = 0};
    chat_output o;
    json_t *deltas, *m = run(&opts, "secret</think>shown", 3, &deltas, &o);
    cr_expect_null(json_object_get(m, "reasoning_content"));
    cr_expect_str_eq(str(m, "content"), "shown");
    char r[64] = "", c[64] = "";
    json_t *calls = json_array();
    accumulate(deltas, r, c, calls);
    cr_expect_str_eq(r, "");
    cr_expect_str_eq(c, "shown");
    json_decref(calls), json_decref(deltas), json_decref(m);
    chat_output_free(&o);
}

Test(chat_output, tool_calls_after_reasoning) {
    chat_output_opts opts = {.parse_reasoning = 1, .starts_in_reasoning = 1, .include_reasoning = 1, .parse_tool_calls = 1};
    const char *text = "need weather</think>" CALLS_BEGIN CALL_BEGIN "function" SEP "get_weather\n```json\n{\"city\": \"Paris\"}\n```" CALL_END
                       "\n" CALL_BEGIN "function" SEP "search\n```json\n{\"q\": \"a}b`c\"}\n```" CALL_END CALLS_END;
    for (size_t step = 0; step < 9; step += 4) {
        chat_output o;
        json_t *deltas, *m = run(&opts, text, step, &deltas, &o);
        cr_expect(json_is_null(json_object_get(m, "content")), "content null next to calls");
        cr_expect_str_eq(str(m, "reasoning_content"), "need weather");
        json_t *calls = json_object_get(m, "tool_calls");
        cr_assert_eq(json_array_size(calls), 2);
        json_t *c0 = json_array_get(calls, 0), *c1 = json_array_get(calls, 1);
        cr_expect_str_eq(str(json_object_get(c0, "function"), "name"), "get_weather");
        cr_expect_str_eq(str(json_object_get(c0, "function"), "arguments"), "{\"city\": \"Paris\"}");
        cr_expect_str_eq(str(json_object_get(c1, "function"), "arguments"), "{\"q\": \"a}b`c\"}");
        cr_expect_str_eq(str(c0, "type"), "function");
        cr_expect_eq(strncmp(str(c0, "id"), "call_", 5), 0);
        cr_expect_eq(strlen(str(c0, "id")), 29);
        cr_expect_str_eq(chat_output_finish_string(&o, FINISH_STOP), "tool_calls");
        cr_expect_str_eq(chat_output_finish_string(&o, FINISH_LENGTH), "length");
        char r[256] = "", c[256] = "";
        json_t *acc = json_array();
        accumulate(deltas, r, c, acc);
        cr_expect_str_eq(c, "");
        cr_assert_eq(json_array_size(acc), 2);
        cr_expect_str_eq(str(json_array_get(acc, 1), "arguments"), "{\"q\": \"a}b`c\"}");
        cr_expect_str_eq(str(json_array_get(acc, 0), "id"), str(c0, "id"), "stream ids = message ids");
        json_decref(acc), json_decref(deltas), json_decref(m);
        chat_output_free(&o);
    }
}

Test(chat_output, malformed_call_becomes_content_with_warning) {
    chat_output_opts opts = {.parse_tool_calls = 1};
    const char *text = "Sure. " CALLS_BEGIN CALL_BEGIN "function" SEP "f\n```json\n{not json}\n```" CALL_END CALLS_END;
    chat_output o;
    json_t *deltas, *m = run(&opts, text, 5, &deltas, &o);
    cr_expect_null(json_object_get(m, "tool_calls"));
    cr_expect(strstr(str(m, "content"), "{not json}"), "the raw call is in content: %s", str(m, "content"));
    cr_expect(o.warning[0], "a warning is recorded");
    cr_expect_str_eq(chat_output_finish_string(&o, FINISH_STOP), "stop");
    json_decref(deltas), json_decref(m);
    chat_output_free(&o);
}

Test(chat_output, plain_content_without_parsers) {
    chat_output_opts opts = {0};
    chat_output o;
    json_t *deltas, *m = run(&opts, "<think>kept</think> as is", 4, &deltas, &o);
    cr_expect_str_eq(str(m, "content"), "<think>kept</think> as is");
    cr_expect_null(json_object_get(m, "reasoning_content"));
    json_decref(deltas), json_decref(m);
    chat_output_free(&o);
}
