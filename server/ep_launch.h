/* server/ep_launch.h — opening the model for a command: on the CPU or one CUDA
 * device (--device), and as an expert-parallel world of CPU ranks in this
 * process (engine/ep.h): the checkpoint is loaded once per rank (the shards are
 * shared read-only mappings, so the weights are in memory once), each rank gets
 * its own CPU backend with threads / n_ranks threads (at least 1), the ranks
 * share one cpu/comm_cpu.h world, and the routed experts are placed by a
 * placement file or in contiguous slices. With n_ranks == 1 there is no world
 * and the model runs unchanged (the reference the others are compared with).
 * --device cuda[:N] needs a `make CUDA=1` build and, for now, one rank: CUDA
 * ranks need the NCCL comm (cuda/comm_nccl.h), which is not wired yet.
 *
 * Placement file: a JSON array with one rank number per routed expert, e.g.
 * [0,0,1,1] puts experts 0-1 on rank 0 and 2-3 on rank 1 (docs/expert-parallel.md). */
#ifndef MS_EP_LAUNCH_H
#define MS_EP_LAUNCH_H

#include <stdint.h>

#include "common/err.h"
#include "cpu/comm_cpu.h"
#include "engine/model.h"

typedef struct ep_launch_opts {
    int n_ranks;            /* --ep (>= 1) */
    int n_threads;          /* CPU threads in all, <= 0: all online CPUs, split over the ranks */
    const char *placement;  /* --ep-placement file, or NULL */
    const char *device;     /* "cpu" (NULL too), "cuda" or "cuda:N" */
    int batch_invariant;    /* --batch-invariant: model_set_batch_invariant on every rank */
    int bf16_activations;   /* --bf16-activations: model_set_bf16_activations on every rank */
} ep_launch_opts;

typedef struct ep_launch {
    int n_ranks;
    int cuda;              /* the backends are CUDA backends */
    char device_name[160]; /* "CPU" or the GPU's name, for banners */
    comm_cpu_world *world; /* NULL when n_ranks == 1 */
    backend **be;          /* [n_ranks] */
    model **m;             /* [n_ranks] */
} ep_launch;

int ep_launch_open(ep_launch *l, const char *dir, const ep_launch_opts *o, ms_err *err);
void ep_launch_close(ep_launch *l);

/* Reads a placement file: owner[n_experts] (malloc'd), checked against n_ranks. */
int ep_load_placement(const char *path, int n_experts, int n_ranks, int32_t **owner, ms_err *err);

#endif
