/* cpu/cpu_amx.h — the linear product on Intel AMX tiles (AMX-TILE + AMX-BF16),
 * for CPUs that have them (Sapphire Rapids and later); cpu/cpu_ops.c uses it in
 * place of the AVX kernels for every non-transposed product it fits.
 *
 * y[i][n] = Σ_k x[i][k]·W[n][k] with W in BF16 or FP8 e4m3 (128x128 block
 * scales). The tiles multiply bf16 by bf16 into fp32, so for fp32 products
 * (parts = CPU_AMX_PARTS_FP32) x is split into three bf16 parts, x = hi + mid
 * + lo (each the rounded remainder of the one before: 24 significant bits,
 * i.e. x itself for every normal float), and each part is multiplied by W: the
 * products are exact and the sums fp32, as in the AVX kernels (the order of
 * the additions differs). For bf16 activations (parts = CPU_AMX_PARTS_BF16)
 * only hi, x rounded to bf16: a third of the tile work. FP8 codes become bf16
 * exactly; the block scale multiplies each 128-column block's partial sums.
 *
 * Use: cpu_amx_usable() once (it asks the kernel for the tile state); then per
 * product cpu_amx_fits(), cpu_amx_pack_x() into cpu_amx_xp_elems() uint16s,
 * and cpu_amx_linear() on any split of the outputs, from any thread, with
 * cpu_amx_scratch_floats() floats of per-thread scratch. Each output's value
 * depends only on its own row of W and of x, not on the split.
 * Internal to cpu/ (and test_cpu_ops). */
#ifndef MS_CPU_AMX_H
#define MS_CPU_AMX_H

#include <stddef.h>
#include <stdint.h>

#include "engine/weight.h"

#define CPU_AMX_PARTS_FP32 3
#define CPU_AMX_PARTS_BF16 1

/* 1 when this CPU and kernel let the process use AMX tiles with bf16; asks for
 * the permission (arch_prctl) on the first call. MLASERVE_CPU_AMX=0 in the
 * environment turns it off. Thread-safe. */
int cpu_amx_usable(void);

/* 1 when cpu_amx_linear can compute this product: BF16 or FP8 weights,
 * w->cols a multiple of 32, m >= 1. */
int cpu_amx_fits(const weight *w, int m);

/* x [m, k] (rows ldx floats apart) as `parts` bf16 parts (1 or 3), each part
 * of each row a "virtual row" (parts·i + p), in tiles of 16 virtual rows
 * (zero-padded): xp holds cpu_amx_xp_elems(m, k, parts) uint16s. k % 32 == 0. */
size_t cpu_amx_xp_elems(int m, int64_t k, int parts);
void cpu_amx_pack_x(const float *x, int64_t ldx, int m, int64_t k, int parts, uint16_t *xp);

/* Rows n in [n0, n1) of y (m rows, ldy apart) from x packed by cpu_amx_pack_x
 * with the same parts. scratch: cpu_amx_scratch_floats(m, parts) floats,
 * 64-byte aligned, per thread. */
size_t cpu_amx_scratch_floats(int m, int parts);
void cpu_amx_linear(const weight *w, const uint16_t *xp, int m, int parts, float *y, int64_t ldy, int64_t n0,
                    int64_t n1, float *scratch);

#endif
