/* test/unit/test_chat_template.c — common/chat_template against the golden renders.
 *
 * References: $MLASERVE_GOLDEN/tokenizer/chat_template.jsonl (renders made by
 * @huggingface/jinja and cross-checked with Python jinja2, golden SPEC §8) and
 * the chat prompt of $MLASERVE_GOLDEN/prompts.json; when $MLASERVE_TOKENIZER
 * is set, the encoded ids are compared as well. The quirk and error cases are
 * hand-derived from the template text in tokenizer_config.json. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "common/chat_template.h"
#include "common/tokenizer.h"

static const char *golden_dir(void) {
    const char *g = getenv("MLASERVE_GOLDEN");
    return g && *g ? g : "test/golden";
}

/* Renders the JSON text of a messages array; returns the malloc'd text or NULL. */
static char *render_json(const char *messages_json, bool gen, bool strip, ms_err *err) {
    json_error_t jerr;
    json_t *msgs = json_loads(messages_json, 0, &jerr);
    cr_assert(msgs, "bad test JSON: %s", jerr.text);
    chat_template_opts opts = {.add_generation_prompt = gen, .strip_reasoning = strip};
    char *text = NULL;
    int rc = chat_template_render(msgs, &opts, &text, NULL, err);
    json_decref(msgs);
    cr_assert((rc == 0) == (text != NULL));
    return text;
}

static void expect_render(const char *messages_json, bool gen, const char *want) {
    ms_err err = {{0}};
    char *got = render_json(messages_json, gen, false, &err);
    cr_assert(got, "render failed: %s", err.msg);
    cr_expect_str_eq(got, want);
    free(got);
}

static void expect_error(const char *messages_json, const char *want_substr) {
    ms_err err = {{0}};
    char *got = render_json(messages_json, true, false, &err);
    cr_assert_null(got, "expected an error for %s", messages_json);
    cr_expect(strstr(err.msg, want_substr), "error '%s' does not mention '%s'", err.msg, want_substr);
    cr_assert_null(render_json(messages_json, true, false, NULL)); /* err may be NULL */
}

static tokenizer *tokenizer_or_null(void) {
    const char *dir = getenv("MLASERVE_TOKENIZER");
    if (!dir || !*dir) return NULL;
    ms_err err = {{0}};
    tokenizer *tok = tokenizer_load(dir, &err);
    cr_assert(tok, "tokenizer_load(%s): %s", dir, err.msg);
    return tok;
}

static void tokenizer_release(tokenizer *tok) {
    if (tok) tokenizer_free(tok);
}

/* Renders {messages, add_generation_prompt} of a golden record and checks text (and ids). */
static void check_golden(const json_t *messages, bool gen, const json_t *want_text, const json_t *want_ids,
                         tokenizer *tok, const char *what) {
    ms_err err = {{0}};
    chat_template_opts opts = {.add_generation_prompt = gen};
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(chat_template_render(messages, &opts, &text, &len, &err), 0, "%s: %s", what, err.msg);
    cr_expect_eq(len, json_string_length(want_text), "%s: length", what);
    cr_expect_str_eq(text, json_string_value(want_text), "%s", what);
    if (tok && want_ids) {
        int32_t *ids = NULL;
        size_t n = 0;
        cr_assert_eq(tokenizer_encode(tok, text, len, &ids, &n, &err), 0, "%s: encode: %s", what, err.msg);
        cr_expect_eq(n, json_array_size(want_ids), "%s: %zu ids, want %zu", what, n, json_array_size(want_ids));
        for (size_t k = 0; k < n && k < json_array_size(want_ids); k++)
            cr_expect_eq(ids[k], json_integer_value(json_array_get(want_ids, k)), "%s: ids[%zu]", what, k);
        free(ids);
    }
    free(text);
}

Test(chat_template, golden_jsonl) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/chat_template.jsonl", golden_dir());
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    tokenizer *tok = tokenizer_or_null();
    char *line = NULL;
    size_t cap = 0;
    int n_cases = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *rec = json_loads(line, 0, &jerr);
        cr_assert(rec, "%s line %d: %s", path, n_cases + 1, jerr.text);
        char what[64];
        snprintf(what, sizeof what, "chat_template.jsonl case %d", n_cases);
        check_golden(json_object_get(rec, "messages"), json_is_true(json_object_get(rec, "add_generation_prompt")),
                     json_object_get(rec, "text"), json_object_get(rec, "ids"), tok, what);
        json_decref(rec);
        n_cases++;
    }
    free(line);
    fclose(f);
    tokenizer_release(tok);
    cr_expect_geq(n_cases, 13, "only %d cases in %s", n_cases, path);
}

Test(chat_template, golden_prompts) {
    char path[4096];
    snprintf(path, sizeof path, "%s/prompts.json", golden_dir());
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    cr_assert(root, "%s: %s", path, jerr.text);
    tokenizer *tok = tokenizer_or_null();
    const json_t *prompts = json_object_get(root, "prompts");
    int n_chat = 0;
    for (size_t i = 0; i < json_array_size(prompts); i++) {
        const json_t *p = json_array_get(prompts, i);
        const char *kind = json_string_value(json_object_get(p, "kind"));
        if (!kind || strncmp(kind, "chat", 4) != 0) continue;
        const json_t *tpl = json_object_get(p, "template");
        check_golden(json_object_get(tpl, "messages"), json_is_true(json_object_get(tpl, "add_generation_prompt")),
                     json_object_get(p, "text"), json_object_get(p, "ids"), tok,
                     json_string_value(json_object_get(p, "name")));
        n_chat++;
    }
    tokenizer_release(tok);
    json_decref(root);
    cr_expect_geq(n_chat, 1, "no chat prompt in %s", path);
}

#define BOS "<｜begin▁of▁sentence｜>"
#define CALL(args) "function<｜tool▁sep｜>f\n```json\n" args "\n```<｜tool▁call▁end｜>"
#define TC(args) "{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"" args "\"}}"

Test(chat_template, empty_list_is_bos) {
    expect_render("[]", false, BOS);
    expect_render("[]", true, BOS "<｜Assistant｜>");
}

Test(chat_template, three_calls_close_twice) {
    expect_render("[{\"role\":\"user\",\"content\":\"u\"},"
                  "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[" TC("1") "," TC("2") "," TC("3") "]}]",
                  true,
                  BOS "<｜User｜>u<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" CALL("1")
                      "\n<｜tool▁call▁begin｜>" CALL("2") "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
                      "\n<｜tool▁call▁begin｜>" CALL("3") "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
                      "<｜Assistant｜>");
}

/* ns.is_first / ns.is_output_first are never reset: a second tool round gets
 * neither "<｜Assistant｜><｜tool▁calls▁begin｜>" nor "<｜tool▁outputs▁begin｜>". */
Test(chat_template, second_tool_round_not_reopened) {
    expect_render("[{\"role\":\"user\",\"content\":\"u\"},"
                  "{\"role\":\"assistant\",\"tool_calls\":[" TC("1") "]},"
                  "{\"role\":\"tool\",\"content\":\"r1\"},"
                  "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[" TC("2") "]},"
                  "{\"role\":\"tool\",\"content\":\"r2\"},"
                  "{\"role\":\"tool\",\"content\":\"r3\"}]",
                  true,
                  BOS "<｜User｜>u<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" CALL("1")
                      "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>r1<｜tool▁output▁end｜>"
                      "\n<｜tool▁call▁begin｜>" CALL("2") "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
                      "\n<｜tool▁output▁begin｜>r2<｜tool▁output▁end｜>"
                      "\n<｜tool▁output▁begin｜>r3<｜tool▁output▁end｜><｜tool▁outputs▁end｜>");
}

/* An assistant message with content renders the content only; its tool_calls are dropped. */
Test(chat_template, content_wins_over_tool_calls) {
    expect_render("[{\"role\":\"user\",\"content\":\"u\"},"
                  "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[" TC("1") "]}]",
                  false, BOS "<｜User｜>u<｜Assistant｜><｜end▁of▁sentence｜>");
}

/* A user message after tool outputs does not close them (is_tool is just reset). */
Test(chat_template, user_after_tool_output) {
    expect_render("[{\"role\":\"tool\",\"content\":\"r\"},{\"role\":\"user\",\"content\":\"u\"}]", true,
                  BOS "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>r<｜tool▁output▁end｜><｜User｜>u<｜Assistant｜>");
}

Test(chat_template, null_content_without_calls_renders_nothing) {
    expect_render("[{\"role\":\"tool\",\"content\":\"r\"},{\"role\":\"assistant\",\"content\":null},"
                  "{\"role\":\"assistant\",\"content\":\"a\"}]",
                  false,
                  BOS "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>r<｜tool▁output▁end｜>"
                      "<｜Assistant｜>a<｜end▁of▁sentence｜>");
}

Test(chat_template, text_parts_concatenated) {
    expect_render("[{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"S1\"},{\"type\":\"text\",\"text\":\"S2\"}]},"
                  "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
                  "{\"role\":\"system\",\"content\":\"late\"}]",
                  true, BOS "S1S2\n\nlate<｜User｜>ab<｜Assistant｜>");
}

/* This template keeps reasoning; strip_reasoning (off by default) applies R1's split('</think>')[-1]. */
Test(chat_template, reasoning_kept_by_default) {
    const char *msgs = "[{\"role\":\"user\",\"content\":\"q\"},"
                       "{\"role\":\"assistant\",\"content\":\"<think>a</think>b</think>\\n answer\"},"
                       "{\"role\":\"assistant\",\"content\":\"no think\"}]";
    expect_render(msgs, false,
                  BOS "<｜User｜>q<｜Assistant｜><think>a</think>b</think>\n answer<｜end▁of▁sentence｜>"
                      "<｜Assistant｜>no think<｜end▁of▁sentence｜>");
    ms_err err = {{0}};
    char *got = render_json(msgs, false, true, &err);
    cr_assert(got, "%s", err.msg);
    cr_expect_str_eq(got, BOS "<｜User｜>q<｜Assistant｜>\n answer<｜end▁of▁sentence｜>"
                              "<｜Assistant｜>no think<｜end▁of▁sentence｜>");
    free(got);
}

Test(chat_template, nul_byte_in_content_kept) {
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]", JSON_ALLOW_NUL, NULL);
    cr_assert(msgs);
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(chat_template_render(msgs, NULL, &text, &len, NULL), 0);
    const char want[] = BOS "<｜User｜>a\0b";
    cr_assert_eq(len, sizeof want - 1);
    cr_expect(memcmp(text, want, len) == 0);
    free(text);
    json_decref(msgs);
}

Test(chat_template, errors_name_index_and_field) {
    expect_error("{\"role\":\"user\"}", "messages: must be an array");
    expect_error("[{\"role\":\"user\",\"content\":\"x\"}, 3]", "messages[1]: must be an object");
    expect_error("[{\"content\":\"x\"}]", "messages[0].role");
    expect_error("[{\"role\":7,\"content\":\"x\"}]", "messages[0].role");
    expect_error("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"developer\",\"content\":\"x\"}]",
                 "messages[1].role: unknown role 'developer'");
    expect_error("[{\"role\":\"user\"}]", "messages[0].content");
    expect_error("[{\"role\":\"user\",\"content\":null}]", "messages[0].content");
    expect_error("[{\"role\":\"system\"}]", "messages[0].content");
    expect_error("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\"}]", "messages[1].content");
    expect_error("[{\"role\":\"user\",\"content\":42}]", "messages[0].content");
    expect_error("[{\"role\":\"user\",\"content\":[\"x\"]}]", "messages[0].content[0]");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]",
                 "messages[0].content[0].type");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":1}]}]", "messages[0].content[0].text");
    expect_error("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\"}]",
                 "messages[1].content: an assistant message needs content or tool_calls");
    expect_error("[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":{}}]", "messages[0].tool_calls");
    expect_error("[{\"role\":\"assistant\",\"tool_calls\":[1]}]", "messages[0].tool_calls[0]");
    expect_error("[{\"role\":\"assistant\",\"tool_calls\":[" TC("1") ",{\"type\":\"function\"}]}]",
                 "messages[0].tool_calls[1].function");
    expect_error("[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]",
                 "messages[0].tool_calls[0].type");
    expect_error("[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\",\"function\":{\"arguments\":\"{}\"}}]}]",
                 "messages[0].tool_calls[0].function.name");
    expect_error("[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{}}}]}]",
                 "messages[0].tool_calls[0].function.arguments");
}
