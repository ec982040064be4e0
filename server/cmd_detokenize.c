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
#include "server/cli_jsonl.h"

static void detokenize_usage(FILE *f) {
    fprintf(f,
            "usage: mlaserve detokenize --model DIR\n"
            "\n"
            "Reads JSON lines {\"ids\": [...], \"skip_special_tokens\": false} on stdin and\n"
            "writes {\"text\": STRING} lines.\n"
            "  --model DIR   checkpoint or tokenizer directory holding tokenizer.json\n"
            "A malformed line gives {\"error\": ...} (and exit status 1 at the end).\n");
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

/* {"ids": [...], "skip_special_tokens": bool} -> {"text": STRING} */
static const char *detokenize_value(const tokenizer *tok, json_t *j, char *errbuf, size_t errlen) {
    (void)errbuf;
    (void)errlen;
    int32_t *ids;
    size_t n;
    int skip;
    const char *problem = parse_line(j, &ids, &n, &skip);
    if (problem) return problem;
    size_t tlen;
    char *text = tokenizer_decode_len(tok, ids, n, skip, &tlen);
    free(ids);
    if (!text) return "out of memory";
    cli_jsonl_print_string("text", text, tlen);
    free(text);
    return NULL;
}

int cmd_detokenize(int argc, char **argv) {
    return cli_jsonl_run("detokenize", argc, argv, detokenize_usage, detokenize_value);
}
