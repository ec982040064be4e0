/* cpu/cpu_ops.h — the CPU kernels behind the CPU backend (cpu/backend_cpu.c).
 *
 * Every op has a plain-C reference (`*_ref`, single-threaded, obviously correct:
 * the test oracle) and a dispatching version that picks the fastest variant the
 * running CPU supports (AVX-512 / AVX2+FMA+F16C, detected at run time, scalar
 * otherwise) and spreads work over the thread pool. All activations are float32,
 * row-major, contiguous; accumulation is fp32. Weights stay in their checkpoint
 * dtype (engine/weight.h): FP8 e4m3 is dequantised per 128x128 block inside the
 * kernel; BF16/F16/F32 are read directly. Ops never allocate per call except
 * from per-thread scratch owned by the pool's caller; they are safe to call
 * from one thread at a time per pool. */
#ifndef MS_CPU_OPS_H
#define MS_CPU_OPS_H

#include <stdint.h>

#include "common/threadpool.h"
#include "engine/backend.h"
#include "engine/weight.h"

/* y[m][n] = Σ_k x[m][k] · W[n][k]   (x: [m, w->cols], y: [m, w->rows]) */
void cpu_linear(threadpool *pool, const weight *w, const float *x, float *y, int m);
void cpu_linear_ref(const weight *w, const float *x, float *y, int m);

/* y[m][k] = Σ_n x[m][n] · W[n][k]   (x: [m, w->rows], y: [m, w->cols]) — the
 * transposed product, used by absorbed MLA (q_nope · W_UK). */
void cpu_linear_t(threadpool *pool, const weight *w, const float *x, float *y, int m);
void cpu_linear_t_ref(const weight *w, const float *x, float *y, int m);

/* Runs n independent products (engine/backend.h linear_op) as one op: those
 * that stream W (few rows of x) share one pool run (tasks from every product), the
 * others run one after another. Each output equals what cpu_linear /
 * cpu_linear_t give for that product alone, bit for bit. */
#define CPU_BATCH_MAX 64
void cpu_linear_batch(threadpool *pool, const linear_op *ops, int n);
void cpu_linear_batch_ref(const linear_op *ops, int n);

/* Batch-invariant versions (serve --batch-invariant): one kernel and one
 * summation order per output for every m, so row i of y is bit for bit what
 * the product of row i of x alone gives, whatever m and the other rows are
 * (no tiles, no AMX: slower for many rows). The references above are
 * invariant too (one double sum per output). */
void cpu_linear_invariant(threadpool *pool, const weight *w, const float *x, float *y, int m);
void cpu_linear_t_invariant(threadpool *pool, const weight *w, const float *x, float *y, int m);
void cpu_linear_batch_invariant(threadpool *pool, const linear_op *ops, int n);

/* The products with a choice of kernels, flags a set of:
 *  CPU_INVARIANT  the batch-invariant kernels above;
 *  CPU_BF16_ACT   activations rounded to bf16 in every non-transposed product
 *                 with FP8 or BF16 weights and a multiple of 32 columns, on
 *                 AVX512_BF16 dot products (cpu/cpu_bf16dot.h: ~2x the
 *                 multiply-adds per instruction; logits within ~1e-2 of fp32;
 *                 batch-invariant too); the rest as without the flag. Only
 *                 where cpu_bf16dot_usable(): without it the flag changes nothing.
 * cpu_linear_flags(.., 0) is cpu_linear, (.., CPU_INVARIANT) cpu_linear_invariant. */
enum { CPU_INVARIANT = 1, CPU_BF16_ACT = 2 };
void cpu_linear_flags(threadpool *pool, const weight *w, const float *x, float *y, int m, int flags);
void cpu_linear_t_flags(threadpool *pool, const weight *w, const float *x, float *y, int m, int flags);
void cpu_linear_batch_flags(threadpool *pool, const linear_op *ops, int n, int flags);

/* y[i] = x[i] / sqrt(mean(x[i]²) + eps) * g   for each of m rows of d values; g: [d] weight
 * (any dtype, one row). y may alias x. */
void cpu_rmsnorm(threadpool *pool, const weight *g, const float *x, float *y, int m, int d, float eps);
void cpu_rmsnorm_ref(const weight *g, const float *x, float *y, int m, int d, float eps);

/* y[i] = silu(gate[i]) * up[i], silu(z) = z / (1 + e^-z). y may alias gate. */
void cpu_silu_mul(threadpool *pool, const float *gate, const float *up, float *y, int64_t n);
void cpu_silu_mul_ref(const float *gate, const float *up, float *y, int64_t n);

/* y[i] = table row ids[i] as float32 (table: [V, D] any dtype). */
void cpu_embedding(threadpool *pool, const weight *table, const int32_t *ids, int n, float *y);
void cpu_embedding_ref(const weight *table, const int32_t *ids, int n, float *y);

/* Reads `bytes` (a multiple of 4) of buf the way the decode kernels read weights:
 * widest vector loads, split over the pool in 1 MiB tasks. Returns a checksum
 * (so the reads cannot be elided). For memory-bandwidth measurement. */
double cpu_mem_read(threadpool *pool, const void *buf, size_t bytes);

/* Which variant cpu_linear and friends use on this CPU: "avx512", "avx2" or "scalar".
 * Chosen once per process; MLASERVE_CPU_SIMD=scalar|avx2 in the environment caps it.
 * SIMD variants read the e4m3 NaN codes (0x7F/0xFF, never written by FP8
 * encoders, which saturate at ±448) as ±480; the references give NaN. */
const char *cpu_simd_level(void);

/* How that variant's decode kernels turn FP8 codes into floats: "half"
 * (through half floats: no subnormal float reaches an FMA; chosen on Intel
 * CPUs, where such an input costs a microcode assist), "bits" (the code's bits
 * placed in a float: two operations fewer, subnormal codes give subnormal
 * floats; chosen elsewhere) or "table" (scalar). MLASERVE_CPU_F8_LOAD=half|bits
 * in the environment overrides the choice. Same values either way; the order
 * of the sums differs. */
const char *cpu_f8_load(void);

#endif
