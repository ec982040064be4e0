/* test/unit/comm_cases.h — rank programs any engine/comm.h implementation must
 * pass (test_comm_cpu.c, test_comm_tcp.c): each runs on one rank's thread and
 * sets ok. References: hand-computed expected buffers (each byte encodes
 * sender, receiver and index), and sums computed serially in rank order. */
#ifndef MS_TEST_COMM_CASES_H
#define MS_TEST_COMM_CASES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"

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

#endif
