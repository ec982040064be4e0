/* server/cmd_serve.c — `mlaserve serve`: the OpenAI-compatible server.
 *
 * Order of events: parse options (exit 2 on a bad one), bind the HTTP port
 * (so /health answers and /ready says 503 while loading; a port in use fails
 * before a long load), load tokenizer + model on the CPU backend, start the
 * engine thread (engine/sched.h), mark ready, print the banner. SIGINT/SIGTERM:
 * stop accepting, let in-flight requests finish for --drain-timeout seconds,
 * cancel the rest, exit 0. A signal during loading exits at once (0). Load
 * failures exit 1 with the loader's message. With --ep N the model runs over N
 * expert-parallel CPU ranks (server/ep_launch.h, engine/sched.h
 * sched_create_ep); if a rank fails, every request ends with an error and the
 * server exits 1 with the rank's message. Owns everything it creates; the only
 * state shared with the signal and engine threads is atomics and a semaphore. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/chat_template.h"
#include "common/constrain.h"
#include "cpu/backend_cpu.h"
#include "engine/model.h"
#include "engine/sched.h"
#include "server/cli.h"
#include "server/cli_engine.h"
#include "server/cors.h"
#include "server/ep_launch.h"
#include "server/ep_remote.h"
#include "server/http.h"
#include "server/resp_store.h"
#include "server/version.h"

#define MAX_API_KEYS 1024
#define MAX_SERVED_NAMES 16

typedef struct serve_args {
    const char *model_dir, *host;
    const char *served_names[MAX_SERVED_NAMES]; /* --served-model-name, repeated: the first is the model's id */
    int n_served_names;
    char *keys[MAX_API_KEYS]; /* owned copies */
    int n_keys;
    long port, threads, max_body_bytes, drain_timeout_s, max_connections, idle_timeout_s, header_timeout_s, ep;
    long responses_store;        /* --responses-store */
    const char *placement;       /* --ep-placement */
    const char *device;          /* --device */
    char *allowed_origins;       /* --allowed-origins parsed (server/cors.h), owned; NULL: none */
    sched_config sc;
    int log_json;
    const char *template_name;   /* --chat-template; NULL: detected from tokenizer_config.json */
    int reasoning_flag;          /* --reasoning-parser: 1 deepseek-r1, -1 none, 0 auto */
    int batch_invariant;         /* --batch-invariant */
    int bf16_activations;        /* --bf16-activations */
    ep_launch_opts nodes;        /* --nnodes, --node-rank, --master-addr, --master-port, --rendezvous-timeout */
} serve_args;

static ep_launch_opts launch_opts(const serve_args *a) {
    ep_launch_opts o = a->nodes;
    o.n_ranks = (int)a->ep, o.n_threads = (int)a->threads, o.placement = a->placement, o.device = a->device;
    o.batch_invariant = a->batch_invariant, o.bf16_activations = a->bf16_activations;
    return o;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: mlaserve serve --model DIR [options]\n"
            "  --host ADDR                  listen address (default 127.0.0.1)\n"
            "  --port N                     listen port (default 8000; 0 picks a free one)\n"
            "  --api-key KEY                require 'Authorization: Bearer KEY' on /v1/*, /tokenize, /detokenize;\n"
            "                               repeat for several keys (default: $MLASERVE_API_KEY)\n"
            "  --api-key-file PATH          accepted keys, one per line ('#' comments, blank lines ignored)\n"
            "  --served-model-name NAME     model id clients send (default: the model directory's name);\n"
            "                               repeat it for aliases clients may send too (the first is listed first)\n"
            "  --max-model-len N            prompt + completion tokens at most (default: the model's, capped by the KV pool)\n"
            "  --max-num-seqs N             running sequences at most (default 16)\n"
            "  --max-num-batched-tokens N   tokens per engine step at most (default 128 on the CPU, 512 on CUDA)\n"
            "  --kv-cache-tokens N          KV cache size in tokens (default 16384); also SIZE with K/M/G suffix = bytes\n"
            "  --threads N                  CPU threads for the model (default: all CPUs; split over --ep ranks)\n"
            "  --ep N                       expert parallelism over N CPU ranks: each rank owns a slice of the\n"
            "                               routed experts, its own sequences and KV pool (default 1)\n"
            "  --ep-placement FILE          JSON array: the rank of each routed expert (default: contiguous slices)\n"
            EP_LAUNCH_NODES_USAGE
            "  --device cpu|cuda[:N]        where the model runs (default cpu; cuda needs a make CUDA=1 build)\n"
            "  --max-queue N                waiting requests at most; beyond, 429 (default 256)\n"
            "  --no-prefix-caching          do not reuse the KV pages of a shared prompt prefix\n"
            "  --batch-invariant            a request's output does not depend on the other requests it is batched\n"
            "                               with (bit-identical logits; CPU only; slower, docs/operations.md)\n"
            "  --bf16-activations           round activations to bf16 in the weight products: ~2x prefill on CPUs\n"
            "                               with AVX512_BF16; logits move by ~1e-2 (docs/operations.md)\n"
            "  --max-body-bytes N           request bodies at most (default 8 MiB); beyond, 413\n"
            "  --max-connections N          concurrent HTTP connections at most (default 256)\n"
            "  --idle-timeout S             close a keep-alive connection idle this long (default 60)\n"
            "  --header-timeout S           close a connection whose request head takes longer (default 30; 0 off)\n"
            "  --allowed-origins LIST       CORS for browsers: '*' any origin, or origins a,b (https://app.example.com)\n"
            "                               or a JSON array; default none\n"
            "  --responses-store N          /v1/responses kept in memory for previous_response_id and\n"
            "                               GET /v1/responses/{id}, the oldest evicted first (default 1024; 0 off)\n"
            "  --drain-timeout S            on SIGINT/SIGTERM, seconds in-flight requests may take (default 30)\n"
            "  --log-format text|json       request log format on stderr (default text)\n"
            "  --chat-template NAME         deepseek-v3 | deepseek-r1 | deepseek-v3.1 (default: detected from\n"
            "                               the model's tokenizer_config.json)\n"
            "  --reasoning-parser NAME      deepseek-r1: split <think> reasoning into reasoning_content; none: never\n"
            "                               (default: on when the chat template opens <think>)\n");
}

/* KV size: a token count, or a memory size ("4G", "512M") converted with the model's bytes per token later. */
typedef struct kv_size {
    long tokens;
    double bytes;
} kv_size;

static int parse_kv_size(const char *v, kv_size *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || d <= 0) return -1;
    double mult = 0;
    if (!*end) {
        if (d != (long)d || d > 1 << 30) return -1;
        out->tokens = (long)d;
        return 0;
    }
    switch (*end) {
    case 'K': case 'k': mult = 1024.0; break;
    case 'M': case 'm': mult = 1024.0 * 1024; break;
    case 'G': case 'g': mult = 1024.0 * 1024 * 1024; break;
    default: return -1;
    }
    if (end[1] && strcmp(end + 1, "B") && strcmp(end + 1, "iB") && strcmp(end + 1, "b")) return -1;
    out->bytes = d * mult;
    return 0;
}

static int add_key(serve_args *a, const char *key, size_t len) {
    if (a->n_keys == MAX_API_KEYS) {
        fprintf(stderr, "mlaserve serve: more than %d API keys\n", MAX_API_KEYS);
        return -1;
    }
    if (!(a->keys[a->n_keys] = strndup(key, len))) return -1;
    a->n_keys++;
    return 0;
}

/* One key per line; surrounding whitespace trimmed; blank lines and '#' lines skipped. */
static int add_key_file(serve_args *a, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "mlaserve serve: --api-key-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int rc = 0, before = a->n_keys;
    while (!rc && fgets(line, sizeof line, f)) {
        char *p = line, *e = line + strlen(line);
        while (*p == ' ' || *p == '\t') p++;
        while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
        if (e > p && *p != '#') rc = add_key(a, p, (size_t)(e - p));
    }
    fclose(f);
    if (!rc && a->n_keys == before) {
        fprintf(stderr, "mlaserve serve: --api-key-file %s holds no key\n", path);
        rc = -1;
    }
    return rc;
}

/* What parse_args allocated: the API keys and the parsed CORS policy. */
static void free_args(serve_args *a) {
    for (int i = 0; i < a->n_keys; i++) free(a->keys[i]);
    a->n_keys = 0;
    free(a->allowed_origins);
    a->allowed_origins = NULL;
}

static int add_served_name(serve_args *a, const char *name) {
    if (!*name) return -1;
    if (a->n_served_names == MAX_SERVED_NAMES) {
        fprintf(stderr, "mlaserve serve: more than %d --served-model-name\n", MAX_SERVED_NAMES);
        return -1;
    }
    a->served_names[a->n_served_names++] = name;
    return 0;
}

static int parse_origins(serve_args *a, const char *arg) {
    ms_err e = {{0}};
    free(a->allowed_origins);
    if (cors_policy_parse(arg, &a->allowed_origins, &e) == 0) return 0;
    fprintf(stderr, "mlaserve serve: %s\n", e.msg);
    return -1;
}

static int parse_args(int argc, char **argv, serve_args *a, kv_size *kv) {
    memset(a, 0, sizeof *a);
    memset(kv, 0, sizeof *kv);
    a->host = "127.0.0.1";
    a->port = 8000;
    a->ep = 1;
    a->max_body_bytes = 8L << 20;
    a->drain_timeout_s = 30;
    a->max_connections = 256;
    a->idle_timeout_s = HTTP_DEFAULT_IDLE_TIMEOUT_S;
    a->header_timeout_s = HTTP_DEFAULT_HEADER_TIMEOUT_S;
    a->responses_store = RESP_STORE_DEFAULT_ENTRIES;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            exit(CLI_OK);
        }
        if (!strcmp(o, "--no-prefix-caching")) {
            a->sc.no_prefix_caching = 1;
            continue;
        }
        if (!strcmp(o, "--batch-invariant")) {
            a->batch_invariant = 1;
            continue;
        }
        if (!strcmp(o, "--bf16-activations")) {
            a->bf16_activations = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "mlaserve serve: %s needs a value\n", o);
            return -1;
        }
        i++;
        long n;
        int bad = 0, ok = 1;
        if (ep_launch_parse_opt(&a->nodes, o, v, &bad)) {}
        else if (!strcmp(o, "--model")) a->model_dir = v;
        else if (!strcmp(o, "--host")) a->host = v;
        else if (!strcmp(o, "--port")) bad = cli_parse_int(v, 0, 65535, &a->port);
        else if (!strcmp(o, "--api-key")) bad = !*v || add_key(a, v, strlen(v));
        else if (!strcmp(o, "--api-key-file")) bad = add_key_file(a, v);
        else if (!strcmp(o, "--served-model-name")) bad = add_served_name(a, v);
        else if (!strcmp(o, "--max-model-len")) bad = cli_parse_int(v, 1, 1 << 30, &n), a->sc.max_model_len = (int)n;
        else if (!strcmp(o, "--max-num-seqs")) bad = cli_parse_int(v, 1, 1 << 16, &n), a->sc.max_num_seqs = (int)n;
        else if (!strcmp(o, "--max-num-batched-tokens")) bad = cli_parse_int(v, 1, 1 << 24, &n), a->sc.max_batched_tokens = (int)n;
        else if (!strcmp(o, "--kv-cache-tokens")) bad = parse_kv_size(v, kv);
        else if (!strcmp(o, "--threads")) bad = cli_parse_int(v, 0, 4096, &a->threads);
        else if (!strcmp(o, "--ep")) bad = cli_parse_int(v, 1, 256, &a->ep);
        else if (!strcmp(o, "--ep-placement")) a->placement = v;
        else if (!strcmp(o, "--device")) a->device = v;
        else if (!strcmp(o, "--max-queue")) bad = cli_parse_int(v, 1, 1 << 24, &n), a->sc.max_queue = (int)n;
        else if (!strcmp(o, "--max-body-bytes")) bad = cli_parse_int(v, 64, 1L << 34, &a->max_body_bytes);
        else if (!strcmp(o, "--max-connections")) bad = cli_parse_int(v, 1, 1 << 16, &a->max_connections);
        else if (!strcmp(o, "--drain-timeout")) bad = cli_parse_int(v, 0, 86400, &a->drain_timeout_s);
        else if (!strcmp(o, "--responses-store")) bad = cli_parse_int(v, 0, 1 << 20, &a->responses_store);
        else if (!strcmp(o, "--idle-timeout")) bad = cli_parse_int(v, 1, 86400, &a->idle_timeout_s);
        else if (!strcmp(o, "--header-timeout")) bad = cli_parse_int(v, 0, 86400, &a->header_timeout_s);
        else if (!strcmp(o, "--allowed-origins")) bad = parse_origins(a, v);
        else if (!strcmp(o, "--log-format") && (!strcmp(v, "text") || !strcmp(v, "json"))) a->log_json = !strcmp(v, "json");
        else if (!strcmp(o, "--chat-template")) chat_template_variant_from_name(a->template_name = v, &ok), bad = !ok;
        else if (!strcmp(o, "--reasoning-parser") && (!strcmp(v, "deepseek-r1") || !strcmp(v, "none")))
            a->reasoning_flag = !strcmp(v, "none") ? -1 : 1;
        else bad = 1;
        if (bad) {
            fprintf(stderr, "mlaserve serve: bad option or value: %s %s\n", o, v);
            return -1;
        }
    }
    if (!a->model_dir) {
        fprintf(stderr, "mlaserve serve: --model DIR is required\n");
        return -1;
    }
    const char *env_key = getenv("MLASERVE_API_KEY");
    if (a->n_keys == 0 && env_key && *env_key) return add_key(a, env_key, strlen(env_key));
    return 0;
}

/* Bytes one token's latent KV takes over all layers (fp32 entries, as engine/kv stores them). */
static double kv_bytes_per_token(const model *m) {
    return (double)m->cfg.n_layers * (m->cfg.kv_lora_rank + m->cfg.qk_rope_head_dim) * sizeof(float);
}

/* The scheduler limits the options leave to the engine: the step size, the KV
 * pool in tokens (from --kv-cache-tokens N or a memory size). */
static int engine_config(sched_config *sc, const kv_size *kv, const ep_launch *l, ms_err *err) {
    const model *m = l->m[0];
    /* A CPU step costs in proportion to its tokens: short steps let the first
     * prompts of a burst start streaming sooner (docs/benchmarks-serving.md,
     * session 7: TTFT p50 6.5 s at 512, 3.1 s at 128, same throughput). */
    if (sc->max_batched_tokens <= 0) sc->max_batched_tokens = l->cuda ? 512 : 128;
    double per_token = kv_bytes_per_token(m);
    sc->kv_cache_tokens = kv->tokens ? (int)kv->tokens
                        : kv->bytes > 0 ? (int)(kv->bytes / per_token < 1 << 30 ? kv->bytes / per_token : 1 << 30)
                                        : 0;
    if (kv->bytes > 0 && sc->kv_cache_tokens < 64)
        return ms_err_set(err, "--kv-cache-tokens: %.0f bytes hold fewer than one 64-token page (%.0f bytes per token)",
                          kv->bytes, per_token);
    return 0;
}

static atomic_int worker_failed;

static void on_worker_fatal(void *ctx, const char *message) {
    atomic_store(&worker_failed, 1);
    fprintf(stderr, "mlaserve: %s\n", message);
}

/* A worker node (--node-rank >= 1): its ranks run the sequences node 0 hands
 * them and their experts for every rank, until node 0 stops (no HTTP here). */
static int serve_worker(const serve_args *a, const kv_size *kv) {
    ep_launch_opts lo = launch_opts(a);
    lo.takes_sequences = 1;
    ms_err err = {{0}};
    ep_launch l = {0};
    sched *s = NULL;
    sched_config sc = a->sc;
    fprintf(stderr, "mlaserve: node %d of %d: loading %s, then joining node 0 at %s:%d\n", lo.node_rank, lo.nnodes,
            a->model_dir, lo.master_addr ? lo.master_addr : "127.0.0.1", lo.master_port ? lo.master_port : 29500);
    tokenizer *tok = tokenizer_load(a->model_dir, &err);
    int rc = tok && ep_launch_open(&l, a->model_dir, &lo, &err) == 0 ? 0 : -1;
    sc.follow_world = 1;
    sc.on_fatal = on_worker_fatal;
    if (rc == 0) rc = engine_config(&sc, kv, &l, &err);
    if (rc == 0 && !(s = sched_create_ep(l.m, l.n_ranks, tok, &sc, &err))) rc = -1;
    if (rc == 0) {
        int first = l.node_rank * l.n_ranks;
        fprintf(stderr, "mlaserve: node %d of %d: ranks %d..%d of %d joined; running node 0's sequences on them\n",
                l.node_rank, l.nnodes, first, first + l.n_ranks - 1, l.nnodes * l.n_ranks);
        l.control_open = 0; /* ep_remote_serve closes it */
        rc = ep_remote_serve(l.control_fd, s, l.timeout_ms, &err);
    }
    sched_free(s);
    ep_launch_close(&l);
    tokenizer_free(tok);
    if (rc != 0) fprintf(stderr, "mlaserve: node %d: %s\n", lo.node_rank, err.msg);
    else if (atomic_load(&worker_failed)) rc = -1;
    else fprintf(stderr, "mlaserve: node %d: node 0 stopped the world; exiting\n", lo.node_rank);
    return rc == 0 ? CLI_OK : CLI_FAIL;
}

/* ---- signals: a dedicated thread turns SIGINT/SIGTERM into a semaphore post ---- */

typedef struct sig_state {
    sigset_t set;
    sem_t stop;
    atomic_int loading;
    atomic_int signo;
    atomic_int fatal;       /* an expert-parallel rank failed (engine thread) */
    atomic_int quit;        /* the server is stopping: a wake-up of the signal thread ends it */
} sig_state;

/* sched_config.on_fatal: the server stops; the message is logged here. */
static void on_engine_fatal(void *ctx, const char *message) {
    sig_state *ss = ctx;
    fprintf(stderr, "mlaserve serve: expert-parallel engine failed: %s; stopping\n", message);
    atomic_store(&ss->fatal, 1);
    sem_post(&ss->stop);
}

static void *signal_thread(void *arg) {
    sig_state *ss = arg;
    int sig = 0;
    while (sigwait(&ss->set, &sig) != 0) {}
    if (atomic_load(&ss->quit)) return NULL;
    atomic_store(&ss->signo, sig);
    if (atomic_load(&ss->loading)) {
        fprintf(stderr, "mlaserve serve: %s during loading, exiting\n", strsignal(sig));
        _exit(CLI_OK);
    }
    sem_post(&ss->stop);
    return NULL;
}

static double model_params(const model *m) {
    double n = 0;
    for (size_t i = 0; i < m->st->n_tensors; i++) {
        const st_tensor *t = &m->st->tensors[i];
        if (strstr(t->name, "scale_inv")) continue; /* FP8 block scales are not parameters */
        double p = 1;
        for (int d = 0; d < t->n_dims; d++) p *= (double)t->shape[d];
        n += p;
    }
    return n;
}

static const char *variant_name(chat_template_variant v) {
    return v == CHAT_TEMPLATE_R1 ? "deepseek-r1" : v == CHAT_TEMPLATE_V31 ? "deepseek-v3.1" : "deepseek-v3";
}

static void banner(const serve_args *a, const char *name, const model *m, sched *s, int port, int n_threads,
                   const char *device, chat_template_variant variant) {
    const model_config *c = &m->cfg;
    const sched_config *sc = sched_get_config(s);
    sched_stats st;
    sched_get_stats(s, &st);
    double params = model_params(m);
    printf("mlaserve %s (commit %s) serve: model %s (%s)\n", mlaserve_version, mlaserve_commit, name, a->model_dir);
    for (int i = 1; i < a->n_served_names; i++) printf("  also served as %s\n", a->served_names[i]);
    printf("  arch DeepSeek-V%d, %d layers (%d MoE, %d experts, top-%d), hidden %d, vocab %d, %.3g%s parameters%s\n",
           (int)c->arch, c->n_layers, c->n_layers - c->first_k_dense, c->n_routed_experts, c->n_experts_per_tok,
           c->hidden_size, c->vocab_size, params >= 1e9 ? params / 1e9 : params / 1e6, params >= 1e9 ? "B" : "M",
           c->fp8 ? ", FP8 weights" : "");
    printf("  KV cache %d pages x 64 tokens = %d tokens; max model len %d; max %d seqs, %d tokens/step, queue %d; %d CPU threads\n",
           st.kv_pages_total, st.kv_pages_total * 64, sc->max_model_len, sc->max_num_seqs, sc->max_batched_tokens,
           sc->max_queue, n_threads);
    if (strcmp(device, "CPU")) printf("  device %s\n", device);
    if (a->batch_invariant) printf("  batch-invariant kernels: outputs do not depend on batching\n");
    if (a->bf16_activations) printf("  bf16 activations in the weight products (AVX512_BF16)\n");
    if (sched_n_ranks(s) > 1)
        printf("  expert parallel: %d CPU ranks (%s placement); KV pool, max seqs and tokens/step are per rank\n",
               sched_n_ranks(s), a->placement ? a->placement : "contiguous");
    chat_template_opts probe = {.add_generation_prompt = true, .variant = variant};
    int think = chat_template_opens_think(variant, &probe);
    printf("  chat template %s%s; reasoning parser %s\n", variant_name(variant), a->template_name ? "" : " (detected)",
           a->reasoning_flag < 0 ? "off" : a->reasoning_flag > 0 || think ? "deepseek-r1" : "off (the template does not open <think>)");
    const char *cors = a->allowed_origins;
    printf("  CORS %s%s\n", !cors || !*cors ? "off (--allowed-origins)" : strstr(cors, "*") ? "allowed from any origin" : "allowed from ",
           cors && *cors && !strstr(cors, "*") ? cors : "");
    if (a->n_keys) printf("  API key required (%d key%s)\n", a->n_keys, a->n_keys > 1 ? "s" : "");
    else printf("  API key not required\n");
    printf("listening on http://%s%s%s:%d  (try: curl http://%s%s%s:%d/v1/chat/completions -H 'Content-Type: application/json' "
           "-d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":16}')\n",
           strchr(a->host, ':') ? "[" : "", a->host, strchr(a->host, ':') ? "]" : "", port, strchr(a->host, ':') ? "[" : "",
           a->host, strchr(a->host, ':') ? "]" : "", port, name);
    fflush(stdout);
}

/* --chat-template, else what the model's tokenizer_config.json template looks like. */
static chat_template_variant template_variant(const serve_args *a, const tokenizer *tok) {
    int ok = 1;
    if (a->template_name) return chat_template_variant_from_name(a->template_name, &ok);
    const char *src = tokenizer_chat_template(tok);
    return src ? chat_template_detect(src) : CHAT_TEMPLATE_V3;
}

/* Blocks SIGINT and SIGTERM in this thread and every thread created from here
 * on, and starts the thread that waits for them. 0, or -1 with a message. */
static int signals_start(sig_state *ss, pthread_t *tid) {
    sigemptyset(&ss->set);
    sigaddset(&ss->set, SIGINT);
    sigaddset(&ss->set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &ss->set, NULL);
    signal(SIGPIPE, SIG_IGN);
    sem_init(&ss->stop, 0, 0);
    atomic_store(&ss->loading, 1);
    atomic_store(&ss->signo, 0);
    atomic_store(&ss->fatal, 0);
    atomic_store(&ss->quit, 0);
    if (pthread_create(tid, NULL, signal_thread, ss) == 0) return 0;
    sem_destroy(&ss->stop);
    fprintf(stderr, "mlaserve serve: cannot start the signal thread\n");
    return -1;
}

/* Ends the signal thread — woken with quit set if no signal came (a
 * signal to a thread that has already ended does nothing) — and joins it. */
static void signals_stop(sig_state *ss, pthread_t tid) {
    atomic_store(&ss->quit, 1);
    pthread_kill(tid, SIGTERM);
    pthread_join(tid, NULL);
    sem_destroy(&ss->stop);
}

static int serve_until_stopped(const serve_args *ap, const kv_size *kvp, sig_state *ss);

static int serve(const serve_args *a, const kv_size *kv) {
    sig_state ss;
    pthread_t sig_tid;
    if (signals_start(&ss, &sig_tid) != 0) return CLI_FAIL;
    int rc = serve_until_stopped(a, kv, &ss);
    signals_stop(&ss, sig_tid);
    return rc;
}

/* Starts HTTP (it answers /health while the model loads), loads the model,
 * serves until a signal or an engine failure, then drains and frees it all. */
static int serve_until_stopped(const serve_args *ap, const kv_size *kvp, sig_state *ss) {
    serve_args a = *ap;
    kv_size kv = *kvp;
    char dirbuf[PATH_MAX];
    snprintf(dirbuf, sizeof dirbuf, "%s", a.model_dir);
    size_t dl = strlen(dirbuf);
    while (dl > 1 && dirbuf[dl - 1] == '/') dirbuf[--dl] = 0;
    const char *name = a.n_served_names ? a.served_names[0] : basename(dirbuf);

    ms_err err = {{0}};
    http_config hc = {.host = a.host, .port = (int)a.port, .api_keys = (const char *const *)a.keys, .n_api_keys = a.n_keys,
                      .served_model = name, .aliases = a.n_served_names > 1 ? a.served_names + 1 : NULL,
                      .n_aliases = a.n_served_names > 1 ? a.n_served_names - 1 : 0, .model_root = a.model_dir, .max_body_bytes = (size_t)a.max_body_bytes,
                      .max_connections = (int)a.max_connections, .log_json = a.log_json,
                      .idle_timeout_s = (int)a.idle_timeout_s, .header_timeout_s = (int)a.header_timeout_s,
                      .reasoning_flag = a.reasoning_flag, .allowed_origins = a.allowed_origins,
                      .responses_store = (int)a.responses_store};
    http_server *h = http_start(&hc, &err);
    if (!h) {
        fprintf(stderr, "mlaserve serve: %s\n", err.msg);
        return CLI_FAIL;
    }
    serve_log(a.log_json, "INFO", "loading %s (HTTP on port %d answers /health; /ready says 503 until loaded)", a.model_dir,
              http_port(h));

    int rc = CLI_FAIL;
    tokenizer *tok = tokenizer_load(a.model_dir, &err);
    ep_launch ranks = {0};
    ep_remote *remote = NULL;
    model *m = NULL;
    sched *s = NULL;
    cons_vocab *vocab = NULL;
    if (!tok) goto done;
    int n_threads = a.threads > 0 ? (int)a.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    ep_launch_opts lo = launch_opts(&a);
    if (ep_launch_open(&ranks, a.model_dir, &lo, &err) != 0) goto done;
    m = ranks.m[0];
    if (engine_config(&a.sc, &kv, &ranks, &err) != 0) goto done;
    a.sc.on_fatal = on_engine_fatal;
    a.sc.fatal_ctx = ss;
    if (!(s = m->ep ? sched_create_ep(ranks.m, ranks.n_ranks, tok, &a.sc, &err) : sched_create(m, tok, &a.sc, &err))) goto done;
    if (ranks.nnodes > 1 && !(remote = ep_remote_open(s, ranks.nnodes, ranks.n_ranks, ranks.node_ipv4, ranks.control_port,
                                                       ranks.timeout_ms, &err)))
        goto done;
    if (!(vocab = cons_vocab_create(tok, m->cfg.eos_token_id, m->cfg.vocab_size, &err))) goto done;
    chat_template_variant variant = template_variant(&a, tok);
    http_engine he = {s, tok, m->cfg.vocab_size, vocab, variant};
    http_set_engine(h, &he);
    atomic_store(&ss->loading, 0);
    banner(&a, name, m, s, http_port(h), n_threads, ranks.device_name, variant);

    while (sem_wait(&ss->stop) != 0 && errno == EINTR) {}
    if (atomic_load(&ss->fatal)) { /* the requests already ended with the error: let their answers go out */
        http_drain(h, 2000);
        ms_err_set(&err, "stopped after an expert-parallel rank failed");
        goto done;
    }
    serve_log(a.log_json, "INFO", "%s: draining (up to %lds for in-flight requests)", strsignal(atomic_load(&ss->signo)),
              a.drain_timeout_s);
    int cancelled = http_drain(h, (int)a.drain_timeout_s * 1000);
    if (cancelled) serve_log(a.log_json, "WARN", "%d request(s) cancelled at the drain timeout", cancelled);
    rc = CLI_OK;
done:
    if (rc != CLI_OK) fprintf(stderr, "mlaserve: %s\n", err.msg);
    http_stop(h);
    ep_remote_close(remote); /* before the front it delivers to */
    sched_free(s);
    cons_vocab_free(vocab);
    ep_launch_close(&ranks);
    tokenizer_free(tok);
    if (rc == CLI_OK) serve_log(a.log_json, "INFO", "stopped");
    return rc;
}

int cmd_serve(int argc, char **argv) {
    serve_args a;
    kv_size kv;
    if (parse_args(argc, argv, &a, &kv) != 0) {
        free_args(&a);
        usage(stderr);
        return CLI_USAGE;
    }
    ep_launch_opts lo = launch_opts(&a);
    int rc = lo.node_rank > 0 ? serve_worker(&a, &kv) : serve(&a, &kv); /* node 0 serves HTTP */
    free_args(&a);
    return rc;
}
