/* server/cli_jsonl.h — the JSON-lines filter shared by `mlaserve tokenize` and
 * `mlaserve detokenize`: parses `--model DIR [--help]`, loads the tokenizer,
 * reads stdin line by line (blank lines skipped), hands each parsed JSON value to
 * the command's handler, and turns a failure into an {"error": "line N: ..."}
 * output line so outputs stay aligned with inputs. Output is flushed per line.
 * Exit code: 0 all lines ok, 1 a bad line or a runtime error, 2 bad arguments. */
#ifndef MS_CLI_JSONL_H
#define MS_CLI_JSONL_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "common/tokenizer.h"

/* Handles one input value: prints its output line and returns NULL, or returns
 * an error message (static or in errbuf) and prints nothing. */
typedef const char *(*cli_jsonl_handler)(const tokenizer *tok, json_t *in, char *errbuf, size_t errlen);

int cli_jsonl_run(const char *name, int argc, char **argv, void (*usage)(FILE *), cli_jsonl_handler handle);

/* Prints {"KEY": STRING} (n bytes of s) as one compact JSON line. */
void cli_jsonl_print_string(const char *key, const char *s, size_t n);

#endif
