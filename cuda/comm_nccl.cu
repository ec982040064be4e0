/* cuda/comm_nccl.cu — see comm_nccl.h. Each comm owns a non-blocking stream,
 * a small device buffer for the byte counts and the agreement flag, pinned
 * host mirrors of them, and two device staging buffers for callers' host
 * memory (send side, receive side). A collective first makes its stream wait
 * for the producer stream (if one is set), stages host inputs in, enqueues its
 * NCCL calls, then waits the way NCCL's fault-tolerance guide does:
 * cudaStreamQuery in a loop, asking ncclCommGetAsyncError between queries, so
 * a lost peer ends the wait with an error instead of hanging it; host outputs
 * are copied back last. */
#include "cuda/comm_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static_assert(sizeof(ncclUniqueId) == COMM_NCCL_ID_BYTES, "NCCL unique id size changed");
static_assert(sizeof(size_t) == sizeof(uint64_t), "byte counts travel as uint64");

typedef struct {
    ncclComm_t nccl;   /* NULL once aborted */
    cudaStream_t stream;
    int device, rank, size;
    uint64_t *d_counts; /* [2 * size] device: counts this rank sends, then counts it receives */
    uint64_t *h_counts; /* [2 * size] pinned host mirror */
    int *d_flag;        /* [1] device: overflow agreement, barrier */
    int *h_flag;        /* [1] pinned host mirror */
    void *stage[2];     /* device copies of host buffers: STAGE_SEND, STAGE_RECV */
    size_t stage_cap[2];
    cudaStream_t producer; /* comm_nccl_set_producer's stream, or NULL */
    cudaEvent_t produced;  /* recorded on producer before each collective */
    int failed;
    char reason[768];
} nccl_state;

static nccl_state *state_of(comm *c) { return (nccl_state *)c->impl; }

/* ---- failure ---------------------------------------------------------------------- */

/* Marks the world failed (first reason wins), aborts the NCCL communicator and
 * fills err. `rank` is the rank the reason is about. */
static int world_fail(nccl_state *st, int rank, const char *what, ms_err *err) {
    if (!st->failed) {
        st->failed = 1;
        snprintf(st->reason, sizeof st->reason, "rank %d: %s", rank, what);
        if (st->nccl) {
            ncclResult_t r = ncclCommAbort(st->nccl);
            if (r != ncclSuccess)
                fprintf(stderr, "mlaserve: ncclCommAbort failed at %s:%d: %s\n", __FILE__, __LINE__,
                        ncclGetErrorString(r));
            st->nccl = NULL;
        }
    }
    return ms_err_set(err, "expert-parallel group failed: %s", st->reason);
}

static int nccl_failed(nccl_state *st, ncclResult_t r, const char *call, const char *file, int line, ms_err *err) {
    char what[640];
    const char *last = st->nccl ? ncclGetLastError(st->nccl) : NULL;
    snprintf(what, sizeof what, "%s failed at %s:%d: %s%s%s%s", call, file, line, ncclGetErrorString(r),
             last && last[0] ? " (" : "", last && last[0] ? last : "", last && last[0] ? ")" : "");
    return world_fail(st, st->rank, what, err);
}

static int cuda_failed(nccl_state *st, cudaError_t e, const char *call, const char *file, int line, ms_err *err) {
    char what[640];
    snprintf(what, sizeof what, "%s failed at %s:%d: %s", call, file, line, cudaGetErrorString(e));
    return world_fail(st, st->rank, what, err);
}

/* Inside a collective: a failed call fails the world (the ranks are out of step). */
#define COLL_CUDA(st, call, err)                                                              \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) return cuda_failed((st), e_, #call, __FILE__, __LINE__, (err)); \
    } while (0)

#define COLL_NCCL(st, call, err)                                                              \
    do {                                                                                      \
        ncclResult_t r_ = (call);                                                             \
        if (r_ != ncclSuccess) return nccl_failed((st), r_, #call, __FILE__, __LINE__, (err)); \
    } while (0)

/* Between ncclGroupStart and ncclGroupEnd: close the group before failing, or the
 * thread's next NCCL call would still be grouped. */
#define COLL_NCCL_GROUPED(st, call, err)                                                      \
    do {                                                                                      \
        ncclResult_t r_ = (call);                                                             \
        if (r_ != ncclSuccess) {                                                              \
            ncclGroupEnd();                                                                   \
            return nccl_failed((st), r_, #call, __FILE__, __LINE__, (err));                   \
        }                                                                                     \
    } while (0)

/* While setting up (no world yet): fill err with call, file and line. */
#define CUDA_TRY(call, err)                                                                                   \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess)                                                                                \
            return ms_err_set((err), "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
    } while (0)

#define NCCL_TRY(call, err)                                                                                   \
    do {                                                                                                      \
        ncclResult_t r_ = (call);                                                                             \
        if (r_ != ncclSuccess)                                                                                \
            return ms_err_set((err), "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, ncclGetErrorString(r_)); \
    } while (0)

/* Teardown has no error return: report and go on. */
#define CUDA_WARN(call)                                                                                       \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess)                                                                                \
            fprintf(stderr, "mlaserve: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
    } while (0)

/* ---- waiting and small exchanges -------------------------------------------------- */

/* Waits for the comm's stream; an asynchronous NCCL error (a peer or the network
 * failed) ends the wait and fails the world. */
static int stream_wait(nccl_state *st, ms_err *err) {
    for (;;) {
        cudaError_t e = cudaStreamQuery(st->stream);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady) return cuda_failed(st, e, "cudaStreamQuery(st->stream)", __FILE__, __LINE__, err);
        ncclResult_t async = ncclSuccess;
        COLL_NCCL(st, ncclCommGetAsyncError(st->nccl, &async), err);
        if (async != ncclSuccess)
            return nccl_failed(st, async, "a collective (ncclCommGetAsyncError)", __FILE__, __LINE__, err);
        sched_yield();
    }
}

/* Every collective starts here: a failed world fails at once; the device is
 * made current; the comm's stream waits for what the producer has enqueued. */
static int coll_begin(nccl_state *st, ms_err *err) {
    if (st->failed) return ms_err_set(err, "expert-parallel group failed: %s", st->reason);
    COLL_CUDA(st, cudaSetDevice(st->device), err);
    if (st->producer) {
        COLL_CUDA(st, cudaEventRecord(st->produced, st->producer), err);
        COLL_CUDA(st, cudaStreamWaitEvent(st->stream, st->produced, 0), err);
    }
    return 0;
}

/* ---- host buffers ------------------------------------------------------------------- */

enum { STAGE_SEND, STAGE_RECV };

/* Device (or managed) memory NCCL can use directly; anything else is staged. */
static int on_device(const void *p) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* clear it: plain host memory on old runtimes */
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

/* The device buffer standing in for `bytes` at p: p itself when it is device
 * memory, else staging buffer `slot` (grown on demand; the comm's stream is idle
 * between collectives, so the old one can go at once), filled from p when `fill`. */
static int stage(nccl_state *st, int slot, const void *p, size_t bytes, int fill, void **dev, ms_err *err) {
    if (on_device(p)) {
        *dev = (void *)p;
        return 0;
    }
    if (st->stage_cap[slot] < bytes || !st->stage[slot]) {
        size_t cap = st->stage_cap[slot] ? st->stage_cap[slot] : 4096;
        while (cap < bytes) cap *= 2;
        if (st->stage[slot]) COLL_CUDA(st, cudaFree(st->stage[slot]), err);
        st->stage[slot] = NULL;
        st->stage_cap[slot] = 0;
        COLL_CUDA(st, cudaMalloc(&st->stage[slot], cap), err);
        st->stage_cap[slot] = cap;
    }
    *dev = st->stage[slot];
    if (fill && bytes) COLL_CUDA(st, cudaMemcpyAsync(*dev, p, bytes, cudaMemcpyHostToDevice, st->stream), err);
    return 0;
}

/* After a collective: waits for it, then copies a staged result back to host p. */
static int finish(nccl_state *st, void *p, const void *dev, size_t bytes, ms_err *err) {
    if (stream_wait(st, err) != 0) return -1;
    if (p == dev || !bytes) return 0;
    COLL_CUDA(st, cudaMemcpyAsync(p, dev, bytes, cudaMemcpyDeviceToHost, st->stream), err);
    return stream_wait(st, err);
}

/* recv_bytes[p] = what peer p sends this rank (one uint64 each way per peer). */
static int exchange_counts(nccl_state *st, const size_t *send_bytes, size_t *recv_bytes, ms_err *err) {
    int n = st->size;
    for (int p = 0; p < n; p++) st->h_counts[p] = send_bytes[p];
    COLL_CUDA(st, cudaMemcpyAsync(st->d_counts, st->h_counts, n * sizeof(uint64_t), cudaMemcpyHostToDevice, st->stream),
              err);
    COLL_NCCL(st, ncclGroupStart(), err);
    for (int p = 0; p < n; p++) {
        COLL_NCCL_GROUPED(st, ncclSend(st->d_counts + p, 1, ncclUint64, p, st->nccl, st->stream), err);
        COLL_NCCL_GROUPED(st, ncclRecv(st->d_counts + n + p, 1, ncclUint64, p, st->nccl, st->stream), err);
    }
    COLL_NCCL(st, ncclGroupEnd(), err);
    COLL_CUDA(st, cudaMemcpyAsync(st->h_counts + n, st->d_counts + n, n * sizeof(uint64_t), cudaMemcpyDeviceToHost,
                                  st->stream),
              err);
    if (stream_wait(st, err) != 0) return -1;
    for (int p = 0; p < n; p++) recv_bytes[p] = (size_t)st->h_counts[n + p];
    return 0;
}

/* The largest `mine` over all ranks (a max all-reduce of one int). */
static int agree_max(nccl_state *st, int mine, int *out, ms_err *err) {
    *st->h_flag = mine;
    COLL_CUDA(st, cudaMemcpyAsync(st->d_flag, st->h_flag, sizeof(int), cudaMemcpyHostToDevice, st->stream), err);
    COLL_NCCL(st, ncclAllReduce(st->d_flag, st->d_flag, 1, ncclInt32, ncclMax, st->nccl, st->stream), err);
    COLL_CUDA(st, cudaMemcpyAsync(st->h_flag, st->d_flag, sizeof(int), cudaMemcpyDeviceToHost, st->stream), err);
    if (stream_wait(st, err) != 0) return -1;
    *out = *st->h_flag;
    return 0;
}

/* ---- the comm_ops ------------------------------------------------------------------- */

static int nccl_all_to_all_v(comm *c, const void *send, const size_t *send_bytes, void *recv, size_t recv_cap,
                             size_t *recv_bytes, ms_err *err) {
    nccl_state *st = state_of(c);
    if (coll_begin(st, err) != 0 || exchange_counts(st, send_bytes, recv_bytes, err) != 0) return -1;
    size_t total = 0;
    for (int p = 0; p < st->size; p++) total += recv_bytes[p];
    int over = 0; /* 1 + the highest rank whose total exceeds its cap, or 0 */
    if (agree_max(st, total > recv_cap ? st->rank + 1 : 0, &over, err) != 0) return -1;
    if (over) {
        char what[160];
        if (over - 1 == st->rank)
            snprintf(what, sizeof what, "all_to_all_v: receive buffer too small (%zu bytes for a capacity of %zu)",
                     total, recv_cap);
        else
            snprintf(what, sizeof what, "all_to_all_v: receive buffer too small on rank %d", over - 1);
        return world_fail(st, over - 1, what, err);
    }
    size_t sent = 0;
    for (int p = 0; p < st->size; p++) sent += send_bytes[p];
    void *d_send, *d_recv;
    if (stage(st, STAGE_SEND, send, sent, 1, &d_send, err) != 0 || stage(st, STAGE_RECV, recv, total, 0, &d_recv, err) != 0)
        return -1;
    const char *src = (const char *)d_send;
    char *dst = (char *)d_recv;
    COLL_NCCL(st, ncclGroupStart(), err);
    for (int p = 0; p < st->size; p++) {
        if (send_bytes[p]) COLL_NCCL_GROUPED(st, ncclSend(src, send_bytes[p], ncclUint8, p, st->nccl, st->stream), err);
        if (recv_bytes[p]) COLL_NCCL_GROUPED(st, ncclRecv(dst, recv_bytes[p], ncclUint8, p, st->nccl, st->stream), err);
        src += send_bytes[p];
        dst += recv_bytes[p];
    }
    COLL_NCCL(st, ncclGroupEnd(), err);
    return finish(st, recv, d_recv, total, err);
}

static int nccl_all_reduce_sum(comm *c, float *buf, size_t n, ms_err *err) {
    nccl_state *st = state_of(c);
    if (coll_begin(st, err) != 0) return -1;
    if (n == 0) return 0;
    void *d;
    if (stage(st, STAGE_RECV, buf, n * sizeof *buf, 1, &d, err) != 0) return -1;
    COLL_NCCL(st, ncclAllReduce(d, d, n, ncclFloat32, ncclSum, st->nccl, st->stream), err);
    return finish(st, buf, d, n * sizeof *buf, err);
}

static int nccl_all_gather(comm *c, const void *send, size_t bytes, void *recv, ms_err *err) {
    nccl_state *st = state_of(c);
    if (coll_begin(st, err) != 0) return -1;
    if (bytes == 0) return 0;
    void *d_send, *d_recv;
    if (stage(st, STAGE_SEND, send, bytes, 1, &d_send, err) != 0 ||
        stage(st, STAGE_RECV, recv, bytes * (size_t)st->size, 0, &d_recv, err) != 0)
        return -1;
    COLL_NCCL(st, ncclAllGather(d_send, d_recv, bytes, ncclUint8, st->nccl, st->stream), err);
    return finish(st, recv, d_recv, bytes * (size_t)st->size, err);
}

static int nccl_barrier(comm *c, ms_err *err) {
    nccl_state *st = state_of(c);
    if (coll_begin(st, err) != 0) return -1;
    COLL_NCCL(st, ncclAllReduce(st->d_flag, st->d_flag, 1, ncclInt32, ncclMax, st->nccl, st->stream), err);
    return stream_wait(st, err);
}

static void nccl_abort(comm *c, const char *reason) { world_fail(state_of(c), c->rank, reason, NULL); }

static const comm_ops nccl_comm_ops = {
    "nccl", nccl_all_to_all_v, nccl_all_reduce_sum, nccl_all_gather, nccl_barrier, nccl_abort,
};

extern "C" int comm_nccl_all_to_all_fixed(comm *c, const void *send, void *recv, size_t bytes_per_peer, void *stream,
                                          ms_err *err) {
    if (!c || c->ops != &nccl_comm_ops) return ms_err_set(err, "comm_nccl_all_to_all_fixed: not an NCCL comm");
    nccl_state *st = state_of(c);
    if (st->failed) return ms_err_set(err, "expert-parallel group failed: %s", st->reason);
    if (bytes_per_peer == 0) return 0;
    cudaStream_t s = (cudaStream_t)stream;
    const char *src = (const char *)send;
    char *dst = (char *)recv;
    COLL_NCCL(st, ncclGroupStart(), err);
    for (int p = 0; p < st->size; p++) {
        COLL_NCCL_GROUPED(st, ncclSend(src + (size_t)p * bytes_per_peer, bytes_per_peer, ncclUint8, p, st->nccl, s), err);
        COLL_NCCL_GROUPED(st, ncclRecv(dst + (size_t)p * bytes_per_peer, bytes_per_peer, ncclUint8, p, st->nccl, s), err);
    }
    COLL_NCCL(st, ncclGroupEnd(), err);
    return 0;
}

extern "C" int comm_nccl_set_producer(comm *c, void *stream, ms_err *err) {
    if (!c || c->ops != &nccl_comm_ops) return ms_err_set(err, "comm_nccl_set_producer: not an NCCL comm");
    nccl_state *st = state_of(c);
    CUDA_TRY(cudaSetDevice(st->device), err);
    if (stream && !st->produced) CUDA_TRY(cudaEventCreateWithFlags(&st->produced, cudaEventDisableTiming), err);
    st->producer = (cudaStream_t)stream;
    return 0;
}

/* ---- lifetime ----------------------------------------------------------------------- */

extern "C" int comm_nccl_unique_id(void *id_out, ms_err *err) {
    if (!id_out) return ms_err_set(err, "comm_nccl_unique_id: no output buffer");
    ncclUniqueId id;
    NCCL_TRY(ncclGetUniqueId(&id), err);
    memcpy(id_out, &id, sizeof id);
    return 0;
}

static int state_init(nccl_state *st, const void *id, ms_err *err) {
    size_t count_bytes = 2 * (size_t)st->size * sizeof(uint64_t);
    CUDA_TRY(cudaSetDevice(st->device), err);
    CUDA_TRY(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking), err);
    CUDA_TRY(cudaMalloc((void **)&st->d_counts, count_bytes), err);
    CUDA_TRY(cudaMalloc((void **)&st->d_flag, sizeof(int)), err);
    CUDA_TRY(cudaMallocHost((void **)&st->h_counts, count_bytes), err);
    CUDA_TRY(cudaMallocHost((void **)&st->h_flag, sizeof(int)), err);
    CUDA_TRY(cudaMemset(st->d_flag, 0, sizeof(int)), err);
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof uid);
    NCCL_TRY(ncclCommInitRank(&st->nccl, st->size, uid, st->rank), err);
    return 0;
}

extern "C" comm *comm_nccl_create(int rank, int size, const void *id, int cuda_device, ms_err *err) {
    if (size < 1 || rank < 0 || rank >= size) {
        ms_err_set(err, "comm_nccl_create: rank %d is outside 0..%d", rank, size - 1);
        return NULL;
    }
    if (!id) {
        ms_err_set(err, "comm_nccl_create: no NCCL unique id");
        return NULL;
    }
    comm *c = (comm *)calloc(1, sizeof *c);
    nccl_state *st = (nccl_state *)calloc(1, sizeof *st);
    if (!c || !st) {
        free(c);
        free(st);
        ms_err_set(err, "comm_nccl_create: out of memory");
        return NULL;
    }
    st->device = cuda_device;
    st->rank = rank;
    st->size = size;
    c->ops = &nccl_comm_ops;
    c->rank = rank;
    c->size = size;
    c->impl = st;
    if (state_init(st, id, err) != 0) {
        ms_err_prefix(err, "NCCL rank %d of %d on CUDA device %d", rank, size, cuda_device);
        comm_nccl_free(c);
        return NULL;
    }
    return c;
}

extern "C" void comm_nccl_free(comm *c) {
    if (!c) return;
    nccl_state *st = state_of(c);
    if (st->stream) CUDA_WARN(cudaSetDevice(st->device)); /* nothing to release when create failed before */
    if (st->nccl) {
        ncclResult_t r = ncclCommDestroy(st->nccl);
        if (r != ncclSuccess)
            fprintf(stderr, "mlaserve: ncclCommDestroy failed at %s:%d: %s\n", __FILE__, __LINE__, ncclGetErrorString(r));
    }
    if (st->stream) CUDA_WARN(cudaStreamDestroy(st->stream));
    if (st->d_counts) CUDA_WARN(cudaFree(st->d_counts));
    if (st->d_flag) CUDA_WARN(cudaFree(st->d_flag));
    if (st->h_counts) CUDA_WARN(cudaFreeHost(st->h_counts));
    if (st->h_flag) CUDA_WARN(cudaFreeHost(st->h_flag));
    for (int i = 0; i < 2; i++)
        if (st->stage[i]) CUDA_WARN(cudaFree(st->stage[i]));
    if (st->produced) CUDA_WARN(cudaEventDestroy(st->produced));
    free(st);
    free(c);
}
