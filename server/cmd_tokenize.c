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
#include "server/cli_jsonl.h"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: mlaserve tokenize --model DIR\n"
            "\n"
            "Reads JSON lines {\"text\": STRING} on stdin and writes {\"ids\": [...]} lines.\n"
            "Special tokens in the text are recognised; no BOS is added.\n"
            "  --model DIR   checkpoint or tokenizer directory holding tokenizer.json\n"
            "A malformed line gives {\"error\": ...} (and exit status 1 at the end).\n");
}

/* {"text": STRING} -> {"ids": [...]} */
static const char *tokenize_value(const tokenizer *tok, json_t *j, char *errbuf, size_t errlen) {
    json_t *text = json_object_get(j, "text");
    if (!json_is_object(j) || !json_is_string(text)) return "expected an object with a string \"text\"";
    int32_t *ids;
    size_t n;
    ms_err err = {{0}};
    if (tokenizer_encode(tok, json_string_value(text), json_string_length(text), &ids, &n, &err) != 0) {
        snprintf(errbuf, errlen, "%s", err.msg);
        return errbuf;
    }
    fputs("{\"ids\":[", stdout);
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)ids[i]);
    fputs("]}\n", stdout);
    free(ids);
    return NULL;
}

int cmd_tokenize(int argc, char **argv) { return cli_jsonl_run("tokenize", argc, argv, tokenize_usage, tokenize_value); }
