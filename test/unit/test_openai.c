/* test/unit/test_openai.c — server/openai: request parsing/validation and the
 * response objects.
 *
 * References: OpenAI's API reference for types, ranges and object shapes
 * (hand-written expected values below); the tokenizer's own encode of the
 * hand-rendered chat text ("<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>")
 * for the prompt ids. The module is compiled into this test directly (its
 * static helpers are reachable). Needs MLASERVE_TOKENIZER (run-tests.sh). */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "server/openai.c"

static tokenizer *tok;

static void setup(void) {
    const char *dir = getenv("MLASERVE_TOKENIZER");
    cr_assert(dir, "MLASERVE_TOKENIZER is not set");
    ms_err err = {{0}};
    tok = tokenizer_load(dir, &err);
    cr_assert(tok, "tokenizer_load: %s", err.msg);
}

static void teardown(void) { tokenizer_free(tok); }

TestSuite(openai, .init = setup, .fini = teardown);

static oai_ctx ctx(void) { return (oai_ctx){.tok = tok, .served_model = "tiny", .max_model_len = 64, .vocab_size = 129280}; }

static int parse(oai_kind kind, const char *body, oai_request *r, oai_error *e) {
    oai_ctx c = ctx();
    memset(e, 0, sizeof *e);
    return oai_parse_request(kind, body, strlen(body), &c, r, e);
}

/* body must fail with status and param ("" for null). */
static void expect_error(oai_kind kind, const char *body, int status, const char *param) {
    oai_request r;
    oai_error e;
    cr_expect_eq(parse(kind, body, &r, &e), -1, "accepted: %s", body);
    cr_expect_eq(e.status, status, "%s: status %d, want %d (%s)", body, e.status, status, e.message);
    cr_expect_str_eq(e.param, param, "%s: param '%s', want '%s' (%s)", body, e.param, param, e.message);
    cr_expect(e.message[0], "%s: empty message", body);
}

#define CHAT(rest) "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]" rest "}"
#define CMPL(rest) "{\"model\":\"tiny\",\"prompt\":\"Hello world\"" rest "}"

Test(openai, chat_minimal) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_CHAT, CHAT(""), &r, &e), 0, "%s", e.message);
    /* reference: the tokenizer on the hand-rendered template */
    const char *want_text = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>";
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(tok, want_text, strlen(want_text), &ids, &n, NULL), 0);
    cr_assert_eq(r.n_prompts, 1);
    cr_assert_eq(r.prompts[0].n_ids, (int)n);
    cr_expect_arr_eq(r.prompts[0].ids, ids, n * sizeof *ids);
    free(ids);
    cr_expect_eq(r.n, 1);
    cr_expect_eq(r.stream, 0);
    cr_expect_eq(r.max_tokens_given, 0);
    cr_expect_eq(r.max_tokens, 64 - (int)n, "max_tokens defaults to the rest of the context");
    cr_expect_eq(r.sampling.temperature, 1.0f);
    cr_expect_eq(r.logprobs, 0);
    oai_request_free(&r);
}

/* logit_bias: token-id keys to biases, handed to every choice's sched_request */
Test(openai, logit_bias_parsed) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"n\":2,\"logit_bias\":{\"0\":-100,\"129279\":100,\"42\":2.5}"), &r, &e), 0,
                 "%s", e.message);
    cr_assert_eq(r.n_bias, 3);
    int32_t want_ids[] = {0, 129279, 42};
    float want_v[] = {-100.0f, 100.0f, 2.5f};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(r.bias_ids[i], want_ids[i]);
        cr_expect_eq(r.bias_values[i], want_v[i]);
    }
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 1, 0, &sr, NULL), 0);
    cr_expect_eq(sr.n_bias, 3);
    cr_expect_eq(sr.bias_ids, r.bias_ids);
    cr_expect_eq(sr.bias_values, r.bias_values);
    oai_request_free(&r);
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"logit_bias\":{}"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.n_bias, 0);
    oai_request_free(&r);
}

static void expect_fim(const oai_prompt *p, int bos, const int32_t *pre, size_t n_pre, const char *suffix) {
    int32_t *suf;
    size_t n_suf;
    cr_assert_eq(tokenizer_encode(tok, suffix, strlen(suffix), &suf, &n_suf, NULL), 0);
    int32_t want[64];
    size_t k = 0;
    if (bos) want[k++] = tokenizer_bos_id(tok);
    want[k++] = tokenizer_token_id(tok, "<｜fim▁begin｜>");
    for (size_t i = 0; i < n_pre; i++) want[k++] = pre[i];
    want[k++] = tokenizer_token_id(tok, "<｜fim▁hole｜>");
    for (size_t i = 0; i < n_suf; i++) want[k++] = suf[i];
    want[k++] = tokenizer_token_id(tok, "<｜fim▁end｜>");
    free(suf);
    cr_assert_eq(p->n_ids, (int)k);
    cr_expect_arr_eq(p->ids, want, k * sizeof *want);
}

/* suffix: DeepSeek's PSM fill-in-the-middle layout around each prompt */
Test(openai, suffix_builds_fim_prompt) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":[\"def f(\",[5,6]],\"suffix\":\"):\\n  pass\"}",
                       &r, &e), 0, "%s", e.message);
    cr_assert_eq(r.n_prompts, 2);
    int32_t *pre;
    size_t n_pre;
    cr_assert_eq(tokenizer_encode(tok, "def f(", 6, &pre, &n_pre, NULL), 0);
    expect_fim(&r.prompts[0], 1, pre, n_pre, "):\n  pass");
    free(pre);
    int32_t toks[] = {5, 6};
    expect_fim(&r.prompts[1], 0, toks, 2, "):\n  pass"); /* token prompts get no BOS */
    cr_expect_eq(r.max_tokens, 64 - r.prompts[0].n_ids, "the context left after the longest wrapped prompt");
    oai_request_free(&r);
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"suffix\":\"\""), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.prompts[0].ids[r.prompts[0].n_ids - 1], tokenizer_token_id(tok, "<｜fim▁end｜>"));
    oai_request_free(&r);
    expect_error(OAI_COMPLETION, CMPL(",\"suffix\":5"), 400, "suffix");
    expect_error(OAI_COMPLETION, CMPL(",\"suffix\":\"x\",\"echo\":true"), 400, "suffix");
    expect_error(OAI_CHAT, CHAT(",\"suffix\":\"x\""), 400, "suffix");
}

/* vLLM's stopping extensions, handed to every choice */
Test(openai, vllm_stopping_parameters) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"max_tokens\":9,\"stop_token_ids\":[7,129279],\"min_tokens\":4,"
                                            "\"include_stop_str_in_output\":true,\"skip_special_tokens\":false"), &r, &e), 0,
                 "%s", e.message);
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 0, 0, &sr, NULL), 0);
    cr_expect_eq(sr.n_stop_ids, 2);
    cr_expect_eq(sr.stop_ids[0], 7);
    cr_expect_eq(sr.stop_ids[1], 129279);
    cr_expect_eq(sr.min_tokens, 4);
    cr_expect_eq(sr.include_stop, 1);
    cr_expect_eq(sr.skip_special, 0);
    oai_request_free(&r);
    cr_assert_eq(parse(OAI_CHAT, CHAT(""), &r, &e), 0, "%s", e.message);
    cr_assert_eq(oai_sched_request(&r, 0, 0, &sr, NULL), 0);
    cr_expect(sr.n_stop_ids == 0 && sr.min_tokens == 0 && sr.include_stop == 0 && sr.skip_special == 1, "defaults");
    oai_request_free(&r);
    expect_error(OAI_COMPLETION, CMPL(",\"stop_token_ids\":7"), 400, "stop_token_ids");
    expect_error(OAI_COMPLETION, CMPL(",\"stop_token_ids\":[129280]"), 400, "stop_token_ids");
    expect_error(OAI_COMPLETION, CMPL(",\"stop_token_ids\":[\"7\"]"), 400, "stop_token_ids");
    expect_error(OAI_COMPLETION, CMPL(",\"min_tokens\":-1"), 400, "min_tokens");
    expect_error(OAI_COMPLETION, CMPL(",\"max_tokens\":3,\"min_tokens\":4"), 400, "min_tokens");
    expect_error(OAI_CHAT, CHAT(",\"include_stop_str_in_output\":1"), 400, "include_stop_str_in_output");
    expect_error(OAI_CHAT, CHAT(",\"skip_special_tokens\":\"no\""), 400, "skip_special_tokens");
}

Test(openai, chat_all_parameters) {
    oai_request r;
    oai_error e;
    const char *body =
        "{\"model\":\"tiny\",\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},{\"type\":\"text\",\"text\":\" there\"}]}],"
        "\"max_completion_tokens\":7,\"max_tokens\":3,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,"
        "\"seed\":-3,\"stop\":[\"a\",\"bc\",\"\"],\"n\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"logprobs\":true,\"top_logprobs\":5,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
        "\"repetition_penalty\":1.1,\"ignore_eos\":true,\"user\":\"u1\",\"tools\":[],\"response_format\":{\"type\":\"text\"}}";
    cr_assert_eq(parse(OAI_CHAT, body, &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.max_tokens, 7, "max_completion_tokens wins over max_tokens");
    cr_expect_float_eq(r.sampling.temperature, 0.5f, 1e-7);
    cr_expect_float_eq(r.sampling.top_p, 0.9f, 1e-7);
    cr_expect_eq(r.sampling.top_k, 40);
    cr_expect_float_eq(r.sampling.min_p, 0.05f, 1e-7);
    cr_expect_eq(r.sampling.seed, (uint64_t)-3);
    cr_expect_eq(r.seed_given, 1);
    cr_expect_eq(r.n_stop, 2, "empty stop strings are dropped");
    cr_expect_str_eq(r.stop[1], "bc");
    cr_expect_eq(r.n, 3);
    cr_expect(r.stream && r.include_usage && r.logprobs && r.ignore_eos);
    cr_expect_eq(r.top_logprobs, 5);
    cr_expect_float_eq(r.sampling.presence_penalty, 0.5f, 1e-7);
    cr_expect_float_eq(r.sampling.frequency_penalty, -0.5f, 1e-7);
    cr_expect_float_eq(r.sampling.repetition_penalty, 1.1f, 1e-6);
    /* developer became system: the system text sits right after BOS */
    char *text = tokenizer_decode(tok, r.prompts[0].ids, (size_t)r.prompts[0].n_ids, 0);
    cr_expect_str_eq(text, "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi there<｜Assistant｜>");
    free(text);
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 2, 1000, &sr, NULL), 0);
    cr_expect_eq(sr.sampling.seed, (uint64_t)-3 + 2, "choice seeds derive from the request seed");
    cr_expect_eq(sr.top_logprobs, 5);
    cr_expect_eq(sr.n_stop, 2);
    cr_expect_eq(sr.max_tokens, 7);
    cr_expect_eq(sr.prompt, r.prompts[0].ids);
    oai_request_free(&r);
}

Test(openai, completions_prompts) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"max_tokens\":4"), &r, &e), 0, "%s", e.message);
    /* tokenizer_config add_bos_token: BOS then "Hello world" = [19923, 2058] (golden encode.jsonl) */
    cr_assert_eq(r.prompts[0].n_ids, 3);
    cr_expect_eq(r.prompts[0].ids[0], tokenizer_bos_id(tok));
    cr_expect_eq(r.prompts[0].ids[1], 19923);
    cr_expect_eq(r.prompts[0].ids[2], 2058);
    oai_request_free(&r);

    cr_assert_eq(parse(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":[5,6,7],\"max_tokens\":2,\"n\":2}", &r, &e), 0, "%s",
                 e.message);
    cr_assert_eq(r.n_prompts, 1);
    cr_expect_eq(r.prompts[0].n_ids, 3, "token prompts are used as sent (no BOS)");
    cr_expect_eq(r.prompts[0].ids[2], 7);
    oai_request_free(&r);

    cr_assert_eq(parse(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":[\"a\",[1,2],\"b\"],\"max_tokens\":1,\"n\":2,"
                                       "\"logprobs\":2,\"echo\":true}", &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.n_prompts, 3);
    cr_expect_eq(r.prompts[1].n_ids, 2);
    cr_expect(r.logprobs && r.echo);
    cr_expect_eq(r.top_logprobs, 2);
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 5, 77, &sr, NULL), 0); /* choice 5 = prompt 2, second sample */
    cr_expect_eq(sr.prompt, r.prompts[2].ids);
    cr_expect_eq(sr.sampling.seed, 77 + 5);
    oai_request_free(&r);

    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"logprobs\":0"), &r, &e), 0, "%s", e.message);
    cr_expect(r.logprobs, "logprobs 0 still asks for the chosen token's logprob");
    oai_request_free(&r);
}

Test(openai, invalid_bodies) {
    expect_error(OAI_CHAT, "{\"model\":", 400, "");
    expect_error(OAI_CHAT, "[1,2]", 400, "");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"model\":\"tiny\",\"messages\":[]}", 400, "");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", 400, "");
}

Test(openai, parameter_errors) {
    expect_error(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", 400, "model");
    expect_error(OAI_CHAT, "{\"model\":3,\"messages\":[]}", 400, "model");
    expect_error(OAI_CHAT, "{\"model\":\"other\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", 404, "model");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\"}", 400, "messages");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":[]}", 400, "messages");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":\"Hi\"}", 400, "messages");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":[{\"role\":\"wizard\",\"content\":\"Hi\"}]}", 400, "messages");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\"}]}", 400, "messages");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
                 400, "messages");
    expect_error(OAI_CHAT, CHAT(",\"temperature\":\"hot\""), 400, "temperature");
    expect_error(OAI_CHAT, CHAT(",\"temperature\":2.5"), 400, "temperature");
    expect_error(OAI_CHAT, CHAT(",\"temperature\":-0.1"), 400, "temperature");
    expect_error(OAI_CHAT, CHAT(",\"top_p\":0"), 400, "top_p");
    expect_error(OAI_CHAT, CHAT(",\"top_p\":1.01"), 400, "top_p");
    expect_error(OAI_CHAT, CHAT(",\"top_k\":-2"), 400, "top_k");
    expect_error(OAI_CHAT, CHAT(",\"top_k\":1.5"), 400, "top_k");
    expect_error(OAI_CHAT, CHAT(",\"min_p\":2"), 400, "min_p");
    expect_error(OAI_CHAT, CHAT(",\"seed\":\"1\""), 400, "seed");
    expect_error(OAI_CHAT, CHAT(",\"stop\":5"), 400, "stop");
    expect_error(OAI_CHAT, CHAT(",\"stop\":[\"a\",1]"), 400, "stop");
    expect_error(OAI_CHAT, CHAT(",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]"), 400, "stop");
    expect_error(OAI_CHAT, CHAT(",\"n\":0"), 400, "n");
    expect_error(OAI_CHAT, CHAT(",\"n\":1000"), 400, "n");
    expect_error(OAI_CHAT, CHAT(",\"stream\":\"yes\""), 400, "stream");
    expect_error(OAI_CHAT, CHAT(",\"stream_options\":{\"include_usage\":true}"), 400, "stream_options");
    expect_error(OAI_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":1}"), 400,
                 "stream_options.include_usage");
    expect_error(OAI_CHAT, CHAT(",\"logprobs\":1"), 400, "logprobs");
    expect_error(OAI_CHAT, CHAT(",\"top_logprobs\":2"), 400, "top_logprobs");
    expect_error(OAI_CHAT, CHAT(",\"logprobs\":true,\"top_logprobs\":21"), 400, "top_logprobs");
    expect_error(OAI_CHAT, CHAT(",\"presence_penalty\":3"), 400, "presence_penalty");
    expect_error(OAI_CHAT, CHAT(",\"frequency_penalty\":-2.1"), 400, "frequency_penalty");
    expect_error(OAI_CHAT, CHAT(",\"repetition_penalty\":0"), 400, "repetition_penalty");
    expect_error(OAI_CHAT, CHAT(",\"ignore_eos\":0"), 400, "ignore_eos");
    expect_error(OAI_CHAT, CHAT(",\"user\":5"), 400, "user");
    expect_error(OAI_CHAT, CHAT(",\"max_tokens\":0"), 400, "max_tokens");
    expect_error(OAI_CHAT, CHAT(",\"max_tokens\":\"5\""), 400, "max_tokens");
    expect_error(OAI_CHAT, CHAT(",\"max_completion_tokens\":-1"), 400, "max_completion_tokens");
    expect_error(OAI_CHAT, CHAT(",\"tools\":[{\"type\":\"function\"}]"), 400, "tools");
    expect_error(OAI_CHAT, CHAT(",\"logit_bias\":[5]"), 400, "logit_bias");
    expect_error(OAI_CHAT, CHAT(",\"logit_bias\":{\"x\":1}"), 400, "logit_bias");
    expect_error(OAI_CHAT, CHAT(",\"logit_bias\":{\"05\":1}"), 400, "logit_bias");
    expect_error(OAI_CHAT, CHAT(",\"logit_bias\":{\"-1\":1}"), 400, "logit_bias");
    expect_error(OAI_CHAT, CHAT(",\"logit_bias\":{\"129280\":1}"), 400, "logit_bias");
    expect_error(OAI_CHAT, CHAT(",\"logit_bias\":{\"5\":100.5}"), 400, "logit_bias");
    expect_error(OAI_COMPLETION, CMPL(",\"logit_bias\":{\"5\":\"1\"}"), 400, "logit_bias");
    expect_error(OAI_COMPLETION, "{\"model\":\"tiny\"}", 400, "prompt");
    expect_error(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":5}", 400, "prompt");
    expect_error(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":[]}", 400, "prompt");
    expect_error(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":[1,-1]}", 400, "prompt");
    expect_error(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":[1,129280]}", 400, "prompt");
    expect_error(OAI_COMPLETION, "{\"model\":\"tiny\",\"prompt\":[\"a\",{}]}", 400, "prompt");
    expect_error(OAI_COMPLETION, CMPL(",\"logprobs\":true"), 400, "logprobs");
    expect_error(OAI_COMPLETION, CMPL(",\"logprobs\":21"), 400, "logprobs");
    expect_error(OAI_COMPLETION, CMPL(",\"echo\":\"no\""), 400, "echo");
    expect_error(OAI_COMPLETION, CMPL(",\"best_of\":0"), 400, "best_of");
    expect_error(OAI_COMPLETION, CMPL(",\"best_of\":65"), 400, "best_of");
    expect_error(OAI_COMPLETION, CMPL(",\"best_of\":2,\"n\":3"), 400, "best_of");
    expect_error(OAI_COMPLETION, CMPL(",\"best_of\":3,\"stream\":true"), 400, "best_of");
    expect_error(OAI_CHAT, CHAT(",\"best_of\":3"), 400, "best_of");
    expect_error(OAI_CHAT, CHAT(",\"functions\":[{\"name\":\"f\"}]"), 400, "functions");
}

Test(openai, context_limit) {
    oai_request r;
    oai_error e;
    /* "Hello world" with BOS is 3 tokens; the context is 64 */
    cr_expect_eq(parse(OAI_COMPLETION, CMPL(",\"max_tokens\":61"), &r, &e), 0, "%s", e.message);
    oai_request_free(&r);
    expect_error(OAI_COMPLETION, CMPL(",\"max_tokens\":62"), 400, "max_tokens");
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"max_tokens\":62"), &r, &e), -1);
    cr_expect(strstr(e.message, "maximum context length is 64 tokens"), "message does not say the limit: %s", e.message);
    cr_expect_str_eq(e.code, "context_length_exceeded");
    char body[512];
    snprintf(body, sizeof body, "{\"model\":\"tiny\",\"prompt\":[%s1]}",
             "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,");
    expect_error(OAI_COMPLETION, body, 400, "prompt");
}

Test(openai, error_object) {
    oai_error e;
    oai_error_set(&e, 400, "invalid_request_error", "top_p", NULL, "'top_p' must be in (0, 1], got %g", 2.0);
    json_t *j = oai_error_json(&e);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s, "{\"error\":{\"message\":\"'top_p' must be in (0, 1], got 2\",\"type\":\"invalid_request_error\","
                        "\"param\":\"top_p\",\"code\":null}}");
    free(s);
    json_decref(j);
}

static sched_event token_event(int32_t id, const char *text, int completion_tokens, finish_reason f) {
    sched_event ev;
    memset(&ev, 0, sizeof ev);
    ev.token = id;
    ev.text = (char *)text;
    ev.text_len = strlen(text);
    ev.logprob = -0.5f;
    ev.n_top = 2;
    ev.top[0] = (sched_logprob){19923, -0.5f};
    ev.top[1] = (sched_logprob){2058, -1.5f};
    ev.finish = f;
    ev.prompt_tokens = 3;
    ev.completion_tokens = completion_tokens;
    return ev;
}

Test(openai, chat_response_shape) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"logprobs\":true,\"top_logprobs\":1"), &r, &e), 0, "%s", e.message);
    oai_choice c;
    oai_choice_init(&c, &r, NULL);
    sched_event e1 = token_event(19923, "Hello", 1, FINISH_NONE), e2 = token_event(2058, " world", 2, FINISH_LENGTH);
    cr_assert_eq(oai_choice_add(&c, &r, tok, &e1), 0);
    cr_assert_eq(oai_choice_add(&c, &r, tok, &e2), 0);
    oai_usage u = {.prompt_tokens = 3, .completion_tokens = 2, .cached_tokens = 0};
    json_t *j = oai_response_json(&r, "chatcmpl-1", 42, "fp_x", &c, 1, NULL, &u);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s,
                     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":42,\"model\":\"tiny\","
                     "\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                     "\"content\":\"Hello world\"},\"logprobs\":{\"content\":["
                     "{\"token\":\"Hello\",\"logprob\":-0.5,\"bytes\":[72,101,108,108,111],\"top_logprobs\":"
                     "[{\"token\":\"Hello\",\"logprob\":-0.5,\"bytes\":[72,101,108,108,111]}]},"
                     "{\"token\":\" world\",\"logprob\":-0.5,\"bytes\":[32,119,111,114,108,100],\"top_logprobs\":"
                     "[{\"token\":\"Hello\",\"logprob\":-0.5,\"bytes\":[72,101,108,108,111]}]}]},"
                     "\"finish_reason\":\"length\"}],"
                     "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5,"
                     "\"prompt_tokens_details\":{\"cached_tokens\":0},\"prompt_cache_hit_tokens\":0,"
                     "\"prompt_cache_miss_tokens\":3}}");
    free(s);
    json_decref(j);
    oai_choice_free(&c);
    oai_request_free(&r);
}

Test(openai, completion_response_echo_and_logprobs) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"logprobs\":2,\"echo\":true"), &r, &e), 0, "%s", e.message);
    cr_expect_str_eq(r.prompts[0].text, "Hello world", "echo keeps the prompt as sent (no BOS text)");
    oai_choice c;
    oai_choice_init(&c, &r, "Hello world");
    sched_event e1 = token_event(2058, " world", 1, FINISH_STOP);
    cr_assert_eq(oai_choice_add(&c, &r, tok, &e1), 0);
    const char *echo[] = {"Hello world"};
    oai_usage u = {.prompt_tokens = 3, .completion_tokens = 1, .cached_tokens = 0};
    json_t *j = oai_response_json(&r, "cmpl-1", 1, "fp", &c, 1, echo, &u);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(j, "object")), "text_completion");
    cr_expect_str_eq(json_string_value(json_object_get(ch, "text")), "Hello world world");
    cr_expect_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    json_t *lp = json_object_get(ch, "logprobs");
    char *s = json_dumps(lp, JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s, "{\"tokens\":[\" world\"],\"token_logprobs\":[-0.5],\"top_logprobs\":[{\"Hello\":-0.5,\" world\":-1.5}],"
                        "\"text_offset\":[11]}");
    free(s);
    json_decref(j);
    oai_choice_free(&c);
    oai_request_free(&r);
}

static sched_event prompt_event(int32_t id, float lp) {
    sched_event ev;
    memset(&ev, 0, sizeof ev);
    ev.token = id;
    ev.prompt = 1;
    ev.logprob = lp;
    if (!isnan(lp)) {
        ev.n_top = 2;
        ev.top[0] = (sched_logprob){2058, -0.25f};
        ev.top[1] = (sched_logprob){19923, -2.0f};
    }
    return ev;
}

/* echo + logprobs + max_tokens 0 (how lm-eval-harness scores a text): the
 * prompt's tokens lead the logprobs, the first (the BOS the server added, which
 * the echoed text does not spell: offset 0, no room) with nulls. */
Test(openai, completion_prompt_logprobs) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"logprobs\":1,\"echo\":true,\"max_tokens\":0"), &r, &e), 0, "%s",
                 e.message);
    cr_expect(r.prompt_logprobs);
    cr_expect_eq(r.max_tokens, 0);
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 0, 1, &sr, NULL), 0);
    cr_expect(sr.prompt_logprobs && sr.top_logprobs == 1 && sr.max_tokens == 0);
    cr_assert_eq(r.prompts[0].n_ids, 3, "BOS Hello world");
    oai_choice c, cs;
    oai_choice_init(&c, &r, "Hello world");
    oai_choice_init(&cs, &r, "Hello world");
    sched_event ev[4] = {prompt_event(r.prompts[0].ids[0], NAN), prompt_event(19923, -3.0f), prompt_event(2058, -0.25f),
                         {.token = -1, .finish = FINISH_LENGTH}};
    json_t *chunks[4];
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(oai_choice_add(&c, &r, tok, &ev[i]), 0);
        chunks[i] = oai_stream_event(&r, &cs, tok, &ev[i], "c", 1, "fp", 0);
    }
    const char *echo[] = {"Hello world"};
    oai_usage u = {.prompt_tokens = 3};
    json_t *j = oai_response_json(&r, "cmpl-1", 1, "fp", &c, 1, echo, &u);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(ch, "text")), "Hello world");
    cr_expect_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "length");
    char *s = json_dumps(json_object_get(ch, "logprobs"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    const char *want = "{\"tokens\":[\"<\uff5cbegin\u2581of\u2581sentence\uff5c>\",\"Hello\",\" world\"],"
                       "\"token_logprobs\":[null,-3.0,-0.25],\"top_logprobs\":[null,{\" world\":-0.25},{\" world\":-0.25}],"
                       "\"text_offset\":[0,0,5]}";
    cr_expect_str_eq(s, want);
    free(s);
    /* streaming: the prompt events send nothing; the echo chunk carries their logprobs before the finish chunk */
    for (int i = 0; i < 3; i++) cr_expect_eq(json_array_size(chunks[i]), 0, "prompt event %d", i);
    cr_assert_eq(json_array_size(chunks[3]), 2);
    json_t *ech = json_array_get(json_object_get(json_array_get(chunks[3], 0), "choices"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(ech, "text")), "Hello world");
    s = json_dumps(json_object_get(ech, "logprobs"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s, want);
    free(s);
    for (int i = 0; i < 4; i++) json_decref(chunks[i]);
    json_decref(j);
    oai_choice_free(&c);
    oai_choice_free(&cs);
    oai_request_free(&r);
}

Test(openai, max_tokens_zero_needs_echo) {
    expect_error(OAI_COMPLETION, CMPL(",\"max_tokens\":0"), 400, "max_tokens");
    expect_error(OAI_COMPLETION, CMPL(",\"max_completion_tokens\":0"), 400, "max_completion_tokens");
    expect_error(OAI_CHAT, CHAT(",\"max_tokens\":0"), 400, "max_tokens");
    expect_error(OAI_COMPLETION, CMPL(",\"max_tokens\":-1,\"echo\":true"), 400, "max_tokens");
}

Test(openai, stream_chunks) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":true}"), &r, &e), 0, "%s",
                 e.message);
    json_t *j = oai_chunk_json(&r, "c1", 7, "fp", 0, "assistant", "", 0, NULL, FINISH_NONE);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s, "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"tiny\","
                        "\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                        "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}");
    free(s);
    json_decref(j);
    j = oai_chunk_json(&r, "c1", 7, "fp", 1, NULL, NULL, 0, NULL, FINISH_LENGTH);
    s = json_dumps(json_object_get(j, "choices"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s, "[{\"index\":1,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}]");
    free(s);
    json_decref(j);
    oai_usage u = {.prompt_tokens = 5, .completion_tokens = 4, .cached_tokens = 0};
    j = oai_usage_chunk_json(&r, "c1", 7, "fp", &u);
    s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect(strstr(s, "\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4,\"total_tokens\":9,"
                          "\"prompt_tokens_details\":{\"cached_tokens\":0},\"prompt_cache_hit_tokens\":0,"
                          "\"prompt_cache_miss_tokens\":5}"), "%s", s);
    free(s);
    json_decref(j);
    oai_request_free(&r);
}

Test(openai, lossy_strings) {
    json_t *j = oai_json_string_lossy("a\xffz", 3);
    cr_expect_str_eq(json_string_value(j), "a\xef\xbf\xbdz");
    json_decref(j);
}

/* ---- tools, tool_choice, response_format, reasoning options (server/oai_chat.c) ---- */

#define TOOL "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\"," \
             "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}"

static oai_ctx ctx_vocab(const cons_vocab *v, chat_template_variant variant) {
    oai_ctx c = ctx();
    c.vocab = v;
    c.variant = variant;
    c.max_model_len = 4096;
    return c;
}

static int parse_with(const oai_ctx *c, oai_kind kind, const char *body, oai_request *r, oai_error *e) {
    return oai_parse_request(kind, body, strlen(body), c, r, e);
}

Test(openai, agent_parameters_are_validated) {
    expect_error(OAI_CHAT, CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]"), 400, "tools");
    expect_error(OAI_CHAT, CHAT(",\"tools\":[" TOOL "," TOOL "]"), 400, "tools");
    expect_error(OAI_CHAT, CHAT(",\"tools\":{}"), 400, "tools");
    expect_error(OAI_CHAT, CHAT(",\"tool_choice\":\"required\""), 400, "tool_choice");
    expect_error(OAI_CHAT, CHAT(",\"tools\":[" TOOL "],\"tool_choice\":\"sometimes\""), 400, "tool_choice");
    expect_error(OAI_CHAT, CHAT(",\"tools\":[" TOOL "],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"x\"}}"),
                 400, "tool_choice");
    expect_error(OAI_CHAT, CHAT(",\"parallel_tool_calls\":1"), 400, "parallel_tool_calls");
    expect_error(OAI_CHAT, CHAT(",\"include_reasoning\":\"no\""), 400, "include_reasoning");
    expect_error(OAI_CHAT, CHAT(",\"chat_template_kwargs\":{\"thinking\":1}"), 400, "chat_template_kwargs");
    expect_error(OAI_CHAT, CHAT(",\"response_format\":{\"type\":\"yaml\"}"), 400, "response_format");
    expect_error(OAI_CHAT, CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"array\","
                                "\"uniqueItems\":true}}}"),
                 400, "response_format");
    expect_error(OAI_COMPLETION, CMPL(",\"tools\":[" TOOL "]"), 400, "tools");
    oai_request r;
    oai_error e;
    cr_expect_neq(parse(OAI_CHAT, CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":"
                                       "{\"type\":\"array\",\"uniqueItems\":true}}}"), &r, &e), 0);
    cr_expect(strstr(e.message, "uniqueItems"), "names the keyword: %s", e.message);
}

Test(openai, structured_output_and_forced_tool_build_a_constraint) {
    ms_err err = {{0}};
    cons_vocab *v = cons_vocab_create(tok, 1, 129280, &err);
    cr_assert(v, "%s", err.msg);
    oai_ctx c = ctx_vocab(v, CHAT_TEMPLATE_V3);
    oai_request r;
    oai_error e;
    /* json_schema: a constraint per choice */
    cr_assert_eq(parse_with(&c, OAI_CHAT, CHAT(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\","
                                             "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}}}"),
                            &r, &e), 0, "%s", e.message);
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 0, 1, &sr, &err), 0, "%s", err.msg);
    cr_expect(sr.constraint.ctx && sr.constraint.mask && sr.constraint.free);
    sr.constraint.free(sr.constraint.ctx);
    oai_request_free(&r);
    /* too few tokens for the schema */
    cr_expect_neq(parse_with(&c, OAI_CHAT, CHAT(",\"max_tokens\":2,\"response_format\":{\"type\":\"json_object\"}"), &r, &e), 0);
    cr_expect_str_eq(e.param, "max_tokens");
    /* forced tool: tools rendered into the prompt, parsing on, grammar built */
    cr_assert_eq(parse_with(&c, OAI_CHAT, CHAT(",\"tools\":[" TOOL "],\"tool_choice\":\"required\""), &r, &e), 0, "%s", e.message);
    cr_expect(r.feat.parse_tool_calls && r.feat.grammar);
    char *text = tokenizer_decode(tok, r.prompts[0].ids, (size_t)r.prompts[0].n_ids, 0);
    cr_expect(strstr(text, "get_weather"), "tools in the prompt: %s", text);
    free(text);
    oai_request_free(&r);
    /* json response_format + forced tool choice cannot both hold */
    cr_expect_neq(parse_with(&c, OAI_CHAT, CHAT(",\"tools\":[" TOOL "],\"tool_choice\":\"required\",\"response_format\":"
                                              "{\"type\":\"json_object\"}"), &r, &e), 0);
    /* the V3.1 template gets its own call format: forced calls work there too */
    oai_ctx c31 = ctx_vocab(v, CHAT_TEMPLATE_V31);
    cr_assert_eq(parse_with(&c31, OAI_CHAT, CHAT(",\"tools\":[" TOOL "],\"tool_choice\":\"required\""), &r, &e), 0, "%s",
                 e.message);
    cr_expect(r.feat.parse_tool_calls && r.feat.grammar);
    oai_request_free(&r);
    /* no vocabulary on the server: refused, not ignored */
    oai_ctx nov = ctx_vocab(NULL, CHAT_TEMPLATE_V3);
    cr_expect_neq(parse_with(&nov, OAI_CHAT, CHAT(",\"response_format\":{\"type\":\"json_object\"}"), &r, &e), 0);
    cons_vocab_free(v);
}

Test(openai, r1_template_turns_reasoning_on) {
    oai_ctx c = ctx_vocab(NULL, CHAT_TEMPLATE_R1);
    oai_request r;
    oai_error e;
    cr_assert_eq(parse_with(&c, OAI_CHAT, CHAT(""), &r, &e), 0, "%s", e.message);
    cr_expect(r.feat.parse_reasoning && r.feat.starts_in_reasoning);
    cr_expect(r.feat.include_reasoning);
    oai_request_free(&r);
    c.reasoning_flag = -1; /* --reasoning-parser none */
    cr_assert_eq(parse_with(&c, OAI_CHAT, CHAT(""), &r, &e), 0, "%s", e.message);
    cr_expect(!r.feat.parse_reasoning);
    oai_request_free(&r);
    c = ctx_vocab(NULL, CHAT_TEMPLATE_V3);
    cr_assert_eq(parse_with(&c, OAI_CHAT, CHAT(",\"include_reasoning\":false"), &r, &e), 0, "%s", e.message);
    cr_expect(!r.feat.parse_reasoning, "V3 template: no reasoning parser by default");
    oai_request_free(&r);
}

/* The prompt of a parsed chat request equals the tokenizer on want_text. */
static void expect_prompt_text(const oai_request *r, const char *want_text) {
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(tok, want_text, strlen(want_text), &ids, &n, NULL), 0);
    cr_assert_eq(r->n_prompts, 1);
    cr_assert_eq(r->prompts[0].n_ids, (int)n, "%d ids, want %zu for %s", r->prompts[0].n_ids, n, want_text);
    for (size_t k = 0; k < n; k++) cr_expect_eq(r->prompts[0].ids[k], ids[k], "ids[%zu]", k);
    free(ids);
}

#define PREFIX_MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"<think>\\nSo\""

/* DeepSeek's chat prefix completion and vLLM's continue_final_message: the
 * prompt ends inside the last assistant message. */
Test(openai, continue_final_message) {
    const char *want = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\nSo";
    const char *bodies[] = {
        "{\"model\":\"tiny\"," PREFIX_MSGS ",\"prefix\":true}]}",
        "{\"model\":\"tiny\"," PREFIX_MSGS "}],\"continue_final_message\":true}",
        "{\"model\":\"tiny\"," PREFIX_MSGS "}],\"continue_final_message\":true,\"add_generation_prompt\":false}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        oai_request r;
        oai_error e;
        cr_assert_eq(parse(OAI_CHAT, bodies[i], &r, &e), 0, "%s: %s", bodies[i], e.message);
        expect_prompt_text(&r, want);
        cr_expect(r.feat.continue_final && !r.feat.add_generation_prompt);
        oai_request_free(&r);
    }
    /* R1: the continued turn is inside <think>, so reasoning parsing starts there;
     * continuing an answer leaves it off (auto). */
    oai_ctx c = ctx_vocab(NULL, CHAT_TEMPLATE_R1);
    oai_request r;
    oai_error e;
    cr_assert_eq(parse_with(&c, OAI_CHAT, bodies[0], &r, &e), 0, "%s", e.message);
    expect_prompt_text(&r, want);
    cr_expect(r.feat.parse_reasoning && r.feat.starts_in_reasoning);
    oai_request_free(&r);
    const char *answer = "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},"
                         "{\"role\":\"assistant\",\"content\":\"<think>a</think>The\",\"prefix\":true}]}";
    cr_assert_eq(parse_with(&c, OAI_CHAT, answer, &r, &e), 0, "%s", e.message);
    expect_prompt_text(&r, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>a</think>The");
    cr_expect(!r.feat.parse_reasoning && !r.feat.starts_in_reasoning);
    oai_request_free(&r);
    /* add_generation_prompt false alone: no "<｜Assistant｜>" */
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"add_generation_prompt\":false"), &r, &e), 0, "%s", e.message);
    expect_prompt_text(&r, "<｜begin▁of▁sentence｜><｜User｜>Hi");
    oai_request_free(&r);
}

Test(openai, continue_final_message_errors) {
    expect_error(OAI_CHAT, "{\"model\":\"tiny\"," PREFIX_MSGS ",\"prefix\":true}],\"add_generation_prompt\":true}", 400,
                 "add_generation_prompt");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\"," PREFIX_MSGS ",\"prefix\":1}]}", 400, "messages");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\",\"prefix\":true}]}", 400,
                 "messages");
    expect_error(OAI_CHAT,
                 "{\"model\":\"tiny\",\"messages\":[{\"role\":\"assistant\",\"content\":\"a\",\"prefix\":true},"
                 "{\"role\":\"user\",\"content\":\"Hi\"}]}",
                 400, "messages");
    expect_error(OAI_CHAT, CHAT(",\"continue_final_message\":true"), 400, "messages"); /* last is a user turn */
    expect_error(OAI_CHAT, CHAT(",\"continue_final_message\":\"yes\""), 400, "continue_final_message");
    expect_error(OAI_CHAT, CHAT(",\"add_generation_prompt\":0"), 400, "add_generation_prompt");
    expect_error(OAI_COMPLETION, CMPL(",\"continue_final_message\":true"), 400, "continue_final_message");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\"," PREFIX_MSGS ",\"prefix\":true}],\"response_format\":{\"type\":\"json_object\"}}",
                 400, "response_format");
    expect_error(OAI_CHAT, "{\"model\":\"tiny\"," PREFIX_MSGS ",\"prefix\":true}],\"tools\":[" TOOL "],\"tool_choice\":\"required\"}",
                 400, "tool_choice");
    /* prefix: false anywhere is the same as absent */
    oai_request r;
    oai_error e;
    cr_expect_eq(parse(OAI_CHAT, "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\",\"prefix\":false}]}",
                       &r, &e), 0, "%s", e.message);
    oai_request_free(&r);
}

Test(openai, continuous_usage_stats) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":true,\"continuous_usage_stats\":true}"),
                       &r, &e), 0, "%s", e.message);
    cr_expect(r.include_usage && r.continuous_usage);
    oai_request_free(&r);
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"continuous_usage_stats\":true}"), &r, &e), 0,
                 "%s", e.message);
    cr_expect(!r.continuous_usage, "only with include_usage (vLLM)");
    oai_request_free(&r);
    expect_error(OAI_CHAT, CHAT(",\"stream\":true,\"stream_options\":{\"continuous_usage_stats\":1}"), 400,
                 "stream_options.continuous_usage_stats");
}

/* Fields no parser reads are listed for the log (vLLM warns the same way). */
Test(openai, ignored_fields_listed) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"max_token\":5,\"temperature\":0,\"metadata\":{}"), &r, &e), 0, "%s", e.message);
    cr_expect(strstr(r.ignored, "max_token") && strstr(r.ignored, "metadata"), "ignored: '%s'", r.ignored);
    cr_expect(!strstr(r.ignored, "temperature") && !strstr(r.ignored, "messages"), "ignored: '%s'", r.ignored);
    oai_request_free(&r);
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"top_logprobs\":2,\"logprobs\":true,\"tools\":[]"), &r, &e), 0, "%s", e.message);
    cr_expect_str_eq(r.ignored, "");
    oai_request_free(&r);
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"echo\":true,\"messages\":[]"), &r, &e), 0, "%s", e.message);
    cr_expect_str_eq(r.ignored, "messages", "chat's fields are not read by /v1/completions");
    oai_request_free(&r);
    /* Many: the list is cut with a mark, never overflowing. */
    char body[4096] = "{\"model\":\"tiny\",\"prompt\":\"x\"";
    for (int k = 0; k < 40; k++) snprintf(body + strlen(body), sizeof body - strlen(body), ",\"unknown_field_%02d\":1", k);
    strcat(body, "}");
    cr_assert_eq(parse(OAI_COMPLETION, body, &r, &e), 0, "%s", e.message);
    cr_expect(strlen(r.ignored) < sizeof r.ignored);
    cr_expect(strstr(r.ignored, "unknown_field_00") && strstr(r.ignored, ", ..."), "ignored: '%s'", r.ignored);
    oai_request_free(&r);
}

/* best_of: n candidates generated, n_return kept per prompt, ranked by mean
 * token logprob (hand-made candidates). */
Test(openai, best_of_ranks_by_mean_logprob) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"best_of\":4,\"n\":2"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.n, 4);
    cr_expect_eq(r.n_return, 2);
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 0, 1, &sr, NULL), 0);
    cr_expect_eq(sr.top_logprobs, 0, "the token logprob is asked for the ranking");
    r.n_prompts = 2; /* two prompts' candidates, as the server holds them */
    oai_choice c[8] = {0};
    const double sums[8] = {-4, -1, -3, -1, /* prompt 1: */ -2, -2, -9, -0.5};
    const int counts[8] = {2, 1, 3, 2, /* */ 1, 4, 3, 1};
    for (int i = 0; i < 8; i++) c[i].logprob_sum = sums[i], c[i].n_logprob = counts[i];
    /* means: -2, -1, -1, -0.5 | -2, -0.5, -3, -0.5 */
    int keep[8];
    cr_assert_eq(oai_best_choices(&r, c, keep), 4);
    cr_expect_eq(keep[0], 3);
    cr_expect_eq(keep[1], 1, "ties keep the earlier candidate");
    cr_expect_eq(keep[2], 5);
    cr_expect_eq(keep[3], 7);
    r.n_prompts = 1;
    oai_request_free(&r);
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"n\":2"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.n_return, 2);
    cr_assert_eq(oai_best_choices(&r, c + 2, keep), 2);
    cr_expect(keep[0] == 0 && keep[1] == 1, "without best_of the choices stay in order, not ranked");
    cr_assert_eq(oai_sched_request(&r, 0, 1, &sr, NULL), 0);
    cr_expect_eq(sr.top_logprobs, -1, "no logprobs without best_of");
    oai_request_free(&r);
}

/* vLLM's prompt_logprobs: per prompt token {"<id>": {logprob, rank,
 * decoded_token}} with its alternatives (first token null); per choice on
 * completions, once at the top level on chat. */
Test(openai, vllm_prompt_logprobs) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(OAI_COMPLETION, CMPL(",\"prompt_logprobs\":1,\"max_tokens\":0"), &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.prompt_top, 1);
    cr_expect(!r.prompt_logprobs, "not the echo flag");
    sched_request sr;
    cr_assert_eq(oai_sched_request(&r, 0, 1, &sr, NULL), 0);
    cr_expect(sr.prompt_logprobs && sr.top_logprobs == 1 && sr.max_tokens == 0);
    oai_choice c;
    cr_assert_eq(oai_choice_init(&c, &r, NULL), 0);
    sched_event ev[4] = {prompt_event(r.prompts[0].ids[0], NAN), prompt_event(19923, -3.0f), prompt_event(2058, -0.25f),
                         {.token = -1, .finish = FINISH_LENGTH}};
    ev[1].rank = 7;
    ev[2].rank = 1;
    for (int i = 0; i < 4; i++) cr_assert_eq(oai_choice_add(&c, &r, tok, &ev[i]), 0);
    oai_usage u = {.prompt_tokens = 3};
    json_t *j = oai_response_json(&r, "cmpl-1", 1, "fp", &c, 1, NULL, &u);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    char *s = json_dumps(json_object_get(ch, "prompt_logprobs"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s, "[null,{\"19923\":{\"logprob\":-3.0,\"rank\":7,\"decoded_token\":\"Hello\"},"
                        "\"2058\":{\"logprob\":-0.25,\"rank\":1,\"decoded_token\":\" world\"}},"
                        "{\"2058\":{\"logprob\":-0.25,\"rank\":1,\"decoded_token\":\" world\"}}]");
    free(s);
    cr_expect(json_is_null(json_object_get(ch, "logprobs")), "logprobs were not asked");
    cr_expect_null(json_object_get(j, "prompt_logprobs"), "completions: per choice");
    json_decref(j);
    oai_choice_free(&c);
    oai_request_free(&r);
    /* chat: top level */
    cr_assert_eq(parse(OAI_CHAT, CHAT(",\"prompt_logprobs\":0"), &r, &e), 0, "%s", e.message);
    cr_assert_eq(oai_choice_init(&c, &r, NULL), 0);
    cr_assert_eq(oai_choice_add(&c, &r, tok, &ev[0]), 0);
    cr_assert_eq(oai_choice_add(&c, &r, tok, &ev[1]), 0);
    j = oai_response_json(&r, "chatcmpl-1", 1, "fp", &c, 1, NULL, &u);
    s = json_dumps(json_object_get(j, "prompt_logprobs"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_expect_str_eq(s, "[null,{\"19923\":{\"logprob\":-3.0,\"rank\":7,\"decoded_token\":\"Hello\"}}]", "0: the token alone");
    free(s);
    json_decref(j);
    oai_choice_free(&c);
    oai_request_free(&r);
    expect_error(OAI_COMPLETION, CMPL(",\"prompt_logprobs\":21"), 400, "prompt_logprobs");
    expect_error(OAI_COMPLETION, CMPL(",\"prompt_logprobs\":1,\"stream\":true"), 400, "prompt_logprobs");
    expect_error(OAI_CHAT, CHAT(",\"max_tokens\":0"), 400, "max_tokens");
}

/* vLLM's guided_json / guided_choice / structured_outputs: a constraint each,
 * errors named by the parameter, one constraint per request. */
Test(openai, vllm_structured_outputs) {
    ms_err err = {{0}};
    cons_vocab *v = cons_vocab_create(tok, 1, 129280, &err);
    cr_assert(v, "%s", err.msg);
    oai_ctx c = ctx_vocab(v, CHAT_TEMPLATE_V3);
    oai_request r;
    oai_error e;
    const char *ok[] = {
        CHAT(",\"guided_json\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}"),
        CHAT(",\"guided_json\":\"{\\\"type\\\":\\\"object\\\"}\""),
        CMPL(",\"guided_choice\":[\"yes\",\"no\"]"),
        CMPL(",\"structured_outputs\":{\"choice\":[\"a\",\"b\"]}"),
        CHAT(",\"structured_outputs\":{\"json\":{\"type\":\"object\"},\"choice\":null}"),
        CHAT(",\"response_format\":{\"type\":\"text\"},\"guided_choice\":[\"x\"]"),
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        oai_kind kind = strstr(ok[i], "\"prompt\"") ? OAI_COMPLETION : OAI_CHAT;
        cr_assert_eq(parse_with(&c, kind, ok[i], &r, &e), 0, "%s: %s", ok[i], e.message);
        sched_request sr;
        cr_assert_eq(oai_sched_request(&r, 0, 1, &sr, &err), 0, "%s", err.msg);
        cr_expect(sr.constraint.ctx, "%s: no constraint", ok[i]);
        if (sr.constraint.ctx) sr.constraint.free(sr.constraint.ctx);
        oai_request_free(&r);
    }
    struct {
        oai_kind kind;
        const char *body, *param;
    } bad[] = {
        {OAI_CHAT, CHAT(",\"guided_json\":\"not json\""), "guided_json"},
        {OAI_CHAT, CHAT(",\"guided_json\":{\"type\":\"number\",\"multipleOf\":0}"), "guided_json"},
        {OAI_CHAT, CHAT(",\"guided_regex\":\"(a\""), "guided_regex"},
        {OAI_CHAT, CHAT(",\"guided_regex\":7"), "guided_regex"},
        {OAI_COMPLETION, CMPL(",\"structured_outputs\":{\"regex\":\"a\\\\1\"}"), "structured_outputs"},
        {OAI_COMPLETION, CMPL(",\"guided_regex\":\"a+\",\"guided_choice\":[\"a\"]"), "guided_regex"},
        {OAI_COMPLETION, CMPL(",\"guided_choice\":[]"), "guided_choice"},
        {OAI_COMPLETION, CMPL(",\"guided_choice\":[\"a\",\"a\"]"), "guided_choice"},
        {OAI_COMPLETION, CMPL(",\"guided_choice\":[\"a\",1]"), "guided_choice"},
        {OAI_COMPLETION, CMPL(",\"structured_outputs\":{\"grammar\":\"root ::= a\"}"), "structured_outputs"},
        {OAI_COMPLETION, CMPL(",\"structured_outputs\":[]"), "structured_outputs"},
        {OAI_CHAT, CHAT(",\"response_format\":{\"type\":\"json_object\"},\"guided_choice\":[\"a\"]"), "guided_choice"},
        {OAI_CHAT, CHAT(",\"guided_json\":{},\"guided_choice\":[\"a\"]"), "guided_choice"},
        {OAI_CHAT, CHAT(",\"tools\":[" TOOL "],\"tool_choice\":\"required\",\"guided_choice\":[\"a\"]"), "guided_choice"},
        {OAI_COMPLETION, CMPL(",\"max_tokens\":2,\"guided_choice\":[\"a long answer\"]"), "max_tokens"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_neq(parse_with(&c, bad[i].kind, bad[i].body, &r, &e), 0, "accepted %s", bad[i].body);
        cr_expect_str_eq(e.param, bad[i].param, "%s: param '%s' (%s)", bad[i].body, e.param, e.message);
    }
    cons_vocab_free(v);
}
