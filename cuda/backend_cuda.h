/* cuda/backend_cuda.h — the CUDA backend (built with `make CUDA=1`).
 *
 * Every op of engine/backend.h runs on the device with the CPU backend's
 * semantics (first, straightforward kernels: see docs/cuda.md for what each
 * does, its limits and what has been verified on a device). Memory contract:
 *   - activations (x, y, q, logits, router idx/w outputs, ...) are device memory
 *     from ops->alloc;
 *   - weights (weight.data, weight.scale, router_params.bias) are device memory
 *     from ops->weight_place or backend_cuda_weight_upload; the router bias may
 *     also be host memory (detected, copied per call);
 *   - kv_cache.data is device memory (kv_cache_init with this backend); the
 *     kv_seq block tables, token ids, positions, ctx lengths, the kv_seq
 *     pointer arrays and rope inv_freq are HOST memory and are copied to the
 *     device inside each op.
 * Ops enqueue work on the backend's stream and return; upload / download /
 * weight_place complete before they return. A failed CUDA call inside an op
 * aborts with the call, file and line (ops have no error return); set
 * MLASERVE_CUDA_SYNC=1 to wait after every kernel so a fault names its launch.
 * One thread at a time drives a backend, not necessarily the one that created
 * it: every op makes the backend's device current on the calling thread. */
#ifndef MS_BACKEND_CUDA_H
#define MS_BACKEND_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/err.h"
#include "engine/backend.h"

/* Number of visible CUDA devices (0 when there is no driver or device). */
int backend_cuda_device_count(void);
/* A backend on `device`; NULL with err when there is no such device. */
backend *backend_cuda_create(int device, ms_err *err);
void backend_cuda_free(backend *be);
/* Host <-> device copies (complete on return), a byte fill (stream-ordered) and
 * a sync that also reports any pending kernel error; all return -1 with err on failure. */
int backend_cuda_upload(backend *be, void *dst, const void *src, size_t bytes, ms_err *err);
int backend_cuda_download(backend *be, void *dst, const void *src, size_t bytes, ms_err *err);
int backend_cuda_memset(backend *be, void *dst, int byte, size_t bytes, ms_err *err);
int backend_cuda_sync(backend *be, ms_err *err);
/* Copies a host weight view to the device: physical rows [0, row0 + rows) of
 * data (and their scale rows for FP8); *dev is the same view over the copies.
 * Free with backend_cuda_weight_free. */
int backend_cuda_weight_upload(backend *be, const weight *host, weight *dev, ms_err *err);
void backend_cuda_weight_free(backend *be, weight *dev);
/* "NVIDIA H200 (sm_90, 132 SMs, 139 GiB)" */
const char *backend_cuda_device_name(const backend *be);
/* The backend's cudaStream_t (for timing with events and, later, graph capture). */
void *backend_cuda_stream(backend *be);

#ifdef __cplusplus
}
#endif

#endif
