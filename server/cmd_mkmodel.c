/* server/cmd_mkmodel.c — PLACEHOLDER while the module is being written; replaced before landing. */
#include "server/cli.h"
#include <stdio.h>
int cmd_mkmodel(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "mlaserve: mkmodel: not built yet\n"); return CLI_FAIL; }
