/* server/ep_launch.c — see ep_launch.h. */
#include "server/ep_launch.h"

#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "cpu/backend_cpu.h"

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

int ep_launch_open(ep_launch *l, const char *dir, int n_ranks, int n_threads, const char *placement, ms_err *err) {
    *l = (ep_launch){n_ranks, NULL, calloc((size_t)n_ranks, sizeof(backend *)), calloc((size_t)n_ranks, sizeof(model *))};
    int32_t *owner = NULL;
    int rc = l->be && l->m ? 0 : ms_err_set(err, "out of memory");
    if (rc == 0 && placement && n_ranks == 1) rc = ms_err_set(err, "--ep-placement needs --ep 2 or more");
    if (rc == 0 && n_ranks > 1 && !(l->world = comm_cpu_world_create(n_ranks, err))) rc = -1;
    for (int r = 0; rc == 0 && r < n_ranks; r++) {
        if (!(l->be[r] = backend_cpu_create(threads_per_rank(n_threads, n_ranks), err))) rc = -1;
        else if (!(l->m[r] = model_load(dir, l->be[r], err))) rc = -1;
    }
    if (rc == 0 && placement) rc = ep_load_placement(placement, l->m[0]->cfg.n_routed_experts, n_ranks, &owner, err);
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
        if (l->be && l->be[r]) backend_cpu_free(l->be[r]);
    }
    free(l->m);
    free(l->be);
    comm_cpu_world_free(l->world);
    *l = (ep_launch){0};
}
