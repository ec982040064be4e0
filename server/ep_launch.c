/* server/ep_launch.c — see ep_launch.h. */
#include "server/ep_launch.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/backend_cpu.h"
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

/* The backend of rank r: the CPU, or CUDA device `gpu` (one rank only, checked by the caller). */
static backend *open_backend(ep_launch *l, int gpu, int threads, ms_err *err) {
    if (gpu < 0) return backend_cpu_create(threads, err);
#ifdef MS_CUDA
    l->cuda = 1;
    backend *be = backend_cuda_create(gpu, err);
    if (be) snprintf(l->device_name, sizeof l->device_name, "cuda:%d %s", gpu, backend_cuda_device_name(be));
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

int ep_launch_open(ep_launch *l, const char *dir, const ep_launch_opts *o, ms_err *err) {
    int n_ranks = o->n_ranks, gpu = device_index(o->device);
    *l = (ep_launch){n_ranks, 0, "CPU", NULL, calloc((size_t)n_ranks, sizeof(backend *)),
                     calloc((size_t)n_ranks, sizeof(model *))};
    int32_t *owner = NULL;
    int rc = l->be && l->m ? 0 : ms_err_set(err, "out of memory");
    if (rc == 0 && gpu == -2) rc = ms_err_set(err, "--device must be cpu, cuda or cuda:N, got \"%s\"", o->device);
    if (rc == 0 && gpu >= 0 && n_ranks > 1)
        rc = ms_err_set(err, "--ep %d with --device cuda needs NCCL ranks, which are not wired yet "
                        "(docs/expert-parallel.md); use --ep 1 on a GPU or CPU ranks", n_ranks);
    if (rc == 0 && o->placement && n_ranks == 1) rc = ms_err_set(err, "--ep-placement needs --ep 2 or more");
    if (rc == 0 && n_ranks > 1 && !(l->world = comm_cpu_world_create(n_ranks, err))) rc = -1;
    for (int r = 0; rc == 0 && r < n_ranks; r++) {
        if (!(l->be[r] = open_backend(l, gpu, threads_per_rank(o->n_threads, n_ranks), err))) rc = -1;
        else if (!(l->m[r] = model_load(dir, l->be[r], err))) rc = -1;
    }
    const char *placement = o->placement;
    if (rc == 0 && placement) rc = ep_load_placement(placement, l->m[0]->cfg.n_routed_experts, n_ranks, &owner, err);
    for (int r = 0; rc == 0 && o->batch_invariant && r < n_ranks; r++)
        if (model_set_batch_invariant(l->m[r], 1, err) != 0) rc = ms_err_prefix(err, "--batch-invariant");
    for (int r = 0; rc == 0 && o->bf16_activations && r < n_ranks; r++)
        if (model_set_bf16_activations(l->m[r], 1, err) != 0) rc = ms_err_prefix(err, "--bf16-activations");
    for (int r = 0; rc == 0 && l->world && r < n_ranks; r++)
        if (model_set_ep(l->m[r], comm_cpu_world_rank(l->world, r), owner, err) != 0)
            rc = ms_err_prefix(err, "--ep %d", n_ranks);
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
    comm_cpu_world_free(l->world);
    *l = (ep_launch){0};
}
