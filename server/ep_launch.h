/* server/ep_launch.h — opening the model for a command: on the CPU or one CUDA
 * device (--device), and as an expert-parallel world of CPU ranks in this
 * process (engine/ep.h): the checkpoint is loaded once per rank (the shards are
 * shared read-only mappings, so the weights are in memory once), each rank gets
 * its own CPU backend with threads / n_ranks threads (at least 1), the ranks
 * share one cpu/comm_cpu.h world, and the routed experts are placed by a
 * placement file or in contiguous slices. With n_ranks == 1 there is no world
 * and the model runs unchanged (the reference the others are compared with).
 * --device cuda[:N] needs a `make CUDA=1` build; with --ep L the local ranks
 * run on GPUs N..N+L-1 (one rank per GPU) and the world is one NCCL
 * communicator (cuda/comm_nccl.h; each comm follows its rank's backend stream).
 *
 * Test hook: MLASERVE_EP_ONE_RANK_WORLD=1 gives --ep 1 on one node a world of
 * one rank (CPU comm, or NCCL on a GPU), so the expert-parallel path (dispatch,
 * exchanges, combine) runs and can be compared with the plain model.
 *
 * Several nodes (--nnodes N --node-rank R --master-addr HOST --master-port P):
 * every node runs the same command with --ep L local ranks; the world is
 * N * L ranks (global rank R * L + local), CPU ranks over cpu/comm_tcp.h, CUDA
 * ranks in one NCCL communicator whose id node 0 hands out. After loading,
 * the nodes meet at node 0's rendezvous (common/rendezvous.h), which checks
 * that all run the same --ep, config.json, expert placement and device kind
 * (naming the node that differs) and hands out every rank's port (and the NCCL id). Node 0 runs the command
 * (serve: the HTTP front; logits / generate: the sequence and the output);
 * nodes 1..N-1 are workers: every local rank joins each step and runs its
 * share of the routed experts, until node 0 stops. A worker started as `logits`
 * or `generate` (ep_launch_worker) holds experts only; one started as `serve`
 * also runs sequences node 0 hands it (takes_sequences; server/ep_remote.h).
 *
 * The step agreement (engine/sched.c engine_loop_ep, ep_follow): before each
 * model step every rank all-reduces {tokens it has, stop}; the world steps when
 * the sum of tokens > 0 and stops when stop > 0, so followers need no other
 * signal and serve, logits and generate workers are interchangeable.
 *
 * Placement file: a JSON array with one rank number per routed expert, e.g.
 * [0,0,1,1] puts experts 0-1 on rank 0 and 2-3 on rank 1 (docs/expert-parallel.md). */
#ifndef MS_EP_LAUNCH_H
#define MS_EP_LAUNCH_H

#include <stdint.h>

#include "common/err.h"
#include "cpu/comm_cpu.h"
#include "cpu/comm_tcp.h"
#include "engine/model.h"

#define EP_LAUNCH_MAX_LOCAL 256 /* --ep per node */

typedef struct ep_launch_opts {
    int n_ranks;            /* --ep (>= 1) */
    int n_threads;          /* CPU threads in all, <= 0: all online CPUs, split over the ranks */
    const char *placement;  /* --ep-placement file, or NULL */
    const char *device;     /* "cpu" (NULL too), "cuda" or "cuda:N" */
    int batch_invariant;    /* --batch-invariant: model_set_batch_invariant on every rank */
    int bf16_activations;   /* --bf16-activations: model_set_bf16_activations on every rank */
    int nnodes, node_rank;  /* --nnodes (0 or 1: this process alone), --node-rank */
    const char *master_addr;/* --master-addr (default 127.0.0.1) */
    int master_port;        /* --master-port (default 29500) */
    int rendezvous_timeout_s; /* --rendezvous-timeout (default 300): nodes at the rendezvous, GPUs in the NCCL communicator */
    int takes_sequences;    /* a worker node running `serve`: node 0 may send it sequences (server/ep_remote.h) */
} ep_launch_opts;

/* The multi-node options, for the commands' usage texts. */
#define EP_LAUNCH_NODES_USAGE                                                                                      \
    "  --nnodes N --node-rank R     expert parallelism over N processes/machines (TCP): node 0 serves, the\n"     \
    "                               others run the same command as workers (docs/expert-parallel.md)\n"            \
    "  --master-addr HOST           node 0's address (default 127.0.0.1); --master-port P (default 29500)\n"       \
    "  --rendezvous-timeout S       seconds for all nodes (and GPUs) to join (default 300)\n"

/* Takes option `opt` with value `val` if it is one of the multi-node options:
 * 1 taken (*bad set when the value is invalid), 0 not one of them. */
int ep_launch_parse_opt(ep_launch_opts *o, const char *opt, const char *val, int *bad);

/* The follower loop of one rank (a thread of logits/generate ranks 1..L-1, or
 * each rank of a worker node): joins every step the world agrees on with no
 * tokens of its own until the world stops (0) or fails (-1, err set). */
int ep_follow(model *m, ms_err *err);

/* The whole run of a worker node (node_rank >= 1): loads, meets the others,
 * follows until node 0 stops. Prints what it does on stderr; returns the
 * process exit status (0 when node 0 stopped normally). */
int ep_launch_worker(const char *dir, const ep_launch_opts *o);

typedef struct ep_launch {
    int n_ranks;           /* ranks in this process (the world has nnodes * n_ranks) */
    int nnodes, node_rank;
    int cuda;              /* the backends are CUDA backends */
    char device_name[160]; /* "CPU" or the GPU's name, for banners */
    comm_cpu_world *world; /* one node with n_ranks > 1; else NULL */
    comm_tcp_node *tcp;    /* nnodes > 1 with CPU ranks; else NULL */
    comm **nccl;           /* [n_ranks] CUDA ranks in a world; else NULL */
    /* nnodes > 1, for server/ep_remote.h: */
    int control_fd;        /* a worker that takes sequences: the socket node 0 connects to */
    int control_open;      /* control_fd is open (ep_remote_serve closes it: clear this first) */
    uint32_t *node_ipv4;   /* [nnodes] the nodes' addresses (node 0 itself: 0) */
    uint16_t *control_port;/* [nnodes] each node's control port, 0: experts only */
    int timeout_ms;        /* the rendezvous deadline, also for the control connections */
    backend **be;          /* [n_ranks] */
    model **m;             /* [n_ranks] */
} ep_launch;

int ep_launch_open(ep_launch *l, const char *dir, const ep_launch_opts *o, ms_err *err);
void ep_launch_close(ep_launch *l);

/* Reads a placement file: owner[n_experts] (malloc'd), checked against n_ranks. */
int ep_load_placement(const char *path, int n_experts, int n_ranks, int32_t **owner, ms_err *err);

#endif
