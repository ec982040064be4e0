/* server/cmd_chat_template.c — `mlaserve chat-template`: renders chat messages
 * with the DeepSeek-V3 template (common/chat_template) and encodes the text
 * (common/tokenizer), one JSON line in, one JSON line out.
 *
 *   in:  {"messages": [...], "add_generation_prompt": bool (default false),
 *         "continue_final_message": bool (default false: end inside the last,
 *         assistant, message; common/chat_template.h)}
 *   out: {"text": "<｜begin▁of▁sentence｜>...", "ids": [0, ...]}
 *
 * The ids are the tokenizer's encode of the text with special tokens matched
 * and no BOS added (the text already starts with the BOS string). A bad line
 * gets {"error": "line N: ..."} on stdout (so output lines stay aligned with
 * input lines) and the same message on stderr; the remaining lines are still
 * processed and the exit code is then 1. Single-threaded. Exit codes: cli.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/chat_template.h"
#include "common/err.h"
#include "common/tokenizer.h"
#include "server/cli.h"

static void chat_template_usage(FILE *f) {
    fprintf(f,
            "usage: mlaserve chat-template --model DIR\n"
            "\n"
            "Reads JSON lines {\"messages\": [...], \"add_generation_prompt\": bool,\n"
            "\"continue_final_message\": bool} on stdin and\n"
            "writes {\"text\": ..., \"ids\": [...]} for each: the DeepSeek-V3 chat template render\n"
            "and its token ids. A bad line gets {\"error\": ...} and makes the exit code 1.\n"
            "  --model DIR   directory holding tokenizer.json (a model or tokenizer directory)\n");
}

/* Returns 0 with *model set, 1 for --help, or CLI_USAGE after a message. */
static int parse_args(int argc, char **argv, const char **model) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
        if (!strcmp(argv[i], "--model")) {
            if (i + 1 >= argc) { fprintf(stderr, "mlaserve chat-template: --model needs a value\n"); return CLI_USAGE; }
            *model = argv[++i];
            continue;
        }
        fprintf(stderr, "mlaserve chat-template: unexpected argument '%s'\n", argv[i]);
        return CLI_USAGE;
    }
    if (!*model) { fprintf(stderr, "mlaserve chat-template: --model DIR is required\n"); return CLI_USAGE; }
    return 0;
}

/* Builds {"text","ids"} for one parsed request; NULL with err on failure. */
static json_t *render_request(const tokenizer *tok, const json_t *req, ms_err *err) {
    if (!json_is_object(req)) { ms_err_set(err, "expected a JSON object {\"messages\": [...]}"); return NULL; }
    const json_t *gen = json_object_get(req, "add_generation_prompt"), *cont = json_object_get(req, "continue_final_message");
    if (gen && !json_is_boolean(gen) && !json_is_null(gen)) {
        ms_err_set(err, "add_generation_prompt: must be true or false");
        return NULL;
    }
    if (cont && !json_is_boolean(cont) && !json_is_null(cont)) {
        ms_err_set(err, "continue_final_message: must be true or false");
        return NULL;
    }
    const json_t *messages = json_object_get(req, "messages");
    if (!messages) { ms_err_set(err, "messages: missing"); return NULL; }
    chat_template_opts opts = {.add_generation_prompt = json_is_true(gen), .continue_final_message = json_is_true(cont)};
    char *text = NULL;
    size_t len = 0;
    if (chat_template_render(messages, &opts, &text, &len, err)) return NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    json_t *out = NULL;
    if (tokenizer_encode(tok, text, len, &ids, &n, err) == 0) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
        out = json_pack("{s:o?, s:o?}", "text", json_stringn(text, len), "ids", arr);
        if (!out || !arr) ms_err_set(err, "out of memory");
    }
    free(ids);
    free(text);
    return out;
}

/* Writes one JSON value as a line; returns -1 on an output error. */
static int write_line(const json_t *v) {
    if (json_dumpf(v, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) || fputc('\n', stdout) == EOF) return -1;
    return fflush(stdout) == EOF ? -1 : 0;
}

static int process_line(const tokenizer *tok, const char *line, size_t len, long lineno, int *bad) {
    json_error_t jerr;
    ms_err err = {{0}};
    json_t *req = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
    json_t *out = NULL;
    if (!req) ms_err_set(&err, "invalid JSON: %s (column %d)", jerr.text, jerr.column);
    else out = render_request(tok, req, &err);
    json_decref(req);
    if (!out) {
        ms_err_prefix(&err, "line %ld", lineno);
        fprintf(stderr, "mlaserve chat-template: %s\n", err.msg);
        out = json_pack("{s:s}", "error", err.msg);
        *bad = 1;
    }
    int rc = out ? write_line(out) : -1;
    json_decref(out);
    return rc;
}

int cmd_chat_template(int argc, char **argv) {
    const char *model = NULL;
    int rc = parse_args(argc, argv, &model);
    if (rc == 1) { chat_template_usage(stdout); return CLI_OK; }
    if (rc) { chat_template_usage(stderr); return CLI_USAGE; }
    ms_err err = {{0}};
    tokenizer *tok = tokenizer_load(model, &err);
    if (!tok) { fprintf(stderr, "mlaserve chat-template: %s\n", err.msg); return CLI_FAIL; }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int bad = 0, io_error = 0;
    while (!io_error && (n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (strspn(line, " \t") == (size_t)n) continue; /* blank line */
        if (process_line(tok, line, (size_t)n, lineno, &bad)) io_error = 1;
    }
    free(line);
    tokenizer_free(tok);
    if (io_error || ferror(stdin)) { fprintf(stderr, "mlaserve chat-template: I/O error\n"); return CLI_FAIL; }
    return bad ? CLI_FAIL : CLI_OK;
}
