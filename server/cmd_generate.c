/* server/cmd_generate.c — PLACEHOLDER while the module is being written; replaced before landing. */
#include "server/cli.h"
#include <stdio.h>
int cmd_generate(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "mlaserve: generate: not built yet\n"); return CLI_FAIL; }
