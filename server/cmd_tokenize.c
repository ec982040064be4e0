/* server/cmd_tokenize.c — `mlaserve tokenize --model DIR`: JSON lines
 * {"text": STRING} on stdin -> {"ids": [...]} on stdout, one per input line, via
 * common/tokenizer (special tokens recognised, no BOS added: golden SPEC §8).
 *
 * Input handling: blank lines are skipped (no output). A line that is not a JSON
 * object with a string "text" (or whose text is not valid UTF-8) produces
 * {"error": "line N: ..."} and processing continues; the exit status is then 1.
 * Exit codes (server/cli.h): 0 all lines ok, 1 a bad line or a runtime error
 * (tokenizer directory: the message names the file), 2 bad arguments.
 * Single-threaded; output is flushed after every line so it can run as a
 * co-process. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tokenizer.h"
#include "server/cli.h"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: mlaserve tokenize --model DIR\n"
            "\n"
            "Reads JSON lines {\"text\": STRING} on stdin and writes {\"ids\": [...]} lines.\n"
            "Special tokens in the text are recognised; no BOS is added.\n"
            "  --model DIR   checkpoint or tokenizer directory holding tokenizer.json\n"
            "A malformed line gives {\"error\": ...} (and exit status 1 at the end).\n");
}

/* --model DIR [--help] (cmd_detokenize.c has the same parser). */
static int parse_model_arg(int argc, char **argv, const char **model, int *help) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { *help = 1; return 0; }
        if (!strcmp(argv[i], "--model") && i + 1 < argc) { *model = argv[++i]; continue; }
        fprintf(stderr, "mlaserve tokenize: %s '%s'\n",
                strcmp(argv[i], "--model") ? "unexpected argument" : "missing value for", argv[i]);
        return CLI_USAGE;
    }
    if (!*model) { fprintf(stderr, "mlaserve tokenize: --model DIR is required\n"); return CLI_USAGE; }
    return 0;
}

static void print_error(size_t line_no, const char *msg) {
    char buf[1200];
    snprintf(buf, sizeof buf, "line %zu: %s", line_no, msg);
    json_t *o = json_object(), *v = json_string(buf);
    json_object_set_new(o, "error", v ? v : json_string("invalid input line"));
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(o);
}

/* Handles one line; returns 0 if it produced ids, -1 if it produced an error. */
static int tokenize_line(const tokenizer *tok, const char *line, size_t len, size_t line_no) {
    json_error_t je;
    json_t *j = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    if (!j) {
        print_error(line_no, je.text);
        return -1;
    }
    json_t *text = json_object_get(j, "text");
    if (!json_is_object(j) || !json_is_string(text)) {
        json_decref(j);
        print_error(line_no, "expected an object with a string \"text\"");
        return -1;
    }
    int32_t *ids;
    size_t n;
    ms_err err = {{0}};
    int rc = tokenizer_encode(tok, json_string_value(text), json_string_length(text), &ids, &n, &err);
    json_decref(j);
    if (rc) {
        print_error(line_no, err.msg);
        return -1;
    }
    fputs("{\"ids\":[", stdout);
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)ids[i]);
    fputs("]}\n", stdout);
    free(ids);
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", s[i])) return 0;
    return 1;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL;
    int help = 0;
    int rc = parse_model_arg(argc, argv, &model, &help);
    if (help) { tokenize_usage(stdout); return CLI_OK; }
    if (rc) { tokenize_usage(stderr); return rc; }
    ms_err err = {{0}};
    tokenizer *tok = tokenizer_load(model, &err);
    if (!tok) { fprintf(stderr, "mlaserve tokenize: %s\n", err.msg); return CLI_FAIL; }
    char *line = NULL;
    size_t cap = 0, line_no = 0, bad = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        if (is_blank(line, (size_t)len)) continue;
        if (tokenize_line(tok, line, (size_t)len, line_no)) bad++;
        fflush(stdout);
    }
    free(line);
    tokenizer_free(tok);
    if (ferror(stdin) || ferror(stdout)) { fprintf(stderr, "mlaserve tokenize: I/O error\n"); return CLI_FAIL; }
    if (bad) { fprintf(stderr, "mlaserve tokenize: %zu of %zu lines had errors\n", bad, line_no); return CLI_FAIL; }
    return CLI_OK;
}
