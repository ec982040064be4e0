/* cpu/comm_cpu.c — see comm_cpu.h. One mutex/condvar barrier with a generation
 * counter and a failure flag; per-rank "slots" publish the arguments of the
 * current collective. */
#include "cpu/comm_cpu.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const void *send;
    const size_t *send_bytes;
    float *fbuf;
    size_t n;
} slot;

struct comm_cpu_world {
    int size;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    unsigned long generation;
    int failed;
    char reason[512];
    slot *slots;     /* [size] */
    comm *ranks;     /* [size] */
};

static comm_cpu_world *world_of(comm *c) { return c->impl; }

static int failure(comm_cpu_world *w, ms_err *err) {
    return ms_err_set(err, "expert-parallel group failed: %s", w->reason);
}

/* Waits until every rank arrives or the world fails. */
static int world_barrier(comm_cpu_world *w, ms_err *err) {
    pthread_mutex_lock(&w->mu);
    if (w->failed) {
        pthread_mutex_unlock(&w->mu);
        return failure(w, err);
    }
    unsigned long gen = w->generation;
    if (++w->arrived == w->size) {
        w->arrived = 0;
        w->generation++;
        pthread_cond_broadcast(&w->cv);
    } else {
        while (w->generation == gen && !w->failed) pthread_cond_wait(&w->cv, &w->mu);
    }
    int rc = w->generation == gen && w->failed ? failure(w, err) : 0;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static void cpu_abort(comm *c, const char *reason) {
    comm_cpu_world *w = world_of(c);
    pthread_mutex_lock(&w->mu);
    if (!w->failed) {
        w->failed = 1;
        snprintf(w->reason, sizeof w->reason, "rank %d: %s", c->rank, reason);
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int cpu_barrier(comm *c, ms_err *err) { return world_barrier(world_of(c), err); }

static size_t offset_of(const size_t *bytes, int upto) {
    size_t off = 0;
    for (int q = 0; q < upto; q++) off += bytes[q];
    return off;
}

static int cpu_all_to_all_v(comm *c, const void *send, const size_t *send_bytes, void *recv, size_t recv_cap,
                            size_t *recv_bytes, ms_err *err) {
    comm_cpu_world *w = world_of(c);
    w->slots[c->rank] = (slot){send, send_bytes, NULL, 0};
    if (world_barrier(w, err) != 0) return -1;
    size_t total = 0;
    for (int p = 0; p < w->size; p++) total += (recv_bytes[p] = w->slots[p].send_bytes[c->rank]);
    int too_big = total > recv_cap;
    if (too_big) cpu_abort(c, "all_to_all_v: receive buffer too small");
    size_t at = 0;
    for (int p = 0; p < w->size && !too_big; p++) {
        const char *src = (const char *)w->slots[p].send + offset_of(w->slots[p].send_bytes, c->rank);
        memcpy((char *)recv + at, src, recv_bytes[p]);
        at += recv_bytes[p];
    }
    return world_barrier(w, err); /* peers may reuse their send buffers after this */
}

static int cpu_all_reduce_sum(comm *c, float *buf, size_t n, ms_err *err) {
    comm_cpu_world *w = world_of(c);
    float *sum = malloc((n ? n : 1) * sizeof *sum);
    if (!sum) {
        cpu_abort(c, "all_reduce: out of memory");
        return failure(w, err);
    }
    w->slots[c->rank] = (slot){NULL, NULL, buf, n};
    int rc = world_barrier(w, err);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            float s = 0.0f;
            for (int p = 0; p < w->size; p++) s += w->slots[p].fbuf[i];
            sum[i] = s;
        }
        rc = world_barrier(w, err);
    }
    if (rc == 0) memcpy(buf, sum, n * sizeof *sum); /* nobody reads peers' buffers after the second barrier */
    free(sum);
    return rc;
}

static int cpu_all_gather(comm *c, const void *send, size_t bytes, void *recv, ms_err *err) {
    comm_cpu_world *w = world_of(c);
    w->slots[c->rank] = (slot){send, NULL, NULL, bytes};
    if (world_barrier(w, err) != 0) return -1;
    for (int p = 0; p < w->size; p++) {
        if (w->slots[p].n != bytes) {
            cpu_abort(c, "all_gather: ranks disagree on the size");
            return failure(w, err);
        }
        memcpy((char *)recv + (size_t)p * bytes, w->slots[p].send, bytes);
    }
    return world_barrier(w, err);
}

static const comm_ops cpu_comm_ops = {
    .name = "cpu-threads",
    .all_to_all_v = cpu_all_to_all_v,
    .all_reduce_sum = cpu_all_reduce_sum,
    .all_gather = cpu_all_gather,
    .barrier = cpu_barrier,
    .abort = cpu_abort,
};

comm_cpu_world *comm_cpu_world_create(int size, ms_err *err) {
    if (size < 1) { ms_err_set(err, "expert parallelism needs at least 1 rank"); return NULL; }
    comm_cpu_world *w = calloc(1, sizeof *w);
    if (w) {
        w->slots = calloc((size_t)size, sizeof *w->slots);
        w->ranks = calloc((size_t)size, sizeof *w->ranks);
    }
    if (!w || !w->slots || !w->ranks) {
        if (w) { free(w->slots); free(w->ranks); free(w); }
        ms_err_set(err, "out of memory");
        return NULL;
    }
    w->size = size;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (int r = 0; r < size; r++) w->ranks[r] = (comm){&cpu_comm_ops, r, size, w};
    return w;
}

void comm_cpu_world_free(comm_cpu_world *w) {
    if (!w) return;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->slots);
    free(w->ranks);
    free(w);
}

comm *comm_cpu_world_rank(comm_cpu_world *w, int r) { return r >= 0 && r < w->size ? &w->ranks[r] : NULL; }
