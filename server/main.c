/* server/main.c — the `mlaserve` binary: dispatches to a subcommand (cli.h). */
#include "server/cli.h"

#include <stdio.h>
#include <string.h>

#include "server/version.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (chat/completions, streaming, metrics)"},
    {"generate", cmd_generate, "generate a continuation of a prompt or chat message"},
    {"logits", cmd_logits, "print top logits per position and a greedy continuation as JSON"},
    {"tokenize", cmd_tokenize, "JSON lines {\"text\"} on stdin -> {\"ids\"}"},
    {"detokenize", cmd_detokenize, "JSON lines {\"ids\",\"skip_special_tokens\"} -> {\"text\"}"},
    {"chat-template", cmd_chat_template, "JSON lines {\"messages\",\"add_generation_prompt\"} -> {\"text\",\"ids\"}"},
    {"mkmodel", cmd_mkmodel, "write a deterministic test checkpoint (golden SPEC §4)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: mlaserve COMMAND [options]   (mlaserve COMMAND --help for its options)\n"
               "       mlaserve --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-14s %s\n", subcommands[i].name, subcommands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return CLI_USAGE; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("mlaserve %s (commit %s)\n", mlaserve_version, mlaserve_commit);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "mlaserve: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
}
