/* bench/bench_model.c — model-level CPU throughput: prefill tokens/s for one
 * prompt, decode tokens/s at batch 1 and batch B (B sequences stepping
 * together), peak RSS, and the decode roofline (memory bandwidth / weight bytes
 * read per step).
 * Usage: bench_model --model DIR [--threads N] [--prompt 512] [--decode 32]
 *                    [--batch 8] [--bandwidth-gbs GB/s] [--repeat R]
 *                    [--phases prefill,decode1,decodeB,chunk] [--chunk 64]
 *                    [--attn auto|naive|absorb] [--batch-invariant] [--bf16-activations]
 *                    [--row] [--profile]
 * Phase "chunk" (not in the default set) times a prefill chunk of --chunk
 * tokens continuing a cached prefix of --prompt tokens (what chunked prefill
 * and prefix-cache hits run); --attn forces the attention form; --batch-invariant
 * runs the batch-invariant kernels (serve --batch-invariant, absorbed attention),
 * --bf16-activations the bf16 dot-product kernels (serve --bf16-activations).
 * Before timing, every byte of the checkpoint is read once (the page cache may
 * hold another model's pages; a first touch from disk is not what is measured).
 * Each phase is run R times (default 2) and the best is kept: the machine may be
 * shared. Default output is a small table; --row prints one row for the table of
 * scripts/bench-cpu.sh:
 *   | model | prefill tok/s | decode b1 tok/s | b1 roofline tok/s (%) | decode bB tok/s | bB/b1 | peak RSS GB |
 *   CPU share prefill / b1 / bB |
 * CPU share = CPU time used during the phase's best run / (its wall time ×
 * threads): below 100% the machine was busy with other work (or threads
 * waited) and the figures understate what the code does on an idle machine.
 * --profile prints to stderr the wall time per backend op (linear, mla_decode, ...)
 * and the time spent outside ops, per phase.
 * Token ids are pseudo-random (fixed seed), so routing is realistic-ish. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/threadpool.h"
#include "cpu/backend_cpu.h"
#include "cpu/cpu_ops.h"
#include "engine/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 12345;
static int32_t random_id(int vocab) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int32_t)((rng_state >> 33) % (uint64_t)(vocab < 100000 ? vocab : 100000));
}

static void forward(model *m, kv_cache *kv, int n, const int32_t *tok, const int32_t *pos, const int32_t *sq,
                    kv_seq **seqs, int n_seqs, const int32_t *rows, int n_rows, float *logits) {
    model_batch b = {n, tok, pos, sq, seqs, n_seqs, rows, n_rows};
    ms_err err = {{0}};
    if (model_forward(m, kv, &b, logits, &err) != 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        exit(1);
    }
}

/* Prefill `len` tokens at positions pos0.. into each of `n_seqs` sequences, one
 * sequence per call; returns seconds. */
static double prefill_at(model *m, kv_cache *kv, kv_seq *seqs, int n_seqs, int pos0, int len, float *logits) {
    int32_t *tok = malloc((size_t)len * 4), *pos = malloc((size_t)len * 4), *sq = calloc((size_t)len, 4);
    if (!tok || !pos || !sq) { fprintf(stderr, "bench_model: out of memory\n"); exit(1); }
    double t = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int i = 0; i < len; i++) tok[i] = random_id(m->cfg.vocab_size), pos[i] = pos0 + i;
        kv_seq *one[1] = {&seqs[s]};
        int32_t last = len - 1;
        double t0 = now_s();
        forward(m, kv, len, tok, pos, sq, one, 1, &last, 1, logits);
        t += now_s() - t0;
    }
    free(tok);
    free(pos);
    free(sq);
    return t;
}

static double prefill(model *m, kv_cache *kv, kv_seq *seqs, int n_seqs, int len, float *logits) {
    return prefill_at(m, kv, seqs, n_seqs, 0, len, logits);
}

/* `steps` decode steps of all n_seqs sequences together; returns seconds. */
static double decode(model *m, kv_cache *kv, kv_seq *seqs, int n_seqs, int start, int steps, float *logits) {
    int32_t tok[256], pos[256], sq[256], rows[256];
    kv_seq *ptrs[256];
    for (int s = 0; s < n_seqs; s++) ptrs[s] = &seqs[s], sq[s] = s, rows[s] = s;
    double t0 = now_s();
    for (int step = 0; step < steps; step++) {
        for (int s = 0; s < n_seqs; s++) tok[s] = random_id(m->cfg.vocab_size), pos[s] = start + step;
        forward(m, kv, n_seqs, tok, pos, sq, ptrs, n_seqs, rows, n_seqs, logits);
    }
    return now_s() - t0;
}

static void release(kv_cache *kv, kv_seq *seqs, int n) {
    for (int i = 0; i < n; i++) kv_seq_release(kv, &seqs[i]);
}

/* ---- --profile: wall time per backend op (a timing copy of the ops table) ---- */

enum { P_LINEAR, P_LINEAR_T, P_LINEAR_B, P_RMSNORM, P_SILU, P_AXPY, P_COPY, P_ROPE, P_ROUTER, P_KVW, P_MLA_D, P_MLA_P,
       P_OTHER, P_N };
static const char *prof_names[P_N] = {"linear", "linear_t", "linear_batch", "rmsnorm", "silu_mul", "axpy", "copy_2d",
                                      "rope",   "router",   "kv_write",     "mla_decode", "mla_prefill", "other"};
static double prof_s[P_N];
static long prof_calls[P_N];
static double prof_bytes[P_N]; /* weight bytes read by the linear ops */
static const backend_ops *prof_inner;
static backend_ops prof_ops;

#define PROF(slot, call)                  \
    do {                                  \
        double t0_ = now_s();             \
        call;                             \
        prof_s[slot] += now_s() - t0_;    \
        prof_calls[slot]++;               \
    } while (0)

static double weight_bytes(const weight *w) { return (double)w->rows * (double)w->cols * dtype_size(w->dtype); }

static void p_linear(backend *be, const weight *w, const float *x, float *y, int m) {
    PROF(P_LINEAR, prof_inner->linear(be, w, x, y, m));
    prof_bytes[P_LINEAR] += weight_bytes(w);
}
static void p_linear_t(backend *be, const weight *w, const float *x, float *y, int m) {
    PROF(P_LINEAR_T, prof_inner->linear_t(be, w, x, y, m));
    prof_bytes[P_LINEAR_T] += weight_bytes(w);
}

static void p_linear_b(backend *be, const linear_op *ops, int n) {
    PROF(P_LINEAR_B, prof_inner->linear_batch(be, ops, n));
    for (int i = 0; i < n; i++) prof_bytes[P_LINEAR_B] += weight_bytes(&ops[i].w);
}
static void p_rmsnorm(backend *be, const weight *g, const float *x, float *y, int m, int d, float eps) {
    PROF(P_RMSNORM, prof_inner->rmsnorm(be, g, x, y, m, d, eps));
}
static void p_silu(backend *be, const float *g, const float *u, float *y, int64_t n) {
    PROF(P_SILU, prof_inner->silu_mul(be, g, u, y, n));
}
static void p_axpy(backend *be, float a, const float *x, float *y, int64_t n) {
    PROF(P_AXPY, prof_inner->axpy(be, a, x, y, n));
}
static void p_copy(backend *be, float *d, int64_t ds, const float *s, int64_t ss, int64_t r, int64_t c) {
    PROF(P_COPY, prof_inner->copy_2d(be, d, ds, s, ss, r, c));
}
static void p_copy_rows(backend *be, float *d, const int32_t *di, const float *s, const int32_t *si, int n, int64_t w) {
    PROF(P_COPY, prof_inner->copy_rows(be, d, di, s, si, n, w));
}
static void p_axpy_rows(backend *be, float *y, const int32_t *yi, const float *x, const int32_t *xi, const float *a,
                        int n, int64_t d) {
    PROF(P_AXPY, prof_inner->axpy_rows(be, y, yi, x, xi, a, n, d));
}
static void p_rope(backend *be, const rope_params *rp, float *x, int nt, int nv, int64_t ts, int64_t vs,
                   const int32_t *pos) {
    PROF(P_ROPE, prof_inner->rope(be, rp, x, nt, nv, ts, vs, pos));
}
static void p_router(backend *be, const router_params *rp, const float *l, int n, int32_t *idx, float *w) {
    PROF(P_ROUTER, prof_inner->router(be, rp, l, n, idx, w));
}
static void p_kvw(backend *be, kv_cache *kv, const kv_seq *seq, int layer, int pos0, int n, const float *c, int kvr,
                  const float *kpe, int rd) {
    PROF(P_KVW, prof_inner->kv_write(be, kv, seq, layer, pos0, n, c, kvr, kpe, rd));
}
static void p_mla_d(backend *be, const kv_cache *kv, int layer, int n, const kv_seq *const *seqs,
                    const int32_t *ctx, int H, const float *ql, const float *qp, float sc, float *o) {
    PROF(P_MLA_D, prof_inner->mla_decode(be, kv, layer, n, seqs, ctx, H, ql, qp, sc, o));
}
static void p_mla_p(backend *be, int T, int pos0, int H, int nope, int rope, int vdim, const float *q,
                    const float *kvb, const float *kpe, float sc, float *o) {
    PROF(P_MLA_P, prof_inner->mla_prefill(be, T, pos0, H, nope, rope, vdim, q, kvb, kpe, sc, o));
}

static void profile_install(backend *be) {
    prof_inner = be->ops;
    prof_ops = *be->ops;
    prof_ops.linear = p_linear, prof_ops.linear_t = p_linear_t, prof_ops.rmsnorm = p_rmsnorm;
    prof_ops.silu_mul = p_silu, prof_ops.axpy = p_axpy, prof_ops.copy_2d = p_copy, prof_ops.rope = p_rope;
    prof_ops.router = p_router, prof_ops.kv_write = p_kvw, prof_ops.mla_decode = p_mla_d;
    prof_ops.mla_prefill = p_mla_p;
    prof_ops.copy_rows = p_copy_rows, prof_ops.axpy_rows = p_axpy_rows;
    if (prof_inner->linear_batch) prof_ops.linear_batch = p_linear_b;
    be->ops = &prof_ops;
}

static void profile_reset(void) {
    memset(prof_s, 0, sizeof prof_s), memset(prof_calls, 0, sizeof prof_calls), memset(prof_bytes, 0, sizeof prof_bytes);
}

static void profile_print(const char *what, double total_s, int steps) {
    double sum = 0;
    for (int i = 0; i < P_N; i++) sum += prof_s[i];
    fprintf(stderr, "profile %s: %.2f ms per step, ops %.2f ms, outside ops %.2f ms\n", what, 1e3 * total_s / steps,
            1e3 * sum / steps, 1e3 * (total_s - sum) / steps);
    for (int i = 0; i < P_N; i++) {
        if (!prof_calls[i]) continue;
        fprintf(stderr, "  %-12s %8.3f ms/step %7.1f calls/step %8.2f us/call", prof_names[i], 1e3 * prof_s[i] / steps,
                (double)prof_calls[i] / steps, 1e6 * prof_s[i] / prof_calls[i]);
        if (prof_bytes[i] > 0)
            fprintf(stderr, " %7.1f MB/step %6.1f GB/s (weights)", prof_bytes[i] / steps / 1e6,
                    prof_bytes[i] / prof_s[i] / 1e9);
        fputc('\n', stderr);
    }
}

/* CPU seconds (user + system) this process has used so far. */
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* Reads every mapped byte of the checkpoint once; returns seconds. */
static double touch_weights(const model *m, int threads) {
    threadpool *pool = threadpool_create(threads);
    double t0 = now_s(), sink = 0;
    for (int f = 0; f < m->st->n_files; f++)
        sink += cpu_mem_read(pool, m->st->files[f].map, m->st->files[f].size & ~(size_t)63);
    threadpool_free(pool);
    if (sink == 12345.678) fprintf(stderr, " ");
    return now_s() - t0;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *phases = "prefill,decode1,decodeB";
    int threads = 2, prompt = 512, steps = 32, batch = 8, repeat = 2, row = 0, profile = 0, chunk = 64, inv = 0, bf16 = 0;
    const char *attn = "auto";
    double bw = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--row")) { row = 1; continue; }
        if (!strcmp(argv[i], "--profile")) { profile = 1; continue; }
        if (!strcmp(argv[i], "--batch-invariant")) { inv = 1; continue; }
        if (!strcmp(argv[i], "--bf16-activations")) { bf16 = 1; continue; }
        if (i + 1 >= argc) { dir = NULL; break; }
        if (!strcmp(argv[i], "--model")) dir = argv[++i];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt")) prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode")) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bandwidth-gbs")) bw = atof(argv[++i]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--phases")) phases = argv[++i];
        else if (!strcmp(argv[i], "--chunk")) chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--attn")) attn = argv[++i];
        else { dir = NULL; break; }
    }
    const int attn_ok = !strcmp(attn, "auto") || !strcmp(attn, "naive") || !strcmp(attn, "absorb");
    if (!dir || batch < 1 || batch > 256 || prompt < 1 || steps < 1 || repeat < 1 || chunk < 1 || !attn_ok) {
        fprintf(stderr, "usage: bench_model --model DIR [--threads N] [--prompt N] [--decode N] [--batch B] "
                        "[--chunk C] [--attn auto|naive|absorb] [--batch-invariant] [--bf16-activations] [--bandwidth-gbs X] "
                        "[--repeat R] "
                        "[--phases prefill,decode1,decodeB,chunk] [--row] [--profile]\n");
        return 2;
    }
    const int do_prefill = strstr(phases, "prefill") != NULL, do_d1 = strstr(phases, "decode1") != NULL,
              do_db = strstr(phases, "decodeB") != NULL, do_chunk = strstr(phases, "chunk") != NULL;
    ms_err err = {{0}};
    backend *be = backend_cpu_create(threads, &err);
    model *m = be ? model_load(dir, be, &err) : NULL;
    kv_cache kv;
    if (!m || model_kv_init(m, &kv, (prompt + steps + 64) * (batch + 1) + 64 * batch, &err) != 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return 1;
    }
    m->attn = !strcmp(attn, "naive") ? ATTN_NAIVE : !strcmp(attn, "absorb") ? ATTN_ABSORB : ATTN_AUTO;
    if ((inv && model_set_batch_invariant(m, 1, &err) != 0) || (bf16 && model_set_bf16_activations(m, 1, &err) != 0)) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return 1;
    }
    float *logits = malloc((size_t)batch * m->cfg.vocab_size * sizeof(float));
    kv_seq seqs[256];
    memset(seqs, 0, sizeof seqs);
    const double active = model_active_weight_bytes(m);
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    double t_touch = touch_weights(m, threads);
    if (!row) fprintf(stderr, "bench_model: %s: read the checkpoint once in %.1f s\n", name, t_touch);

    if (profile) profile_install(be);
    decode(m, &kv, seqs, 1, 0, 2, logits); /* warm the pools and scratch */
    release(&kv, seqs, 1);
    /* best tokens/s per phase and the CPU share of that run */
    double pf = 0, d1 = 0, db = 0, ch = 0, pf_sh = 0, d1_sh = 0, db_sh = 0;
    double c0;
    for (int r = 0; r < repeat; r++) {
        if (do_prefill || do_d1) {
            profile_reset();
            c0 = cpu_s();
            double tp = prefill(m, &kv, seqs, 1, prompt, logits);
            if (profile) profile_print("prefill", tp, 1);
            if (prompt / tp > pf) pf = prompt / tp, pf_sh = (cpu_s() - c0) / (tp * threads);
            if (do_d1) {
                profile_reset();
                c0 = cpu_s();
                double td = decode(m, &kv, seqs, 1, prompt, steps, logits);
                if (profile) profile_print("decode batch 1", td, steps);
                if (steps / td > d1) d1 = steps / td, d1_sh = (cpu_s() - c0) / (td * threads);
            }
            release(&kv, seqs, 1);
        }
        if (do_db) {
            prefill(m, &kv, seqs, batch, 64, logits);
            profile_reset();
            c0 = cpu_s();
            double tb = decode(m, &kv, seqs, batch, 64, steps, logits);
            if (profile) profile_print("decode batch B", tb, steps);
            if (batch * steps / tb > db) db = batch * steps / tb, db_sh = (cpu_s() - c0) / (tb * threads);
            release(&kv, seqs, batch);
        }
        if (do_chunk) { /* a chunk continuing a cached prefix of `prompt` tokens */
            prefill(m, &kv, seqs, 1, prompt, logits);
            profile_reset();
            double tc = prefill_at(m, &kv, seqs, 1, prompt, chunk, logits);
            if (profile) profile_print("chunk after a cached prefix", tc, 1);
            if (chunk / tc > ch) ch = chunk / tc;
            release(&kv, seqs, 1);
        }
    }
    const double roof = bw > 0 ? bw * 1e9 / active : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double rss_gb = ru.ru_maxrss / 1048576.0;
    if (row) {
        printf("| %s | %.1f | %.2f | %.2f (%.0f%%) | %.2f | %.2fx | %.2f | %.0f / %.0f / %.0f %% |\n", name, pf, d1,
               roof, roof > 0 ? 100.0 * d1 / roof : 0, db, d1 > 0 ? db / d1 : 0, rss_gb, 100 * pf_sh, 100 * d1_sh,
               100 * db_sh);
    } else {
        printf("| model | threads | measurement | tokens/s | roofline tok/s | %% of roofline |\n");
        printf("|---|---|---|---|---|---|\n");
        if (do_prefill)
            printf("| %s | %d | prefill %d tokens (CPU share %.0f%%) | %.1f | | |\n", name, threads, prompt, 100 * pf_sh,
                   pf);
        if (do_d1)
            printf("| %s | %d | decode batch 1 (ctx %d, CPU share %.0f%%) | %.2f | %.2f | %.0f%% |\n", name, threads,
                   prompt, 100 * d1_sh, d1, roof, roof > 0 ? 100.0 * d1 / roof : 0);
        if (do_db)
            printf("| %s | %d | decode batch %d (ctx 64, CPU share %.0f%%), aggregate | %.2f | | %.2fx batch 1 |\n", name,
                   threads, batch, 100 * db_sh, db, d1 > 0 ? db / d1 : 0);
        if (do_chunk)
            printf("| %s | %d | prefill chunk of %d after %d cached (attn %s) | %.1f | | |\n", name, threads, chunk,
                   prompt, attn, ch);
        printf("\nactive weight bytes per token: %.3f GB; peak RSS: %.2f GB (mapped weights count)\n", active / 1e9,
               rss_gb);
    }
    free(logits);
    kv_cache_free(&kv);
    model_free(m);
    backend_cpu_free(be);
    return 0;
}
