/* server/cmd_detokenize.c — PLACEHOLDER while the module is being written; replaced before landing. */
#include "server/cli.h"
#include <stdio.h>
int cmd_detokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "mlaserve: detokenize: not built yet\n"); return CLI_FAIL; }
