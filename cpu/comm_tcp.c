/* cpu/comm_tcp.c — see comm_tcp.h. Message header (big-endian): u32 magic,
 * u32 kind (data, abort, hello), u64 length; data and abort messages carry
 * `length` bytes after it (abort: the reason), a hello carries none (its length
 * field is size << 32 | sender's global rank). Every socket is non-blocking. */
#include "cpu/comm_tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CT_MAGIC 0x4d534354u /* "MSCT" */
#define KIND_DATA 1u
#define KIND_ABORT 2u
#define KIND_HELLO 3u
#define HDR 16
#define REASON_MAX 512
#define RETRY_MS 50

typedef struct {
    comm_tcp_node *node;
    int *fd;             /* [size]: the connection to each rank; -1 for itself */
    unsigned char *busy; /* [size]: a message to that peer is half sent (during a call) */
    pthread_mutex_t io;  /* held while the rank's thread is in a call */
    int abort_sent;
} rank_ctx;

struct comm_tcp_node {
    int nnodes, node_rank, n_local, size;
    int *listen_fd; /* [n_local] */
    uint16_t *port; /* [n_local] */
    rank_ctx *rk;   /* [n_local] */
    comm *handles;  /* [n_local] */
    int wake[2];    /* written once when the node fails; read end in every poll */
    pthread_mutex_t mu;
    int failed;
    char reason[REASON_MAX];
};

/* Per peer, one call's message out and message in. */
typedef struct {
    unsigned char hdr[HDR];
    const unsigned char *data;
    size_t len, done;  /* done counts the header too */
    unsigned char ihdr[HDR];
    size_t ihdr_got, ilen, got;
    unsigned char *dst; /* set once the length is accepted */
} pio;

/* ---- bytes, time, node failure ---------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (24 - 8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put_hdr(unsigned char *h, uint32_t kind, uint64_t len) {
    put_u32(h, CT_MAGIC);
    put_u32(h + 4, kind);
    put_u32(h + 8, (uint32_t)(len >> 32));
    put_u32(h + 12, (uint32_t)len);
}
static uint64_t hdr_len(const unsigned char *h) { return (uint64_t)get_u32(h + 8) << 32 | get_u32(h + 12); }

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static int left_ms(int64_t deadline) {
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : left > 1000000000 ? 1000000000 : (int)left;
}

static int node_of(const comm_tcp_node *n, int g) { return g / n->n_local; }

/* Marks the node failed with reason (the first reason wins) and wakes its ranks. */
static void node_fail(comm_tcp_node *n, const char *reason) {
    pthread_mutex_lock(&n->mu);
    int first = !n->failed;
    if (first) {
        n->failed = 1;
        snprintf(n->reason, sizeof n->reason, "%s", reason);
    }
    pthread_mutex_unlock(&n->mu);
    if (first && write(n->wake[1], "x", 1) < 0) { /* the pipe is empty: cannot fail */ }
}

static int node_failed(comm_tcp_node *n) {
    pthread_mutex_lock(&n->mu);
    int f = n->failed;
    pthread_mutex_unlock(&n->mu);
    return f;
}

static int failure(comm_tcp_node *n, ms_err *err) {
    pthread_mutex_lock(&n->mu);
    ms_err_set(err, "expert-parallel group failed: %s", n->reason);
    pthread_mutex_unlock(&n->mu);
    return -1;
}

/* Tells every peer of this rank why the world stops, once: an abort message
 * where no message is half sent, else the connection is shut (the peer reads a
 * closed connection instead of a corrupt message). */
static void send_aborts(rank_ctx *r, int self) {
    comm_tcp_node *n = r->node;
    if (r->abort_sent) return;
    r->abort_sent = 1;
    char reason[REASON_MAX];
    pthread_mutex_lock(&n->mu);
    snprintf(reason, sizeof reason, "%s", n->reason);
    pthread_mutex_unlock(&n->mu);
    unsigned char msg[HDR + REASON_MAX];
    size_t len = strlen(reason);
    put_hdr(msg, KIND_ABORT, len);
    memcpy(msg + HDR, reason, len);
    for (int p = 0; p < n->size; p++) {
        if (p == self || r->fd[p] < 0) continue;
        ssize_t w = r->busy[p] ? -1 : send(r->fd[p], msg, HDR + len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w != (ssize_t)(HDR + len)) shutdown(r->fd[p], SHUT_RDWR);
    }
}

/* The call fails: the node fails with reason (unless it already has), peers are told. */
static int fail_call(rank_ctx *r, int self, const char *reason, ms_err *err) {
    if (reason) node_fail(r->node, reason);
    send_aborts(r, self);
    return failure(r->node, err);
}

/* ---- one call's exchange ------------------------------------------------------- */

/* Called once every peer's header has arrived: sets each pio's dst (0), or -1
 * with a failure reason in `why`. */
typedef int (*assign_fn)(void *ctx, pio *io, int size, int self, char *why, size_t why_cap);

/* An abort message's reason, read with a short wait (it follows its header). */
static void read_reason(int fd, size_t len, char *out, size_t cap) {
    size_t want = len < cap - 1 ? len : cap - 1, got = 0;
    int64_t deadline = now_ms() + 1000;
    while (got < want) {
        ssize_t k = recv(fd, out + got, want - got, 0);
        if (k > 0) { got += (size_t)k; continue; }
        if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left_ms(deadline)) <= 0) break;
    }
    out[got] = '\0';
    if (!got) snprintf(out, cap, "a peer aborted without a reason");
}

/* Reads what peer p sent: 0 fine, -1 the call fails (why set). */
static int peer_read(rank_ctx *r, int self, int p, pio *io, char *why, size_t cap) {
    int fd = r->fd[p];
    int in_hdr = io->ihdr_got < HDR;
    unsigned char *at = in_hdr ? io->ihdr + io->ihdr_got : io->dst + io->got;
    size_t want = in_hdr ? HDR - io->ihdr_got : io->ilen - io->got;
    ssize_t k = recv(fd, at, want, 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (k <= 0) {
        snprintf(why, cap, "rank %d lost its connection to rank %d (node %d): %s", self, p, node_of(r->node, p),
                 k == 0 ? "closed by the peer" : strerror(errno));
        return -1;
    }
    if (!in_hdr) {
        io->got += (size_t)k;
        return 0;
    }
    io->ihdr_got += (size_t)k;
    if (io->ihdr_got < HDR) return 0;
    uint32_t magic = get_u32(io->ihdr), kind = get_u32(io->ihdr + 4);
    uint64_t len = hdr_len(io->ihdr);
    if (magic == CT_MAGIC && kind == KIND_ABORT) {
        read_reason(fd, (size_t)len, why, cap);
        return -1;
    }
    if (magic != CT_MAGIC || kind != KIND_DATA) {
        snprintf(why, cap, "rank %d got a malformed message from rank %d", self, p);
        return -1;
    }
    io->ilen = (size_t)len;
    return 0;
}

/* Sends what is left of the message to peer p, header and data in one call where they fit. */
static int peer_write(rank_ctx *r, int self, int p, pio *io, char *why, size_t cap) {
    struct iovec v[2];
    int nv = 0;
    if (io->done < HDR) v[nv++] = (struct iovec){io->hdr + io->done, HDR - io->done};
    size_t data_done = io->done > HDR ? io->done - HDR : 0;
    if (io->len > data_done) v[nv++] = (struct iovec){(void *)(io->data + data_done), io->len - data_done};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)nv};
    ssize_t k = sendmsg(r->fd[p], &m, MSG_NOSIGNAL);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (k < 0) {
        snprintf(why, cap, "rank %d lost its connection to rank %d (node %d): %s", self, p, node_of(r->node, p),
                 strerror(errno));
        return -1;
    }
    io->done += (size_t)k;
    r->busy[p] = io->done < HDR + io->len;
    return 0;
}

/* Sends io[p].data to and receives from every peer p at once. */
static int exchange(rank_ctx *r, int self, pio *io, assign_fn assign, void *ctx, ms_err *err) {
    comm_tcp_node *n = r->node;
    int size = n->size, assigned = 0;
    char why[REASON_MAX];
    struct pollfd *pf = calloc((size_t)size + 1, sizeof *pf);
    if (!pf) return fail_call(r, self, "out of memory", err);
    int rc = 0;
    for (;;) {
        int headers = 1, pending = 0;
        for (int p = 0; p < size; p++) headers &= p == self || io[p].ihdr_got == HDR;
        if (headers && !assigned) {
            if (assign(ctx, io, size, self, why, sizeof why) != 0) { rc = fail_call(r, self, why, err); break; }
            assigned = 1;
        }
        pf[0] = (struct pollfd){n->wake[0], POLLIN, 0};
        for (int p = 0; p < size; p++) {
            short ev = 0;
            if (p != self && io[p].done < HDR + io[p].len) ev |= POLLOUT;
            if (p != self && (io[p].ihdr_got < HDR || (assigned && io[p].got < io[p].ilen))) ev |= POLLIN;
            pf[1 + p] = (struct pollfd){ev ? r->fd[p] : -1, ev, 0};
            pending |= ev != 0;
        }
        if (!pending) break;
        if (poll(pf, (nfds_t)size + 1, -1) < 0 && errno != EINTR) {
            snprintf(why, sizeof why, "rank %d: poll: %s", self, strerror(errno));
            rc = fail_call(r, self, why, err);
            break;
        }
        if (pf[0].revents || node_failed(n)) { rc = fail_call(r, self, NULL, err); break; }
        int bad = 0;
        for (int p = 0; p < size && !bad; p++) {
            short re = pf[1 + p].revents;
            if (!re) continue;
            /* a hang-up is read (data may still be buffered, then the end) or written (EPIPE) */
            if ((pf[1 + p].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR)))
                bad = peer_read(r, self, p, &io[p], why, sizeof why) != 0;
            if (!bad && (pf[1 + p].events & POLLOUT) && (re & (POLLOUT | POLLHUP | POLLERR)))
                bad = peer_write(r, self, p, &io[p], why, sizeof why) != 0;
        }
        if (bad) { rc = fail_call(r, self, why, err); break; }
    }
    free(pf);
    return rc;
}

/* ---- the collectives --------------------------------------------------------------- */

static rank_ctx *ctx_of(comm *c) { return c->impl; }

/* Enters a call: 0, or -1 if the world has already failed. */
static int call_begin(comm *c, ms_err *err) {
    rank_ctx *r = ctx_of(c);
    pthread_mutex_lock(&r->io);
    if (!node_failed(r->node)) return 0;
    fail_call(r, c->rank, NULL, err);
    pthread_mutex_unlock(&r->io);
    return -1;
}

static int call_end(comm *c, int rc) {
    pthread_mutex_unlock(&ctx_of(c)->io);
    return rc;
}

static pio *pio_new(int size) { return calloc((size_t)size, sizeof(pio)); }

static void pio_out(pio *io, const void *data, size_t len) {
    put_hdr(io->hdr, KIND_DATA, len);
    io->data = data;
    io->len = len;
}

typedef struct {
    const void *send;
    const size_t *send_bytes;
    unsigned char *recv;
    size_t cap, *recv_bytes;
} a2a_ctx;

static size_t offset_of(const size_t *bytes, int upto) {
    size_t off = 0;
    for (int q = 0; q < upto; q++) off += bytes[q];
    return off;
}

static int a2a_assign(void *ctx, pio *io, int size, int self, char *why, size_t cap) {
    a2a_ctx *a = ctx;
    size_t total = 0;
    for (int p = 0; p < size; p++) total += a->recv_bytes[p] = p == self ? a->send_bytes[self] : io[p].ilen;
    if (total > a->cap) {
        snprintf(why, cap, "rank %d: all_to_all_v: receive buffer too small (%zu bytes, %zu arrive)", self, a->cap,
                 total);
        return -1;
    }
    for (int p = 0; p < size; p++) io[p].dst = a->recv + offset_of(a->recv_bytes, p);
    memcpy(io[self].dst, (const char *)a->send + offset_of(a->send_bytes, self), a->send_bytes[self]);
    return 0;
}

static int tcp_all_to_all_v(comm *c, const void *send, const size_t *send_bytes, void *recv, size_t recv_cap,
                            size_t *recv_bytes, ms_err *err) {
    if (call_begin(c, err) != 0) return -1;
    pio *io = pio_new(c->size);
    if (!io) return call_end(c, fail_call(ctx_of(c), c->rank, "out of memory", err));
    for (int p = 0; p < c->size; p++)
        if (p != c->rank) pio_out(&io[p], (const char *)send + offset_of(send_bytes, p), send_bytes[p]);
    a2a_ctx a = {send, send_bytes, recv, recv_cap, recv_bytes};
    int rc = exchange(ctx_of(c), c->rank, io, a2a_assign, &a, err);
    free(io);
    return call_end(c, rc);
}

typedef struct {
    unsigned char *recv;
    size_t bytes;
} gather_ctx;

static int gather_assign(void *ctx, pio *io, int size, int self, char *why, size_t cap) {
    gather_ctx *g = ctx;
    for (int p = 0; p < size; p++) {
        if (p != self && io[p].ilen != g->bytes) {
            snprintf(why, cap, "rank %d: all_gather: ranks disagree on the size (%zu bytes here, %zu from rank %d)",
                     self, g->bytes, io[p].ilen, p);
            return -1;
        }
        io[p].dst = g->recv + (size_t)p * g->bytes;
    }
    return 0;
}

/* all_gather without entering a call (the caller has). */
static int gather(comm *c, const void *send, size_t bytes, void *recv, ms_err *err) {
    pio *io = pio_new(c->size);
    if (!io) return fail_call(ctx_of(c), c->rank, "out of memory", err);
    for (int p = 0; p < c->size; p++)
        if (p != c->rank) pio_out(&io[p], send, bytes);
    memcpy((char *)recv + (size_t)c->rank * bytes, send, bytes);
    gather_ctx g = {recv, bytes};
    int rc = exchange(ctx_of(c), c->rank, io, gather_assign, &g, err);
    free(io);
    return rc;
}

static int tcp_all_gather(comm *c, const void *send, size_t bytes, void *recv, ms_err *err) {
    if (call_begin(c, err) != 0) return -1;
    return call_end(c, gather(c, send, bytes, recv, err));
}

static int tcp_all_reduce_sum(comm *c, float *buf, size_t n, ms_err *err) {
    if (call_begin(c, err) != 0) return -1;
    float *all = malloc((size_t)c->size * (n ? n : 1) * sizeof *all);
    if (!all) return call_end(c, fail_call(ctx_of(c), c->rank, "out of memory", err));
    int rc = gather(c, buf, n * sizeof *buf, all, err);
    for (size_t i = 0; rc == 0 && i < n; i++) { /* rank order from 0.0f, as comm_cpu */
        float s = 0.0f;
        for (int p = 0; p < c->size; p++) s += all[(size_t)p * n + i];
        buf[i] = s;
    }
    free(all);
    return call_end(c, rc);
}

static int tcp_barrier(comm *c, ms_err *err) {
    if (call_begin(c, err) != 0) return -1;
    unsigned char one = 0, *all = calloc((size_t)c->size, 1);
    int rc = all ? gather(c, &one, 1, all, err) : fail_call(ctx_of(c), c->rank, "out of memory", err);
    free(all);
    return call_end(c, rc);
}

static void tcp_abort(comm *c, const char *reason) {
    rank_ctx *r = ctx_of(c);
    char msg[REASON_MAX];
    snprintf(msg, sizeof msg, "rank %d: %s", c->rank, reason);
    node_fail(r->node, msg);
    if (pthread_mutex_trylock(&r->io) != 0) return; /* the rank is in a call: the wake pipe stops it, it tells the peers */
    send_aborts(r, c->rank);
    pthread_mutex_unlock(&r->io);
}

static const comm_ops tcp_comm_ops = {
    .name = "tcp",
    .all_to_all_v = tcp_all_to_all_v,
    .all_reduce_sum = tcp_all_reduce_sum,
    .all_gather = tcp_all_gather,
    .barrier = tcp_barrier,
    .abort = tcp_abort,
};

/* ---- setup --------------------------------------------------------------------------- */

static int listen_ephemeral(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof a;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, SOMAXCONN) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        *port = ntohs(a.sin_port);
        return fd;
    }
    if (fd >= 0) close(fd);
    return -1;
}

comm_tcp_node *comm_tcp_node_open(int nnodes, int node_rank, int n_local, ms_err *err) {
    if (nnodes < 1 || n_local < 1 || node_rank < 0 || node_rank >= nnodes || nnodes > 4096 || n_local > 4096) {
        ms_err_set(err, "tcp comm: bad world (%d nodes, node %d, %d ranks per node)", nnodes, node_rank, n_local);
        return NULL;
    }
    comm_tcp_node *n = calloc(1, sizeof *n);
    if (!n) { ms_err_set(err, "out of memory"); return NULL; }
    *n = (comm_tcp_node){.nnodes = nnodes, .node_rank = node_rank, .n_local = n_local, .size = nnodes * n_local};
    n->wake[0] = n->wake[1] = -1;
    pthread_mutex_init(&n->mu, NULL);
    n->listen_fd = malloc((size_t)n_local * sizeof *n->listen_fd);
    n->port = calloc((size_t)n_local, sizeof *n->port);
    n->rk = calloc((size_t)n_local, sizeof *n->rk);
    n->handles = calloc((size_t)n_local, sizeof *n->handles);
    int ok = n->listen_fd && n->port && n->rk && n->handles && pipe2(n->wake, O_CLOEXEC | O_NONBLOCK) == 0;
    for (int l = 0; n->listen_fd && l < n_local; l++) n->listen_fd[l] = -1;
    for (int l = 0; ok && l < n_local; l++) {
        rank_ctx *r = &n->rk[l];
        r->node = n;
        r->fd = malloc((size_t)n->size * sizeof *r->fd);
        r->busy = calloc((size_t)n->size, 1);
        pthread_mutex_init(&r->io, NULL);
        ok = r->fd && r->busy;
        for (int p = 0; ok && p < n->size; p++) r->fd[p] = -1;
        n->handles[l] = (comm){&tcp_comm_ops, node_rank * n_local + l, n->size, r};
        if (ok && (n->listen_fd[l] = listen_ephemeral(&n->port[l])) < 0) {
            ms_err_set(err, "tcp comm: cannot listen for rank %d: %s", node_rank * n_local + l, strerror(errno));
            comm_tcp_node_free(n);
            return NULL;
        }
    }
    if (!ok) {
        ms_err_set(err, "out of memory");
        comm_tcp_node_free(n);
        return NULL;
    }
    return n;
}

int comm_tcp_node_port(const comm_tcp_node *n, int local) { return n->port[local]; }

comm *comm_tcp_node_rank(comm_tcp_node *n, int local) {
    return local >= 0 && local < n->n_local ? &n->handles[local] : NULL;
}

void comm_tcp_node_free(comm_tcp_node *n) {
    if (!n) return;
    for (int l = 0; n->rk && l < n->n_local; l++) {
        rank_ctx *r = &n->rk[l];
        for (int p = 0; r->fd && p < n->size; p++)
            if (r->fd[p] >= 0) close(r->fd[p]);
        if (r->node) pthread_mutex_destroy(&r->io);
        free(r->fd);
        free(r->busy);
    }
    for (int l = 0; n->listen_fd && l < n->n_local; l++)
        if (n->listen_fd[l] >= 0) close(n->listen_fd[l]);
    if (n->wake[0] >= 0) close(n->wake[0]);
    if (n->wake[1] >= 0) close(n->wake[1]);
    pthread_mutex_destroy(&n->mu);
    free(n->listen_fd);
    free(n->port);
    free(n->rk);
    free(n->handles);
    free(n);
}

void comm_tcp_tune(int fd) {
    int one = 1, idle = 30, intvl = 10, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* Waits for fd to be ready before the deadline: 1 ready, 0 timed out or failed. */
static int wait_fd(int fd, short ev, int64_t deadline) {
    for (;;) {
        struct pollfd p = {fd, ev, 0};
        int k = poll(&p, 1, left_ms(deadline));
        if (k >= 0) return k > 0;
        if (errno != EINTR) return 0;
    }
}

static int io_all(int fd, void *buf, size_t len, int sending, int64_t deadline) {
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t k = sending ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (k > 0) { p += k; len -= (size_t)k; continue; }
        if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return -1;
        if (!wait_fd(fd, sending ? POLLOUT : POLLIN, deadline)) return -1;
    }
    return 0;
}

/* Connects to ipv4:port (retrying until the deadline) and says hello: the fd or -1 (why set). */
static int connect_peer(uint32_t ipv4, int port, uint64_t hello, int64_t deadline, char *why, size_t cap) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ipv4};
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) { snprintf(why, cap, "socket: %s", strerror(errno)); return -1; }
        int e = connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno;
        if (e == EINPROGRESS) {
            socklen_t len = sizeof e;
            if (!wait_fd(fd, POLLOUT, deadline)) e = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
        }
        unsigned char h[HDR];
        put_hdr(h, KIND_HELLO, hello);
        if (e == 0 && io_all(fd, h, HDR, 1, deadline) == 0) {
            comm_tcp_tune(fd);
            return fd;
        }
        snprintf(why, cap, "%s", strerror(e ? e : errno));
        close(fd);
        if (left_ms(deadline) == 0) return -1;
        poll(NULL, 0, RETRY_MS);
    }
}

static void addr_name(uint32_t ipv4, int port, char *out, size_t cap) {
    char host[INET_ADDRSTRLEN] = "?";
    struct in_addr in = {ipv4};
    inet_ntop(AF_INET, &in, host, sizeof host);
    snprintf(out, cap, "%s:%d", host, port);
}

/* Rank g connects to every rank below it. */
static int connect_down(comm_tcp_node *n, int l, const uint32_t *node_ipv4, const uint16_t *ports, int64_t deadline,
                        double timeout_s, ms_err *err) {
    int g = n->handles[l].rank;
    for (int q = 0; q < g; q++) {
        int nq = node_of(n, q);
        uint32_t ip = nq == n->node_rank ? htonl(INADDR_LOOPBACK) : node_ipv4[nq];
        char why[256], where[64];
        n->rk[l].fd[q] = connect_peer(ip, ports[q], (uint64_t)n->size << 32 | (uint32_t)g, deadline, why, sizeof why);
        if (n->rk[l].fd[q] < 0) {
            addr_name(ip, ports[q], where, sizeof where);
            return ms_err_set(err, "tcp comm: rank %d could not reach rank %d (node %d) at %s within %.1f s: %s", g, q,
                              nq, where, timeout_s, why);
        }
    }
    return 0;
}

/* Rank g accepts every rank above it, each identified by its hello. */
static int accept_up(comm_tcp_node *n, int l, int64_t deadline, double timeout_s, ms_err *err) {
    int g = n->handles[l].rank, want = n->size - 1 - g;
    rank_ctx *r = &n->rk[l];
    while (want > 0) {
        int fd = wait_fd(n->listen_fd[l], POLLIN, deadline)
                     ? accept4(n->listen_fd[l], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC) : -2;
        if (fd == -2) {
            int first = g + 1;
            while (first < n->size && r->fd[first] >= 0) first++;
            return ms_err_set(err, "tcp comm: rank %d did not hear from rank %d (node %d) within %.1f s", g, first,
                              node_of(n, first), timeout_s);
        }
        if (fd < 0) continue;
        unsigned char h[HDR];
        int64_t hello_deadline = now_ms() + 5000 < deadline ? now_ms() + 5000 : deadline;
        uint64_t v = io_all(fd, h, HDR, 0, hello_deadline) == 0 ? hdr_len(h) : 0;
        int from = (int)(uint32_t)v, size = (int)(v >> 32);
        if (get_u32(h) != CT_MAGIC || get_u32(h + 4) != KIND_HELLO || size != n->size || from <= g ||
            from >= n->size || r->fd[from] >= 0) {
            close(fd); /* a stray or a mismatched world: the real peer retries or times out, named */
            continue;
        }
        comm_tcp_tune(fd);
        r->fd[from] = fd;
        want--;
    }
    return 0;
}

int comm_tcp_node_connect(comm_tcp_node *n, const uint32_t *node_ipv4, const uint16_t *ports, int timeout_ms,
                          ms_err *err) {
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 300000);
    double timeout_s = (timeout_ms > 0 ? timeout_ms : 300000) / 1000.0;
    for (int l = 0; l < n->n_local; l++) /* connects complete in the listeners' backlogs, before any accept */
        if (connect_down(n, l, node_ipv4, ports, deadline, timeout_s, err) != 0) return -1;
    for (int l = 0; l < n->n_local; l++)
        if (accept_up(n, l, deadline, timeout_s, err) != 0) return -1;
    return 0;
}
