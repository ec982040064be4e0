/* common/rendezvous.c — see rendezvous.h. Wire format (big-endian u32 fields):
 *   hello  node -> 0 : magic, version, nnodes, node_rank, blob_len      (20 bytes)
 *                      then blob_len bytes: the node's own entry
 *   reply  0 -> node : magic, status (0 table, 1 stopped), len, then len bytes:
 *                      the table (nnodes x (4-byte IPv4 + blob_len bytes)), or
 *                      why node 0 refused the node / gave up
 *   ack    node -> 0 : magic, node_rank                                  (8 bytes)
 * Node 0 polls, in one loop, the listening socket, the connections that have
 * not finished their hello (at most MAX_PENDING: a new one evicts the oldest, so
 * silent strays cannot lock real nodes out) and the nodes that joined (to notice
 * a disconnect). Every socket is non-blocking; every wait is a poll() bounded by
 * the one deadline. */
#include "common/rendezvous.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RV_MAGIC 0x4d53525au /* "MSRZ" */
#define RV_VERSION 2u
#define HELLO_BYTES 20
#define REPLY_BYTES 12
#define ACK_BYTES 8
#define REASON_MAX 512
#define MAX_PENDING 16
#define MAX_NODES 65536
#define MAX_BLOB_BYTES (1u << 30)
#define RETRY_MS 100          /* pause between connection attempts */
#define CONNECT_TRY_MS 2000   /* one connect() attempt, then resolve and try again */
#define DEFAULT_TIMEOUT_MS 300000
#define PREFIX "rendezvous: "

/* ---- time, bytes, socket I/O ------------------------------------------------------- */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline) {
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

static double timeout_s(const rendezvous_cfg *cfg) {
    return (cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS) / 1000.0;
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Waits until fd is ready for `events` or the deadline: 1 ready, 0 timed out, -1 error (errno). */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, left_ms(deadline));
        if (n >= 0) return n > 0;
        if (errno != EINTR) return -1;
    }
}

/* Sends len bytes before the deadline: 0, or -1 with errno (ETIMEDOUT when time ran out). */
static int send_all(int fd, const void *buf, size_t len, int64_t deadline) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        int r = wait_fd(fd, POLLOUT, deadline);
        if (r == 0) errno = ETIMEDOUT;
        if (r <= 0) return -1;
    }
    return 0;
}

/* Receives len bytes before the deadline: 0, or -1 with errno (ETIMEDOUT; ECONNRESET when the peer closed). */
static int recv_all(int fd, void *buf, size_t len, int64_t deadline) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        int r = wait_fd(fd, POLLIN, deadline);
        if (r == 0) errno = ETIMEDOUT;
        if (r <= 0) return -1;
    }
    return 0;
}

static int send_reply(int fd, uint32_t status, const void *data, uint32_t len, int64_t deadline) {
    unsigned char h[REPLY_BYTES];
    put_u32(h, RV_MAGIC);
    put_u32(h + 4, status);
    put_u32(h + 8, len);
    return send_all(fd, h, sizeof h, deadline) == 0 && send_all(fd, data, len, deadline) == 0 ? 0 : -1;
}

/* err's message without the "rendezvous: " prefix (what node 0 tells the other nodes). */
static const char *reason_of(const ms_err *err) {
    return strncmp(err->msg, PREFIX, strlen(PREFIX)) == 0 ? err->msg + strlen(PREFIX) : err->msg;
}

/* Fills out[nnodes] from a received table (each entry malloc'd; rendezvous_nodes_free). */
static int table_unpack(const unsigned char *t, int nnodes, uint32_t blob_len, rendezvous_node *out, ms_err *err) {
    size_t row = 4 + (size_t)blob_len;
    for (int r = 0; r < nnodes; r++) {
        memcpy(&out[r].ipv4, t + r * row, 4);
        if (!(out[r].entry = malloc(blob_len ? blob_len : 1))) {
            rendezvous_nodes_free(out, r);
            return ms_err_set(err, PREFIX "out of memory");
        }
        if (blob_len) memcpy(out[r].entry, t + r * row + 4, blob_len);
    }
    return 0;
}

void rendezvous_nodes_free(rendezvous_node *nodes, int n) {
    for (int r = 0; nodes && r < n; r++) {
        free(nodes[r].entry);
        nodes[r].entry = NULL;
    }
}

/* ---- node 0 ----------------------------------------------------------------------- */

typedef struct {
    int fd; /* -1: free */
    int64_t since_ms;
    size_t got;                /* bytes of hello + entry received */
    int rank;                  /* from the checked hello, else -1 */
    unsigned char hello[HELLO_BYTES];
    unsigned char *entry;      /* [blob_len], once the hello passed its check */
    uint32_t addr;             /* IPv4, network order, as node 0 sees the node */
    char peer[64];             /* "ip:port" */
} conn;

typedef struct {
    const rendezvous_cfg *cfg;
    uint32_t blob_len;         /* bytes per node entry */
    int64_t deadline;
    int listen_fd;
    conn pending[MAX_PENDING]; /* connected, hello not complete yet */
    conn *nodes;               /* [nnodes]; nodes[r].fd >= 0 once node r said hello (nodes[0] stays -1) */
    int joined;
    struct pollfd *pfds;       /* [1 + MAX_PENDING + nnodes]: listener, pending, nodes */
} server;

static int listen_on(int port, ms_err *err) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ms_err_set(err, PREFIX "socket: %s", strerror(errno));
    int one = 1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
        bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 128) == 0)
        return fd;
    int e = errno;
    close(fd);
    if (e == EADDRINUSE)
        return ms_err_set(err, PREFIX "port %d is already in use on node 0 (another mlaserve or rendezvous running?)", port);
    return ms_err_set(err, PREFIX "cannot listen on 0.0.0.0:%d: %s", port, strerror(e));
}

static void conn_close(conn *c) {
    if (c->fd >= 0) close(c->fd);
    free(c->entry);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->rank = -1;
}

static void server_free(server *s) {
    if (s->listen_fd >= 0) close(s->listen_fd);
    for (int i = 0; i < MAX_PENDING; i++) conn_close(&s->pending[i]);
    for (int r = 0; s->nodes && r < s->cfg->nnodes; r++) conn_close(&s->nodes[r]);
    free(s->nodes);
    free(s->pfds);
}

static int server_init(server *s, const rendezvous_cfg *cfg, uint32_t blob_len, int64_t deadline, ms_err *err) {
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->blob_len = blob_len;
    s->deadline = deadline;
    for (int i = 0; i < MAX_PENDING; i++) s->pending[i].fd = -1, s->pending[i].rank = -1;
    s->nodes = calloc((size_t)cfg->nnodes, sizeof *s->nodes);
    s->pfds = calloc(1 + MAX_PENDING + (size_t)cfg->nnodes, sizeof *s->pfds);
    s->listen_fd = -1;
    if (!s->nodes || !s->pfds) {
        server_free(s);
        return ms_err_set(err, PREFIX "out of memory");
    }
    for (int r = 0; r < cfg->nnodes; r++) s->nodes[r].fd = -1, s->nodes[r].rank = -1;
    s->listen_fd = listen_on(cfg->master_port, err);
    if (s->listen_fd < 0) {
        server_free(s);
        return -1;
    }
    return 0;
}

/* Best effort, without waiting: tells the refused connection (if any) and every
 * node that joined why node 0 stops, so they fail now rather than at their deadline. */
static void server_give_up(server *s, int refused_fd, const char *why) {
    char msg[REASON_MAX];
    if (refused_fd >= 0) {
        snprintf(msg, sizeof msg, "refused: %s", why);
        send_reply(refused_fd, 1, msg, (uint32_t)strlen(msg), now_ms());
    }
    snprintf(msg, sizeof msg, "gave up: %s", why);
    for (int r = 1; r < s->cfg->nnodes; r++)
        if (s->nodes[r].fd >= 0) send_reply(s->nodes[r].fd, 1, msg, (uint32_t)strlen(msg), now_ms());
}

/* "2, 3": the node ranks r >= 1 with bad[r] set. */
static void rank_list(const int *bad, int n, char *out, size_t cap) {
    size_t at = 0;
    out[0] = '\0';
    for (int r = 1; r < n && at < cap; r++) {
        if (!bad[r]) continue;
        int w = snprintf(out + at, cap - at, "%s%d", at ? ", " : "", r);
        if (w < 0) break;
        at += (size_t)w;
    }
}

static int server_join_timeout(server *s, ms_err *err) {
    int n = s->cfg->nnodes;
    int *missing = calloc((size_t)n, sizeof *missing);
    char list[400] = "?";
    if (missing) {
        for (int r = 1; r < n; r++) missing[r] = s->nodes[r].fd < 0;
        rank_list(missing, n, list, sizeof list);
        free(missing);
    }
    ms_err_set(err, PREFIX "node(s) %s of %d did not join within %.1f s (listening on 0.0.0.0:%d)", list, n,
               timeout_s(s->cfg), s->cfg->master_port);
    server_give_up(s, -1, reason_of(err));
    return -1;
}

static void peer_name(const struct sockaddr_in *a, char *out, size_t cap) {
    char host[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    snprintf(out, cap, "%s:%d", host, ntohs(a->sin_port));
}

/* Takes one waiting connection into a pending slot, evicting the oldest when all are taken. */
static void server_accept(server *s) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = accept4(s->listen_fd, (struct sockaddr *)&a, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, ECONNABORTED, EMFILE: keep waiting */
    int slot = 0;
    for (int i = 0; i < MAX_PENDING; i++) {
        if (s->pending[i].fd < 0) { slot = i; break; }
        if (s->pending[i].since_ms < s->pending[slot].since_ms) slot = i;
    }
    conn *c = &s->pending[slot];
    conn_close(c);
    c->fd = fd;
    c->since_ms = now_ms();
    c->addr = a.sin_addr.s_addr;
    peer_name(&a, c->peer, sizeof c->peer);
}

/* Reads what a pending connection sent into its hello, then (once the hello
 * passed hello_check, c->rank >= 0) into its entry: 1 the part being read is
 * complete, 0 not yet, -1 drop it (closed, failed, or not speaking this protocol). */
static int pending_read(conn *c, uint32_t blob_len) {
    int in_hello = c->got < HELLO_BYTES;
    unsigned char *at = in_hello ? c->hello + c->got : c->entry + (c->got - HELLO_BYTES);
    size_t want = in_hello ? HELLO_BYTES - c->got : HELLO_BYTES + blob_len - c->got;
    if (want == 0) return 1;
    ssize_t n = recv(c->fd, at, want, 0);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n == 0) return -1;
    c->got += (size_t)n;
    if (c->got >= 4 && get_u32(c->hello) != RV_MAGIC) return -1;
    return (size_t)n == want;
}

/* The node rank a complete hello names, or -1 with err when it cannot join this world. */
static int hello_check(const server *s, const conn *c, ms_err *err) {
    uint32_t version = get_u32(c->hello + 4), nnodes = get_u32(c->hello + 8);
    uint32_t rank = get_u32(c->hello + 12), blob_len = get_u32(c->hello + 16);
    int n = s->cfg->nnodes;
    if (version != RV_VERSION)
        return ms_err_set(err, PREFIX "node %u (%s) speaks protocol version %u, node 0 speaks %u", rank, c->peer,
                          version, RV_VERSION);
    if (nnodes != (uint32_t)n)
        return ms_err_set(err, PREFIX "node %u (%s) was started with nnodes=%u, node 0 with nnodes=%d", rank,
                          c->peer, nnodes, n);
    if (rank == 0 || rank >= (uint32_t)n)
        return ms_err_set(err, PREFIX "a node at %s says node_rank=%u, outside 1..%d", c->peer, rank, n - 1);
    if (blob_len != s->blob_len)
        return ms_err_set(err, PREFIX "node %u (%s) expects a %u-byte blob, node 0 has %u bytes", rank, c->peer,
                          blob_len, s->blob_len);
    if (s->nodes[rank].fd >= 0)
        return ms_err_set(err, PREFIX "node_rank %u joined twice (from %s and from %s)", rank, s->nodes[rank].peer,
                          c->peer);
    return (int)rank;
}

/* Handles the events of one poll() round: 0, or -1 with err when a node cannot join. */
static int server_handle(server *s, ms_err *err) {
    struct pollfd *node_pfd = s->pfds + 1 + MAX_PENDING;
    for (int r = 1; r < s->cfg->nnodes; r++) { /* a joined node that talks or closes before the blob: forget it */
        if (!node_pfd[r].revents || s->nodes[r].fd < 0) continue;
        conn_close(&s->nodes[r]);
        s->joined--;
    }
    for (int i = 0; i < MAX_PENDING; i++) {
        conn *c = &s->pending[i];
        if (!s->pfds[1 + i].revents || c->fd < 0) continue;
        int got = pending_read(c, s->blob_len);
        if (got < 0) conn_close(c);
        if (got <= 0) continue;
        if (c->rank < 0) { /* the hello is complete: check it, then read the entry */
            int rank = hello_check(s, c, err);
            if (rank < 0) {
                server_give_up(s, c->fd, reason_of(err));
                return -1;
            }
            c->rank = rank;
            if (!(c->entry = malloc(s->blob_len ? s->blob_len : 1))) return ms_err_set(err, PREFIX "out of memory");
            if (c->got < HELLO_BYTES + s->blob_len) continue;
        }
        if (s->nodes[c->rank].fd >= 0) { /* another connection completed the same rank first */
            hello_check(s, c, err);
            server_give_up(s, c->fd, reason_of(err));
            return -1;
        }
        s->nodes[c->rank] = *c;
        memset(c, 0, sizeof *c);
        c->fd = -1;
        c->rank = -1;
        s->joined++;
    }
    if (s->pfds[0].revents) server_accept(s);
    return 0;
}

static int server_wait_joins(server *s, ms_err *err) {
    int n = s->cfg->nnodes;
    while (s->joined < n - 1) {
        int left = left_ms(s->deadline);
        if (left == 0) return server_join_timeout(s, err);
        s->pfds[0] = (struct pollfd){s->listen_fd, POLLIN, 0};
        for (int i = 0; i < MAX_PENDING; i++) s->pfds[1 + i] = (struct pollfd){s->pending[i].fd, POLLIN, 0};
        for (int r = 0; r < n; r++) s->pfds[1 + MAX_PENDING + r] = (struct pollfd){s->nodes[r].fd, POLLIN, 0};
        int got = poll(s->pfds, 1 + MAX_PENDING + (nfds_t)n, left);
        if (got < 0 && errno != EINTR) return ms_err_set(err, PREFIX "poll: %s", strerror(errno));
        if (got > 0 && server_handle(s, err) != 0) return -1;
    }
    return 0;
}

/* table = nnodes x (IPv4 + entry); node 0's own address is left 0 (the others know it as master_addr). */
static unsigned char *server_table(const server *s, const void *mine, size_t *len) {
    size_t row = 4 + (size_t)s->blob_len;
    unsigned char *t = calloc((size_t)s->cfg->nnodes, row);
    *len = (size_t)s->cfg->nnodes * row;
    if (!t) return NULL;
    if (s->blob_len) memcpy(t + 4, mine, s->blob_len);
    for (int r = 1; r < s->cfg->nnodes; r++) {
        memcpy(t + r * row, &s->nodes[r].addr, 4);
        if (s->blob_len) memcpy(t + r * row + 4, s->nodes[r].entry, s->blob_len);
    }
    return t;
}

static int server_send_table(server *s, const unsigned char *table, uint32_t len, ms_err *err) {
    for (int r = 1; r < s->cfg->nnodes; r++) {
        if (send_reply(s->nodes[r].fd, 0, table, len, s->deadline) == 0) continue;
        if (errno == ETIMEDOUT)
            ms_err_set(err, PREFIX "could not send the table to node %d (%s) within %.1f s", r, s->nodes[r].peer,
                       timeout_s(s->cfg));
        else
            ms_err_set(err, PREFIX "node %d (%s) went away before it got the table: %s", r, s->nodes[r].peer,
                       strerror(errno));
        server_give_up(s, -1, reason_of(err));
        return -1;
    }
    return 0;
}

static int server_wait_acks(server *s, ms_err *err) {
    int n = s->cfg->nnodes, any = 0;
    int *missing = calloc((size_t)n, sizeof *missing);
    if (!missing) return ms_err_set(err, PREFIX "out of memory");
    for (int r = 1; r < n; r++) { /* after the deadline each recv still takes what has arrived */
        unsigned char ack[ACK_BYTES];
        int ok = recv_all(s->nodes[r].fd, ack, sizeof ack, s->deadline) == 0 && get_u32(ack) == RV_MAGIC &&
                 get_u32(ack + 4) == (uint32_t)r;
        missing[r] = !ok;
        any |= !ok;
    }
    if (any) {
        char list[400];
        rank_list(missing, n, list, sizeof list);
        ms_err_set(err, PREFIX "node(s) %s of %d did not acknowledge the table within %.1f s", list, n,
                   timeout_s(s->cfg));
    }
    free(missing);
    return any ? -1 : 0;
}

static int server_run(const rendezvous_cfg *cfg, const void *mine, uint32_t blob_len, rendezvous_node *out,
                      int64_t deadline, ms_err *err) {
    server s;
    if (server_init(&s, cfg, blob_len, deadline, err) != 0) return -1;
    int rc = server_wait_joins(&s, err);
    size_t len = 0;
    unsigned char *table = rc == 0 ? server_table(&s, mine, &len) : NULL;
    if (rc == 0 && !table) rc = ms_err_set(err, PREFIX "out of memory");
    if (rc == 0) rc = server_send_table(&s, table, (uint32_t)len, err);
    if (rc == 0) rc = server_wait_acks(&s, err);
    if (rc == 0) rc = table_unpack(table, cfg->nnodes, blob_len, out, err);
    free(table);
    server_free(&s);
    return rc;
}

/* ---- nodes 1..nnodes-1 -------------------------------------------------------------- */

/* Linux can connect a socket to itself when the target port is a free ephemeral
 * port (simultaneous open); that is not node 0. */
static int connected_to_self(int fd) {
    struct sockaddr_storage a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0 || getpeername(fd, (struct sockaddr *)&b, &lb) != 0) return 0;
    return la == lb && memcmp(&a, &b, la) == 0;
}

/* One connect() to one address, bounded by the deadline and CONNECT_TRY_MS: the
 * fd, or -1 with why it failed in `why`. */
static int connect_one(const struct addrinfo *ai, int64_t deadline, char *why, size_t why_cap) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        snprintf(why, why_cap, "socket: %s", strerror(errno));
        return -1;
    }
    int e = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
    if (e == EINPROGRESS) {
        int64_t until = now_ms() + CONNECT_TRY_MS < deadline ? now_ms() + CONNECT_TRY_MS : deadline;
        int r = wait_fd(fd, POLLOUT, until);
        socklen_t len = sizeof e;
        if (r == 0) e = ETIMEDOUT;
        else if (r < 0) e = errno;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
    }
    if (e == 0 && !connected_to_self(fd)) return fd;
    snprintf(why, why_cap, "%s", e ? strerror(e) : "connected to itself: nothing listens there");
    close(fd);
    return -1;
}

/* Connects to node 0, resolving and retrying until the deadline: the fd, or -1
 * (why holds the last failure). */
static int client_connect(const rendezvous_cfg *cfg, int64_t deadline, char *why, size_t why_cap) {
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->master_port);
    for (;;) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int gai = getaddrinfo(cfg->master_addr, port, &hints, &res);
        if (gai != 0) snprintf(why, why_cap, "cannot resolve %s: %s", cfg->master_addr, gai_strerror(gai));
        for (struct addrinfo *ai = gai == 0 ? res : NULL; ai; ai = ai->ai_next) {
            int fd = connect_one(ai, deadline, why, why_cap);
            if (fd >= 0) {
                freeaddrinfo(res);
                return fd;
            }
        }
        if (gai == 0) freeaddrinfo(res);
        int left = left_ms(deadline);
        if (left == 0) return -1;
        poll(NULL, 0, left < RETRY_MS ? left : RETRY_MS);
    }
}

static int client_stopped(int fd, const rendezvous_cfg *cfg, uint32_t len, int64_t deadline, ms_err *err) {
    char why[REASON_MAX];
    if (len >= sizeof why) len = sizeof why - 1;
    if (recv_all(fd, why, len, deadline) != 0) len = 0;
    why[len] = '\0';
    return ms_err_set(err, PREFIX "node %d stopped by node 0 (%s:%d): %s", cfg->node_rank, cfg->master_addr,
                      cfg->master_port, len ? why : "no reason received");
}

/* One session on a connected socket: 0 done, 1 node 0 closed before replying
 * (connect again), -2 no answer by the deadline, -1 error (err set). */
static int client_session(int fd, const rendezvous_cfg *cfg, const void *mine, uint32_t blob_len,
                          rendezvous_node *out, int64_t deadline, ms_err *err) {
    unsigned char hello[HELLO_BYTES], reply[REPLY_BYTES], ack[ACK_BYTES];
    put_u32(hello, RV_MAGIC);
    put_u32(hello + 4, RV_VERSION);
    put_u32(hello + 8, (uint32_t)cfg->nnodes);
    put_u32(hello + 12, (uint32_t)cfg->node_rank);
    put_u32(hello + 16, blob_len);
    if (send_all(fd, hello, sizeof hello, deadline) != 0 || send_all(fd, mine, blob_len, deadline) != 0)
        return errno == ETIMEDOUT ? -2 : 1;
    if (recv_all(fd, reply, sizeof reply, deadline) != 0) return errno == ETIMEDOUT ? -2 : 1;
    if (get_u32(reply) != RV_MAGIC)
        return ms_err_set(err, PREFIX "node %d: %s:%d answered, but not as an mlaserve rendezvous", cfg->node_rank,
                          cfg->master_addr, cfg->master_port);
    uint32_t status = get_u32(reply + 4), len = get_u32(reply + 8);
    if (status != 0) return client_stopped(fd, cfg, len, deadline, err);
    size_t want = (size_t)cfg->nnodes * (4 + (size_t)blob_len);
    if (len != want)
        return ms_err_set(err, PREFIX "node %d: node 0 sent a %u-byte table, expected %zu", cfg->node_rank, len, want);
    unsigned char *table = malloc(want ? want : 1);
    if (!table) return ms_err_set(err, PREFIX "out of memory");
    if (recv_all(fd, table, len, deadline) != 0) {
        free(table);
        return ms_err_set(err, PREFIX "node %d lost node 0 (%s:%d) while receiving the table: %s", cfg->node_rank,
                          cfg->master_addr, cfg->master_port, strerror(errno));
    }
    int rc = table_unpack(table, cfg->nnodes, blob_len, out, err);
    free(table);
    if (rc != 0) return -1;
    struct sockaddr_in a; /* node 0's address: the one this node reached it at */
    socklen_t alen = sizeof a;
    if (getpeername(fd, (struct sockaddr *)&a, &alen) == 0 && a.sin_family == AF_INET) out[0].ipv4 = a.sin_addr.s_addr;
    put_u32(ack, RV_MAGIC);
    put_u32(ack + 4, (uint32_t)cfg->node_rank);
    if (send_all(fd, ack, sizeof ack, deadline) != 0)
        return ms_err_set(err, PREFIX "node %d could not acknowledge the table to node 0 (%s:%d): %s", cfg->node_rank,
                          cfg->master_addr, cfg->master_port, strerror(errno));
    return 0;
}

static int client_run(const rendezvous_cfg *cfg, const void *mine, uint32_t blob_len, rendezvous_node *out,
                      int64_t deadline, ms_err *err) {
    char why[256] = "no attempt finished";
    for (;;) {
        int fd = client_connect(cfg, deadline, why, sizeof why);
        if (fd < 0)
            return ms_err_set(err, PREFIX "node %d could not reach node 0 at %s:%d within %.1f s (last error: %s)",
                              cfg->node_rank, cfg->master_addr, cfg->master_port, timeout_s(cfg), why);
        int rc = client_session(fd, cfg, mine, blob_len, out, deadline, err);
        close(fd);
        if (rc == -2)
            return ms_err_set(err, PREFIX "node %d reached node 0 at %s:%d but got no answer within %.1f s "
                                          "(node 0 answers once all %d nodes have joined)",
                              cfg->node_rank, cfg->master_addr, cfg->master_port, timeout_s(cfg), cfg->nnodes);
        if (rc <= 0) return rc;
        snprintf(why, sizeof why, "node 0 closed the connection before answering");
        int left = left_ms(deadline);
        if (left > 0) poll(NULL, 0, left < RETRY_MS ? left : RETRY_MS);
    }
}

/* ---- entry ---------------------------------------------------------------------------- */

static int cfg_check(const rendezvous_cfg *cfg, const void *blob, size_t blob_len, ms_err *err) {
    if (!cfg) return ms_err_set(err, PREFIX "no configuration");
    if (cfg->nnodes < 1 || cfg->nnodes > MAX_NODES)
        return ms_err_set(err, PREFIX "nnodes=%d is outside 1..%d", cfg->nnodes, MAX_NODES);
    if (cfg->node_rank < 0 || cfg->node_rank >= cfg->nnodes)
        return ms_err_set(err, PREFIX "node_rank=%d is outside 0..%d (nnodes=%d)", cfg->node_rank, cfg->nnodes - 1,
                          cfg->nnodes);
    if (cfg->nnodes > 1 && (cfg->master_port < 1 || cfg->master_port > 65535))
        return ms_err_set(err, PREFIX "master_port=%d is not a TCP port (1..65535)", cfg->master_port);
    if (cfg->node_rank > 0 && (!cfg->master_addr || !cfg->master_addr[0]))
        return ms_err_set(err, PREFIX "node %d needs master_addr (node 0's host name or IP)", cfg->node_rank);
    if (blob_len > MAX_BLOB_BYTES) return ms_err_set(err, PREFIX "a %zu-byte blob is too large (at most 1 GiB)", blob_len);
    if (blob_len > 0 && !blob) return ms_err_set(err, PREFIX "no blob buffer for %zu bytes", blob_len);
    return 0;
}

static int own_entry_only(const void *mine, size_t blob_len, rendezvous_node *out, ms_err *err) {
    out[0].ipv4 = 0;
    if (!(out[0].entry = malloc(blob_len ? blob_len : 1))) return ms_err_set(err, PREFIX "out of memory");
    if (blob_len) memcpy(out[0].entry, mine, blob_len);
    return 0;
}

int rendezvous_exchange(const rendezvous_cfg *cfg, const void *mine, size_t blob_len, rendezvous_node *out,
                        ms_err *err) {
    ms_err local;
    if (!err) err = &local; /* messages are also passed on to the other nodes */
    if (cfg_check(cfg, mine, blob_len, err) != 0) return -1;
    if (cfg->nnodes > 1 && (size_t)cfg->nnodes * (4 + blob_len) > MAX_BLOB_BYTES)
        return ms_err_set(err, PREFIX "a table of %d x %zu bytes is too large (at most 1 GiB)", cfg->nnodes, blob_len);
    int64_t deadline = now_ms() + (cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS);
    if (cfg->nnodes == 1) return own_entry_only(mine, blob_len, out, err);
    if (cfg->node_rank == 0) return server_run(cfg, mine, (uint32_t)blob_len, out, deadline, err);
    return client_run(cfg, mine, (uint32_t)blob_len, out, deadline, err);
}

int rendezvous_run(const rendezvous_cfg *cfg, void *blob, size_t blob_len, ms_err *err) {
    ms_err local;
    if (!err) err = &local;
    if (cfg_check(cfg, blob, blob_len, err) != 0) return -1;
    if (cfg->nnodes == 1) return 0;
    rendezvous_node *nodes = calloc((size_t)cfg->nnodes, sizeof *nodes);
    void *zeros = cfg->node_rank ? calloc(1, blob_len ? blob_len : 1) : NULL; /* what the others contribute */
    if (!nodes || (cfg->node_rank && !zeros)) {
        free(nodes);
        free(zeros);
        return ms_err_set(err, PREFIX "out of memory");
    }
    int rc = rendezvous_exchange(cfg, cfg->node_rank ? zeros : blob, blob_len, nodes, err);
    free(zeros);
    if (rc == 0 && cfg->node_rank != 0 && blob_len) memcpy(blob, nodes[0].entry, blob_len);
    rendezvous_nodes_free(nodes, rc == 0 ? cfg->nnodes : 0);
    free(nodes);
    return rc;
}
