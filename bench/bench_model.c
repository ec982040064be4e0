/* bench/bench_model.c — model-level CPU throughput: prefill tokens/s for one
 * prompt, decode tokens/s at batch 1 and batch B (B sequences stepping
 * together), peak RSS, and the decode roofline (memory bandwidth / weight bytes
 * read per step). Prints one table row per measurement.
 * Usage: bench_model --model DIR [--threads N] [--prompt 512] [--decode 32]
 *                    [--batch 8] [--bandwidth-gbs GB/s]
 * Token ids are pseudo-random (fixed seed), so routing is realistic-ish. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cpu/backend_cpu.h"
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

static int forward(model *m, kv_cache *kv, int n, const int32_t *tok, const int32_t *pos, const int32_t *sq,
                   kv_seq **seqs, int n_seqs, const int32_t *rows, int n_rows, float *logits) {
    model_batch b = {n, tok, pos, sq, seqs, n_seqs, rows, n_rows};
    ms_err err = {{0}};
    if (model_forward(m, kv, &b, logits, &err) != 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        exit(1);
    }
    return 0;
}

/* Prefill `len` tokens into each of `n_seqs` sequences, one sequence per call. */
static double prefill(model *m, kv_cache *kv, kv_seq *seqs, int n_seqs, int len, float *logits) {
    int32_t *tok = malloc((size_t)len * 4), *pos = malloc((size_t)len * 4), *sq = calloc((size_t)len, 4);
    double t = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int i = 0; i < len; i++) tok[i] = random_id(m->cfg.vocab_size), pos[i] = i;
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

int main(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 2, prompt = 512, steps = 32, batch = 8;
    double bw = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--bandwidth-gbs")) bw = atof(argv[i + 1]);
    }
    if (!dir || batch < 1 || batch > 256 || prompt < 1 || steps < 1) {
        fprintf(stderr, "usage: bench_model --model DIR [--threads N] [--prompt N] [--decode N] [--batch B] "
                        "[--bandwidth-gbs X]\n");
        return 2;
    }
    ms_err err = {{0}};
    backend *be = backend_cpu_create(threads, &err);
    model *m = be ? model_load(dir, be, &err) : NULL;
    kv_cache kv;
    if (!m || model_kv_init(m, &kv, (prompt + steps + 64) * (batch + 1) + 64 * batch, &err) != 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return 1;
    }
    float *logits = malloc((size_t)batch * m->cfg.vocab_size * sizeof(float));
    kv_seq seqs[256];
    memset(seqs, 0, sizeof seqs);
    double active = model_active_weight_bytes(m);
    printf("| model | threads | measurement | tokens/s | roofline tok/s | %% of roofline |\n");
    printf("|---|---|---|---|---|---|\n");
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;

    decode(m, &kv, seqs, 1, 0, 2, logits); /* warm the page cache and the pools */
    release(&kv, seqs, 1);
    double tp = prefill(m, &kv, seqs, 1, prompt, logits);
    printf("| %s | %d | prefill %d tokens | %.1f | | |\n", name, threads, prompt, prompt / tp);
    fflush(stdout);
    double td = decode(m, &kv, seqs, 1, prompt, steps, logits);
    double roof = bw > 0 ? bw * 1e9 / active : 0;
    printf("| %s | %d | decode batch 1 (ctx %d) | %.2f | %.2f | %.0f%% |\n", name, threads, prompt, steps / td, roof,
           roof > 0 ? 100.0 * (steps / td) / roof : 0);
    fflush(stdout);
    release(&kv, seqs, 1);
    prefill(m, &kv, seqs, batch, 64, logits);
    double tb = decode(m, &kv, seqs, batch, 64, steps, logits);
    printf("| %s | %d | decode batch %d (ctx 64), aggregate | %.2f | | %.2fx batch 1 |\n", name, threads, batch,
           batch * steps / tb, (batch * steps / tb) / (steps / td));
    release(&kv, seqs, batch);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\nactive weight bytes per token: %.3f GB; peak RSS: %.2f GB\n", active / 1e9, ru.ru_maxrss / 1048576.0);
    free(logits);
    kv_cache_free(&kv);
    model_free(m);
    backend_cpu_free(be);
    return 0;
}
