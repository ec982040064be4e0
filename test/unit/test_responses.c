/* test/unit/test_responses.c — server/oai_responses: the Responses API body
 * translated into its chat body, the errors naming Responses parameters, the
 * Response object and the streaming events.
 *
 * References: OpenAI's Responses API reference for the item and event shapes
 * (hand-written expected JSON below); /v1/chat/completions' own parser for
 * the prompt a translated body must give (the same token ids); the
 * non-streaming Response of the same choice for what the stream's final
 * event must carry. Needs MLASERVE_TOKENIZER (run-tests.sh). */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "server/oai_responses.h"

static tokenizer *tok;

static void setup(void) {
    const char *dir = getenv("MLASERVE_TOKENIZER");
    cr_assert(dir, "MLASERVE_TOKENIZER is not set");
    ms_err err = {{0}};
    tok = tokenizer_load(dir, &err);
    cr_assert(tok, "tokenizer_load: %s", err.msg);
}

static void teardown(void) { tokenizer_free(tok); }

TestSuite(responses, .init = setup, .fini = teardown);

static oai_ctx ctx(int reasoning_flag) {
    return (oai_ctx){.tok = tok, .served_model = "tiny", .max_model_len = 256, .vocab_size = 129280,
                     .reasoning_flag = reasoning_flag};
}

/* oai_responses_to_chat(body) must equal the JSON want. */
static void expect_chat(const char *body, const char *want) {
    json_t *b = json_loads(body, 0, NULL), *w = json_loads(want, 0, NULL);
    cr_assert(b && w, "bad test JSON");
    oai_error e = {0};
    json_t *got = oai_responses_to_chat(b, NULL, &e);
    cr_assert(got, "%s: %s", body, e.message);
    char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT), *x = json_dumps(w, JSON_SORT_KEYS | JSON_COMPACT);
    cr_expect(json_equal(got, w), "%s\n got  %s\n want %s", body, g, x);
    free(g), free(x);
    json_decref(b), json_decref(w), json_decref(got);
}

Test(responses, string_input_and_instructions) {
    expect_chat("{\"model\":\"tiny\",\"input\":\"Hi\",\"instructions\":\"Be brief\",\"max_output_tokens\":5,"
                "\"temperature\":0.5,\"metadata\":{\"a\":\"b\"},\"store\":false,\"seed\":3}",
                "{\"model\":\"tiny\",\"temperature\":0.5,\"seed\":3,\"max_completion_tokens\":5,\"messages\":"
                "[{\"role\":\"system\",\"content\":\"Be brief\"},{\"role\":\"user\",\"content\":\"Hi\"}]}");
}

Test(responses, items_become_messages) {
    expect_chat("{\"model\":\"tiny\",\"input\":["
                "{\"role\":\"developer\",\"content\":[{\"type\":\"input_text\",\"text\":\"a\"},{\"type\":\"input_text\",\"text\":\"b\"}]},"
                "{\"type\":\"message\",\"role\":\"user\",\"content\":\"q\"},"
                "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]},"
                "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"let me look\"}]},"
                "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{}\"},"
                "{\"type\":\"function_call\",\"call_id\":\"c2\",\"name\":\"g\",\"arguments\":\"{\\\"x\\\":1}\"},"
                "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"one\"},"
                "{\"type\":\"function_call_output\",\"call_id\":\"c2\",\"output\":[{\"type\":\"input_text\",\"text\":\"two\"}]},"
                "{\"type\":\"function_call\",\"call_id\":\"c3\",\"name\":\"f\",\"arguments\":\"{}\"}]}",
                "{\"model\":\"tiny\",\"messages\":["
                "{\"role\":\"developer\",\"content\":\"ab\"},"
                "{\"role\":\"user\",\"content\":\"q\"},"
                "{\"role\":\"assistant\",\"content\":\"let me look\",\"tool_calls\":["
                "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
                "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"x\\\":1}\"}}]},"
                "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"one\"},"
                "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"two\"},"
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                "{\"id\":\"c3\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}");
}

Test(responses, tools_choice_and_format) {
    expect_chat("{\"model\":\"tiny\",\"input\":\"w\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"description\":\"d\","
                "\"parameters\":{\"type\":\"object\"},\"strict\":true}],\"tool_choice\":{\"type\":\"function\",\"name\":\"f\"},"
                "\"parallel_tool_calls\":false,\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"s\",\"schema\":{\"type\":\"object\"},"
                "\"strict\":true},\"verbosity\":\"low\"}}",
                "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"w\"}],\"parallel_tool_calls\":false,"
                "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\",\"parameters\":{\"type\":\"object\"},"
                "\"strict\":true}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
                "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"s\",\"schema\":{\"type\":\"object\"},\"strict\":true}}}");
    expect_chat("{\"model\":\"tiny\",\"input\":\"w\",\"tool_choice\":\"none\",\"text\":{\"format\":{\"type\":\"json_object\"}}}",
                "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"w\"}],\"tool_choice\":\"none\","
                "\"response_format\":{\"type\":\"json_object\"}}");
}

static int parse(const char *body, int reasoning_flag, oai_request *r, oai_error *e) {
    oai_ctx c = ctx(reasoning_flag);
    memset(e, 0, sizeof *e);
    return oai_responses_parse(body, strlen(body), &c, r, e);
}

static void expect_error(const char *body, int status, const char *param) {
    oai_request r;
    oai_error e;
    cr_expect_eq(parse(body, -1, &r, &e), -1, "accepted: %s", body);
    cr_expect_eq(e.status, status, "%s: status %d, want %d (%s)", body, e.status, status, e.message);
    cr_expect_str_eq(e.param, param, "%s: param '%s', want '%s' (%s)", body, e.param, param, e.message);
    cr_expect(e.message[0], "%s: empty message", body);
}

#define RESP(rest) "{\"model\":\"tiny\",\"input\":\"Hi\"" rest "}"

Test(responses, errors_name_responses_parameters) {
    expect_error("{\"model\":\"tiny\"}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[]}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":7}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[3]}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"image_url\":\"u\"}]}]}",
                 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[{\"type\":\"item_reference\",\"id\":\"m\"}]}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"arguments\":\"{}\"}]}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[{\"type\":\"function_call_output\",\"output\":\"x\"}]}", 400, "input");
    expect_error("{\"model\":\"tiny\",\"input\":[{\"type\":\"reasoning\",\"summary\":[]}]}", 400, "input");
    expect_error(RESP(",\"instructions\":5"), 400, "instructions");
    expect_error(RESP(",\"previous_response_id\":\"resp_1\""), 400, "previous_response_id");
    expect_error(RESP(",\"conversation\":\"c\""), 400, "conversation");
    expect_error(RESP(",\"background\":true"), 400, "background"); /* this ctx stores nothing */
    expect_error(RESP(",\"top_logprobs\":21"), 400, "top_logprobs");
    expect_error(RESP(",\"truncation\":\"auto\""), 400, "truncation");
    expect_error(RESP(",\"include\":[\"file_search_call.results\"]"), 400, "include");
    expect_error(RESP(",\"include\":\"x\""), 400, "include");
    expect_error(RESP(",\"metadata\":[]"), 400, "metadata");
    expect_error(RESP(",\"store\":\"yes\""), 400, "store");
    expect_error(RESP(",\"tools\":[{\"type\":\"web_search\"}]"), 400, "tools");
    expect_error(RESP(",\"tools\":{}"), 400, "tools");
    expect_error(RESP(",\"tool_choice\":{\"type\":\"file_search\"}"), 400, "tool_choice");
    expect_error(RESP(",\"text\":{\"format\":{\"type\":\"xml\"}}"), 400, "text.format.type");
    expect_error(RESP(",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"s\"}}"), 400, "text.format.schema");
    expect_error(RESP(",\"text\":[]"), 400, "text");
    /* from the chat parser, renamed */
    expect_error(RESP(",\"max_output_tokens\":-1"), 400, "max_output_tokens");
    expect_error(RESP(",\"max_output_tokens\":1000"), 400, "max_output_tokens");
    expect_error(RESP(",\"temperature\":9"), 400, "temperature");
    expect_error(RESP(",\"text\":{\"format\":{\"type\":\"json_schema\",\"schema\":{\"type\":\"object\",\"patternProperties\":{}}}}"),
                 400, "text.format");
    expect_error("{\"model\":\"other\",\"input\":\"Hi\"}", 404, "model");
    expect_error("{\"model\":\"tiny\",\"input\":", 400, "");
    expect_error("[1]", 400, "");
}

/* The prompt of a Responses body is the prompt of the chat body it means. */
Test(responses, prompt_equals_chat) {
    const char *rb = "{\"model\":\"tiny\",\"instructions\":\"S\",\"input\":[{\"role\":\"user\",\"content\":\"Hi\"},"
                     "{\"role\":\"assistant\",\"content\":\"Yo\"},{\"role\":\"user\",\"content\":\"More\"}]}";
    const char *cb = "{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Hi\"},"
                     "{\"role\":\"assistant\",\"content\":\"Yo\"},{\"role\":\"user\",\"content\":\"More\"}]}";
    oai_request r, c;
    oai_error e;
    cr_assert_eq(parse(rb, -1, &r, &e), 0, "%s", e.message);
    oai_ctx x = ctx(-1);
    cr_assert_eq(oai_parse_request(OAI_CHAT, cb, strlen(cb), &x, &c, &e), 0, "%s", e.message);
    cr_expect_eq(r.responses, 1);
    cr_expect_eq(r.kind, OAI_CHAT);
    cr_assert_eq(r.prompts[0].n_ids, c.prompts[0].n_ids);
    cr_expect_eq(memcmp(r.prompts[0].ids, c.prompts[0].ids, (size_t)c.prompts[0].n_ids * sizeof(int32_t)), 0);
    cr_expect_str_eq(json_string_value(json_object_get(r.resp_echo, "instructions")), "S");
    cr_expect(json_is_false(json_object_get(r.resp_echo, "store")));
    cr_expect_str_eq(json_string_value(json_object_get(r.resp_echo, "tool_choice")), "none");
    cr_expect_str_eq(r.ignored, "");
    oai_request_free(&r);
    oai_request_free(&c);
    cr_assert_eq(parse(RESP(",\"frobnicate\":1,\"service_tier\":\"auto\""), -1, &r, &e), 0, "%s", e.message);
    cr_expect_str_eq(r.ignored, "frobnicate");
    oai_request_free(&r);
}

static sched_event text_event(const char *text, int completion_tokens, finish_reason f) {
    sched_event ev;
    memset(&ev, 0, sizeof ev);
    ev.token = text ? 100 : -1;
    ev.text = (char *)text;
    ev.text_len = text ? strlen(text) : 0;
    ev.completion_tokens = completion_tokens;
    ev.finish = f;
    return ev;
}

static const char *etype(const json_t *e) { return json_string_value(json_object_get(e, "type")); }

/* Runs texts through the event machine (then the finish); checks the event
 * numbering and that the last event carries the final Response. Returns the
 * events (new array) and *whole (the Response a non-streaming request gets). */
static json_t *run(const char *body, int reasoning_flag, const char *const *texts, int n, finish_reason f, json_t **whole) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(body, reasoning_flag, &r, &e), 0, "%s", e.message);
    oai_resp_stream s;
    oai_choice c;
    cr_assert_eq(oai_resp_stream_init(&s, "resp_0123456789abcdef01234567", 5), 0);
    cr_assert_eq(oai_choice_init(&c, &r, NULL), 0);
    json_t *all = oai_resp_stream_begin(&s, &r);
    cr_expect_null(oai_resp_stream_final(&s), "no Response before the end");
    for (int i = 0; i <= n; i++) {
        sched_event ev = i < n ? text_event(texts[i], i + 1, FINISH_NONE) : text_event(NULL, n, f);
        if (f == FINISH_ERROR && i == n) snprintf(ev.error, sizeof ev.error, "boom");
        if (i < n) ev.logprob = -0.5f * (float)(i + 1), ev.n_top = 1, ev.top[0] = (sched_logprob){100, -0.5f};
        json_t *some = oai_resp_stream_event(&s, &r, &c, tok, &ev);
        json_array_extend(all, some);
        json_decref(some);
    }
    *whole = oai_resp_stream_final(&s);
    cr_assert(*whole, "a Response after the finish");
    size_t i;
    json_t *ev;
    json_array_foreach(all, i, ev) cr_expect_eq(json_integer_value(json_object_get(ev, "sequence_number")), (json_int_t)i);
    json_t *last = json_object_get(json_array_get(all, json_array_size(all) - 1), "response");
    cr_expect(json_equal(last, *whole), "the last event carries the final Response");
    oai_choice_free(&c);
    oai_resp_stream_free(&s);
    oai_request_free(&r);
    return all;
}

/* The event types in order, ", "-joined, from index `from`. */
static void expect_types(const json_t *events, size_t from, const char *want) {
    char got[2048] = "";
    size_t len = 0;
    for (size_t i = from; i < json_array_size(events); i++)
        len += (size_t)snprintf(got + len, sizeof got - len, "%s%s", len ? ", " : "", etype(json_array_get(events, i)));
    cr_expect_str_eq(got, want);
}

static const char *str_at(const json_t *o, const char *path1, const char *path2) {
    json_t *v = json_object_get(o, path1);
    return json_string_value(path2 ? json_object_get(v, path2) : v);
}

Test(responses, stream_text_events) {
    const char *texts[] = {"Hello", " world"};
    json_t *whole;
    json_t *ev = run(RESP(""), -1, texts, 2, FINISH_STOP, &whole);
    expect_types(ev, 0,
                 "response.created, response.in_progress, response.output_item.added, response.content_part.added, "
                 "response.output_text.delta, response.output_text.delta, response.output_text.done, "
                 "response.content_part.done, response.output_item.done, response.completed");
    cr_expect_str_eq(str_at(json_array_get(ev, 4), "delta", NULL), "Hello");
    cr_expect_str_eq(str_at(json_array_get(ev, 4), "item_id", NULL), "msg_0123456789abcdef01234567_0");
    cr_expect_str_eq(str_at(json_array_get(ev, 6), "text", NULL), "Hello world");
    cr_expect_str_eq(str_at(json_array_get(ev, 0), "response", "status"), "in_progress");
    cr_expect_str_eq(str_at(whole, "status", NULL), "completed");
    cr_expect(json_is_null(json_object_get(whole, "incomplete_details")));
    json_t *item = json_array_get(json_object_get(whole, "output"), 0);
    cr_expect_str_eq(str_at(item, "type", NULL), "message");
    cr_expect_str_eq(str_at(item, "status", NULL), "completed");
    cr_expect_str_eq(str_at(json_array_get(json_object_get(item, "content"), 0), "text", NULL), "Hello world");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(whole, "usage"), "output_tokens")), 2);
    json_decref(ev), json_decref(whole);
}

Test(responses, stream_reasoning_then_text_incomplete) {
    const char *texts[] = {"<think>", "ponder", "</think>", "Answer"};
    json_t *whole;
    json_t *ev = run(RESP(""), 1, texts, 4, FINISH_LENGTH, &whole);
    expect_types(ev, 2,
                 "response.output_item.added, response.content_part.added, response.reasoning_text.delta, "
                 "response.reasoning_text.done, response.content_part.done, response.output_item.done, "
                 "response.output_item.added, response.content_part.added, response.output_text.delta, "
                 "response.output_text.done, response.content_part.done, response.output_item.done, response.incomplete");
    cr_expect_str_eq(str_at(json_array_get(ev, 4), "delta", NULL), "ponder");
    cr_expect_str_eq(str_at(whole, "status", NULL), "incomplete");
    cr_expect_str_eq(str_at(whole, "incomplete_details", "reason"), "max_output_tokens");
    json_t *out = json_object_get(whole, "output");
    cr_assert_eq(json_array_size(out), 2);
    cr_expect_str_eq(str_at(json_array_get(out, 0), "type", NULL), "reasoning");
    cr_expect_str_eq(str_at(json_array_get(out, 0), "status", NULL), "completed");
    cr_expect_str_eq(str_at(json_array_get(out, 1), "status", NULL), "incomplete");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(json_object_get(whole, "usage"), "output_tokens_details"),
                                                    "reasoning_tokens")),
                 2, "ponder and </think>: the tokens generated while reasoning was open (chat's count)");
    json_decref(ev), json_decref(whole);
}

Test(responses, empty_and_failed) {
    json_t *whole;
    json_t *ev = run(RESP(""), -1, NULL, 0, FINISH_STOP, &whole);
    expect_types(ev, 2,
                 "response.output_item.added, response.content_part.added, response.output_text.done, "
                 "response.content_part.done, response.output_item.done, response.completed");
    cr_expect_eq(json_array_size(json_object_get(whole, "output")), 1, "an empty answer is one empty message");
    json_decref(ev), json_decref(whole);
    const char *texts[] = {"Hi"};
    ev = run(RESP(""), -1, texts, 1, FINISH_ERROR, &whole);
    json_t *last = json_array_get(ev, json_array_size(ev) - 1);
    cr_expect_str_eq(etype(last), "response.failed");
    cr_expect_str_eq(str_at(json_object_get(last, "response"), "error", "message"), "boom");
    cr_expect_str_eq(str_at(whole, "status", NULL), "failed");
    cr_expect_str_eq(str_at(whole, "error", "code"), "server_error");
    json_decref(ev), json_decref(whole);
}

Test(responses, echoed_fields) {
    json_t *whole;
    json_t *ev = run(RESP(",\"instructions\":\"I\",\"metadata\":{\"k\":\"v\"},\"max_output_tokens\":9,\"top_p\":0.5,"
                          "\"reasoning\":{\"effort\":\"low\"},\"user\":\"u\""),
                     -1, NULL, 0, FINISH_STOP, &whole);
    cr_expect_str_eq(str_at(whole, "object", NULL), "response");
    cr_expect_str_eq(str_at(whole, "id", NULL), "resp_0123456789abcdef01234567");
    cr_expect_eq(json_integer_value(json_object_get(whole, "created_at")), 5);
    cr_expect_str_eq(str_at(whole, "model", NULL), "tiny");
    cr_expect_str_eq(str_at(whole, "instructions", NULL), "I");
    cr_expect_str_eq(str_at(whole, "metadata", "k"), "v");
    cr_expect_eq(json_integer_value(json_object_get(whole, "max_output_tokens")), 9);
    cr_expect_float_eq(json_real_value(json_object_get(whole, "top_p")), 0.5, 1e-9);
    cr_expect_str_eq(str_at(whole, "reasoning", "effort"), "low");
    cr_expect(json_is_null(json_object_get(json_object_get(whole, "reasoning"), "summary")));
    cr_expect_str_eq(str_at(whole, "user", NULL), "u");
    cr_expect_str_eq(str_at(whole, "truncation", NULL), "disabled");
    cr_expect_str_eq(str_at(json_object_get(whole, "text"), "format", "type"), "text");
    cr_expect(json_is_false(json_object_get(whole, "store")));
    cr_expect(json_is_array(json_object_get(whole, "tools")));
    json_decref(ev), json_decref(whole);
}

/* ---- stored responses: previous_response_id ---- */

static json_t *fake_history(void *cls, const char *id) {
    (void)cls;
    if (!strcmp(id, "resp_running")) return json_null(); /* stored without an answer (background, unfinished) */
    if (strcmp(id, "resp_known")) return NULL;
    return json_loads("[{\"role\":\"user\",\"content\":\"A\"},{\"role\":\"assistant\",\"content\":\"X\"}]", 0, NULL);
}

static int parse_stored(const char *body, oai_request *r, oai_error *e) {
    oai_ctx c = ctx(-1);
    c.resp_history = fake_history;
    memset(e, 0, sizeof *e);
    return oai_responses_parse(body, strlen(body), &c, r, e);
}

Test(responses, previous_response_goes_between_instructions_and_input) {
    json_t *history = fake_history(NULL, "resp_known");
    json_t *b = json_loads("{\"model\":\"tiny\",\"instructions\":\"I\",\"input\":\"B\",\"previous_response_id\":\"resp_known\"}", 0, NULL);
    oai_error e = {0};
    json_t *chat = oai_responses_to_chat(b, history, &e);
    cr_assert(chat, "%s", e.message);
    json_t *want = json_loads("[{\"role\":\"system\",\"content\":\"I\"},{\"role\":\"user\",\"content\":\"A\"},"
                              "{\"role\":\"assistant\",\"content\":\"X\"},{\"role\":\"user\",\"content\":\"B\"}]", 0, NULL);
    cr_expect(json_equal(json_object_get(chat, "messages"), want), "%s", json_dumps(json_object_get(chat, "messages"), 0));
    json_decref(want), json_decref(chat), json_decref(b), json_decref(history);
}

Test(responses, stored_by_default_and_history_kept) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse_stored("{\"model\":\"tiny\",\"instructions\":\"I\",\"input\":\"B\",\"previous_response_id\":\"resp_known\"}",
                              &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.resp_store, 1, "store defaults to true (OpenAI's default)");
    cr_expect(json_is_true(json_object_get(r.resp_echo, "store")));
    cr_expect_str_eq(json_string_value(json_object_get(r.resp_echo, "previous_response_id")), "resp_known");
    cr_expect_str_eq(r.ignored, "", "previous_response_id is read, not ignored");
    /* the conversation kept for the next turn leaves the instructions out (OpenAI does not carry them over) */
    json_t *want = json_loads("[{\"role\":\"user\",\"content\":\"A\"},{\"role\":\"assistant\",\"content\":\"X\"},"
                              "{\"role\":\"user\",\"content\":\"B\"}]", 0, NULL);
    cr_expect(json_equal(r.resp_history, want), "%s", json_dumps(r.resp_history, 0));
    json_decref(want);
    /* what is stored after the answer "Y" */
    oai_choice c;
    cr_assert_eq(oai_choice_init(&c, &r, NULL), 0);
    sched_event ev = text_event("Y", 1, FINISH_STOP);
    oai_choice_add(&c, &r, tok, &ev);
    json_t *h = oai_responses_history(&r, &c);
    want = json_loads("[{\"role\":\"user\",\"content\":\"A\"},{\"role\":\"assistant\",\"content\":\"X\"},"
                      "{\"role\":\"user\",\"content\":\"B\"},{\"role\":\"assistant\",\"content\":\"Y\"}]", 0, NULL);
    cr_expect(json_equal(h, want), "%s", json_dumps(h, 0));
    json_t *items = oai_responses_items(&r, "resp_0123");
    json_t *want_items = json_loads("[{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"B\"}],"
                                    "\"id\":\"in_0123_0\"}]", 0, NULL);
    cr_expect(json_equal(items, want_items), "%s", json_dumps(items, 0));
    json_decref(h), json_decref(want), json_decref(items), json_decref(want_items);
    oai_choice_free(&c);
    oai_request_free(&r);

    cr_assert_eq(parse_stored(RESP(",\"store\":false"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.resp_store, 0);
    cr_expect(json_is_false(json_object_get(r.resp_echo, "store")));
    cr_expect_null(r.resp_history);
    oai_request_free(&r);
}

Test(responses, unknown_previous_response_is_404) {
    oai_request r;
    oai_error e;
    cr_expect_eq(parse_stored(RESP(",\"previous_response_id\":\"resp_gone\""), &r, &e), -1);
    cr_expect_eq(e.status, 404);
    cr_expect_str_eq(e.param, "previous_response_id");
    cr_expect_str_eq(e.code, "previous_response_not_found");
    cr_expect_eq(parse_stored(RESP(",\"previous_response_id\":7"), &r, &e), -1);
    cr_expect_eq(e.status, 400);
    cr_expect_str_eq(e.param, "previous_response_id");
}

/* background: true is kept (and echoed) when the response is stored and not
 * streamed; previous_response_id naming a stored response without an answer
 * is a 400. */
Test(responses, background_needs_store_and_no_stream) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse_stored(RESP(",\"background\":true"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.resp_background, 1);
    cr_expect(json_is_true(json_object_get(r.resp_echo, "background")));
    cr_expect_str_eq(r.ignored, "", "background is read, not ignored");
    oai_request_free(&r);
    cr_assert_eq(parse_stored(RESP(",\"background\":false"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.resp_background, 0);
    cr_expect_null(json_object_get(r.resp_echo, "background"), "false: the envelope's own false stands");
    oai_request_free(&r);
    cr_assert_eq(parse_stored(RESP(",\"background\":null"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.resp_background, 0);
    oai_request_free(&r);
    const struct {
        const char *body, *param;
    } bad[] = {
        {RESP(",\"background\":true,\"store\":false"), "store"},
        {RESP(",\"background\":true,\"stream\":true"), "background"},
        {RESP(",\"background\":1"), "background"},
        {RESP(",\"background\":\"yes\""), "background"},
        {RESP(",\"previous_response_id\":\"resp_running\""), "previous_response_id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(parse_stored(bad[i].body, &r, &e), -1, "accepted: %s", bad[i].body);
        cr_expect_eq(e.status, 400, "%s: %d", bad[i].body, e.status);
        cr_expect_str_eq(e.param, bad[i].param, "%s: param %s (%s)", bad[i].body, e.param, e.message);
    }
    /* the queued Response a background request is answered with */
    oai_resp_stream s;
    cr_assert_eq(parse_stored(RESP(",\"background\":true,\"metadata\":{\"k\":\"v\"}"), &r, &e), 0, "%s", e.message);
    cr_assert_eq(oai_resp_stream_init(&s, "resp_00ff", 7), 0);
    json_t *q = oai_resp_stream_pending(&s, &r, "queued");
    cr_expect_str_eq(json_string_value(json_object_get(q, "status")), "queued");
    cr_expect_str_eq(json_string_value(json_object_get(q, "id")), "resp_00ff");
    cr_expect(json_is_true(json_object_get(q, "background")));
    cr_expect_eq(json_array_size(json_object_get(q, "output")), 0);
    cr_expect(json_is_null(json_object_get(q, "usage")));
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(q, "metadata"), "k")), "v");
    json_decref(q);
    oai_resp_stream_free(&s);
    oai_request_free(&r);
}

/* Logprobs go with the message's text only: reasoning tokens (and the
 * closing tag's) have none; each delta carries its tokens'. Reference: the
 * hand-counted split of the four tokens below. */
Test(responses, logprobs_follow_the_message_text) {
    const char *texts[] = {"<think>", "ponder", "</think>", "Hello", " world"};
    json_t *whole;
    json_t *ev = run(RESP(",\"include\":[\"message.output_text.logprobs\"],\"top_logprobs\":1"), 1, texts, 5, FINISH_STOP,
                     &whole);
    json_t *out = json_object_get(whole, "output");
    cr_assert_eq(json_array_size(out), 2);
    json_t *part = json_array_get(json_object_get(json_array_get(out, 1), "content"), 0);
    json_t *lps = json_object_get(part, "logprobs");
    cr_assert_eq(json_array_size(lps), 2, "Hello and ' world': %s", json_dumps(lps, 0));
    cr_expect_float_eq(json_real_value(json_object_get(json_array_get(lps, 0), "logprob")), -2.0, 1e-6, "the 4th token's");
    cr_expect_float_eq(json_real_value(json_object_get(json_array_get(lps, 1), "logprob")), -2.5, 1e-6);
    cr_expect_eq(json_array_size(json_object_get(json_array_get(lps, 0), "top_logprobs")), 1);
    size_t i, n_delta = 0;
    json_t *e;
    json_array_foreach(ev, i, e) {
        if (strcmp(etype(e), "response.output_text.delta")) continue;
        cr_expect_eq(json_array_size(json_object_get(e, "logprobs")), 1, "one token per delta here");
        n_delta++;
    }
    cr_expect_eq(n_delta, 2);
    cr_expect_eq(json_integer_value(json_object_get(whole, "top_logprobs")), 1);
    json_decref(ev), json_decref(whole);
    /* not asked: empty lists */
    ev = run(RESP(""), -1, texts + 3, 2, FINISH_STOP, &whole);
    part = json_array_get(json_object_get(json_array_get(json_object_get(whole, "output"), 0), "content"), 0);
    cr_expect_eq(json_array_size(json_object_get(part, "logprobs")), 0);
    json_decref(ev), json_decref(whole);
}
