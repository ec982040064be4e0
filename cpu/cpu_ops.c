/* cpu/cpu_ops.c — see cpu_ops.h: the plain-C references, the choice of SIMD
 * variant (cpu/cpu_kernels.h), and the split of each op over the thread pool.
 *
 * Work is split over the output (rows of y's columns for cpu_linear, columns for
 * cpu_linear_t, rows for the elementwise ops) into tasks that the pool's
 * threads claim; FP8 linear tasks are aligned to the weight's physical 128-row
 * blocks when they are that large. For the tiled kernels the caller's thread
 * packs x once into its scratch, read by all threads. Scratch is per thread,
 * allocated on first use and kept (freed when the thread exits); allocation
 * failure there aborts, since these ops have no error path.
 * State: the chosen variant and the scratch key, both set once (pthread_once). */
#include "cpu/cpu_ops.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_amx.h"
#include "cpu/cpu_bf16dot.h"
#include "cpu/cpu_kernels.h"

/* ---- variant choice ------------------------------------------------------- */

static const cpu_kernels *kernels_chosen;
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;

static void kernels_choose(void) {
    __builtin_cpu_init();
    int level = 0; /* 0 scalar, 1 avx2, 2 avx512 */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        level = 1;
    if (level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        level = 2;
    const char *cap = getenv("MLASERVE_CPU_SIMD");
    if (cap && strcmp(cap, "scalar") == 0) level = 0;
    if (cap && strcmp(cap, "avx2") == 0 && level > 1) level = 1;
    /* FP8 through half floats on Intel, where a subnormal float input costs an
     * FMA a microcode assist (cpu_kernels.inc, F8_HALF_LOAD) */
    const char *f8 = getenv("MLASERVE_CPU_F8_LOAD");
    int half = __builtin_cpu_is("intel");
    if (f8 && strcmp(f8, "half") == 0) half = 1;
    if (f8 && strcmp(f8, "bits") == 0) half = 0;
    if (level == 2) kernels_chosen = half ? &cpu_kernels_avx512_f8half : &cpu_kernels_avx512;
    else if (level == 1) kernels_chosen = half ? &cpu_kernels_avx2_f8half : &cpu_kernels_avx2;
    else kernels_chosen = NULL;
}

const cpu_kernels *cpu_kernels_get(void) {
    pthread_once(&kernels_once, kernels_choose);
    return kernels_chosen;
}

const char *cpu_f8_load(void) {
    const cpu_kernels *k = cpu_kernels_get();
    return !k ? "table" : k->f8_half_load ? "half" : "bits";
}

const char *cpu_simd_level(void) {
    const cpu_kernels *k = cpu_kernels_get();
    return k ? k->name : "scalar";
}

/* ---- per-thread scratch ---------------------------------------------------- */

enum { SCRATCH_TILE, SCRATCH_VEC, SCRATCH_X, SCRATCH_BATCH, SCRATCH_BATCH_X, SCRATCH_BF16, SCRATCH_SLOTS };

typedef struct {
    float *buf[SCRATCH_SLOTS];
    size_t cap[SCRATCH_SLOTS]; /* floats */
} scratch_set;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_set_free(void *p) {
    scratch_set *s = p;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(s->buf[i]);
    free(s);
}

static void scratch_key_init(void) {
    if (pthread_key_create(&scratch_key, scratch_set_free) != 0) abort();
}

/* A 64-byte aligned buffer of at least n floats owned by the calling thread. */
static float *thread_scratch(int slot, size_t n) {
    pthread_once(&scratch_once, scratch_key_init);
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) abort();
    }
    if (s->cap[slot] < n) {
        void *p = NULL;
        if (posix_memalign(&p, 64, n * sizeof(float)) != 0) abort();
        free(s->buf[slot]);
        s->buf[slot] = p;
        s->cap[slot] = n;
    }
    return s->buf[slot];
}

/* ---- splitting work ------------------------------------------------------- */

/* Below this many multiply-adds, waking the pool costs more than it saves. */
#define PARALLEL_MIN_MACS (1 << 16)

/* A chunk size (power of two in [min_chunk, 128]) giving each thread several tasks. */
static int64_t pick_chunk(int64_t n, int threads, int64_t min_chunk) {
    int64_t c = 128;
    while (c > min_chunk && n / c < 8 * threads) c /= 2;
    return c;
}

/* AMX (cpu/cpu_amx.h) takes every non-transposed product it fits from this
 * many rows of x up, in place of the tiled AVX kernel (~1.7x its speed at
 * m = 512 on a Xeon with AMX). Fewer rows stream faster through the AVX decode
 * kernel: the tile path reads W as 128-byte pieces of 32 rows at a time and
 * decodes FP8 into a buffer first, ~9.6 GB/s from DRAM at any m <= 4 on two
 * cores against the decode kernel's 21 GB/s at m = 1 and 8.7 at m = 8
 * (bench_cpu_ops, session 6). */
#define AMX_MIN_M (CPU_DECODE_MAX_M + 1)
/* BF16 tiles load straight from the weights (no decoding), so from 4 rows up
 * the tiles win on most shapes: bench-7b-bf16 batch-8 decode +10% over
 * AMX_MIN_M (2 and 3 rows: slower). */
#define AMX_MIN_M_BF16 4

/* Rows of x up to which a product streams W through the decode kernel
 * instead of the tiled GEMM, whose packing of W only pays off for many rows.
 * One thread, bench-7b shapes (session 7, AVX-512 Zen 5): streaming BF16 runs
 * ~125 GFLOP/s at any m (tiles: 23 at m = 9, 89 at m = 64); FP8 streaming
 * ~110 against tiles 42 at m = 9 and level at m = 48; transposed FP8 (which
 * converts W once per 4 rows of x) is level with its tiles at m = 12. The
 * AVX2 variant's BF16 tiles overtake streaming from ~48 rows (Zen 3): each
 * variant says how far its 16-bit weights stream (stream_max_m_16). */
static int stream_max_m(const cpu_kernels *k, const weight *w, int transposed) {
    if (w->dtype == DTYPE_F8_E4M3) return transposed ? 12 : 40;
    if (k && !transposed && (w->dtype == DTYPE_BF16 || w->dtype == DTYPE_F16)) return k->stream_max_m_16;
    return CPU_STREAM_MAX_M;
}

static int use_amx(const cpu_kernels *k, const weight *w, int m) {
    const int min_m = w->dtype == DTYPE_BF16 ? AMX_MIN_M_BF16 : AMX_MIN_M;
    return k && m >= min_m && cpu_amx_fits(w, m) && cpu_amx_usable();
}

typedef struct {
    const cpu_kernels *k;
    const weight *w;
    const float *x;   /* packed (cpu_pack_x) for the tile modes */
    const uint16_t *xp; /* packed (cpu_amx_pack_x) for LINEAR_AMX */
    int parts;          /* of xp: CPU_AMX_PARTS_FP32, or _BF16 with CPU_BF16_ACT */
    float *y;
    int m;
    int64_t n_out;    /* outputs being split */
    int64_t chunk;    /* task t covers [t*chunk - shift, (t+1)*chunk - shift) ∩ [0, n_out) */
    int64_t shift;
    int mode;         /* LINEAR_* */
    int inv;          /* batch-invariant kernels (LINEAR_ROWS, LINEAR_T_ROWS) */
} linear_job;

enum { LINEAR_ROWS, LINEAR_TILE, LINEAR_AMX, LINEAR_BF16, LINEAR_T_ROWS, LINEAR_T_TILE, LINEAR_REF, LINEAR_T_REF };

/* With CPU_BF16_ACT, the non-transposed products cpu_bf16dot computes go
 * there, except those AMX takes (from 9 rows of x, 4 with BF16 weights, where
 * the CPU has it), which multiply x rounded to bf16 too (one part:
 * cpu_amx.h) — the mode's precision contract, with the rounding of x·s vs x
 * and the order of the sums differing; everything else as without the flag.
 * With CPU_INVARIANT the bf16 kernel takes every m: one kernel whose order is
 * the same for every row count. (A single row against BF16 weights streams
 * faster on the fp32 kernels, ~15% at batch-1 decode of a BF16 checkpoint,
 * but taking them would make a request's logits depend on its batch by bf16
 * rounding, not only by the order of the sums.) */
static int use_bf16dot(const cpu_kernels *k, const weight *w, int m, int flags) {
    return (flags & CPU_BF16_ACT) && cpu_bf16dot_fits(w) && cpu_bf16dot_usable() &&
           ((flags & CPU_INVARIANT) || !use_amx(k, w, m));
}

static uint16_t *bf16dot_scratch(const weight *w) {
    return (uint16_t *)thread_scratch(SCRATCH_BF16, cpu_bf16dot_scratch_elems(w) / 2 + 1);
}

static void linear_ref_range(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t n0,
                             int64_t n1);
static void linear_t_ref_range(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t c0,
                               int64_t c1);

static void linear_task(void *ctx, int task, int thread) {
    (void)thread;
    const linear_job *j = ctx;
    int64_t o0 = (int64_t)task * j->chunk - j->shift, o1 = o0 + j->chunk;
    if (o0 < 0) o0 = 0;
    if (o1 > j->n_out) o1 = j->n_out;
    if (o0 >= o1) return;
    switch (j->mode) {
    case LINEAR_ROWS:
        if (j->inv)
            j->k->linear_rows_inv(j->w, j->x, j->w->cols, j->y, j->w->rows, j->m, o0, o1,
                                  thread_scratch(SCRATCH_TILE, (size_t)CPU_INV_BUF_ROWS * (size_t)j->w->cols));
        else
            j->k->linear_rows(j->w, j->x, j->w->cols, j->y, j->w->rows, j->m, o0, o1);
        break;
    case LINEAR_TILE:
        j->k->linear_tile(j->w, j->x, j->y, j->m, o0, o1, thread_scratch(SCRATCH_TILE, j->k->scratch_floats));
        break;
    case LINEAR_AMX:
        cpu_amx_linear(j->w, j->xp, j->m, j->parts, j->y, j->w->rows, o0, o1,
                       thread_scratch(SCRATCH_TILE, cpu_amx_scratch_floats(j->m, j->parts)));
        break;
    case LINEAR_BF16: cpu_bf16dot_rows(j->w, j->x, j->w->cols, j->y, j->w->rows, j->m, o0, o1, bf16dot_scratch(j->w)); break;
    case LINEAR_T_ROWS:
        (j->inv ? j->k->linear_t_rows_inv : j->k->linear_t_rows)(j->w, j->x, j->w->rows, j->y, j->w->cols, j->m, o0, o1,
                            thread_scratch(SCRATCH_TILE, (size_t)j->m * (size_t)j->w->rows));
        break;
    case LINEAR_T_TILE:
        j->k->linear_t_tile(j->w, j->x, j->y, j->m, o0, o1,
                            thread_scratch(SCRATCH_TILE, j->k->scratch_floats));
        break;
    case LINEAR_REF: linear_ref_range(j->w, j->x, j->w->cols, j->y, j->w->rows, j->m, o0, o1); break;
    default: linear_t_ref_range(j->w, j->x, j->w->rows, j->y, j->w->cols, j->m, o0, o1); break;
    }
}

static void linear_run(threadpool *pool, linear_job *j, int64_t min_chunk, int align_fp8_rows) {
    const int threads = threadpool_size(pool);
    j->chunk = pick_chunk(j->n_out, threads, min_chunk);
    j->shift = align_fp8_rows && j->w->dtype == DTYPE_F8_E4M3 ? j->w->row0 % j->chunk : 0;
    const int64_t tasks = (j->n_out + j->shift + j->chunk - 1) / j->chunk;
    const int64_t macs = (int64_t)j->m * j->w->rows * j->w->cols;
    threadpool_run(macs < PARALLEL_MIN_MACS ? NULL : pool, (int)tasks, linear_task, j);
}

/* ---- linear ----------------------------------------------------------------- */

void cpu_pack_x(const float *x, int m, int64_t k, int mr, float *xp) {
    for (int b = 0; b * mr < m; b++) {
        float *blk = xp + (size_t)b * (size_t)k * (size_t)mr;
        const int rows = m - b * mr < mr ? m - b * mr : mr;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)(b * mr + r) * (size_t)k;
            for (int64_t c = 0; c < k; c++) blk[c * mr + r] = xr[c];
        }
    }
}

/* x packed into the calling thread's scratch (read by every thread of the run). */
static const float *pack_x_scratch(const cpu_kernels *k, const float *x, int m, int64_t cols) {
    float *xp = thread_scratch(SCRATCH_X, cpu_pack_x_floats(m, cols, k->mr));
    cpu_pack_x(x, m, cols, k->mr, xp);
    return xp;
}

/* x packed for AMX into the calling thread's scratch (read by every thread of the run). */
static const uint16_t *amx_pack_scratch(const float *x, int64_t ldx, int m, int64_t cols, int parts) {
    uint16_t *xp = (uint16_t *)thread_scratch(SCRATCH_X, cpu_amx_xp_elems(m, cols, parts) / 2 + 1);
    cpu_amx_pack_x(x, ldx, m, cols, parts, xp);
    return xp;
}

static int amx_parts(int flags) { return flags & CPU_BF16_ACT ? CPU_AMX_PARTS_BF16 : CPU_AMX_PARTS_FP32; }

static void linear_impl(threadpool *pool, const weight *w, const float *x, float *y, int m, int flags) {
    const int inv = flags & CPU_INVARIANT;
    if (m <= 0 || w->rows <= 0) return;
    if (w->cols <= 0) { memset(y, 0, (size_t)m * (size_t)w->rows * sizeof *y); return; }
    const cpu_kernels *k = cpu_kernels_get();
    linear_job j = {.k = k, .w = w, .x = x, .y = y, .m = m, .n_out = w->rows, .inv = inv};
    j.mode = !k                                     ? LINEAR_REF
             : use_bf16dot(k, w, m, flags)          ? LINEAR_BF16
             : inv                                  ? LINEAR_ROWS
             : use_amx(k, w, m)                     ? LINEAR_AMX
             : m <= stream_max_m(k, w, 0)           ? LINEAR_ROWS
                                                    : LINEAR_TILE;
    if (j.mode == LINEAR_TILE) j.x = pack_x_scratch(k, x, m, w->cols);
    j.parts = amx_parts(flags);
    if (j.mode == LINEAR_AMX) j.xp = amx_pack_scratch(x, w->cols, m, w->cols, j.parts);
    linear_run(pool, &j, j.mode == LINEAR_ROWS || j.mode == LINEAR_BF16 ? 16 : 32, 1);
}

static void linear_t_impl(threadpool *pool, const weight *w, const float *x, float *y, int m, int flags) {
    const int inv = flags & CPU_INVARIANT;
    if (m <= 0 || w->cols <= 0) return;
    if (w->rows <= 0) { memset(y, 0, (size_t)m * (size_t)w->cols * sizeof *y); return; }
    const cpu_kernels *k = cpu_kernels_get();
    linear_job j = {.k = k, .w = w, .x = x, .y = y, .m = m, .n_out = w->cols, .inv = inv};
    /* small m: stream W once (packing it would cost more than the product) */
    j.mode = !k ? LINEAR_T_REF : inv || m <= stream_max_m(k, w, 1) ? LINEAR_T_ROWS : LINEAR_T_TILE;
    if (j.mode == LINEAR_T_TILE) j.x = pack_x_scratch(k, x, m, w->rows);
    linear_run(pool, &j, 32, 0);
}

void cpu_linear(threadpool *pool, const weight *w, const float *x, float *y, int m) { linear_impl(pool, w, x, y, m, 0); }
void cpu_linear_invariant(threadpool *pool, const weight *w, const float *x, float *y, int m) {
    linear_impl(pool, w, x, y, m, CPU_INVARIANT);
}
void cpu_linear_flags(threadpool *pool, const weight *w, const float *x, float *y, int m, int flags) {
    linear_impl(pool, w, x, y, m, flags);
}
void cpu_linear_t(threadpool *pool, const weight *w, const float *x, float *y, int m) {
    linear_t_impl(pool, w, x, y, m, 0);
}
void cpu_linear_t_invariant(threadpool *pool, const weight *w, const float *x, float *y, int m) {
    linear_t_impl(pool, w, x, y, m, CPU_INVARIANT);
}
void cpu_linear_t_flags(threadpool *pool, const weight *w, const float *x, float *y, int m, int flags) {
    linear_t_impl(pool, w, x, y, m, flags);
}

/* ---- linear_batch ----------------------------------------------------------- */

/* Products of a batch that stream their weights (stream_max_m) share
 * one pool run: task t belongs to the product whose range of task numbers
 * holds it (first[i] <= t < first[i + 1]). */
typedef struct {
    const cpu_kernels *k;
    const linear_op *ops;
    int64_t first[CPU_BATCH_MAX + 1]; /* first task of each product */
    int64_t chunk[CPU_BATCH_MAX], shift[CPU_BATCH_MAX];
    const uint16_t *xp[CPU_BATCH_MAX]; /* x packed for AMX, or NULL */
    int inv;                           /* batch-invariant kernels */
    int flags;                         /* CPU_INVARIANT | CPU_BF16_ACT */
} batch_job;

static void batch_task(void *ctx, int task, int thread) {
    (void)thread;
    const batch_job *b = ctx;
    int i = 0;
    while (b->first[i + 1] <= task) i++;
    const linear_op *op = &b->ops[i];
    const int64_t n_out = op->transposed ? op->w.cols : op->w.rows;
    int64_t o0 = (task - b->first[i]) * b->chunk[i] - b->shift[i], o1 = o0 + b->chunk[i];
    if (o0 < 0) o0 = 0;
    if (o1 > n_out) o1 = n_out;
    if (o0 >= o1) return;
    if (b->xp[i])
        cpu_amx_linear(&op->w, b->xp[i], op->m, amx_parts(b->flags), op->y, op->ldy, o0, o1,
                       thread_scratch(SCRATCH_TILE, cpu_amx_scratch_floats(op->m, amx_parts(b->flags))));
    else if (!op->transposed && use_bf16dot(b->k, &op->w, op->m, b->flags))
        cpu_bf16dot_rows(&op->w, op->x, op->ldx, op->y, op->ldy, op->m, o0, o1, bf16dot_scratch(&op->w));
    else if (op->transposed)
        (b->inv ? b->k->linear_t_rows_inv : b->k->linear_t_rows)(&op->w, op->x, op->ldx, op->y, op->ldy, op->m, o0, o1,
                            thread_scratch(SCRATCH_TILE, (size_t)op->m * (size_t)op->w.rows));
    else if (b->inv)
        b->k->linear_rows_inv(&op->w, op->x, op->ldx, op->y, op->ldy, op->m, o0, o1,
                              thread_scratch(SCRATCH_TILE, (size_t)CPU_INV_BUF_ROWS * (size_t)op->w.cols));
    else
        b->k->linear_rows(&op->w, op->x, op->ldx, op->y, op->ldy, op->m, o0, o1);
}

/* One product with strided rows through the contiguous entry points: x gathered
 * into, and y scattered from, the caller's scratch. */
static void linear_op_alone(threadpool *pool, const linear_op *op, int flags) {
    const int64_t in = op->transposed ? op->w.rows : op->w.cols, out = op->transposed ? op->w.cols : op->w.rows;
    const float *x = op->x;
    float *y = op->y;
    float *buf = NULL;
    if (op->ldx != in || op->ldy != out) {
        buf = thread_scratch(SCRATCH_BATCH, (size_t)op->m * (size_t)(in + out));
        for (int i = 0; i < op->m; i++) memcpy(buf + (size_t)i * in, op->x + (size_t)i * op->ldx, (size_t)in * sizeof *x);
        x = buf;
        y = buf + (size_t)op->m * in;
    }
    if (op->transposed) linear_t_impl(pool, &op->w, x, y, op->m, flags);
    else linear_impl(pool, &op->w, x, y, op->m, flags);
    if (buf)
        for (int i = 0; i < op->m; i++) memcpy(op->y + (size_t)i * op->ldy, y + (size_t)i * out, (size_t)out * sizeof *y);
}

static int streams(const cpu_kernels *k, const linear_op *op, int flags) {
    const int fast = (flags & CPU_INVARIANT) || op->m <= stream_max_m(k, &op->w, op->transposed) ||
                     (!op->transposed && use_bf16dot(k, &op->w, op->m, flags));
    return k && fast && op->w.rows > 0 && op->w.cols > 0;
}

/* x of the batch's AMX products packed one after another into the calling
 * thread's scratch; xp[i] = NULL for the others. */
static void batch_pack_amx(const cpu_kernels *k, const linear_op *ops, int n, int flags, const uint16_t **xp) {
    const int inv = flags & CPU_INVARIANT;
    size_t elems[CPU_BATCH_MAX], total = 0;
    for (int i = 0; i < n; i++) {
        const linear_op *op = &ops[i];
        const int amx = !inv && !op->transposed && op->w.rows > 0 && use_amx(k, &op->w, op->m);
        elems[i] = amx ? cpu_amx_xp_elems(op->m, op->w.cols, amx_parts(flags)) : 0;
        total += elems[i];
    }
    uint16_t *buf = total ? (uint16_t *)thread_scratch(SCRATCH_BATCH_X, total / 2 + 1) : NULL;
    for (int i = 0; i < n; i++) {
        xp[i] = elems[i] ? buf : NULL;
        if (!elems[i]) continue;
        cpu_amx_pack_x(ops[i].x, ops[i].ldx, ops[i].m, ops[i].w.cols, amx_parts(flags), buf);
        buf += elems[i];
    }
}

/* Up to CPU_BATCH_MAX products at a time. */
static void linear_batch_part(threadpool *pool, const cpu_kernels *k, const linear_op *ops, int n, int flags) {
    batch_job b = {.k = k, .ops = ops, .inv = flags & CPU_INVARIANT, .flags = flags};
    const int threads = threadpool_size(pool);
    int64_t total_out = 0, macs = 0;
    batch_pack_amx(k, ops, n, flags, b.xp);
    for (int i = 0; i < n; i++)
        if (b.xp[i] || streams(k, &ops[i], flags)) total_out += ops[i].transposed ? ops[i].w.cols : ops[i].w.rows;
    for (int i = 0; i < n; i++) {
        const linear_op *op = &ops[i];
        b.first[i + 1] = b.first[i];
        b.chunk[i] = 1;
        b.shift[i] = 0;
        if (!b.xp[i] && !streams(k, op, flags)) continue;
        const int64_t n_out = op->transposed ? op->w.cols : op->w.rows;
        /* the whole batch gives the threads their several tasks each */
        int64_t c = 128;
        const int64_t min_chunk = op->transposed || b.xp[i] ? 32 : 16;
        while (c > min_chunk && total_out / c < 8 * threads) c /= 2;
        b.chunk[i] = c;
        b.shift[i] = !op->transposed && op->w.dtype == DTYPE_F8_E4M3 ? op->w.row0 % c : 0;
        b.first[i + 1] += (n_out + b.shift[i] + c - 1) / c;
        macs += (int64_t)op->m * op->w.rows * op->w.cols;
    }
    threadpool_run(macs < PARALLEL_MIN_MACS ? NULL : pool, (int)b.first[n], batch_task, &b);
    for (int i = 0; i < n; i++)
        if (!b.xp[i] && !streams(k, &ops[i], flags) && ops[i].m > 0) linear_op_alone(pool, &ops[i], flags);
}

static void linear_batch_impl(threadpool *pool, const linear_op *ops, int n, int flags) {
    const cpu_kernels *k = cpu_kernels_get();
    for (int i0 = 0; i0 < n; i0 += CPU_BATCH_MAX)
        linear_batch_part(pool, k, ops + i0, n - i0 < CPU_BATCH_MAX ? n - i0 : CPU_BATCH_MAX, flags);
}

void cpu_linear_batch(threadpool *pool, const linear_op *ops, int n) { linear_batch_impl(pool, ops, n, 0); }
void cpu_linear_batch_invariant(threadpool *pool, const linear_op *ops, int n) {
    linear_batch_impl(pool, ops, n, CPU_INVARIANT);
}
void cpu_linear_batch_flags(threadpool *pool, const linear_op *ops, int n, int flags) {
    linear_batch_impl(pool, ops, n, flags);
}

/* References: every element through weight_get, sums in double; rows of x
 * ldx apart, rows of y ldy apart. */
static void linear_ref_range(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t n0,
                             int64_t n1) {
    for (int i = 0; i < m; i++)
        for (int64_t n = n0; n < n1; n++) {
            double acc = 0.0;
            for (int64_t k = 0; k < w->cols; k++) acc += (double)x[(size_t)i * ldx + k] * weight_get(w, n, k);
            y[(size_t)i * ldy + n] = (float)acc;
        }
}

void cpu_linear_ref(const weight *w, const float *x, float *y, int m) {
    linear_ref_range(w, x, w->cols, y, w->rows, m, 0, w->rows);
}

static void linear_t_ref_range(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int64_t c0,
                               int64_t c1) {
    for (int i = 0; i < m; i++)
        for (int64_t c = c0; c < c1; c++) {
            double acc = 0.0;
            for (int64_t n = 0; n < w->rows; n++) acc += (double)x[(size_t)i * ldx + n] * weight_get(w, n, c);
            y[(size_t)i * ldy + c] = (float)acc;
        }
}

void cpu_linear_t_ref(const weight *w, const float *x, float *y, int m) {
    linear_t_ref_range(w, x, w->rows, y, w->cols, m, 0, w->cols);
}

void cpu_linear_batch_ref(const linear_op *ops, int n) {
    for (int b = 0; b < n; b++) {
        const linear_op *op = &ops[b];
        if (op->transposed) linear_t_ref_range(&op->w, op->x, op->ldx, op->y, op->ldy, op->m, 0, op->w.cols);
        else linear_ref_range(&op->w, op->x, op->ldx, op->y, op->ldy, op->m, 0, op->w.rows);
    }
}

/* ---- rmsnorm ------------------------------------------------------------------ */

typedef struct {
    const cpu_kernels *k;
    const float *g, *x;
    float *y;
    int m, d, rows_per_task;
    float eps;
} rmsnorm_job;

static void rmsnorm_task(void *ctx, int task, int thread) {
    (void)thread;
    const rmsnorm_job *j = ctx;
    for (int i = task * j->rows_per_task; i < j->m && i < (task + 1) * j->rows_per_task; i++) {
        const float *xi = j->x + (size_t)i * j->d;
        float ss = j->k->sum_squares(xi, j->d);
        float s = 1.0f / sqrtf(ss / (float)j->d + j->eps);
        j->k->scale_mul(xi, s, j->g, j->y + (size_t)i * j->d, j->d);
    }
}

void cpu_rmsnorm(threadpool *pool, const weight *g, const float *x, float *y, int m, int d, float eps) {
    const cpu_kernels *k = cpu_kernels_get();
    if (!k) { cpu_rmsnorm_ref(g, x, y, m, d, eps); return; }
    if (m <= 0 || d <= 0) return;
    const float *gf;
    if (g->dtype == DTYPE_F32) {
        gf = (const float *)g->data + (size_t)(g->row0 * g->cols);
    } else {
        float *buf = thread_scratch(SCRATCH_VEC, (size_t)d);
        k->decode_row(g, 0, 0, d, buf);
        gf = buf;
    }
    rmsnorm_job j = {.k = k, .g = gf, .x = x, .y = y, .m = m, .d = d, .eps = eps};
    j.rows_per_task = 16384 / d > 1 ? 16384 / d : 1;
    const int tasks = (m + j.rows_per_task - 1) / j.rows_per_task;
    threadpool_run(tasks > 1 ? pool : NULL, tasks, rmsnorm_task, &j);
}

void cpu_rmsnorm_ref(const weight *g, const float *x, float *y, int m, int d, float eps) {
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * d;
        double ss = 0.0;
        for (int c = 0; c < d; c++) ss += (double)xi[c] * xi[c];
        double s = 1.0 / sqrt(ss / d + eps);
        for (int c = 0; c < d; c++) y[(size_t)i * d + c] = (float)(xi[c] * s * weight_get(g, 0, c));
    }
}

/* ---- silu_mul ------------------------------------------------------------------ */

#define ELEMS_PER_TASK 16384

typedef struct {
    const cpu_kernels *k;
    const float *gate, *up;
    float *y;
    int64_t n;
} silu_job;

static void silu_task(void *ctx, int task, int thread) {
    (void)thread;
    const silu_job *j = ctx;
    int64_t i0 = (int64_t)task * ELEMS_PER_TASK, i1 = i0 + ELEMS_PER_TASK;
    if (i1 > j->n) i1 = j->n;
    j->k->silu_mul(j->gate + i0, j->up + i0, j->y + i0, i1 - i0);
}

void cpu_silu_mul(threadpool *pool, const float *gate, const float *up, float *y, int64_t n) {
    const cpu_kernels *k = cpu_kernels_get();
    if (!k) { cpu_silu_mul_ref(gate, up, y, n); return; }
    if (n <= 0) return;
    silu_job j = {.k = k, .gate = gate, .up = up, .y = y, .n = n};
    const int tasks = (int)((n + ELEMS_PER_TASK - 1) / ELEMS_PER_TASK);
    threadpool_run(tasks > 1 ? pool : NULL, tasks, silu_task, &j);
}

void cpu_silu_mul_ref(const float *gate, const float *up, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        y[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

/* ---- memory read probe -------------------------------------------------------------- */

#define READ_TASK_FLOATS (1 << 18) /* 1 MiB */

typedef struct {
    const cpu_kernels *k;
    const float *buf;
    int64_t n;
    double partial[64];
} read_job;

static void read_task(void *ctx, int task, int thread) {
    read_job *j = ctx;
    int64_t i0 = (int64_t)task * READ_TASK_FLOATS, i1 = i0 + READ_TASK_FLOATS;
    if (i1 > j->n) i1 = j->n;
    float s = 0.0f;
    if (j->k) s = j->k->read_sum(j->buf + i0, i1 - i0);
    else
        for (int64_t i = i0; i < i1; i++) s += j->buf[i];
    j->partial[thread % 64] += s; /* one slot per thread: no race */
}

double cpu_mem_read(threadpool *pool, const void *buf, size_t bytes) {
    read_job j = {.k = cpu_kernels_get(), .buf = buf, .n = (int64_t)(bytes / sizeof(float))};
    const int tasks = (int)((j.n + READ_TASK_FLOATS - 1) / READ_TASK_FLOATS);
    threadpool_run(pool, tasks, read_task, &j);
    double sum = 0.0;
    for (int i = 0; i < 64; i++) sum += j.partial[i];
    return sum;
}

/* ---- embedding ------------------------------------------------------------------ */

typedef struct {
    const cpu_kernels *k;
    const weight *table;
    const int32_t *ids;
    float *y;
    int n, rows_per_task;
} embed_job;

static void embed_row(const cpu_kernels *k, const weight *t, int32_t id, float *out) {
    if (id < 0 || id >= t->rows) {
        fprintf(stderr, "cpu_embedding: token id %d outside [0, %lld)\n", id, (long long)t->rows);
        abort(); /* the engine validates ids before they get here */
    }
    if (k) {
        k->decode_row(t, id, 0, t->cols, out);
        return;
    }
    for (int64_t c = 0; c < t->cols; c++) out[c] = weight_get(t, id, c);
}

static void embed_task(void *ctx, int task, int thread) {
    (void)thread;
    const embed_job *j = ctx;
    for (int i = task * j->rows_per_task; i < j->n && i < (task + 1) * j->rows_per_task; i++)
        embed_row(j->k, j->table, j->ids[i], j->y + (size_t)i * (size_t)j->table->cols);
}

void cpu_embedding(threadpool *pool, const weight *table, const int32_t *ids, int n, float *y) {
    if (n <= 0 || table->cols <= 0) return;
    embed_job j = {.k = cpu_kernels_get(), .table = table, .ids = ids, .y = y, .n = n};
    j.rows_per_task = (int)(ELEMS_PER_TASK / table->cols > 1 ? ELEMS_PER_TASK / table->cols : 1);
    const int tasks = (n + j.rows_per_task - 1) / j.rows_per_task;
    threadpool_run(tasks > 1 ? pool : NULL, tasks, embed_task, &j);
}

void cpu_embedding_ref(const weight *table, const int32_t *ids, int n, float *y) {
    for (int i = 0; i < n; i++) embed_row(NULL, table, ids[i], y + (size_t)i * (size_t)table->cols);
}
