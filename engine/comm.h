/* engine/comm.h — the collectives expert parallelism needs, behind one small
 * table (like the backend seam): all_to_all_v (byte counts exchanged first),
 * all_reduce (float sum), all_gather, barrier, and abort.
 *
 * Implementations: CPU ranks as threads of one process exchanging through
 * shared memory (cpu/comm_cpu.h; tests and CPU deployments; buffers are host
 * memory), CPU ranks in several processes or machines over TCP (cpu/comm_tcp.h;
 * `--nnodes` without GPUs) and NCCL (cuda/comm_nccl.h; buffers are device memory). Every rank of
 * a world must make the same sequence of calls. A rank that fails calls
 * abort(reason): with the CPU comm every rank's pending and later calls then
 * return -1 with that reason instead of waiting forever; with NCCL the abort
 * tears down the caller's communicator and peers learn of it through NCCL's
 * asynchronous error (their waits poll it), so a peer that is alive but stuck
 * outside a collective can still hang the others.
 * A comm handle belongs to its rank's thread. */
#ifndef MS_COMM_H
#define MS_COMM_H

#include <stddef.h>

#include "common/err.h"

typedef struct comm comm;

typedef struct comm_ops {
    const char *name;
    /* Sends send_bytes[p] bytes starting at send + (sum of send_bytes[q] for q < p)
     * to each rank p. Receives peer p's slice for this rank at recv + (sum of
     * recv_bytes[q] for q < p); fills recv_bytes[size]. Fails if the total exceeds
     * recv_cap (the world fails: every other rank fails this call or its next). */
    int (*all_to_all_v)(comm *c, const void *send, const size_t *send_bytes, void *recv, size_t recv_cap,
                        size_t *recv_bytes, ms_err *err);
    /* buf[i] = Σ over ranks of buf[i]. CPU: summed in rank order (bitwise equal on
     * all ranks). NCCL: the same bits on every rank, but not a rank-ordered sum. */
    int (*all_reduce_sum)(comm *c, float *buf, size_t n, ms_err *err);
    /* recv = concatenation over ranks of each rank's `bytes` bytes. */
    int (*all_gather)(comm *c, const void *send, size_t bytes, void *recv, ms_err *err);
    int (*barrier)(comm *c, ms_err *err);
    /* Marks the world failed with reason; wakes every waiting rank. Idempotent. */
    void (*abort)(comm *c, const char *reason);
} comm_ops;

struct comm {
    const comm_ops *ops;
    int rank, size;
    void *impl;
};

#endif
