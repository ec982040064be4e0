/* cpu/cpu_kernels_f8half_avx2.c — the AVX2 variant again (table
 * cpu_kernels_avx2_f8half), its decode kernels loading FP8 through half
 * floats so that no subnormal float reaches an FMA (cpu/cpu_kernels.inc,
 * F8_HALF_LOAD). Everything else is the same code as cpu_kernels_avx2. */
#define F8_HALF_LOAD 1
#include "cpu/cpu_kernels_avx2.c"
