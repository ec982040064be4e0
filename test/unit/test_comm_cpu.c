/* test/unit/test_comm_cpu.c — the CPU-thread collectives (cpu/comm_cpu.h) with
 * 1, 2, 3 and 4 ranks. References: hand-computed expected buffers (each byte
 * encodes sender, receiver and index), and sums computed serially in rank order. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/comm_cpu.h"

typedef struct {
    comm *c;
    int ok;
    char msg[1024];
} rank_arg;

/* Rank r sends (r + p + i) % 251 bytes... of length (r * 7 + p * 3) % 5 * 100 to peer p. */
static size_t len_between(int from, int to) { return (size_t)((from * 7 + to * 3) % 5) * 100; }
static unsigned char byte_of(int from, int to, size_t i) { return (unsigned char)((from * 31 + to * 17 + i) % 251); }

static void *a2a_rank(void *p) {
    rank_arg *a = p;
    comm *c = a->c;
    size_t send_bytes[8], recv_bytes[8], total = 0;
    for (int q = 0; q < c->size; q++) total += send_bytes[q] = len_between(c->rank, q);
    unsigned char *send = malloc(total + 1), *recv = malloc(4096);
    size_t at = 0;
    for (int q = 0; q < c->size; q++)
        for (size_t i = 0; i < send_bytes[q]; i++) send[at++] = byte_of(c->rank, q, i);
    ms_err err = {{0}};
    a->ok = 1;
    for (int round = 0; round < 3 && a->ok; round++) { /* repeated calls reuse the buffers */
        memset(recv, 0xEE, 4096);
        if (c->ops->all_to_all_v(c, send, send_bytes, recv, 4096, recv_bytes, &err) != 0) { a->ok = 0; break; }
        at = 0;
        for (int q = 0; q < c->size && a->ok; q++) {
            if (recv_bytes[q] != len_between(q, c->rank)) a->ok = 0;
            for (size_t i = 0; i < recv_bytes[q] && a->ok; i++) a->ok = recv[at++] == byte_of(q, c->rank, i);
        }
    }
    free(send);
    free(recv);
    return NULL;
}

static void *reduce_gather_rank(void *p) {
    rank_arg *a = p;
    comm *c = a->c;
    float buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (float)(c->rank + 1) * 0.1f + (float)i * 1e-3f;
    ms_err err = {{0}};
    a->ok = c->ops->all_reduce_sum(c, buf, 1000, &err) == 0;
    for (int i = 0; i < 1000 && a->ok; i++) {
        float want = 0.0f;
        for (int r = 0; r < c->size; r++) want += (float)(r + 1) * 0.1f + (float)i * 1e-3f; /* same order */
        a->ok = buf[i] == want;
    }
    int mine[2] = {c->rank, c->rank * 10}, all[16];
    if (a->ok) a->ok = c->ops->all_gather(c, mine, sizeof mine, all, &err) == 0;
    for (int r = 0; r < c->size && a->ok; r++) a->ok = all[2 * r] == r && all[2 * r + 1] == r * 10;
    if (a->ok) a->ok = c->ops->barrier(c, &err) == 0;
    return NULL;
}

static void run_world(int size, void *(*fn)(void *)) {
    ms_err err = {{0}};
    comm_cpu_world *w = comm_cpu_world_create(size, &err);
    cr_assert(w, "%s", err.msg);
    pthread_t th[8];
    rank_arg args[8];
    for (int r = 0; r < size; r++) {
        args[r] = (rank_arg){comm_cpu_world_rank(w, r), 0, ""};
        pthread_create(&th[r], NULL, fn, &args[r]);
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < size; r++) cr_expect(args[r].ok, "%d ranks: rank %d failed", size, r);
    comm_cpu_world_free(w);
}

Test(comm_cpu, all_to_all_v) {
    for (int size = 1; size <= 4; size++) run_world(size, a2a_rank);
}

Test(comm_cpu, all_reduce_all_gather_barrier) {
    for (int size = 1; size <= 4; size++) run_world(size, reduce_gather_rank);
}

/* Rank 1 fails; the others, waiting in a barrier, must return an error naming it. */
static void *fault_rank(void *p) {
    rank_arg *a = p;
    comm *c = a->c;
    ms_err err = {{0}};
    if (c->rank == 1) {
        c->ops->abort(c, "model step failed: out of KV pages");
        a->ok = 1;
        return NULL;
    }
    a->ok = c->ops->barrier(c, &err) != 0 && strstr(err.msg, "rank 1: model step failed");
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    return NULL;
}

Test(comm_cpu, a_failing_rank_releases_the_others, .timeout = 20) { run_world(3, fault_rank); }

Test(comm_cpu, receive_buffer_too_small_fails_everyone, .timeout = 20) {
    ms_err err = {{0}};
    comm_cpu_world *w = comm_cpu_world_create(1, &err);
    comm *c = comm_cpu_world_rank(w, 0);
    char send[100] = {0}, recv[10];
    size_t sb[1] = {100}, rb[1];
    cr_expect_neq(c->ops->all_to_all_v(c, send, sb, recv, sizeof recv, rb, &err), 0);
    cr_expect(strstr(err.msg, "too small"), "%s", err.msg);
    comm_cpu_world_free(w);
}
