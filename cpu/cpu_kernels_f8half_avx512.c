/* cpu/cpu_kernels_f8half_avx512.c — the AVX-512 variant again (table
 * cpu_kernels_avx512_f8half), its decode kernels loading FP8 through half
 * floats so that no subnormal float reaches an FMA (cpu/cpu_kernels.inc,
 * F8_HALF_LOAD). Everything else is the same code as cpu_kernels_avx512. */
#define F8_HALF_LOAD 1
#include "cpu/cpu_kernels_avx512.c"
