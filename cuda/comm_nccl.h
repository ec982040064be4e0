/* cuda/comm_nccl.h — engine/comm.h over NCCL (built with `make CUDA=1`): one
 * rank per GPU, either in one process (a host thread per device) or across
 * processes and nodes (node 0 makes the id with comm_nccl_unique_id and hands it
 * to every rank, e.g. through common/rendezvous.h).
 *
 * Memory: the data buffers of the comm_ops (all_to_all_v's send and recv,
 * all_reduce_sum's buf, all_gather's send and recv) may be device memory on
 * this rank's GPU, used in place, or host memory, staged through a device
 * buffer of the comm's (a copy each way: meant for the small exchanges the
 * engine makes from the host, e.g. routing ids and the step agreement); both
 * buffers of comm_nccl_all_to_all_fixed are device memory; the byte-count arrays
 * send_bytes and recv_bytes are host memory. The comm_ops run on the comm's own
 * stream and have completed when they return. Inputs written on another stream
 * must be finished first: either the writer synchronizes, or the stream is named
 * with comm_nccl_set_producer, and every collective first waits (on the device)
 * for what was enqueued on it so far. all_to_all_v makes three exchanges: the
 * counts, an agreement on recv_cap (every rank fails the call together when any
 * rank's total exceeds its cap), then the data. all_reduce_sum sums in NCCL's
 * order, not rank order: the result can differ in the last bits from the CPU
 * comm's, though NCCL sends every rank the same finished sum. all_gather cannot
 * check that ranks agree on `bytes` (a mismatch is undefined, not an error).
 *
 * Failure: a failed CUDA or NCCL call (the error names the call, file and line),
 * an asynchronous NCCL error seen while waiting for a collective (a lost peer),
 * or abort(reason) marks the comm failed and aborts its NCCL communicator; every
 * later call returns -1 with the reason. Unlike the CPU comm, abort reaches only
 * this rank: the others find out when NCCL reports the lost peer, or through a
 * channel of the caller's. ncclCommInitRank has no deadline of its own: callers
 * wait for their ranks' creates with one (server/ep_launch.c, common/waitgroup.h).
 * A comm belongs to its rank's thread; create and the comm_ops leave
 * cuda_device current on that thread. */
#ifndef MS_COMM_NCCL_H
#define MS_COMM_NCCL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/err.h"
#include "engine/comm.h"

#define COMM_NCCL_ID_BYTES 128

/* ncclGetUniqueId into id_out[COMM_NCCL_ID_BYTES]: call once, on node 0. */
int comm_nccl_unique_id(void *id_out, ms_err *err);
/* Rank `rank` of `size` on GPU cuda_device (cudaSetDevice + ncclCommInitRank);
 * blocks until every rank of the world has called it with the same id. */
comm *comm_nccl_create(int rank, int size, const void *id, int cuda_device, ms_err *err);
void comm_nccl_free(comm *c);
/* Every later comm_op first waits for the work enqueued on `stream` (a
 * cudaStream_t passed as void *, on this rank's device; NULL: none) so far: the
 * rank's backend stream, whose kernels write the buffers the exchanges read and
 * read the ones they write. */
int comm_nccl_set_producer(comm *c, void *stream, ms_err *err);
/* Graph-capturable all-to-all: every rank sends exactly bytes_per_peer bytes to
 * each peer p from send + p * bytes_per_peer and receives peer p's into
 * recv + p * bytes_per_peer (fixed worst-case buffers; the real counts travel
 * in-band in the payload). Enqueued on `stream` (a cudaStream_t passed as void *)
 * with no host synchronization, so an asynchronous NCCL error is not seen here:
 * the caller's stream wait finds it (or hangs if a peer vanished). */
int comm_nccl_all_to_all_fixed(comm *c, const void *send, void *recv, size_t bytes_per_peer, void *stream, ms_err *err);

#ifdef __cplusplus
}
#endif

#endif
