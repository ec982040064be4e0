/* server/ep_launch.c — see ep_launch.h. */
#include "server/ep_launch.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rendezvous.h"
#include "cpu/backend_cpu.h"
#include "common/waitgroup.h"
#include "cuda/comm_nccl.h" /* COMM_NCCL_ID_BYTES; its functions are called in CUDA builds only */
#include "server/cli.h"
#include "server/cli_engine.h"
#include "server/ep_remote.h"
#ifdef MS_CUDA
#include "cuda/backend_cuda.h"
#endif

int ep_load_placement(const char *path, int n_experts, int n_ranks, int32_t **owner, ms_err *err) {
    json_error_t je;
    json_t *a = json_load_file(path, 0, &je);
    if (!a) return ms_err_set(err, "placement file %s: %s (line %d)", path, je.text, je.line);
    int rc = 0;
    if (!json_is_array(a) || json_array_size(a) != (size_t)n_experts)
        rc = ms_err_set(err, "placement file %s: expected a JSON array of %d rank numbers, one per routed expert", path,
                        n_experts);
    int32_t *o = rc == 0 ? malloc((size_t)n_experts * sizeof *o) : NULL;
    if (rc == 0 && !o) rc = ms_err_set(err, "out of memory");
    for (int e = 0; rc == 0 && e < n_experts; e++) {
        json_t *v = json_array_get(a, (size_t)e);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= n_ranks)
            rc = ms_err_set(err, "placement file %s: entry %d must be a rank number in [0, %d)", path, e, n_ranks);
        else
            o[e] = (int32_t)json_integer_value(v);
    }
    if (rc == 0 && ep_check_placement(o, n_experts, n_ranks, err) != 0) rc = ms_err_prefix(err, "placement file %s", path);
    json_decref(a);
    if (rc != 0) { free(o); return -1; }
    *owner = o;
    return 0;
}

static int threads_per_rank(int n_threads, int n_ranks) {
    long all = n_threads > 0 ? n_threads : sysconf(_SC_NPROCESSORS_ONLN);
    long per = all / n_ranks;
    return per < 1 ? 1 : (int)per;
}

/* "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; -2 when unknown. */
static int device_index(const char *device) {
    if (!device || !strcmp(device, "cpu")) return -1;
    if (!strcmp(device, "cuda")) return 0;
    char *end;
    long n = strncmp(device, "cuda:", 5) ? -1 : strtol(device + 5, &end, 10);
    return n >= 0 && n < 1024 && device[5] && !*end ? (int)n : -2;
}

/* The backend of local rank r: the CPU, or CUDA device gpu + r. */
static backend *open_backend(ep_launch *l, int gpu, int r, int threads, ms_err *err) {
    if (gpu < 0) return backend_cpu_create(threads, err);
#ifdef MS_CUDA
    l->cuda = 1;
    backend *be = backend_cuda_create(gpu + r, err);
    if (be && r == 0) snprintf(l->device_name, sizeof l->device_name, "cuda:%d %s", gpu, backend_cuda_device_name(be));
    else if (be) snprintf(l->device_name, sizeof l->device_name, "cuda:%d-%d %s", gpu, gpu + r, backend_cuda_device_name(be));
    return be;
#else
    ms_err_set(err, "--device cuda: this mlaserve was built without the CUDA backend (build with make CUDA=1)");
    return NULL;
#endif
}

static void close_backend(const ep_launch *l, backend *be) {
    if (!be) return;
#ifdef MS_CUDA
    if (l->cuda) {
        backend_cuda_free(be);
        return;
    }
#endif
    backend_cpu_free(be);
}

/* --rendezvous-timeout: how long the ranks may take to meet (nodes at the
 * rendezvous, GPUs in the NCCL communicator). */
static int join_timeout_ms(const ep_launch_opts *o) { return (o->rendezvous_timeout_s > 0 ? o->rendezvous_timeout_s : 300) * 1000; }

/* ---- CUDA ranks: one NCCL communicator over every rank of every node --------------------- */

#ifdef MS_CUDA
typedef struct {
    waitgroup *g;
    int local, rank, size, device;
    unsigned char id[COMM_NCCL_ID_BYTES]; /* a copy: an abandoned join outlives the caller's */
} nccl_join;

static void *nccl_join_main(void *arg) {
    nccl_join j = *(nccl_join *)arg;
    free(arg);
    ms_err e = {{0}};
    comm *c = comm_nccl_create(j.rank, j.size, j.id, j.device, &e);
    if (!c) ms_err_prefix(&e, "rank %d (GPU %d)", j.rank, j.device);
    waitgroup_report(j.g, j.local, c, e.msg);
    return NULL;
}

/* Every local rank joins the communicator `id`, each from a detached thread of
 * its own (ncclCommInitRank returns once the whole world has joined), and
 * follows its backend's stream. The wait ends at the first local failure or
 * after timeout_ms (a rank elsewhere never joined): then the ranks still in
 * ncclCommInitRank are left behind and the caller fails (and exits) instead of
 * hanging; comm_nccl_free would block on them. */
static int open_nccl(ep_launch *l, const void *id, int gpu, int timeout_ms, ms_err *err) {
    int n = l->n_ranks, world = l->nnodes * n, first = l->node_rank * n;
    waitgroup *g = NULL;
    if (!(l->nccl = calloc((size_t)n, sizeof *l->nccl)) || !(g = waitgroup_create(n)))
        return ms_err_set(err, "out of memory"); /* l->nccl goes with ep_launch_close */
    for (int r = 0; r < n; r++) {
        nccl_join *j = malloc(sizeof *j);
        pthread_t t;
        if (j) *j = (nccl_join){.g = g, .local = r, .rank = first + r, .size = world, .device = gpu + r};
        if (j) memcpy(j->id, id, sizeof j->id);
        if (j && pthread_create(&t, NULL, nccl_join_main, j) == 0) pthread_detach(t);
        else free(j), waitgroup_report(g, r, NULL, "cannot start a thread");
    }
    int rc = waitgroup_wait(g, timeout_ms, err);
    if (rc != 0) ms_err_prefix(err, "NCCL communicator of %d ranks (--rendezvous-timeout bounds the wait)", world);
    for (int r = 0; rc == 0 && r < n; r++) l->nccl[r] = waitgroup_result(g, r);
    for (int r = 0; rc == 0 && r < n; r++)
        if (comm_nccl_set_producer(l->nccl[r], backend_cuda_stream(l->be[r]), err) != 0) rc = -1;
    waitgroup_release(g);
    return rc;
}

static int nccl_unique_id(unsigned char *id, ms_err *err) { return comm_nccl_unique_id(id, err); }
static void close_nccl(comm *c) { comm_nccl_free(c); }
#else
static int open_nccl(ep_launch *l, const void *id, int gpu, int timeout_ms, ms_err *err) {
    (void)l, (void)id, (void)gpu, (void)timeout_ms;
    return ms_err_set(err, "NCCL ranks need a CUDA build (make CUDA=1)");
}
static int nccl_unique_id(unsigned char *id, ms_err *err) {
    (void)id;
    return ms_err_set(err, "NCCL ranks need a CUDA build (make CUDA=1)");
}
static void close_nccl(comm *c) { (void)c; }
#endif

/* ---- several nodes ------------------------------------------------------------------ */

#define NODE_ENTRY_VERSION 5u /* 3: workers answer each submit (server/ep_remote.h); 4: submits carry logit_bias, stop ids, min_tokens, include_stop; 5: events carry the prompt token's rank */
/* version, ranks, config hash, placement hash, control port (0: none), the ranks'
 * TCP ports (CPU ranks), the device kind (0 CPU, 1 CUDA), node 0's NCCL id (CUDA) */
#define ENTRY_PORTS 18
#define ENTRY_KIND (ENTRY_PORTS + 2 * EP_LAUNCH_MAX_LOCAL)
#define ENTRY_NCCL_ID (ENTRY_KIND + 1)
#define NCCL_ID_BYTES COMM_NCCL_ID_BYTES
#define NODE_ENTRY_BYTES (ENTRY_NCCL_ID + NCCL_ID_BYTES)

static uint32_t fnv1a(uint32_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}

/* FNV-1a of dir/config.json's bytes: the nodes must run the same model. */
static int config_hash(const char *dir, uint32_t *h, ms_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return ms_err_set(err, "%s: %s", path, strerror(errno));
    unsigned char buf[4096];
    size_t n;
    *h = 2166136261u;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) *h = fnv1a(*h, buf, n);
    fclose(f);
    return 0;
}

static uint32_t placement_hash(const int32_t *owner, int n_experts, int size) {
    uint32_t h = 2166136261u;
    for (int e = 0; e < n_experts; e++) {
        int32_t r = owner ? owner[e] : ep_default_owner(e, n_experts, size);
        h = fnv1a(h, &r, sizeof r);
    }
    return h;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (24 - 8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks what node r said against this node: 0, or -1 naming what differs. */
static int entry_check(const unsigned char *mine, const unsigned char *theirs, int r, int self, ms_err *err) {
    if (get_u32(theirs) != NODE_ENTRY_VERSION)
        return ms_err_set(err, "--nnodes: node %d runs another mlaserve version", r);
    if (get_u32(theirs + 4) != get_u32(mine + 4))
        return ms_err_set(err, "--nnodes: node %d runs --ep %u, node %d --ep %u (every node needs the same)", r,
                          get_u32(theirs + 4), self, get_u32(mine + 4));
    if (get_u32(theirs + 8) != get_u32(mine + 8))
        return ms_err_set(err, "--nnodes: node %d loaded a different model (its config.json differs from node %d's)", r,
                          self);
    if (get_u32(theirs + 12) != get_u32(mine + 12))
        return ms_err_set(err, "--nnodes: node %d places the routed experts differently from node %d (--ep-placement)", r,
                          self);
    if (theirs[ENTRY_KIND] != mine[ENTRY_KIND])
        return ms_err_set(err, "--nnodes: node %d runs its ranks on %s, node %d on %s (every node needs the same --device kind)",
                          r, theirs[ENTRY_KIND] ? "CUDA" : "the CPU", self, mine[ENTRY_KIND] ? "CUDA" : "the CPU");
    return 0;
}

/* Meets the other nodes and connects this node's ranks to all of theirs: CPU
 * ranks over TCP, CUDA ranks through NCCL with the id node 0 made. */
static int join_nodes(ep_launch *l, const char *dir, const ep_launch_opts *o, const int32_t *owner, int gpu,
                      ms_err *err) {
    int nnodes = l->nnodes, n_local = l->n_ranks, timeout_ms = join_timeout_ms(o);
    unsigned char mine[NODE_ENTRY_BYTES] = {0}, nccl_id[NCCL_ID_BYTES];
    uint32_t cfg_h;
    if (config_hash(dir, &cfg_h, err) != 0) return -1;
    mine[ENTRY_KIND] = l->cuda;
    if (l->cuda && l->node_rank == 0 && nccl_unique_id(mine + ENTRY_NCCL_ID, err) != 0) return -1;
    if (!l->cuda && !(l->tcp = comm_tcp_node_open(nnodes, l->node_rank, n_local, err))) return -1;
    put_u32(mine, NODE_ENTRY_VERSION);
    put_u32(mine + 4, (uint32_t)n_local);
    put_u32(mine + 8, cfg_h);
    put_u32(mine + 12, placement_hash(owner, l->m[0]->cfg.n_routed_experts, nnodes * n_local));
    uint16_t control = 0;
    if (o->takes_sequences && l->node_rank > 0) {
        if ((l->control_fd = ep_remote_listen(&control, err)) < 0) return -1;
        l->control_open = 1;
    }
    mine[16] = (unsigned char)(control >> 8), mine[17] = (unsigned char)control;
    for (int r = 0; l->tcp && r < n_local; r++) {
        int port = comm_tcp_node_port(l->tcp, r);
        mine[18 + 2 * r] = (unsigned char)(port >> 8), mine[19 + 2 * r] = (unsigned char)port;
    }
    rendezvous_cfg rc = {o->master_addr ? o->master_addr : "127.0.0.1", o->master_port ? o->master_port : 29500, nnodes,
                         l->node_rank, timeout_ms};
    rendezvous_node *nodes = calloc((size_t)nnodes, sizeof *nodes);
    uint32_t *ips = l->node_ipv4 = calloc((size_t)nnodes, sizeof *ips);
    uint16_t *ports = calloc((size_t)nnodes * (size_t)n_local, sizeof *ports);
    l->control_port = calloc((size_t)nnodes, sizeof *l->control_port);
    l->timeout_ms = timeout_ms;
    int ok = nodes && ips && ports && l->control_port ? 0 : ms_err_set(err, "out of memory");
    int joined = ok == 0 && rendezvous_exchange(&rc, mine, sizeof mine, nodes, err) == 0;
    for (int r = 0; joined && ok == 0 && r < nnodes; r++) {
        ok = entry_check(mine, nodes[r].entry, r, l->node_rank, err);
        ips[r] = nodes[r].ipv4;
        l->control_port[r] = (uint16_t)(nodes[r].entry[16] << 8 | nodes[r].entry[17]);
        for (int q = 0; q < n_local; q++)
            ports[r * n_local + q] = (uint16_t)(nodes[r].entry[18 + 2 * q] << 8 | nodes[r].entry[19 + 2 * q]);
    }
    if (joined && ok == 0) memcpy(nccl_id, nodes[0].entry + ENTRY_NCCL_ID, sizeof nccl_id);
    if (joined && ok == 0 && l->node_rank > 0 && ips[0] == 0)
        ok = ms_err_set(err, "--nnodes: node 0 (%s) must be reachable over IPv4", rc.master_addr);
    if (joined && ok == 0) ok = l->tcp ? comm_tcp_node_connect(l->tcp, ips, ports, timeout_ms, err) : open_nccl(l, nccl_id, gpu, timeout_ms, err);
    if (!joined) ok = -1;
    if (nodes) rendezvous_nodes_free(nodes, joined ? nnodes : 0);
    free(nodes);
    free(ports);
    return ok;
}

static int nodes_check(const ep_launch_opts *o, int gpu, int world, ms_err *err) {
    int nnodes = o->nnodes > 1 ? o->nnodes : 1;
    if (o->node_rank < 0 || o->node_rank >= nnodes)
        return ms_err_set(err, "--node-rank %d is outside 0..%d (--nnodes %d)", o->node_rank, nnodes - 1, nnodes);
    if (o->n_ranks > EP_LAUNCH_MAX_LOCAL) return ms_err_set(err, "--ep %d: at most %d ranks per node", o->n_ranks, EP_LAUNCH_MAX_LOCAL);
#ifdef MS_CUDA
    int visible = backend_cuda_device_count();
    if (gpu >= 0 && o->n_ranks > 1 && gpu + o->n_ranks > visible)
        return ms_err_set(err, "--ep %d on --device cuda:%d puts one rank per GPU on devices %d..%d, but %d %s visible",
                          o->n_ranks, gpu, gpu, gpu + o->n_ranks - 1, visible, visible == 1 ? "is" : "are");
#endif
    if (o->placement && world == 1) return ms_err_set(err, "--ep-placement needs --ep 2 or more (or several nodes)");
    return 0;
}

/* MLASERVE_EP_ONE_RANK_WORLD=1: a world of one rank for --ep 1 on one node. */
static int one_rank_world(void) {
    const char *v = getenv("MLASERVE_EP_ONE_RANK_WORLD");
    return v && !strcmp(v, "1");
}

int ep_launch_open(ep_launch *l, const char *dir, const ep_launch_opts *o, ms_err *err) {
    int n_ranks = o->n_ranks, gpu = device_index(o->device), nnodes = o->nnodes > 1 ? o->nnodes : 1;
    int world = n_ranks * nnodes, has_world = world > 1 || one_rank_world();
    *l = (ep_launch){.n_ranks = n_ranks, .nnodes = nnodes, .node_rank = o->node_rank, .device_name = "CPU",
                     .be = calloc((size_t)n_ranks, sizeof(backend *)),
                     .m = calloc((size_t)n_ranks, sizeof(model *))};
    int32_t *owner = NULL;
    int rc = l->be && l->m ? 0 : ms_err_set(err, "out of memory");
    if (rc == 0 && gpu == -2) rc = ms_err_set(err, "--device must be cpu, cuda or cuda:N, got \"%s\"", o->device);
    if (rc == 0) rc = nodes_check(o, gpu, world, err);
    if (rc == 0 && nnodes == 1 && has_world && gpu < 0 && !(l->world = comm_cpu_world_create(n_ranks, err))) rc = -1;
    for (int r = 0; rc == 0 && r < n_ranks; r++) {
        if (!(l->be[r] = open_backend(l, gpu, r, threads_per_rank(o->n_threads, n_ranks), err))) rc = -1;
        else if (!(l->m[r] = model_load(dir, l->be[r], err))) rc = -1;
    }
    const char *placement = o->placement;
    if (rc == 0 && placement) rc = ep_load_placement(placement, l->m[0]->cfg.n_routed_experts, world, &owner, err);
    for (int r = 0; rc == 0 && o->batch_invariant && r < n_ranks; r++)
        if (model_set_batch_invariant(l->m[r], 1, err) != 0) rc = ms_err_prefix(err, "--batch-invariant");
    for (int r = 0; rc == 0 && o->bf16_activations && r < n_ranks; r++)
        if (model_set_bf16_activations(l->m[r], 1, err) != 0) rc = ms_err_prefix(err, "--bf16-activations");
    if (rc == 0 && nnodes > 1) rc = join_nodes(l, dir, o, owner, gpu, err);
    if (rc == 0 && nnodes == 1 && has_world && gpu >= 0) {
        unsigned char id[NCCL_ID_BYTES];
        rc = nccl_unique_id(id, err) == 0 ? open_nccl(l, id, gpu, join_timeout_ms(o), err) : -1;
    }
    for (int r = 0; rc == 0 && has_world && r < n_ranks; r++) {
        comm *c = l->nccl ? l->nccl[r] : l->tcp ? comm_tcp_node_rank(l->tcp, r) : comm_cpu_world_rank(l->world, r);
        if (model_set_ep(l->m[r], c, owner, err) != 0) rc = ms_err_prefix(err, "--ep %d", world);
    }
    free(owner);
    if (rc != 0) ep_launch_close(l);
    return rc;
}

void ep_launch_close(ep_launch *l) {
    for (int r = 0; l->m && r < l->n_ranks; r++) {
        model_free(l->m[r]);
        if (l->be) close_backend(l, l->be[r]);
    }
    free(l->m);
    free(l->be);
    for (int r = 0; l->nccl && r < l->n_ranks; r++) close_nccl(l->nccl[r]);
    free(l->nccl);
    comm_cpu_world_free(l->world);
    comm_tcp_node_free(l->tcp);
    if (l->control_open) close(l->control_fd);
    free(l->node_ipv4);
    free(l->control_port);
    *l = (ep_launch){0};
}

int ep_launch_parse_opt(ep_launch_opts *o, const char *opt, const char *val, int *bad) {
    long n = 0;
    if (!strcmp(opt, "--nnodes")) *bad = cli_parse_int(val, 1, 4096, &n) != 0, o->nnodes = (int)n;
    else if (!strcmp(opt, "--node-rank")) *bad = cli_parse_int(val, 0, 4095, &n) != 0, o->node_rank = (int)n;
    else if (!strcmp(opt, "--master-addr")) *bad = !*(o->master_addr = val);
    else if (!strcmp(opt, "--master-port")) *bad = cli_parse_int(val, 1, 65535, &n) != 0, o->master_port = (int)n;
    else if (!strcmp(opt, "--rendezvous-timeout")) *bad = cli_parse_int(val, 1, 86400, &n) != 0, o->rendezvous_timeout_s = (int)n;
    else return 0;
    return 1;
}

/* ---- following node 0's steps --------------------------------------------------------- */

int ep_follow(model *m, ms_err *err) {
    comm *c = ep_comm(m->ep);
    model_batch none = {0};
    for (;;) {
        float v[2] = {0.0f, 0.0f}; /* the step agreement: {tokens, stop} */
        if (c->ops->all_reduce_sum(c, v, 2, err) != 0) return -1;
        if (v[1] > 0.0f) return 0;
        if (v[0] > 0.0f && model_forward(m, NULL, &none, NULL, err) != 0) {
            ep_abort(m->ep, err->msg);
            return -1;
        }
    }
}

typedef struct {
    model *m;
    int rc;
    ms_err err;
} follower;

static void *follower_main(void *arg) {
    follower *f = arg;
    f->rc = ep_follow(f->m, &f->err);
    return NULL;
}

int ep_launch_worker(const char *dir, const ep_launch_opts *o) {
    ep_launch l;
    ms_err err = {{0}};
    fprintf(stderr, "mlaserve: node %d of %d: loading %s, then joining node 0 at %s:%d\n", o->node_rank, o->nnodes,
            dir, o->master_addr ? o->master_addr : "127.0.0.1", o->master_port ? o->master_port : 29500);
    if (ep_launch_open(&l, dir, o, &err) != 0) {
        fprintf(stderr, "mlaserve: node %d: %s\n", o->node_rank, err.msg);
        return CLI_FAIL;
    }
    int first = l.node_rank * l.n_ranks, world = l.nnodes * l.n_ranks;
    fprintf(stderr, "mlaserve: node %d of %d: ranks %d..%d of %d joined; running their experts for node 0's steps\n",
            l.node_rank, l.nnodes, first, first + l.n_ranks - 1, world);
    follower *f = calloc((size_t)l.n_ranks, sizeof *f);
    pthread_t *th = calloc((size_t)l.n_ranks, sizeof *th);
    int started = 0, rc = f && th ? CLI_OK : CLI_FAIL;
    for (int r = 0; rc == CLI_OK && r < l.n_ranks; r++, started++) {
        f[r].m = l.m[r];
        if (pthread_create(&th[r], NULL, follower_main, &f[r]) != 0) {
            ep_abort(l.m[r]->ep, "cannot start a rank thread");
            rc = CLI_FAIL;
        }
    }
    for (int r = 0; r < started; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < started; r++)
        if (f[r].rc != 0 && rc == CLI_OK) {
            fprintf(stderr, "mlaserve: node %d: %s\n", l.node_rank, f[r].err.msg);
            rc = CLI_FAIL;
        }
    if (rc == CLI_OK) fprintf(stderr, "mlaserve: node %d: node 0 stopped the world; exiting\n", l.node_rank);
    free(f);
    free(th);
    ep_launch_close(&l);
    return rc;
}
