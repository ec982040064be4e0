/* test/unit/test_comm_tcp.c — the TCP collectives (cpu/comm_tcp.h): worlds of
 * 1-3 nodes x 1-3 ranks in this process over loopback run the rank programs of
 * comm_cases.h (the same ones comm_cpu passes); then failures: an aborting rank,
 * a node that goes away, a receive buffer too small, a rank that never connects. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/comm_tcp.h"
#include "test/unit/comm_cases.h"

#define MAX_NODES 3
#define MAX_RANKS 8

typedef struct {
    int nnodes, n_local;
    comm_tcp_node *node[MAX_NODES];
    uint32_t ip[MAX_NODES];
    uint16_t port[MAX_RANKS];
} world;

typedef struct {
    comm_tcp_node *node;
    const world *w;
    int timeout_ms, rc;
    ms_err err;
} connect_arg;

static void *connect_main(void *p) {
    connect_arg *a = p;
    a->rc = comm_tcp_node_connect(a->node, a->w->ip, a->w->port, a->timeout_ms, &a->err);
    return NULL;
}

/* Opens every node, then connects them all at once (one thread per node, as separate processes would). */
static void world_open(world *w, int nnodes, int n_local) {
    ms_err err = {{0}};
    memset(w, 0, sizeof *w);
    w->nnodes = nnodes;
    w->n_local = n_local;
    for (int i = 0; i < nnodes; i++) {
        w->node[i] = comm_tcp_node_open(nnodes, i, n_local, &err);
        cr_assert(w->node[i], "%s", err.msg);
        w->ip[i] = htonl(INADDR_LOOPBACK);
        for (int l = 0; l < n_local; l++) w->port[i * n_local + l] = (uint16_t)comm_tcp_node_port(w->node[i], l);
    }
    pthread_t th[MAX_NODES];
    connect_arg a[MAX_NODES];
    for (int i = 0; i < nnodes; i++) {
        a[i] = (connect_arg){w->node[i], w, 10000, 99, {{0}}};
        cr_assert(pthread_create(&th[i], NULL, connect_main, &a[i]) == 0);
    }
    for (int i = 0; i < nnodes; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < nnodes; i++) cr_assert_eq(a[i].rc, 0, "node %d: %s", i, a[i].err.msg);
}

static void world_free(world *w) {
    for (int i = 0; i < w->nnodes; i++) comm_tcp_node_free(w->node[i]);
}

static comm *rank_comm(world *w, int g) { return comm_tcp_node_rank(w->node[g / w->n_local], g % w->n_local); }

static void run_ranks(world *w, void *(*fn)(void *), rank_arg *args) {
    int size = w->nnodes * w->n_local;
    pthread_t th[MAX_RANKS];
    for (int g = 0; g < size; g++) {
        args[g] = (rank_arg){rank_comm(w, g), 0, ""};
        cr_assert(pthread_create(&th[g], NULL, fn, &args[g]) == 0);
    }
    for (int g = 0; g < size; g++) pthread_join(th[g], NULL);
}

static const int shapes[][2] = {{1, 1}, {1, 3}, {2, 1}, {2, 2}, {3, 1}, {2, 3}};

static void run_every_shape(void *(*fn)(void *)) {
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        world w;
        rank_arg args[MAX_RANKS];
        world_open(&w, shapes[s][0], shapes[s][1]);
        run_ranks(&w, fn, args);
        for (int g = 0; g < shapes[s][0] * shapes[s][1]; g++)
            cr_expect(args[g].ok, "%d nodes x %d ranks: rank %d failed: %s", shapes[s][0], shapes[s][1], g, args[g].msg);
        world_free(&w);
    }
}

Test(comm_tcp, all_to_all_v, .timeout = 60) { run_every_shape(a2a_rank); }

Test(comm_tcp, all_reduce_all_gather_barrier, .timeout = 60) { run_every_shape(reduce_gather_rank); }

Test(comm_tcp, rank_handles_carry_global_ranks, .timeout = 30) {
    world w;
    world_open(&w, 2, 2);
    for (int g = 0; g < 4; g++) {
        cr_expect_eq(rank_comm(&w, g)->rank, g);
        cr_expect_eq(rank_comm(&w, g)->size, 4);
    }
    world_free(&w);
}

/* Rank 1 fails outside a call; every other rank, on any node, gets its reason. */
Test(comm_tcp, a_failing_rank_releases_the_others, .timeout = 30) {
    static const int fault_shapes[][2] = {{3, 1}, {1, 3}, {2, 2}};
    for (int s = 0; s < 3; s++) {
        world w;
        rank_arg args[MAX_RANKS];
        world_open(&w, fault_shapes[s][0], fault_shapes[s][1]);
        run_ranks(&w, fault_rank, args);
        for (int g = 0; g < fault_shapes[s][0] * fault_shapes[s][1]; g++)
            cr_expect(args[g].ok, "shape %d: rank %d: %s", s, g, args[g].msg);
        world_free(&w);
    }
}

typedef struct {
    comm *c;
    int rc;
    ms_err err;
} barrier_arg;

static void *barrier_main(void *p) {
    barrier_arg *a = p;
    a->rc = a->c->ops->barrier(a->c, &a->err);
    return NULL;
}

/* A node that goes away (its process died) fails the peers waiting on it, naming it. */
Test(comm_tcp, a_vanished_node_is_named, .timeout = 30) {
    world w;
    world_open(&w, 2, 1);
    barrier_arg a = {rank_comm(&w, 0), 99, {{0}}};
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, barrier_main, &a) == 0);
    usleep(100 * 1000);
    comm_tcp_node_free(w.node[1]);
    pthread_join(th, NULL);
    cr_expect_eq(a.rc, -1);
    cr_expect(strstr(a.err.msg, "expert-parallel group failed") && strstr(a.err.msg, "lost its connection to rank 1 (node 1)"),
              "%s", a.err.msg);
    /* and the world stays failed */
    cr_expect_eq(a.c->ops->barrier(a.c, &a.err), -1);
    comm_tcp_node_free(w.node[0]);
}

typedef struct {
    comm *c;
    size_t cap;
    int rc, rc_next;
    ms_err err, err_next;
} a2a_arg;

static void *small_buffer_main(void *p) {
    a2a_arg *a = p;
    char send[200] = {0}, recv[400];
    size_t sb[2] = {100, 100}, rb[2];
    a->rc = a->c->ops->all_to_all_v(a->c, send, sb, recv, a->cap, rb, &a->err);
    a->rc_next = a->c->ops->barrier(a->c, &a->err_next);
    return NULL;
}

/* Rank 1's buffer is too small: it fails, and rank 0 fails this call or its next. */
Test(comm_tcp, receive_buffer_too_small_fails_everyone, .timeout = 30) {
    world w;
    world_open(&w, 2, 1);
    a2a_arg a[2] = {{rank_comm(&w, 0), 400, 99, 99, {{0}}, {{0}}}, {rank_comm(&w, 1), 150, 99, 99, {{0}}, {{0}}}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) cr_assert(pthread_create(&th[i], NULL, small_buffer_main, &a[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    cr_expect_eq(a[1].rc, -1);
    cr_expect(strstr(a[1].err.msg, "too small"), "%s", a[1].err.msg);
    cr_expect(a[0].rc == -1 || a[0].rc_next == -1, "rank 0 never failed");
    const char *msg0 = a[0].rc == -1 ? a[0].err.msg : a[0].err_next.msg;
    cr_expect(strstr(msg0, "rank 1: all_to_all_v: receive buffer too small"), "%s", msg0);
    world_free(&w);
}

/* Node 1 never connects: node 0 gives up at the deadline naming the rank it waited for. */
Test(comm_tcp, a_rank_that_never_connects_is_named, .timeout = 30) {
    ms_err err = {{0}};
    comm_tcp_node *n0 = comm_tcp_node_open(2, 0, 1, &err), *n1 = comm_tcp_node_open(2, 1, 1, &err);
    cr_assert(n0 && n1, "%s", err.msg);
    uint32_t ip[2] = {htonl(INADDR_LOOPBACK), htonl(INADDR_LOOPBACK)};
    uint16_t port[2] = {(uint16_t)comm_tcp_node_port(n0, 0), (uint16_t)comm_tcp_node_port(n1, 0)};
    cr_expect_eq(comm_tcp_node_connect(n0, ip, port, 500, &err), -1);
    cr_expect_str_eq(err.msg, "tcp comm: rank 0 did not hear from rank 1 (node 1) within 0.5 s");
    comm_tcp_node_free(n0);
    comm_tcp_node_free(n1);
}

/* Messages far beyond the socket buffers, both ways at once: nothing deadlocks, every byte arrives. */
static void *big_a2a_rank(void *p) {
    rank_arg *a = p;
    comm *c = a->c;
    const size_t per = (size_t)3 << 20; /* 3 MiB to each rank */
    size_t sb[MAX_RANKS], rb[MAX_RANKS];
    unsigned char *send = malloc(per * (size_t)c->size), *recv = malloc(per * (size_t)c->size);
    for (int q = 0; q < c->size; q++) {
        sb[q] = per;
        for (size_t i = 0; i < per; i++) send[(size_t)q * per + i] = byte_of(c->rank, q, i);
    }
    ms_err err = {{0}};
    a->ok = c->ops->all_to_all_v(c, send, sb, recv, per * (size_t)c->size, rb, &err) == 0;
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    for (int q = 0; q < c->size && a->ok; q++)
        for (size_t i = 0; i < per && a->ok; i++) a->ok = rb[q] == per && recv[(size_t)q * per + i] == byte_of(q, c->rank, i);
    free(send);
    free(recv);
    return NULL;
}

Test(comm_tcp, large_messages_do_not_deadlock, .timeout = 60) {
    world w;
    rank_arg args[MAX_RANKS];
    world_open(&w, 2, 2);
    run_ranks(&w, big_a2a_rank, args);
    for (int g = 0; g < 4; g++) cr_expect(args[g].ok, "rank %d: %s", g, args[g].msg);
    world_free(&w);
}
