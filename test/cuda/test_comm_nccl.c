/* test/cuda/test_comm_nccl.c — the NCCL comm (cuda/comm_nccl.h) on real GPUs.
 * A 1-rank world: all_to_all_v to itself (data and zero bytes), all_reduce_sum,
 * all_gather, barrier, comm_nccl_all_to_all_fixed, the recv_cap overflow error
 * and abort. With >= 2 devices, a W-rank world (W = devices, at most 8), one
 * host thread per device each calling ncclCommInitRank: the same checks, with
 * uneven and zero all_to_all_v counts, and the overflow error reaching every rank.
 * Both worlds also pass host buffers (staged by the comm) and check
 * comm_nccl_set_producer: a collective waits for the data a producer stream is
 * still copying in.
 * References: hand-computed bytes (each byte encodes sender, receiver, round
 * and index, as test/unit/test_comm_cpu.c does), sums of small integers (exact
 * in float in any order), and for non-integer sums the rank-order float sum
 * within 1e-5 plus every rank holding the same bits (checked by gathering them).
 * Plain C (no Criterion, jansson or libmicrohttpd) so it runs as is on a GPU
 * machine. Without a device: one SKIP line, exit 0. Prints one line per check
 * and rank, then "N passed, N failed"; exit 1 on any failure; a watchdog ends a
 * hung collective (exit by SIGALRM). */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda/comm_nccl.h"

#define MAX_RANKS 8
#define ROUNDS 4
#define REDUCE_N 1000
#define FIXED_BYTES 256
#define WATCHDOG_S 300

static pthread_mutex_t print_mu = PTHREAD_MUTEX_INITIALIZER;
static int n_passed, n_failed;

static void check(int ok, int rank, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&print_mu);
    printf("  rank %d  %-64s %s\n", rank, what, ok ? "ok" : "FAIL");
    if (ok) n_passed++; else n_failed++;
    pthread_mutex_unlock(&print_mu);
}

/* Bytes `from` sends `to` in a round: each pair sends nothing in exactly one of the rounds. */
static size_t len_between(int from, int to, int round) {
    if ((from * 7 + to * 3 + round) % ROUNDS == 0) return 0;
    return (size_t)((from * 5 + to * 3 + round * 11) % 7 + 1) * 97;
}
static unsigned char byte_of(int from, int to, int round, size_t i) {
    return (unsigned char)((from * 31 + to * 17 + round * 7 + i) % 251);
}

static void *dev_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        printf("test_comm_nccl: cudaMalloc(%zu) failed\n", bytes);
        exit(1);
    }
    return p;
}
static void to_dev(void *d, const void *h, size_t n) {
    if (n && cudaMemcpy(d, h, n, cudaMemcpyHostToDevice) != cudaSuccess) { printf("test_comm_nccl: upload failed\n"); exit(1); }
}
static void to_host(void *h, const void *d, size_t n) {
    if (n && cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost) != cudaSuccess) { printf("test_comm_nccl: download failed\n"); exit(1); }
}

/* ---- the checks every rank runs ---------------------------------------------------- */

static void check_all_to_all_v(comm *c) {
    int r = c->rank, w = c->size;
    size_t cap = (size_t)w * 7 * 97 + 64;
    unsigned char *h_send = malloc(cap), *h_recv = malloc(cap);
    void *d_send = dev_alloc(cap), *d_recv = dev_alloc(cap);
    for (int round = 0; round < ROUNDS; round++) {
        size_t send_bytes[MAX_RANKS], recv_bytes[MAX_RANKS], at = 0;
        for (int p = 0; p < w; p++) {
            send_bytes[p] = len_between(r, p, round);
            for (size_t i = 0; i < send_bytes[p]; i++) h_send[at++] = byte_of(r, p, round, i);
        }
        to_dev(d_send, h_send, at);
        cudaMemset(d_recv, 0xEE, cap); /* poison: bytes past the total must stay 0xEE */
        ms_err err = {{0}};
        int rc = c->ops->all_to_all_v(c, d_send, send_bytes, d_recv, cap, recv_bytes, &err);
        check(rc == 0, r, "all_to_all_v round %d returns 0 %s", round, rc ? err.msg : "");
        if (rc) break;
        to_host(h_recv, d_recv, cap);
        size_t bad = 0, total = 0, counts_bad = 0;
        for (int p = 0; p < w; p++) {
            counts_bad += recv_bytes[p] != len_between(p, r, round);
            for (size_t i = 0; i < recv_bytes[p]; i++) bad += h_recv[total + i] != byte_of(p, r, round, i);
            total += recv_bytes[p];
        }
        for (size_t i = total; i < cap; i++) bad += h_recv[i] != 0xEE;
        check(counts_bad == 0 && bad == 0, r, "all_to_all_v round %d: %zu bytes in, %zu counts / %zu bytes differ", round,
              total, counts_bad, bad);
    }
    cudaFree(d_send);
    cudaFree(d_recv);
    free(h_send);
    free(h_recv);
}

static void check_reduce_gather_barrier(comm *c) {
    int r = c->rank, w = c->size;
    float h[REDUCE_N], back[REDUCE_N], *all = malloc((size_t)w * sizeof back);
    float *d = dev_alloc(sizeof h), *d_all = dev_alloc((size_t)w * sizeof back);
    ms_err err = {{0}};
    /* small integers: exact in any summation order */
    for (int i = 0; i < REDUCE_N; i++) h[i] = (float)((r + 1) * (i % 17));
    to_dev(d, h, sizeof h);
    int rc = c->ops->all_reduce_sum(c, d, REDUCE_N, &err);
    to_host(back, d, sizeof back);
    int bad = 0;
    for (int i = 0; i < REDUCE_N; i++) bad += back[i] != (float)((i % 17) * w * (w + 1) / 2);
    check(rc == 0 && bad == 0, r, "all_reduce_sum of integers: %d of %d differ %s", bad, REDUCE_N, rc ? err.msg : "");
    /* non-integers: near the rank-order sum, and the same bits on every rank */
    for (int i = 0; i < REDUCE_N; i++) h[i] = 0.1f * (float)(r + 1) + (float)i * 1e-3f;
    to_dev(d, h, sizeof h);
    rc = c->ops->all_reduce_sum(c, d, REDUCE_N, &err);
    to_host(back, d, sizeof back);
    bad = 0;
    for (int i = 0; i < REDUCE_N; i++) {
        float want = 0.0f;
        for (int q = 0; q < w; q++) want += 0.1f * (float)(q + 1) + (float)i * 1e-3f;
        float diff = back[i] - want;
        bad += !(diff <= 1e-5f * want && -diff <= 1e-5f * want);
    }
    check(rc == 0 && bad == 0, r, "all_reduce_sum of non-integers: %d of %d off by > 1e-5", bad, REDUCE_N);
    rc = rc ? rc : c->ops->all_gather(c, d, sizeof back, d_all, &err);
    to_host(all, d_all, (size_t)w * sizeof back);
    bad = 0;
    for (int q = 0; q < w; q++) bad += memcmp(all + (size_t)q * REDUCE_N, back, sizeof back) != 0;
    check(rc == 0 && bad == 0, r, "all_gather: %d ranks hold other bits of the sum %s", bad, rc ? err.msg : "");
    rc = c->ops->barrier(c, &err);
    check(rc == 0, r, "barrier %s", rc ? err.msg : "");
    cudaFree(d);
    cudaFree(d_all);
    free(all);
}

static void check_fixed(comm *c) {
    int r = c->rank, w = c->size;
    size_t bytes = (size_t)w * FIXED_BYTES;
    unsigned char *h = malloc(bytes);
    void *d_send = dev_alloc(bytes), *d_recv = dev_alloc(bytes);
    for (int p = 0; p < w; p++)
        for (size_t i = 0; i < FIXED_BYTES; i++) h[(size_t)p * FIXED_BYTES + i] = byte_of(r, p, 9, i);
    to_dev(d_send, h, bytes);
    cudaStream_t s;
    cudaStreamCreate(&s);
    ms_err err = {{0}};
    int rc = comm_nccl_all_to_all_fixed(c, d_send, d_recv, FIXED_BYTES, s, &err);
    if (rc == 0 && cudaStreamSynchronize(s) != cudaSuccess) rc = -1;
    to_host(h, d_recv, bytes);
    size_t bad = 0;
    for (int p = 0; p < w; p++)
        for (size_t i = 0; i < FIXED_BYTES; i++) bad += h[(size_t)p * FIXED_BYTES + i] != byte_of(p, r, 9, i);
    check(rc == 0 && bad == 0, r, "all_to_all_fixed: %zu bytes differ %s", bad, rc ? err.msg : "");
    cudaStreamDestroy(s);
    cudaFree(d_send);
    cudaFree(d_recv);
    free(h);
}

/* Host memory in and out (the comm stages it): all_to_all_v, all_reduce_sum, all_gather. */
static void check_host_buffers(comm *c) {
    int r = c->rank, w = c->size;
    size_t cap = (size_t)w * 7 * 97, send_bytes[MAX_RANKS], recv_bytes[MAX_RANKS], at = 0;
    unsigned char *h_send = malloc(cap), *h_recv = malloc(cap);
    for (int p = 0; p < w; p++) {
        send_bytes[p] = len_between(r, p, 1);
        for (size_t i = 0; i < send_bytes[p]; i++) h_send[at++] = byte_of(r, p, 1, i);
    }
    ms_err err = {{0}};
    int rc = c->ops->all_to_all_v(c, h_send, send_bytes, h_recv, cap, recv_bytes, &err);
    size_t bad = 0, total = 0;
    for (int p = 0; rc == 0 && p < w; p++) {
        bad += recv_bytes[p] != len_between(p, r, 1);
        for (size_t i = 0; i < recv_bytes[p] && !bad; i++) bad += h_recv[total + i] != byte_of(p, r, 1, i);
        total += recv_bytes[p];
    }
    check(rc == 0 && bad == 0, r, "all_to_all_v host buffers: %zu bytes in, %zu differ %s", total, bad, rc ? err.msg : "");
    float v[3] = {1.0f, (float)r, 2.0f};
    rc = c->ops->all_reduce_sum(c, v, 3, &err);
    check(rc == 0 && v[0] == (float)w && v[1] == (float)(w * (w - 1) / 2) && v[2] == 2.0f * w, r,
          "all_reduce_sum host buffer: {%g, %g, %g} %s", v[0], v[1], v[2], rc ? err.msg : "");
    int32_t mine = 100 + r, all[MAX_RANKS];
    rc = c->ops->all_gather(c, &mine, sizeof mine, all, &err);
    int wrong = 0;
    for (int q = 0; rc == 0 && q < w; q++) wrong += all[q] != 100 + q;
    check(rc == 0 && !wrong, r, "all_gather host buffers: %d of %d wrong %s", wrong, w, rc ? err.msg : "");
    free(h_send);
    free(h_recv);
}

static void CUDART_CB sleep_200ms(void *arg) {
    (void)arg;
    usleep(200000);
}

/* A producer stream still copying the send buffer in (behind a 200 ms host
 * function) when the collective is called: the comm must wait for it. */
static void check_producer(comm *c) {
    int r = c->rank, w = c->size;
    size_t bytes = (size_t)w * 64, send_bytes[MAX_RANKS], recv_bytes[MAX_RANKS];
    unsigned char *pinned = NULL, *h = malloc(bytes);
    cudaMallocHost((void **)&pinned, bytes);
    void *d_send = dev_alloc(bytes), *d_recv = dev_alloc(bytes);
    cudaMemset(d_send, 0, bytes);
    cudaDeviceSynchronize();
    for (int p = 0; p < w; p++) {
        send_bytes[p] = 64;
        for (size_t i = 0; i < 64; i++) pinned[(size_t)p * 64 + i] = byte_of(r, p, 5, i);
    }
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    ms_err err = {{0}};
    int rc = comm_nccl_set_producer(c, s, &err);
    cudaLaunchHostFunc(s, sleep_200ms, NULL);
    cudaMemcpyAsync(d_send, pinned, bytes, cudaMemcpyHostToDevice, s);
    if (rc == 0) rc = c->ops->all_to_all_v(c, d_send, send_bytes, d_recv, bytes, recv_bytes, &err);
    to_host(h, d_recv, bytes);
    size_t bad = 0;
    for (int p = 0; p < w; p++)
        for (size_t i = 0; i < 64; i++) bad += h[(size_t)p * 64 + i] != byte_of(p, r, 5, i);
    check(rc == 0 && bad == 0, r, "a collective waits for its producer stream: %zu bytes differ %s", bad, rc ? err.msg : "");
    comm_nccl_set_producer(c, NULL, &err);
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
    cudaFree(d_send);
    cudaFree(d_recv);
    cudaFreeHost(pinned);
    free(h);
}

/* Rank 0's cap is too small: every rank's call fails, and the world stays failed. */
static void check_overflow(comm *c) {
    int r = c->rank, w = c->size;
    size_t send_bytes[MAX_RANKS], recv_bytes[MAX_RANKS];
    for (int p = 0; p < w; p++) send_bytes[p] = 100;
    void *d_send = dev_alloc((size_t)w * 100), *d_recv = dev_alloc((size_t)w * 100);
    ms_err err = {{0}};
    size_t cap = r == 0 ? 10 : (size_t)w * 100;
    int rc = c->ops->all_to_all_v(c, d_send, send_bytes, d_recv, cap, recv_bytes, &err);
    check(rc != 0 && strstr(err.msg, "rank 0: all_to_all_v: receive buffer too small"), r,
          "overflow on rank 0 fails this rank: %s", err.msg);
    rc = c->ops->barrier(c, &err);
    check(rc != 0 && strstr(err.msg, "too small"), r, "later calls fail with the reason");
    cudaFree(d_send);
    cudaFree(d_recv);
}

static void check_rank(comm *c) {
    check_all_to_all_v(c);
    check_reduce_gather_barrier(c);
    check_fixed(c);
    check_host_buffers(c);
    check_producer(c);
    check_overflow(c);
}

/* ---- worlds ------------------------------------------------------------------------ */

typedef struct {
    int rank, size;
    const unsigned char *id;
} rank_arg;

static void *rank_main(void *p) {
    rank_arg *a = p;
    ms_err err = {{0}};
    comm *c = comm_nccl_create(a->rank, a->size, a->id, a->rank, &err);
    check(c != NULL, a->rank, "comm_nccl_create (%d ranks) %s", a->size, c ? "" : err.msg);
    if (!c) return NULL;
    check_rank(c);
    comm_nccl_free(c);
    return NULL;
}

static void run_world(int size) {
    printf("== %d-rank world\n", size);
    unsigned char id[COMM_NCCL_ID_BYTES];
    ms_err err = {{0}};
    if (comm_nccl_unique_id(id, &err) != 0) {
        check(0, 0, "comm_nccl_unique_id: %s", err.msg);
        return;
    }
    pthread_t th[MAX_RANKS];
    rank_arg args[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        args[r] = (rank_arg){r, size, id};
        if (pthread_create(&th[r], NULL, rank_main, &args[r]) != 0) {
            printf("test_comm_nccl: pthread_create failed\n");
            exit(1);
        }
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
}

static void check_abort(void) {
    printf("== abort\n");
    unsigned char id[COMM_NCCL_ID_BYTES];
    ms_err err = {{0}};
    comm *c = comm_nccl_unique_id(id, &err) == 0 ? comm_nccl_create(0, 1, id, 0, &err) : NULL;
    check(c != NULL, 0, "1-rank comm for abort %s", c ? "" : err.msg);
    if (!c) return;
    c->ops->abort(c, "model step failed: out of KV pages");
    c->ops->abort(c, "second abort is ignored");
    int rc = c->ops->barrier(c, &err);
    check(rc != 0 && strstr(err.msg, "rank 0: model step failed: out of KV pages"), 0, "after abort: %s", err.msg);
    comm_nccl_free(c);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) {
        printf("test_comm_nccl: SKIP: no CUDA device\n");
        return 0;
    }
    alarm(WATCHDOG_S);
    run_world(1);
    check_abort();
    if (n_dev >= 2) run_world(n_dev < MAX_RANKS ? n_dev : MAX_RANKS);
    else printf("== multi-rank world skipped: 1 device\n");
    printf("\n%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
