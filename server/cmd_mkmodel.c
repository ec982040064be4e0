/* server/cmd_mkmodel.c — `mlaserve mkmodel`: writes a deterministic test
 * checkpoint (golden SPEC §2–§4) from a compiled-in preset or from a
 * config.json + gen.json pair, via common/modelgen. Single-threaded front end;
 * the generator parallelises on its own pool. Exit codes as in server/cli.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/modelgen.h"
#include "common/presets.h"
#include "server/cli.h"

static void mkmodel_usage(FILE *f) {
    fprintf(f,
            "usage: mlaserve mkmodel (--preset NAME | --config CONFIG.json --gen GEN.json\n"
            "                         [--generation-config FILE]) --tokenizer TOKDIR --out DIR [--threads N]\n"
            "\n"
            "Writes a deterministic checkpoint (golden SPEC §2-§4) to DIR, which must not exist\n"
            "or be empty. TOKDIR holds the tokenizer files listed in gen.json.\n"
            "  --preset NAME     compiled-in model:");
    for (const model_preset *p = model_presets; p->name; p++) fprintf(f, " %s", p->name);
    fprintf(f,
            "\n"
            "  --config FILE     config.json to write byte-exact (with --gen)\n"
            "  --gen FILE        generator parameters (seed, value classes, tokenizer_files)\n"
            "  --generation-config FILE  generation_config.json to copy (optional)\n"
            "  --threads N       worker threads (default: one per CPU)\n");
}

typedef struct mkmodel_args {
    const char *preset, *config, *gen, *generation_config, *tokenizer, *out;
    int threads;
} mkmodel_args;

/* Returns 0, CLI_OK for --help (already handled), or CLI_USAGE after a message. */
static int parse_args(int argc, char **argv, mkmodel_args *a, int *help) {
    struct { const char *flag; const char **dst; } opts[] = {
        {"--preset", &a->preset},       {"--config", &a->config}, {"--gen", &a->gen},
        {"--generation-config", &a->generation_config},           {"--tokenizer", &a->tokenizer},
        {"--out", &a->out},
    };
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { *help = 1; return 0; }
        int matched = 0;
        for (size_t k = 0; k < sizeof opts / sizeof opts[0] && !matched; k++) {
            if (strcmp(argv[i], opts[k].flag)) continue;
            if (i + 1 >= argc) { fprintf(stderr, "mlaserve mkmodel: %s needs a value\n", argv[i]); return CLI_USAGE; }
            *opts[k].dst = argv[++i];
            matched = 1;
        }
        if (matched) continue;
        if (!strcmp(argv[i], "--threads")) {
            char *end;
            if (i + 1 >= argc) { fprintf(stderr, "mlaserve mkmodel: --threads needs a value\n"); return CLI_USAGE; }
            long n = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || n < 1 || n > 4096) {
                fprintf(stderr, "mlaserve mkmodel: --threads needs a positive integer, got '%s'\n", argv[i]);
                return CLI_USAGE;
            }
            a->threads = (int)n;
            continue;
        }
        fprintf(stderr, "mlaserve mkmodel: unexpected argument '%s'\n", argv[i]);
        return CLI_USAGE;
    }
    const char *problem = NULL;
    if (a->preset && (a->config || a->gen || a->generation_config))
        problem = "--preset cannot be combined with --config/--gen/--generation-config";
    else if (!a->preset && (!a->config || !a->gen)) problem = "give --preset NAME, or both --config and --gen";
    else if (!a->tokenizer) problem = "--tokenizer DIR is required";
    else if (!a->out) problem = "--out DIR is required";
    if (problem) { fprintf(stderr, "mlaserve mkmodel: %s\n", problem); return CLI_USAGE; }
    return 0;
}

/* Reads a whole text file; NULL (err filled) on failure. */
static char *read_text(const char *path, ms_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) { ms_err_set(err, "%s: %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - 1 - len, f);
        if (len < cap - 1) break;
        char *bigger = realloc(buf, cap *= 2);
        if (!bigger) { free(buf); buf = NULL; }
        buf = bigger;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        ms_err_set(err, "%s: %s", path, buf ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

int cmd_mkmodel(int argc, char **argv) {
    mkmodel_args a = {0};
    int help = 0, rc = parse_args(argc, argv, &a, &help);
    if (help) { mkmodel_usage(stdout); return CLI_OK; }
    if (rc) { mkmodel_usage(stderr); return rc; }

    modelgen_opts o = {.tokenizer_dir = a.tokenizer, .out_dir = a.out, .n_threads = a.threads};
    o.progress = isatty(STDERR_FILENO) ? stderr : NULL;
    char *config = NULL, *gen = NULL, *gencfg = NULL;
    ms_err err = {{0}};
    if (a.preset) {
        const model_preset *p = model_preset_find(a.preset);
        if (!p) {
            fprintf(stderr, "mlaserve mkmodel: unknown preset '%s'\n", a.preset);
            mkmodel_usage(stderr);
            return CLI_USAGE;
        }
        o.config_json = p->config_json;
        o.gen_json = p->gen_json;
        o.generation_config_json = p->generation_config_json;
    } else {
        if (!(config = read_text(a.config, &err)) || !(gen = read_text(a.gen, &err)) ||
            (a.generation_config && !(gencfg = read_text(a.generation_config, &err))))
            rc = -1;
        o.config_json = config;
        o.gen_json = gen;
        o.generation_config_json = gencfg;
    }
    if (rc == 0) rc = modelgen_write(&o, &err);
    free(config);
    free(gen);
    free(gencfg);
    if (rc) {
        fprintf(stderr, "mlaserve mkmodel: %s\n", err.msg);
        return CLI_FAIL;
    }
    return CLI_OK;
}
