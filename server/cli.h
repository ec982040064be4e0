/* server/cli.h — the `mlaserve` subcommands.
 *
 * Each subcommand is `int cmd_NAME(int argc, char **argv)` with argv[0] being the
 * subcommand name. Exit codes: 0 success, 1 runtime failure (bad model directory,
 * I/O error: the message names the file/tensor), 2 bad arguments (usage printed).
 * Each lives in server/cmd_NAME.c; main.c holds the dispatch table. */
#ifndef MS_CLI_H
#define MS_CLI_H

#define CLI_OK 0
#define CLI_FAIL 1
#define CLI_USAGE 2

int cmd_mkmodel(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat_template(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
