/* cpu/cpu_amx.c — see cpu_amx.h. The kernels carry their own target attribute
 * (AVX-512 + AMX), so the file builds with the common flags and nothing in it
 * runs on a CPU without AMX unless cpu_amx_usable() said yes.
 *
 * x is packed as "virtual rows": row P·i + p is part p of row i of x (P =
 * `parts`: 3 for fp32 products, 1 for bf16 activations), so the parts of a few
 * rows of x share one B tile (batch-1 decode uses 3 of its 16 columns, batch 5
 * uses 15) and each output sums its P columns at the end.
 * Tiles (palette 1, all 16 rows x 64 bytes): C00 C01 C10 C11 = 0..3 (fp32
 * 16x16: 16 outputs n by 16 virtual rows), A0 A1 = 4, 5 (16 rows of W by 32 k,
 * bf16), B0 B1 = 6, 7 (32 k by 16 virtual rows in pairs).
 * Outputs go 32 at a time (two A tiles); for each 128-column block of W the
 * two A tiles of each of its four 32-column steps are made (FP8 converted,
 * BF16 read in place when all 16 rows exist), and every pair of x tiles runs
 * through them: 4 steps into C, then C x block scale into fp32 sums in
 * scratch. Virtual rows go chunk_rows() at a time (whole rows of x) so their
 * packed parts stay in L2. */
#include "cpu/cpu_amx.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_AMX_BUILD 1
#endif

#define TILE_M 16    /* virtual rows (parts of rows of x) per tile */
#define GROUP_N 32   /* outputs per group (two A tiles) */
#define KSTEP 32     /* columns of W per A tile */
#define KBLOCK 128   /* columns per scale block */
#define XP_L2_BYTES (1 << 20)
#define ABUF_ELEMS (2 * 4 * 16 * 32) /* A tiles of one block: 2 tiles x 4 steps of 16x32 bf16 */

/* virtual rows of m rows of x, padded to whole tiles */
static int vpad(int m, int parts) { return (parts * m + TILE_M - 1) / TILE_M * TILE_M; }

size_t cpu_amx_xp_elems(int m, int64_t k, int parts) { return (size_t)vpad(m, parts) * (size_t)k; }

/* virtual rows per chunk: a multiple of the unit (whole rows of x and whole
 * tile pairs: 96 virtual rows for 3 parts) whose packed x fits XP_L2_BYTES */
static int chunk_rows(int64_t k, int parts) {
    const int unit = 2 * TILE_M * parts;
    int64_t r = XP_L2_BYTES / (k * 2) / unit * unit;
    return r < unit ? unit : (int)r;
}

/* Scratch, in floats: two A buffers of ABUF_ELEMS bf16 (= ABUF_ELEMS floats),
 * C staging (4 tiles of 256 floats), sums [32][virtual rows of a chunk <= all]. */
#define ABUF_FLOATS ABUF_ELEMS
#define CST_FLOATS (4 * 256)
size_t cpu_amx_scratch_floats(int m, int parts) {
    return ABUF_FLOATS + CST_FLOATS + (size_t)GROUP_N * (size_t)vpad(m, parts);
}

int cpu_amx_fits(const weight *w, int m) {
    if (m < 1 || w->cols <= 0 || w->cols % KSTEP != 0) return 0;
    return w->dtype == DTYPE_BF16 || w->dtype == DTYPE_F8_E4M3;
}

#ifdef HAVE_AMX_BUILD

#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void) {
    const char *env = getenv("MLASERVE_CPU_AMX");
    if (env && strcmp(env, "0") == 0) return;
    const char *simd = getenv("MLASERVE_CPU_SIMD");
    if (simd && (strcmp(simd, "scalar") == 0 || strcmp(simd, "avx2") == 0)) return;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    const int tile = (d >> 24) & 1, bf16 = (d >> 22) & 1, avx512 = (b >> 16) & 1 && (b >> 30) & 1;
    if (!tile || !bf16 || !avx512 || !__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    amx_ok = 1;
}

int cpu_amx_usable(void) {
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) tile_config;

static __thread int tiles_configured;

AMX_TARGET static void tiles_configure(void) {
    if (tiles_configured) return;
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) { c.colsb[t] = 64; c.rows[t] = 16; }
    _tile_loadconfig(&c);
    tiles_configured = 1;
}

/* ---- packing x ----------------------------------------------------------- */

AMX_TARGET static inline __m512 bf16_widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Layout: tile t of 16 virtual rows, row pair r = k/2 of W's columns: 16
 * virtual rows by 2 values, xp[(t·k/2 + r)·32 + 2·(v % 16) + k % 2] for
 * virtual row v = parts·i + p in tile v / 16. Padding rows are zero. */
AMX_TARGET void cpu_amx_pack_x(const float *x, int64_t ldx, int m, int64_t k, int parts, uint16_t *xp) {
    const int64_t pairs = k / 2;
    for (int v = parts * m; v < vpad(m, parts); v++) {
        uint32_t *dst = (uint32_t *)(xp + (size_t)(v / TILE_M) * pairs * 32) + v % TILE_M;
        for (int64_t r = 0; r < pairs; r++) dst[r * 16] = 0;
    }
    for (int i = 0; i < m; i++) {
        uint32_t *dst[CPU_AMX_PARTS_FP32];
        for (int p = 0; p < parts; p++) {
            const int v = parts * i + p;
            dst[p] = (uint32_t *)(xp + (size_t)(v / TILE_M) * pairs * 32) + v % TILE_M;
        }
        const float *xr = x + (size_t)i * ldx;
        for (int64_t c = 0; c < k; c += 16) {
            __m512 rest = _mm512_loadu_ps(xr + c);
            __m256i part[CPU_AMX_PARTS_FP32];
            for (int p = 0; p < parts; p++) {
                part[p] = (__m256i)_mm512_cvtneps_pbh(rest);
                rest = _mm512_sub_ps(rest, bf16_widen(part[p]));
            }
            for (int p = 0; p < parts; p++) {
                uint32_t v[8];
                _mm256_storeu_si256((__m256i *)v, part[p]);
                for (int q = 0; q < 8; q++) dst[p][(c / 2 + q) * 16] = v[q];
            }
        }
    }
}

/* ---- the weights' side ------------------------------------------------------ */

/* 32 e4m3 codes → 32 bf16 of the same value (exact; NaN codes read as ±480 like
 * the AVX kernels). The code sign-extended to 16 bits, shifted left by 4 and
 * masked is s 0000 eeee mmm 0000: normal codes then need their exponent
 * rebiased by 120; codes with exponent 0 (zero and the subnormals m·2^-9) come
 * from a table by m, and get their sign back with the rest. */
AMX_TARGET static inline __m512i e4m3x32_to_bf16(const uint8_t *p) {
    const __m512i sx = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
    const __m512i sub_table = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                               0, 0, 0x3C60, 0x3C40, 0x3C20, 0x3C00, 0x3BC0, 0x3B80, 0x3B00, 0);
    __m512i v = _mm512_and_si512(_mm512_slli_epi16(sx, 4), _mm512_set1_epi16((short)0x87F0));
    v = _mm512_add_epi16(v, _mm512_set1_epi16(0x3C00));
    const __mmask32 exp0 = _mm512_testn_epi16_mask(sx, _mm512_set1_epi16(0x78));
    v = _mm512_mask_permutexvar_epi16(v, exp0, sx, sub_table); /* index: the low 5 bits, 00mmm */
    return _mm512_ternarylogic_epi32(v, sx, _mm512_set1_epi16((short)0x8000), 0xF8); /* v | (sx & sign) */
}

/* BF16 row r of W (logical), as uint16s. */
static inline const uint16_t *bf16_row(const weight *w, int64_t r) {
    return (const uint16_t *)w->data + (size_t)(w->row0 + r) * (size_t)w->cols;
}
static inline const uint8_t *f8_row(const weight *w, int64_t r) {
    return (const uint8_t *)w->data + (size_t)(w->row0 + r) * (size_t)w->cols;
}

typedef struct {
    const uint16_t *a[2][4]; /* A tile of n-tile i, step s */
    int64_t stride[2];       /* bytes between its rows */
    float scale[2];
    int start[2], rows[2];   /* outputs of tile i: [start, start + rows) of the group */
    int nt, steps;
} a_tiles;

/* The group of outputs from n (at most `avail`): two tiles of up to 16 rows,
 * neither crossing a 128-row FP8 scale block (so each has one scale). */
static void group_split(const weight *w, int64_t n, int64_t avail, a_tiles *t) {
    int64_t phys = w->row0 + n, left = avail;
    t->nt = 0;
    for (int i = 0; i < 2 && left > 0; i++) {
        int64_t c = left < 16 ? left : 16;
        if (w->dtype == DTYPE_F8_E4M3 && 128 - phys % 128 < c) c = 128 - phys % 128;
        t->start[i] = (int)(avail - left);
        t->rows[i] = (int)c;
        t->nt++;
        left -= c;
        phys += c;
    }
}

/* The A tiles of the group at n (group_split done), columns [kb, kb + 32·steps). */
AMX_TARGET static void a_tiles_make(const weight *w, int64_t n, int64_t kb, int steps, uint16_t *abuf,
                                    a_tiles *t) {
    t->steps = steps;
    const int f8 = w->dtype == DTYPE_F8_E4M3;
    for (int i = 0; i < t->nt; i++) {
        const int r0 = t->start[i], nr = t->rows[i];
        t->scale[i] = f8 ? w->scale[((w->row0 + n + r0) / 128) * weight_scale_cols(w) + kb / 128] : 1.0f;
        if (!f8 && nr == 16) { /* in place */
            for (int s = 0; s < steps; s++) t->a[i][s] = bf16_row(w, n + r0) + kb + s * KSTEP;
            t->stride[i] = w->cols * 2;
            continue;
        }
        t->stride[i] = 64;
        for (int s = 0; s < steps; s++) {
            uint16_t *dst = abuf + (size_t)(i * 4 + s) * 16 * 32;
            t->a[i][s] = dst;
            for (int r = 0; r < 16; r++) {
                __m512i v = _mm512_setzero_si512();
                if (r < nr) {
                    const int64_t c = kb + s * KSTEP;
                    v = f8 ? e4m3x32_to_bf16(f8_row(w, n + r0 + r) + c)
                           : _mm512_loadu_si512((const void *)(bf16_row(w, n + r0 + r) + c));
                }
                _mm512_store_si512((void *)(dst + r * 32), v);
            }
        }
    }
}

/* Rows [n, n + rows) of W, columns [kb, kb + 128), into L2: the weights are
 * many short row streams, which the hardware prefetchers do not follow.
 * Always inlined: gcc 12 takes a function that only prefetches for one
 * without side effects and drops the calls. */
static inline __attribute__((always_inline)) void prefetch_block(const weight *w, int64_t n, int64_t rows, int64_t kb) {
    if (kb >= w->cols) return;
    if (n + rows > w->rows) rows = w->rows - n;
    const int esz = w->dtype == DTYPE_F8_E4M3 ? 1 : 2;
    const int64_t bytes = (w->cols - kb < KBLOCK ? w->cols - kb : KBLOCK) * esz;
    for (int64_t r = 0; r < rows; r++) {
        const char *p = (const char *)w->data + ((size_t)(w->row0 + n + r) * (size_t)w->cols + (size_t)kb) * esz;
        for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 1);
    }
}

/* ---- the product ------------------------------------------------------------- */

/* One step s of x tile pair (B tiles from b0, b1 = packed x at this step):
 * C0j += A0·Bj, C1j += A1·Bj. NT, MT are literal 1 or 2 (tile numbers must be
 * constants). */
#define STEP_BODY(NT, MT)                                                              \
    do {                                                                               \
        _tile_loadd(4, t->a[0][s], t->stride[0]);                                      \
        if (NT == 2) _tile_loadd(5, t->a[1][s], t->stride[1]);                         \
        _tile_loadd(6, b0 + (size_t)s * 16 * 32, 64);                                  \
        _tile_dpbf16ps(0, 4, 6);                                                       \
        if (NT == 2) _tile_dpbf16ps(2, 5, 6);                                          \
        if (MT == 2) {                                                                 \
            _tile_loadd(7, b1 + (size_t)s * 16 * 32, 64);                              \
            _tile_dpbf16ps(1, 4, 7);                                                   \
            if (NT == 2) _tile_dpbf16ps(3, 5, 7);                                      \
        }                                                                              \
    } while (0)

#define BLOCK_FN(NAME, NT, MT)                                                                    \
    AMX_TARGET static void NAME(const a_tiles *t, const uint16_t *b0, const uint16_t *b1, float *cst) { \
        _tile_zero(0);                                                                            \
        if (MT == 2) _tile_zero(1);                                                               \
        if (NT == 2) _tile_zero(2);                                                               \
        if (NT == 2 && MT == 2) _tile_zero(3);                                                    \
        for (int s = 0; s < t->steps; s++) STEP_BODY(NT, MT);                                     \
        _tile_stored(0, cst, 64);                                                                 \
        if (MT == 2) _tile_stored(1, cst + 256, 64);                                              \
        if (NT == 2) _tile_stored(2, cst + 512, 64);                                              \
        if (NT == 2 && MT == 2) _tile_stored(3, cst + 768, 64);                                   \
    }
BLOCK_FN(block_11, 1, 1)
BLOCK_FN(block_12, 1, 2)
BLOCK_FN(block_21, 2, 1)
BLOCK_FN(block_22, 2, 2)

/* sums[(start_i + r)·ldsum + 16j + c] += scale_i · C_ij[r][c] */
AMX_TARGET static void scale_add(const a_tiles *t, int mt, const float *cst, float *sums, int64_t ldsum) {
    for (int i = 0; i < t->nt; i++) {
        const __m512 s = _mm512_set1_ps(t->scale[i]);
        for (int j = 0; j < mt; j++) {
            const float *c = cst + (i * 2 + j) * 256;
            for (int r = 0; r < t->rows[i]; r++) {
                float *d = sums + (size_t)(t->start[i] + r) * ldsum + 16 * j;
                _mm512_storeu_ps(d, _mm512_fmadd_ps(_mm512_load_ps(c + r * 16), s, _mm512_loadu_ps(d)));
            }
        }
    }
}

static int block_steps(int64_t K, int64_t kb) { return (int)((K - kb < KBLOCK ? K - kb : KBLOCK) / KSTEP); }

/* The group at n (at most `avail` outputs) for x tiles [t0, t1): sums
 * [32][16·(t1-t0)]; returns the group's number of outputs. */
AMX_TARGET static int group(const weight *w, const uint16_t *xp, int64_t n, int64_t avail, int first, int t0,
                            int t1, float *sums, uint16_t *abuf, float *cst) {
    const int64_t K = w->cols, pairs = K / 2;
    const int f8 = w->dtype == DTYPE_F8_E4M3;
    const int64_t ldsum = (int64_t)(t1 - t0) * 16;
    memset(sums, 0, (size_t)GROUP_N * (size_t)ldsum * sizeof *sums);
    a_tiles tiles[2];
    group_split(w, n, avail, &tiles[0]);
    tiles[1] = tiles[0];
    const int rows = tiles[0].start[tiles[0].nt - 1] + tiles[0].rows[tiles[0].nt - 1];
    /* A tiles are made one block ahead, into the other half of abuf: tile loads
     * of just-stored data stall */
    a_tiles_make(w, n, 0, block_steps(K, 0), abuf, &tiles[0]);
    for (int64_t kb = 0, cur = 0; kb < K; kb += KBLOCK, cur ^= 1) {
        /* FP8: the next group, one block at a time; the first group of a call,
         * two blocks ahead (BF16 tiles load in place and run slower with it) */
        if (f8) {
            prefetch_block(w, n + rows, GROUP_N, kb);
            if (first) prefetch_block(w, n, rows, kb + 2 * KBLOCK);
        }
        if (kb + KBLOCK < K)
            a_tiles_make(w, n, kb + KBLOCK, block_steps(K, kb + KBLOCK), abuf + (1 - cur) * ABUF_ELEMS,
                         &tiles[1 - cur]);
        const a_tiles t = tiles[cur];
        for (int tt = t0; tt < t1; tt += 2) {
            const int mt = t1 - tt >= 2 ? 2 : 1;
            const uint16_t *b0 = xp + (size_t)tt * pairs * 32 + (size_t)(kb / 2) * 32;
            const uint16_t *b1 = b0 + pairs * 32;
            if (t.nt == 2) {
                if (mt == 2) block_22(&t, b0, b1, cst);
                else block_21(&t, b0, b1, cst);
            } else {
                if (mt == 2) block_12(&t, b0, b1, cst);
                else block_11(&t, b0, b1, cst);
            }
            scale_add(&t, mt, cst, sums + (tt - t0) * 16, ldsum);
        }
    }
    return rows;
}

AMX_TARGET void cpu_amx_linear(const weight *w, const uint16_t *xp, int m, int parts, float *y, int64_t ldy,
                               int64_t n0, int64_t n1, float *scratch) {
    tiles_configure();
    uint16_t *abuf = (uint16_t *)scratch;
    float *cst = scratch + ABUF_FLOATS;
    float *sums = cst + CST_FLOATS;
    const int tiles = vpad(m, parts) / TILE_M, chunk = chunk_rows(w->cols, parts) / TILE_M;
    for (int t0 = 0; t0 < tiles; t0 += chunk) {
        const int t1 = t0 + chunk < tiles ? t0 + chunk : tiles;
        const int64_t ldsum = (int64_t)(t1 - t0) * 16;
        const int i0 = t0 * TILE_M / parts, i1 = m < t1 * TILE_M / parts ? m : t1 * TILE_M / parts;
        for (int64_t n = n0, rows; n < n1; n += rows) {
            rows = group(w, xp, n, n1 - n < GROUP_N ? n1 - n : GROUP_N, n == n0, t0, t1, sums, abuf, cst);
            for (int i = i0; i < i1; i++) /* row i of x: its `parts` virtual rows */
                for (int r = 0; r < rows; r++) {
                    const float *sv = sums + (size_t)r * ldsum + (size_t)(parts * i - t0 * TILE_M);
                    y[(size_t)i * ldy + n + r] = parts == 1 ? sv[0] : sv[0] + sv[1] + sv[2];
                }
        }
    }
}

#else /* not x86-64: never usable */

int cpu_amx_usable(void) { return 0; }
void cpu_amx_pack_x(const float *x, int64_t ldx, int m, int64_t k, int parts, uint16_t *xp) { abort(); }
void cpu_amx_linear(const weight *w, const uint16_t *xp, int m, int parts, float *y, int64_t ldy, int64_t n0,
                    int64_t n1, float *scratch) {
    abort();
}

#endif
