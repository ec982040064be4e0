/* server/cmd_tokenize.c — PLACEHOLDER while the module is being written; replaced before landing. */
#include "server/cli.h"
#include <stdio.h>
int cmd_tokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "mlaserve: tokenize: not built yet\n"); return CLI_FAIL; }
