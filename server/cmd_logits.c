/* server/cmd_logits.c — `mlaserve logits`: runs token ids through the model and
 * prints {"top": [[[id, logit], ...] per position], "greedy": [ids]} as one JSON
 * object; optionally writes the last position's logits as little-endian float32.
 * The tool behind the golden comparisons (test/cli/logits.sh). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/cli.h"
#include "server/cli_engine.h"

typedef struct {
    const char *model_dir, *ids_text, *last_logits, *placement, *device;
    long top, greedy, threads, ep;
    attn_mode attn;
    int expert_counts;
    int batch_invariant;
    int bf16_activations;
    ep_launch_opts nodes; /* --nnodes, --node-rank, --master-addr, --master-port, --rendezvous-timeout */
} logits_args;

static void usage(FILE *f) {
    fprintf(f, "usage: mlaserve logits --model DIR --ids ID,ID,... [--top K] [--greedy N]\n"
               "                       [--last-logits FILE] [--threads N] [--attn auto|absorb|naive]\n"
               "                       [--ep N] [--ep-placement FILE] [--expert-counts] [--device cpu|cuda[:N]]\n"
               "                       [--batch-invariant] [--bf16-activations]  (the kernels of serve's options)\n"
               EP_LAUNCH_NODES_USAGE
               "Prints {\"top\": [[[id, logit], ...] per prompt position], \"greedy\": [N ids]}; with\n"
               "--expert-counts also \"expert_tokens\": [rows each routed expert ran, over all layers and ranks].\n");
}

static int parse_args(int argc, char **argv, logits_args *a) {
    *a = (logits_args){NULL, NULL, NULL, NULL, NULL, 20, 0, 0, 1, ATTN_AUTO, 0, 0, 0, {0}};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); exit(CLI_OK); }
        if (!strcmp(o, "--expert-counts")) { a->expert_counts = 1; continue; }
        if (!strcmp(o, "--batch-invariant")) { a->batch_invariant = 1; continue; }
        if (!strcmp(o, "--bf16-activations")) { a->bf16_activations = 1; continue; }
        if (!v) { fprintf(stderr, "mlaserve logits: %s needs a value\n", o); return -1; }
        i++;
        int bad = 0;
        if (ep_launch_parse_opt(&a->nodes, o, v, &bad) && !bad) continue;
        if (bad) { fprintf(stderr, "mlaserve logits: bad value for %s: %s\n", o, v); return -1; }
        if (!strcmp(o, "--model")) a->model_dir = v;
        else if (!strcmp(o, "--ids")) a->ids_text = v;
        else if (!strcmp(o, "--last-logits")) a->last_logits = v;
        else if (!strcmp(o, "--ep-placement")) a->placement = v;
        else if (!strcmp(o, "--device")) a->device = v;
        else if (!strcmp(o, "--ep") && cli_parse_int(v, 1, 256, &a->ep) == 0) continue;
        else if (!strcmp(o, "--top") && cli_parse_int(v, 0, 1000000, &a->top) == 0) continue;
        else if (!strcmp(o, "--greedy") && cli_parse_int(v, 0, 1000000, &a->greedy) == 0) continue;
        else if (!strcmp(o, "--threads") && cli_parse_int(v, 0, 4096, &a->threads) == 0) continue;
        else if (!strcmp(o, "--attn") && !strcmp(v, "auto")) a->attn = ATTN_AUTO;
        else if (!strcmp(o, "--attn") && !strcmp(v, "absorb")) a->attn = ATTN_ABSORB;
        else if (!strcmp(o, "--attn") && !strcmp(v, "naive")) a->attn = ATTN_NAIVE;
        else { fprintf(stderr, "mlaserve logits: bad option or value: %s %s\n", o, v); return -1; }
    }
    if (a->model_dir && a->nodes.node_rank > 0) return 0; /* a worker node: no ids of its own */
    if (a->expert_counts && a->nodes.nnodes > 1) {
        fprintf(stderr, "mlaserve logits: --expert-counts sees only this node's experts; drop it with --nnodes\n");
        return -1;
    }
    if (!a->model_dir || !a->ids_text) { fprintf(stderr, "mlaserve logits: --model and --ids are required\n"); return -1; }
    if (a->batch_invariant && a->attn == ATTN_NAIVE) {
        fprintf(stderr, "mlaserve logits: --batch-invariant attends in the absorbed form; drop --attn naive\n");
        return -1;
    }
    return 0;
}

/* "0,5,77" -> ids; -1 on anything that is not a comma-separated list of ids. */
static int parse_ids(const char *text, int32_t **ids, int *n) {
    int cap = 16;
    *n = 0;
    *ids = malloc((size_t)cap * sizeof **ids);
    char *copy = strdup(text), *save = NULL;
    int rc = *ids && copy ? 0 : -1;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        long v;
        if (cli_parse_int(t, 0, INT32_MAX, &v) != 0) { rc = -1; break; }
        if (*n == cap) {
            int32_t *g = realloc(*ids, (size_t)(cap *= 2) * sizeof *g);
            if (!g) { rc = -1; break; }
            *ids = g;
        }
        (*ids)[(*n)++] = (int32_t)v;
    }
    free(copy);
    return rc == 0 && *n > 0 ? 0 : -1;
}

/* [[id, logit], ...] for the k largest logits, descending (ties: lower id). */
static json_t *top_k_json(const float *v, int n, int k) {
    json_t *arr = json_array();
    int *pick = malloc((size_t)(k ? k : 1) * sizeof *pick);
    for (int j = 0; j < k && j < n; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            int used = 0;
            for (int q = 0; q < j && !used; q++) used = pick[q] == i;
            if (!used && (best < 0 || v[i] > v[best])) best = i;
        }
        pick[j] = best;
        json_array_append_new(arr, json_pack("[i,f]", best, (double)v[best]));
    }
    free(pick);
    return arr;
}

static int write_floats(const char *path, const float *v, int n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(v, sizeof *v, (size_t)n, f) != (size_t)n || fclose(f) != 0) {
        if (f) fclose(f);
        fprintf(stderr, "mlaserve logits: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

/* Rows each routed expert ran, summed over the ranks. */
static json_t *expert_counts(const cli_engine *e) {
    int E = e->m->cfg.n_routed_experts;
    uint64_t *sum = calloc((size_t)E + 1, sizeof *sum), *one = calloc((size_t)E + 1, sizeof *one);
    json_t *arr = json_array();
    for (int r = 0; sum && one && r < e->ranks.n_ranks; r++) {
        model_expert_tokens(e->ranks.m[r], one);
        for (int x = 0; x < E; x++) sum[x] += one[x];
    }
    for (int x = 0; sum && x < E; x++) json_array_append_new(arr, json_integer((json_int_t)sum[x]));
    free(sum);
    free(one);
    return arr;
}

static int run(cli_engine *e, const logits_args *a, const int32_t *ids, int n) {
    int V = e->m->cfg.vocab_size;
    float *logits = malloc((size_t)n * V * sizeof *logits);
    int32_t *all = malloc((size_t)(n + a->greedy + 1) * sizeof *all);
    kv_seq seq = {0};
    json_t *out = json_object(), *top = json_array(), *greedy = json_array();
    int rc = !logits || !all ? -1 : cli_engine_step(e, &seq, ids, n, 0, 1, logits);
    for (int p = 0; rc == 0 && p < n; p++) json_array_append_new(top, top_k_json(logits + (size_t)p * V, V, (int)a->top));
    if (rc == 0 && a->last_logits) rc = write_floats(a->last_logits, logits + (size_t)(n - 1) * V, V);
    if (rc == 0 && a->greedy) {
        memcpy(all, ids, (size_t)n * sizeof *ids);
        int32_t tok = cli_argmax(logits + (size_t)(n - 1) * V, V);
        for (long s = 0; s < a->greedy && rc == 0; s++) {
            json_array_append_new(greedy, json_integer(tok));
            all[n + s] = tok;
            if (s + 1 < a->greedy && (rc = cli_engine_step(e, &seq, &all[n + s], 1, n + (int)s, 0, logits)) == 0)
                tok = cli_argmax(logits, V);
        }
    }
    json_object_set_new(out, "top", top);
    json_object_set_new(out, "greedy", greedy);
    if (rc == 0 && a->expert_counts) json_object_set_new(out, "expert_tokens", expert_counts(e));
    if (rc == 0) {
        char *s = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(9));
        puts(s);
        free(s);
    }
    json_decref(out);
    kv_seq_release(&e->kv, &seq);
    free(all);
    free(logits);
    return rc;
}

int cmd_logits(int argc, char **argv) {
    logits_args a;
    int32_t *ids = NULL;
    int n = 0;
    if (parse_args(argc, argv, &a) != 0) { usage(stderr); return CLI_USAGE; }
    ep_launch_opts lo = a.nodes;
    lo.n_ranks = (int)a.ep, lo.n_threads = (int)a.threads, lo.placement = a.placement, lo.device = a.device;
    lo.batch_invariant = a.batch_invariant, lo.bf16_activations = a.bf16_activations;
    if (lo.node_rank > 0) return ep_launch_worker(a.model_dir, &lo);
    if (parse_ids(a.ids_text, &ids, &n) != 0) {
        fprintf(stderr, "mlaserve logits: --ids must be comma-separated token ids, got \"%s\"\n", a.ids_text);
        free(ids);
        return CLI_USAGE;
    }
    cli_engine e;
    if (cli_engine_open(&e, a.model_dir, n + (int)a.greedy + 1, &lo) != 0) {
        free(ids);
        return CLI_FAIL;
    }
    if (!a.batch_invariant) e.m->attn = a.attn;
    int rc = run(&e, &a, ids, n);
    cli_engine_close(&e);
    free(ids);
    return rc == 0 ? CLI_OK : CLI_FAIL;
}
