/* server/cmd_detokenize.c — `mlaserve detokenize --model DIR`: JSON lines
 * {"ids": [INT...], "skip_special_tokens": BOOL} on stdin -> {"text": STRING}
 * on stdout, via tokenizer_decode (HF semantics: ids not in the vocabulary are
 * skipped, invalid UTF-8 becomes U+FFFD; skip_special_tokens defaults to false).
 *
 * Input handling: blank lines are skipped. A line that is not such an object
 * (ids not an array of integers, skip_special_tokens not a boolean) produces
 * {"error": "line N: ..."} and processing continues; the exit status is then 1.
 * Exit codes (server/cli.h): 0 all lines ok, 1 a bad line or a runtime error
 * (tokenizer directory: the message names the file), 2 bad arguments.
 * Single-threaded; output is flushed after every line. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tokenizer.h"
#include "server/cli.h"

static void detokenize_usage(FILE *f) {
    fprintf(f,
            "usage: mlaserve detokenize --model DIR\n"
            "\n"
            "Reads JSON lines {\"ids\": [...], \"skip_special_tokens\": false} on stdin and\n"
            "writes {\"text\": STRING} lines.\n"
            "  --model DIR   checkpoint or tokenizer directory holding tokenizer.json\n"
            "A malformed line gives {\"error\": ...} (and exit status 1 at the end).\n");
}

static int parse_model_arg(int argc, char **argv, const char **model, int *help) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { *help = 1; return 0; }
        if (!strcmp(argv[i], "--model") && i + 1 < argc) { *model = argv[++i]; continue; }
        fprintf(stderr, "mlaserve detokenize: %s '%s'\n",
                strcmp(argv[i], "--model") ? "unexpected argument" : "missing value for", argv[i]);
        return CLI_USAGE;
    }
    if (!*model) { fprintf(stderr, "mlaserve detokenize: --model DIR is required\n"); return CLI_USAGE; }
    return 0;
}

static void print_json_line(const char *key, const char *s, size_t n) {
    json_t *o = json_object();
    json_t *v = json_stringn(s, n);
    json_object_set_new(o, key, v ? v : json_string("(invalid UTF-8)"));
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(o);
}

static void print_error(size_t line_no, const char *msg) {
    char buf[1200];
    int n = snprintf(buf, sizeof buf, "line %zu: %s", line_no, msg);
    print_json_line("error", buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Parses the line into ids; returns an error message or NULL. */
static const char *parse_line(json_t *j, int32_t **ids, size_t *n, int *skip) {
    json_t *arr = json_object_get(j, "ids"), *sk = json_object_get(j, "skip_special_tokens");
    if (!json_is_object(j) || !json_is_array(arr)) return "expected an object with an array \"ids\"";
    if (sk && !json_is_boolean(sk)) return "\"skip_special_tokens\" must be true or false";
    *skip = json_is_true(sk);
    *n = json_array_size(arr);
    *ids = malloc((*n + 1) * sizeof **ids);
    if (!*ids) return "out of memory";
    for (size_t i = 0; i < *n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX) {
            free(*ids);
            return "\"ids\" must hold 32-bit integers";
        }
        (*ids)[i] = (int32_t)json_integer_value(v);
    }
    return NULL;
}

static int detokenize_line(const tokenizer *tok, const char *line, size_t len, size_t line_no) {
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    if (!j) {
        print_error(line_no, je.text);
        return -1;
    }
    int32_t *ids;
    size_t n;
    int skip;
    const char *problem = parse_line(j, &ids, &n, &skip);
    json_decref(j);
    if (problem) {
        print_error(line_no, problem);
        return -1;
    }
    size_t tlen;
    char *text = tokenizer_decode_len(tok, ids, n, skip, &tlen);
    free(ids);
    if (!text) {
        print_error(line_no, "out of memory");
        return -1;
    }
    print_json_line("text", text, tlen);
    free(text);
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", s[i])) return 0;
    return 1;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    int help = 0;
    int rc = parse_model_arg(argc, argv, &model, &help);
    if (help) { detokenize_usage(stdout); return CLI_OK; }
    if (rc) { detokenize_usage(stderr); return rc; }
    ms_err err = {{0}};
    tokenizer *tok = tokenizer_load(model, &err);
    if (!tok) { fprintf(stderr, "mlaserve detokenize: %s\n", err.msg); return CLI_FAIL; }
    char *line = NULL;
    size_t cap = 0, line_no = 0, bad = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        if (is_blank(line, (size_t)len)) continue;
        if (detokenize_line(tok, line, (size_t)len, line_no)) bad++;
        fflush(stdout);
    }
    free(line);
    tokenizer_free(tok);
    if (ferror(stdin) || ferror(stdout)) { fprintf(stderr, "mlaserve detokenize: I/O error\n"); return CLI_FAIL; }
    if (bad) { fprintf(stderr, "mlaserve detokenize: %zu of %zu lines had errors\n", bad, line_no); return CLI_FAIL; }
    return CLI_OK;
}
