/* cpu/cpu_bf16dot.h — the linear product with activations rounded to bf16, on
 * AVX512_BF16 dot products (vdpbf16ps: 32 multiply-adds per instruction, twice
 * the fp32 FMA's). The kernels of `--bf16-activations` (cpu/cpu_ops.h).
 *
 * y[i][n] = Σ_k bf16(x[i][k]·s(n,k))·W[n][k], summed in fp32, where s is the
 * 128x128 block scale of FP8 weights (1 for BF16 weights). W stays exact: BF16
 * as stored, FP8 e4m3 codes become bf16 exactly, except e4m3 subnormals
 * (|code| < 2^-6, i.e. under 2^-6/448 of their block's largest weight), which
 * the dot product reads as zero. So the only rounding beyond fp32 accumulation
 * is that of x·s to 8 significant bits (relative 2^-9): logits move by ~1e-2
 * against the fp32 kernels (docs/design.md, "BF16 activations").
 *
 * Each output is summed in one order whatever m is and whichever rows of x
 * share the call: row i of y equals the call with row i of x alone, bit for
 * bit (so the mode is batch-invariant for these products).
 *
 * Use: cpu_bf16dot_usable() (the CPU has AVX512_BF16); per product
 * cpu_bf16dot_fits(); cpu_bf16dot_rows() on any split of the outputs, from
 * any thread, with cpu_bf16dot_scratch_elems() uint16s of per-thread scratch.
 * Internal to cpu/ (and test_cpu_ops). */
#ifndef MS_CPU_BF16DOT_H
#define MS_CPU_BF16DOT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/weight.h"

/* 1 when this CPU has AVX512_BF16 and the AVX-512 kernels are in use (not
 * capped by MLASERVE_CPU_SIMD). Thread-safe. */
int cpu_bf16dot_usable(void);

/* 1 when cpu_bf16dot_rows computes this product: FP8 or BF16 weights,
 * w->cols a positive multiple of 32. */
int cpu_bf16dot_fits(const weight *w);

/* uint16s of scratch cpu_bf16dot_rows needs for w (any m). */
size_t cpu_bf16dot_scratch_elems(const weight *w);

/* y[i][n] for n in [n0, n1), i < m (any m >= 1): x has m rows of w->cols
 * floats, ldx apart; y m rows, ldy apart. */
void cpu_bf16dot_rows(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t n0,
                      int64_t n1, uint16_t *scratch);

#endif
