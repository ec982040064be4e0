/* server/cmd_logits.c — PLACEHOLDER while the module is being written; replaced before landing. */
#include "server/cli.h"
#include <stdio.h>
int cmd_logits(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "mlaserve: logits: not built yet\n"); return CLI_FAIL; }
