/* test/unit/test_rendezvous.c — the TCP rendezvous (common/rendezvous.h) with
 * nodes as threads of this process on 127.0.0.1. Reference: node 0's blob,
 * byte for byte (hand-made pattern), and the error texts the header promises.
 * Ports come from binding port 0 in a probe socket (free at that moment), so
 * parallel runs do not collide. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/rendezvous.h"
#include "test/unit/test_time.h"

#define BLOB_BYTES 128

typedef struct {
    rendezvous_cfg cfg;
    int delay_ms; /* sleep before joining */
    unsigned char blob[BLOB_BYTES];
    int rc;
    double took_ms;
    ms_err err;
} node_arg;

/* A TCP port that was free a moment ago. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof a;
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 37 + 11); }

static node_arg node(int port, int nnodes, int rank, int timeout_ms, int delay_ms) {
    node_arg a;
    memset(&a, 0, sizeof a);
    a.cfg = (rendezvous_cfg){"127.0.0.1", port, nnodes, rank, timeout_ms};
    a.delay_ms = delay_ms;
    for (size_t i = 0; i < BLOB_BYTES; i++) a.blob[i] = rank == 0 ? pattern(i) : 0xEE;
    a.rc = 99;
    return a;
}

static void *node_main(void *p) {
    node_arg *a = p;
    if (a->delay_ms) sleep_ms(a->delay_ms);
    double t0 = now_ms();
    a->rc = rendezvous_run(&a->cfg, a->blob, sizeof a->blob, &a->err);
    a->took_ms = now_ms() - t0;
    return NULL;
}

static void run_nodes(node_arg *a, int n) {
    pthread_t th[8];
    for (int i = 0; i < n; i++) cr_assert(pthread_create(&th[i], NULL, node_main, &a[i]) == 0);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

static void expect_blob(const node_arg *a) {
    cr_expect_eq(a->rc, 0, "node %d: %s", a->cfg.node_rank, a->err.msg);
    for (size_t i = 0; i < BLOB_BYTES; i++)
        if (a->blob[i] != pattern(i)) {
            cr_expect_fail("node %d: byte %zu is %d, node 0 sent %d", a->cfg.node_rank, i, a->blob[i], pattern(i));
            return;
        }
}

Test(rendezvous, three_nodes_get_node_0s_blob, .timeout = 30) {
    int port = free_port();
    node_arg a[3] = {node(port, 3, 0, 10000, 0), node(port, 3, 1, 10000, 0), node(port, 3, 2, 10000, 0)};
    run_nodes(a, 3);
    for (int i = 0; i < 3; i++) expect_blob(&a[i]);
}

Test(rendezvous, node_0_started_last, .timeout = 30) {
    int port = free_port();
    node_arg a[3] = {node(port, 3, 0, 10000, 400), node(port, 3, 1, 10000, 0), node(port, 3, 2, 10000, 0)};
    run_nodes(a, 3);
    for (int i = 0; i < 3; i++) expect_blob(&a[i]);
}

Test(rendezvous, one_node_needs_no_network) {
    node_arg a = node(0, 1, 0, 100, 0);
    node_main(&a);
    expect_blob(&a);
}

Test(rendezvous, missing_node_times_out_naming_it, .timeout = 30) {
    int port = free_port();
    node_arg a[2] = {node(port, 3, 0, 800, 0), node(port, 3, 1, 5000, 0)};
    run_nodes(a, 2);
    char want[160];
    snprintf(want, sizeof want, "rendezvous: node(s) 2 of 3 did not join within 0.8 s (listening on 0.0.0.0:%d)", port);
    cr_expect_eq(a[0].rc, -1);
    cr_expect_str_eq(a[0].err.msg, want);
    cr_expect(a[0].took_ms >= 700 && a[0].took_ms < 2000, "node 0 took %.0f ms", a[0].took_ms);
    /* node 1 joined; node 0 tells it why it gives up instead of leaving it to wait 5 s */
    cr_expect_eq(a[1].rc, -1);
    cr_expect(strstr(a[1].err.msg, "node 1 stopped by node 0") && strstr(a[1].err.msg, "node(s) 2 of 3 did not join"),
              "%s", a[1].err.msg);
    cr_expect(a[1].took_ms < 2000, "node 1 took %.0f ms", a[1].took_ms);
}

Test(rendezvous, unreachable_node_0_is_named, .timeout = 30) {
    int port = free_port();
    node_arg a = node(port, 2, 1, 500, 0);
    node_main(&a);
    char want[128];
    snprintf(want, sizeof want, "node 1 could not reach node 0 at 127.0.0.1:%d within 0.5 s", port);
    cr_expect_eq(a.rc, -1);
    cr_expect(strstr(a.err.msg, want), "%s", a.err.msg);
    cr_expect(a.took_ms < 1500, "took %.0f ms", a.took_ms);
}

Test(rendezvous, nnodes_mismatch_fails_both_sides, .timeout = 30) {
    int port = free_port();
    node_arg a[2] = {node(port, 2, 0, 10000, 0), node(port, 3, 1, 10000, 0)};
    run_nodes(a, 2);
    cr_expect_eq(a[0].rc, -1);
    cr_expect(strstr(a[0].err.msg, "node 1 (127.0.0.1:") && strstr(a[0].err.msg, "nnodes=3, node 0 with nnodes=2"),
              "%s", a[0].err.msg);
    cr_expect_eq(a[1].rc, -1);
    cr_expect(strstr(a[1].err.msg, "refused") && strstr(a[1].err.msg, "nnodes=3"), "%s", a[1].err.msg);
    cr_expect(a[0].took_ms < 5000 && a[1].took_ms < 5000, "took %.0f / %.0f ms", a[0].took_ms, a[1].took_ms);
}

Test(rendezvous, duplicate_rank_fails, .timeout = 30) {
    int port = free_port();
    node_arg a[3] = {node(port, 3, 0, 10000, 0), node(port, 3, 1, 10000, 0), node(port, 3, 1, 10000, 0)};
    run_nodes(a, 3);
    cr_expect_eq(a[0].rc, -1);
    cr_expect(strstr(a[0].err.msg, "node_rank 1 joined twice"), "%s", a[0].err.msg);
    cr_expect(a[1].rc == -1 && a[2].rc == -1, "%s | %s", a[1].err.msg, a[2].err.msg);
    cr_expect(strstr(a[1].err.msg, "joined twice") && strstr(a[2].err.msg, "joined twice"), "%s | %s", a[1].err.msg,
              a[2].err.msg);
}

Test(rendezvous, bad_configuration_is_named) {
    ms_err err = {{0}};
    unsigned char blob[4];
    rendezvous_cfg c = {"127.0.0.1", 29500, 2, 2, 100};
    cr_expect_eq(rendezvous_run(&c, blob, sizeof blob, &err), -1);
    cr_expect(strstr(err.msg, "node_rank=2 is outside 0..1"), "%s", err.msg);
    c = (rendezvous_cfg){NULL, 29500, 2, 1, 100};
    cr_expect_eq(rendezvous_run(&c, blob, sizeof blob, &err), -1);
    cr_expect(strstr(err.msg, "node 1 needs master_addr"), "%s", err.msg);
    c = (rendezvous_cfg){"127.0.0.1", 70000, 2, 0, 100};
    cr_expect_eq(rendezvous_run(&c, blob, sizeof blob, &err), -1);
    cr_expect(strstr(err.msg, "master_port=70000"), "%s", err.msg);
}

Test(rendezvous, port_in_use_is_named, .timeout = 30) {
    int port = free_port();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 4) == 0);
    node_arg n0 = node(port, 2, 0, 500, 0);
    node_main(&n0);
    close(fd);
    char want[64];
    snprintf(want, sizeof want, "port %d is already in use", port);
    cr_expect_eq(n0.rc, -1);
    cr_expect(strstr(n0.err.msg, want), "%s", n0.err.msg);
}

/* ---- strays: garbage, early close, silence (more silent ones than node 0 keeps) ---- */

static int raw_connect(int port) {
    for (int tries = 0; tries < 200; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
        close(fd);
        sleep_ms(10);
    }
    return -1;
}

/* 1 when the peer closed fd within 3 s (EOF, or a reset: it closed with our bytes unread). */
static int closed_by_peer(int fd) {
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[64];
    ssize_t n = recv(fd, b, sizeof b, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

Test(rendezvous, stray_connections_are_survived, .timeout = 60) {
    int port = free_port();
    node_arg a[2] = {node(port, 2, 0, 10000, 0), node(port, 2, 1, 10000, 0)};
    pthread_t t0, t1;
    cr_assert(pthread_create(&t0, NULL, node_main, &a[0]) == 0);
    int garbage = raw_connect(port);
    cr_assert(garbage >= 0, "node 0 never listened");
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02\x03\xff garbage garbage garbage";
    cr_assert(send(garbage, junk, sizeof junk, MSG_NOSIGNAL) == (ssize_t)sizeof junk);
    close(raw_connect(port)); /* connects and leaves at once */
    int silent[20];
    for (int i = 0; i < 20; i++) silent[i] = raw_connect(port);
    cr_expect(closed_by_peer(garbage), "node 0 kept the garbage connection open");
    cr_assert(pthread_create(&t1, NULL, node_main, &a[1]) == 0);
    pthread_join(t1, NULL);
    pthread_join(t0, NULL);
    for (int i = 0; i < 20; i++) close(silent[i]);
    close(garbage);
    expect_blob(&a[0]);
    expect_blob(&a[1]);
}

typedef struct {
    rendezvous_cfg cfg;
    unsigned char mine[40];
    rendezvous_node out[3];
    ms_err err;
    int rc;
} exchange_arg;

static void *exchange_main(void *p) {
    exchange_arg *a = p;
    a->rc = rendezvous_exchange(&a->cfg, a->mine, sizeof a->mine, a->out, &a->err);
    return NULL;
}

/* Every node gets every node's entry and the address node 0 saw it connect from. */
Test(rendezvous, exchange_hands_every_node_the_whole_table, .timeout = 30) {
    int port = free_port();
    exchange_arg a[3];
    pthread_t th[3];
    memset(a, 0, sizeof a);
    for (int r = 0; r < 3; r++) {
        a[r].cfg = (rendezvous_cfg){"127.0.0.1", port, 3, r, 10000};
        for (size_t i = 0; i < sizeof a[r].mine; i++) a[r].mine[i] = (unsigned char)(r * 50 + i);
        cr_assert(pthread_create(&th[r], NULL, exchange_main, &a[r]) == 0);
    }
    for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 3; r++) {
        cr_assert_eq(a[r].rc, 0, "node %d: %s", r, a[r].err.msg);
        for (int q = 0; q < 3; q++) {
            cr_expect_eq(memcmp(a[r].out[q].entry, a[q].mine, sizeof a[q].mine), 0, "node %d's copy of node %d", r, q);
            cr_expect_eq(a[r].out[q].ipv4, q == 0 && r == 0 ? 0u : htonl(INADDR_LOOPBACK), "node %d's address of node %d", r, q);
        }
        rendezvous_nodes_free(a[r].out, 3);
    }
}
