/* server/cmd_generate.c — `mlaserve generate`: encodes a prompt (or renders a
 * one-message chat with the model's template), then decodes token by token,
 * streaming the text to stdout through the incremental detokenizer. Sampling
 * defaults come from the checkpoint's generation_config.json when present.
 * Prints timing (prefill and decode tokens/s) to stderr. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/chat_template.h"
#include "common/sample.h"
#include "common/tokenizer.h"
#include "server/cli.h"
#include "server/cli_engine.h"

typedef struct {
    const char *model_dir, *prompt, *chat, *placement, *device;
    long max_tokens, threads, ep;
    int ignore_eos, quiet_stats, seed_given, bf16_activations, batch_invariant;
    sample_params sp;
    ep_launch_opts nodes; /* --nnodes, --node-rank, --master-addr, --master-port, --rendezvous-timeout */
} gen_args;

static void usage(FILE *f) {
    fprintf(f, "usage: mlaserve generate --model DIR (--prompt TEXT | --chat TEXT) [--max-tokens N]\n"
               "                         [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--seed S]\n"
               "                         [--repetition-penalty R] [--threads N] [--ignore-eos] [--no-stats]\n"
               "                         [--ep N] [--ep-placement FILE] [--device cpu|cuda[:N]] [--bf16-activations]\n"
               "                         [--batch-invariant]  (serve's kernels of that option: the same tokens)\n"
               EP_LAUNCH_NODES_USAGE
               "--prompt continues raw text (BOS prepended as tokenizer_config.json says); --chat sends TEXT\n"
               "as one user message through the chat template. Sampling defaults: generation_config.json,\n"
               "else greedy. --temperature 0 is greedy.\n");
}

/* temperature / top_p defaults from DIR/generation_config.json (if any). */
static void load_generation_defaults(const char *dir, sample_params *sp) {
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    json_t *g = json_load_file(path, 0, NULL);
    if (!g) return;
    json_t *t = json_object_get(g, "temperature"), *p = json_object_get(g, "top_p");
    if (json_is_number(t) && json_is_true(json_object_get(g, "do_sample"))) sp->temperature = (float)json_number_value(t);
    if (json_is_number(p) && sp->temperature > 0) sp->top_p = (float)json_number_value(p);
    json_decref(g);
}

static int parse_sampling(const char *o, const char *v, gen_args *a) {
    double d;
    long n;
    if (!strcmp(o, "--temperature") && !cli_parse_float(v, 0, 100, &d)) a->sp.temperature = (float)d;
    else if (!strcmp(o, "--top-p") && !cli_parse_float(v, 1e-9, 1, &d)) a->sp.top_p = (float)d;
    else if (!strcmp(o, "--min-p") && !cli_parse_float(v, 0, 1, &d)) a->sp.min_p = (float)d;
    else if (!strcmp(o, "--repetition-penalty") && !cli_parse_float(v, 1e-3, 100, &d)) a->sp.repetition_penalty = (float)d;
    else if (!strcmp(o, "--top-k") && !cli_parse_int(v, -1, 1 << 30, &n)) a->sp.top_k = (int32_t)n;
    else if (!strcmp(o, "--seed") && !cli_parse_int(v, 0, __LONG_MAX__, &n)) a->sp.seed = (uint64_t)n, a->seed_given = 1;
    else return -1;
    return 0;
}

/* Two passes: the model directory first (generation defaults), then the options. */
static int parse_args(int argc, char **argv, gen_args *a) {
    memset(a, 0, sizeof *a);
    a->max_tokens = 128;
    a->ep = 1;
    a->sp = sample_params_default();
    a->sp.temperature = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--model")) a->model_dir = argv[i + 1];
    if (a->model_dir) load_generation_defaults(a->model_dir, &a->sp);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); exit(CLI_OK); }
        if (!strcmp(o, "--ignore-eos")) { a->ignore_eos = 1; continue; }
        if (!strcmp(o, "--no-stats")) { a->quiet_stats = 1; continue; }
        if (!strcmp(o, "--bf16-activations")) { a->bf16_activations = 1; continue; }
        if (!strcmp(o, "--batch-invariant")) { a->batch_invariant = 1; continue; }
        if (!v) { fprintf(stderr, "mlaserve generate: %s needs a value\n", o); return -1; }
        i++;
        int bad = 0;
        if (!strcmp(o, "--model")) continue;
        if (ep_launch_parse_opt(&a->nodes, o, v, &bad) && !bad) continue;
        if (bad) {
            fprintf(stderr, "mlaserve generate: bad value for %s: %s\n", o, v);
            return -1;
        }
        if (!strcmp(o, "--prompt")) a->prompt = v;
        else if (!strcmp(o, "--chat")) a->chat = v;
        else if (!strcmp(o, "--max-tokens") && !cli_parse_int(v, 1, 1 << 24, &a->max_tokens)) continue;
        else if (!strcmp(o, "--threads") && !cli_parse_int(v, 0, 4096, &a->threads)) continue;
        else if (!strcmp(o, "--ep") && !cli_parse_int(v, 1, 256, &a->ep)) continue;
        else if (!strcmp(o, "--ep-placement")) a->placement = v;
        else if (!strcmp(o, "--device")) a->device = v;
        else if (parse_sampling(o, v, a) != 0) {
            fprintf(stderr, "mlaserve generate: bad option or value: %s %s\n", o, v);
            return -1;
        }
    }
    if (a->model_dir && a->nodes.node_rank > 0) return 0; /* a worker node: no prompt of its own */
    if (!a->model_dir || (!a->prompt == !a->chat)) {
        fprintf(stderr, "mlaserve generate: --model and exactly one of --prompt / --chat are required\n");
        return -1;
    }
    if (!a->seed_given) a->sp.seed = (uint64_t)time(NULL);
    return 0;
}

/* Prompt ids: BOS + encode(prompt), or encode(chat template render). */
static int prompt_ids(const tokenizer *tok, const gen_args *a, int32_t **ids, size_t *n) {
    ms_err err = {{0}};
    char *text = NULL;
    size_t len = 0;
    if (a->chat) {
        json_t *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", a->chat);
        chat_template_opts opts = {.add_generation_prompt = true};
        int rc = chat_template_render(msgs, &opts, &text, &len, &err);
        json_decref(msgs);
        if (rc != 0) { fprintf(stderr, "mlaserve generate: %s\n", err.msg); return -1; }
    }
    int32_t *body = NULL;
    size_t nb = 0;
    int rc = a->chat ? tokenizer_encode(tok, text, len, &body, &nb, &err)
                     : tokenizer_encode(tok, a->prompt, strlen(a->prompt), &body, &nb, &err);
    free(text);
    if (rc != 0) { fprintf(stderr, "mlaserve generate: %s\n", err.msg); return -1; }
    int bos = !a->chat && tokenizer_add_bos(tok) && tokenizer_bos_id(tok) >= 0;
    *n = nb + (size_t)bos;
    *ids = malloc((*n ? *n : 1) * sizeof **ids);
    if (!*ids) { free(body); return -1; }
    if (bos) (*ids)[0] = tokenizer_bos_id(tok);
    if (nb) memcpy(*ids + bos, body, nb * sizeof *body);
    free(body);
    return *n ? 0 : -1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void emit(const char *s, size_t n) {
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

/* Prefill, then sample / decode until EOS or max_tokens. */
static int decode_loop(cli_engine *e, const tokenizer *tok, const gen_args *a, const int32_t *ids, int n) {
    int V = e->m->cfg.vocab_size;
    ms_err err = {{0}};
    sampler *s = sampler_create(&a->sp, V, &err);
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!s || !logits) { fprintf(stderr, "mlaserve generate: %s\n", s ? "out of memory" : err.msg); free(logits); sampler_free(s); return -1; }
    sampler_add_prompt(s, ids, (size_t)n);
    kv_seq seq = {0};
    detok d;
    detok_init(&d, tok, 1);
    double t0 = now_s();
    int rc = cli_engine_step(e, &seq, ids, n, 0, 0, logits);
    double t1 = now_s();
    int produced = 0;
    int32_t eos = tokenizer_eos_id(tok);
    while (rc == 0 && produced < a->max_tokens) {
        int32_t tok_id = sampler_sample(s, logits, &err);
        if (tok_id < 0) { fprintf(stderr, "mlaserve generate: %s\n", err.msg); rc = -1; break; }
        produced++;
        if (tok_id == eos && !a->ignore_eos) break;
        size_t len;
        const char *piece = detok_push(&d, tok_id, &len);
        if (piece) emit(piece, len);
        if (produced < a->max_tokens) rc = cli_engine_step(e, &seq, &tok_id, 1, n + produced - 1, 0, logits);
    }
    size_t len;
    const char *rest = detok_flush(&d, &len);
    if (rest) emit(rest, len);
    emit("\n", 1);
    double t2 = now_s();
    if (!a->quiet_stats)
        fprintf(stderr, "[%d prompt tokens: %.1f tok/s prefill; %d generated: %.2f tok/s decode]\n", n, n / (t1 - t0),
                produced, produced > 1 ? (produced - 1) / (t2 - t1) : 0.0);
    detok_free(&d);
    kv_seq_release(&e->kv, &seq);
    sampler_free(s);
    free(logits);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_args a;
    if (parse_args(argc, argv, &a) != 0) { usage(stderr); return CLI_USAGE; }
    ep_launch_opts lo = a.nodes;
    lo.n_ranks = (int)a.ep, lo.n_threads = (int)a.threads, lo.placement = a.placement, lo.device = a.device;
    lo.bf16_activations = a.bf16_activations, lo.batch_invariant = a.batch_invariant;
    if (lo.node_rank > 0) return ep_launch_worker(a.model_dir, &lo);
    ms_err err = {{0}};
    if (sample_params_validate(&a.sp, &err) != 0) { fprintf(stderr, "mlaserve generate: %s\n", err.msg); return CLI_USAGE; }
    tokenizer *tok = tokenizer_load(a.model_dir, &err);
    if (!tok) { fprintf(stderr, "mlaserve: %s\n", err.msg); return CLI_FAIL; }
    int32_t *ids = NULL;
    size_t n = 0;
    cli_engine e;
    int rc = CLI_FAIL;
    if (prompt_ids(tok, &a, &ids, &n) == 0 &&
        cli_engine_open(&e, a.model_dir, (int)n + (int)a.max_tokens + 1, &lo) == 0) {
        if ((long)n + a.max_tokens > e.m->cfg.max_position_embeddings)
            fprintf(stderr, "mlaserve generate: %zu prompt tokens + %ld exceed the context (%d)\n", n, a.max_tokens,
                    e.m->cfg.max_position_embeddings);
        else if (decode_loop(&e, tok, &a, ids, (int)n) == 0)
            rc = CLI_OK;
        cli_engine_close(&e);
    }
    free(ids);
    tokenizer_free(tok);
    return rc;
}
