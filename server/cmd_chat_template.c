/* server/cmd_chat_template.c — PLACEHOLDER while the module is being written; replaced before landing. */
#include "server/cli.h"
#include <stdio.h>
int cmd_chat_template(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "mlaserve: chat_template: not built yet\n"); return CLI_FAIL; }
