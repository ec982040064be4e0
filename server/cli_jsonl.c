/* server/cli_jsonl.c — see cli_jsonl.h. */
#include "server/cli_jsonl.h"

#include <stdlib.h>
#include <string.h>

#include "server/cli.h"

/* --model DIR [--help]; returns 0, CLI_USAGE, or -1 after printing help. */
static int parse_model_arg(const char *name, int argc, char **argv, const char **model, void (*usage)(FILE *)) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return -1; }
        if (!strcmp(argv[i], "--model") && i + 1 < argc) { *model = argv[++i]; continue; }
        fprintf(stderr, "mlaserve %s: %s '%s'\n", name,
                strcmp(argv[i], "--model") ? "unexpected argument" : "missing value for", argv[i]);
        usage(stderr);
        return CLI_USAGE;
    }
    if (!*model) {
        fprintf(stderr, "mlaserve %s: --model DIR is required\n", name);
        usage(stderr);
        return CLI_USAGE;
    }
    return 0;
}

void cli_jsonl_print_string(const char *key, const char *s, size_t n) {
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
    cli_jsonl_print_string("error", buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", s[i])) return 0;
    return 1;
}

/* Returns 0 if the line produced output, -1 if it produced an error line. */
static int run_line(const tokenizer *tok, const char *line, size_t len, size_t line_no, cli_jsonl_handler handle) {
    json_error_t je;
    json_t *j = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    if (!j) {
        print_error(line_no, je.text);
        return -1;
    }
    char errbuf[1024] = "";
    const char *problem = handle(tok, j, errbuf, sizeof errbuf);
    json_decref(j);
    if (!problem) return 0;
    print_error(line_no, problem);
    return -1;
}

int cli_jsonl_run(const char *name, int argc, char **argv, void (*usage)(FILE *), cli_jsonl_handler handle) {
    const char *model = NULL;
    int rc = parse_model_arg(name, argc, argv, &model, usage);
    if (rc) return rc < 0 ? CLI_OK : rc;
    ms_err err = {{0}};
    tokenizer *tok = tokenizer_load(model, &err);
    if (!tok) { fprintf(stderr, "mlaserve %s: %s\n", name, err.msg); return CLI_FAIL; }
    char *line = NULL;
    size_t cap = 0, line_no = 0, bad = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        if (is_blank(line, (size_t)len)) continue;
        if (run_line(tok, line, (size_t)len, line_no, handle)) bad++;
        fflush(stdout);
    }
    free(line);
    tokenizer_free(tok);
    if (ferror(stdin) || ferror(stdout)) { fprintf(stderr, "mlaserve %s: I/O error\n", name); return CLI_FAIL; }
    if (bad) { fprintf(stderr, "mlaserve %s: %zu of %zu lines had errors\n", name, bad, line_no); return CLI_FAIL; }
    return CLI_OK;
}
