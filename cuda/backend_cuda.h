/* cuda/backend_cuda.h — the CUDA backend (built with `make CUDA=1`).
 *
 * Status: skeleton. Device selection, memory (alloc/free/upload/download) and
 * the elementwise ops (zero, axpy, silu_mul, copy_2d) run on the device; the
 * GEMM, norm, rope, router and MLA attention kernels are issue #4 and are NULL
 * in the table until they land (model code must not be pointed at this backend
 * before then). Every CUDA call is checked and errors name the call, file and
 * line. One engine thread per backend. */
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
/* Host <-> device copies and a device-wide sync; return -1 with err on failure. */
int backend_cuda_upload(backend *be, void *dst, const void *src, size_t bytes, ms_err *err);
int backend_cuda_download(backend *be, void *dst, const void *src, size_t bytes, ms_err *err);
int backend_cuda_sync(backend *be, ms_err *err);
/* "NVIDIA H200 (sm_90, 139 GiB)" */
const char *backend_cuda_device_name(const backend *be);

#ifdef __cplusplus
}
#endif

#endif
