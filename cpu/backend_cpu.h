/* cpu/backend_cpu.h — the CPU backend (engine/backend.h table over cpu/cpu_ops.h
 * kernels and a thread pool). Create one per engine thread. */
#ifndef MS_BACKEND_CPU_H
#define MS_BACKEND_CPU_H

#include "common/err.h"
#include "engine/backend.h"

/* n_threads <= 0: one per online CPU. */
backend *backend_cpu_create(int n_threads, ms_err *err);
void backend_cpu_free(backend *be);

/* Forces the plain-C reference kernels (tests compare the two). */
void backend_cpu_use_reference(backend *be, int on);

#endif
