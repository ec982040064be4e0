/* server/ep_remote.c — see ep_remote.h. */
#include "server/ep_remote.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cpu/comm_tcp.h"
#include "engine/kv.h"

#define MAX_MSG_BYTES (64u << 20)
#define STATS_MS 50
#define ACK_TIMEOUT_S 30 /* a worker answers a submit at once; past this it is taken as lost */
#define EP_REMOTE_MAX_EXPERTS 4096 /* per-expert counts in a stats message (as /metrics shows) */

/* ---- framing and encodings ------------------------------------------------------- */

static int io_all(int fd, void *buf, size_t len, int sending) {
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t k = sending ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (k > 0) { p += k; len -= (size_t)k; continue; }
        if (k < 0 && errno == EINTR) continue;
        return -1;
    }
    return 0;
}

/* Sends j (stolen) as one message; mu serializes the writers of fd. */
static int send_msg(int fd, pthread_mutex_t *mu, json_t *j) {
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) return -1;
    size_t len = strlen(text);
    unsigned char h[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                          (unsigned char)len};
    pthread_mutex_lock(mu);
    int rc = io_all(fd, h, 4, 1) == 0 && io_all(fd, text, len, 1) == 0 ? 0 : -1;
    pthread_mutex_unlock(mu);
    free(text);
    return rc;
}

/* The next message, or NULL at the end of the connection (or a malformed one). */
static json_t *recv_msg(int fd) {
    unsigned char h[4];
    if (io_all(fd, h, 4, 0) != 0) return NULL;
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len > MAX_MSG_BYTES) return NULL;
    char *text = malloc((size_t)len + 1);
    if (!text || io_all(fd, text, len, 0) != 0) {
        free(text);
        return NULL;
    }
    json_t *j = json_loadb(text, len, 0, NULL);
    free(text);
    return j;
}

static json_t *float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return json_integer(u);
}

static float bits_float(const json_t *j) {
    uint32_t u = (uint32_t)json_integer_value(j);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static json_t *hex_of(const char *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    char *h = malloc(2 * n + 1);
    if (!h) return NULL;
    for (size_t i = 0; i < n; i++) {
        h[2 * i] = digits[(unsigned char)p[i] >> 4];
        h[2 * i + 1] = digits[(unsigned char)p[i] & 15];
    }
    json_t *j = json_stringn(h, 2 * n);
    free(h);
    return j;
}

static int nibble(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

/* malloc'd bytes of a hex string (NUL-terminated), or NULL; *n their count. */
static char *bytes_of(const json_t *j, size_t *n) {
    const char *h = json_string_value(j);
    size_t len = h ? strlen(h) : 0;
    char *out = h && len % 2 == 0 ? malloc(len / 2 + 1) : NULL;
    for (size_t i = 0; out && i < len / 2; i++) {
        int a = nibble(h[2 * i]), b = nibble(h[2 * i + 1]);
        if (a < 0 || b < 0) {
            free(out);
            return NULL;
        }
        out[i] = (char)(a << 4 | b);
    }
    if (out) out[len / 2] = '\0', *n = len / 2;
    return out;
}

static long get_int(const json_t *o, const char *k) { return (long)json_integer_value(json_object_get(o, k)); }


/* ---- requests and events as JSON --------------------------------------------------- */

static json_t *request_json(uint64_t id, int rank, const sched_request *r) {
    json_t *prompt = json_array(), *stop = json_array();
    for (int i = 0; prompt && i < r->n_prompt; i++) json_array_append_new(prompt, json_integer(r->prompt[i]));
    for (int i = 0; stop && i < r->n_stop && r->stop[i]; i++) json_array_append_new(stop, hex_of(r->stop[i], strlen(r->stop[i])));
    json_t *bias = json_array(), *stop_ids = json_array();
    for (int i = 0; stop_ids && i < r->n_stop_ids; i++) json_array_append_new(stop_ids, json_integer(r->stop_ids[i]));
    for (int i = 0; bias && i < r->n_bias; i++)
        json_array_append_new(bias, json_pack("[i, o]", r->bias_ids[i], float_bits(r->bias_values[i])));
    const sample_params *p = &r->sampling;
    return json_pack("{s:s, s:I, s:i, s:o, s:i, s:i, s:o, s:o, s:o, s:i, s:i, s:i, s:i, s:i, s:{s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:I}}",
                     "t", "submit", "id", (json_int_t)id, "rank", rank, "prompt", prompt, "max_tokens", r->max_tokens,
                     "ignore_eos", r->ignore_eos, "stop", stop, "logit_bias", bias, "stop_ids", stop_ids,
                     "include_stop", r->include_stop, "min_tokens", r->min_tokens, "top_logprobs", r->top_logprobs, "prompt_logprobs",
                     r->prompt_logprobs, "skip_special", r->skip_special, "sampling", "temperature",
                     float_bits(p->temperature), "top_k", p->top_k, "top_p", float_bits(p->top_p), "min_p",
                     float_bits(p->min_p), "repetition_penalty", float_bits(p->repetition_penalty), "presence_penalty",
                     float_bits(p->presence_penalty), "frequency_penalty", float_bits(p->frequency_penalty), "seed",
                     (json_int_t)p->seed);
}

/* The submit's logit_bias pairs into r (malloc'd: request_free). */
static int bias_parse(const json_t *a, sched_request *r) {
    size_t n = json_array_size(a);
    if (!n) return 0;
    int32_t *ids = malloc(n * sizeof *ids);
    float *v = malloc(n * sizeof *v);
    r->bias_ids = ids, r->bias_values = v;
    if (!ids || !v) return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(a, i);
        ids[i] = (int32_t)json_integer_value(json_array_get(e, 0));
        v[i] = bits_float(json_array_get(e, 1));
    }
    r->n_bias = (int)n;
    return 0;
}

/* Fills r from a "submit" message (prompt and stop strings malloc'd: request_free). */
static int request_parse(const json_t *m, sched_request *r) {
    memset(r, 0, sizeof *r);
    const json_t *prompt = json_object_get(m, "prompt"), *stop = json_object_get(m, "stop"),
                 *sp = json_object_get(m, "sampling");
    size_t n = json_array_size(prompt);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids || !json_is_object(sp)) {
        free(ids);
        return -1;
    }
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(prompt, i));
    r->prompt = ids;
    r->n_prompt = (int)n;
    r->max_tokens = (int)get_int(m, "max_tokens");
    r->ignore_eos = (int)get_int(m, "ignore_eos");
    r->top_logprobs = (int)get_int(m, "top_logprobs");
    r->prompt_logprobs = (int)get_int(m, "prompt_logprobs");
    r->skip_special = (int)get_int(m, "skip_special");
    if (bias_parse(json_object_get(m, "logit_bias"), r) != 0) return -1;
    r->include_stop = (int)get_int(m, "include_stop");
    r->min_tokens = (int)get_int(m, "min_tokens");
    const json_t *sid = json_object_get(m, "stop_ids");
    size_t ns = json_array_size(sid) < SCHED_MAX_STOP_IDS ? json_array_size(sid) : SCHED_MAX_STOP_IDS;
    int32_t *stop_ids = ns ? malloc(ns * sizeof *stop_ids) : NULL;
    if (ns && !stop_ids) return -1;
    for (size_t i = 0; i < ns; i++) stop_ids[i] = (int32_t)json_integer_value(json_array_get(sid, i));
    r->stop_ids = stop_ids;
    r->n_stop_ids = (int)ns;
    for (size_t i = 0; i < json_array_size(stop) && i < SCHED_MAX_STOP; i++) {
        size_t len;
        r->stop[i] = bytes_of(json_array_get(stop, i), &len);
        if (!r->stop[i]) return -1;
        r->n_stop = (int)i + 1;
    }
    sample_params *p = &r->sampling;
    p->temperature = bits_float(json_object_get(sp, "temperature"));
    p->top_k = (int32_t)get_int(sp, "top_k");
    p->top_p = bits_float(json_object_get(sp, "top_p"));
    p->min_p = bits_float(json_object_get(sp, "min_p"));
    p->repetition_penalty = bits_float(json_object_get(sp, "repetition_penalty"));
    p->presence_penalty = bits_float(json_object_get(sp, "presence_penalty"));
    p->frequency_penalty = bits_float(json_object_get(sp, "frequency_penalty"));
    p->seed = (uint64_t)json_integer_value(json_object_get(sp, "seed"));
    return 0;
}

static void request_free(sched_request *r) {
    free((void *)r->prompt);
    free((void *)r->bias_ids);
    free((void *)r->bias_values);
    free((void *)r->stop_ids);
    for (int i = 0; i < r->n_stop; i++) free((void *)r->stop[i]);
}

static json_t *event_json(uint64_t id, const sched_event *ev) {
    json_t *top = json_array();
    for (int i = 0; top && i < ev->n_top; i++)
        json_array_append_new(top, json_pack("[i, o]", ev->top[i].id, float_bits(ev->top[i].logprob)));
    return json_pack("{s:s, s:I, s:i, s:i, s:o, s:o, s:o, s:i, s:s, s:i, s:i, s:i, s:i}", "t", "event", "id",
                     (json_int_t)id, "token", ev->token, "prompt", ev->prompt, "text",
                     hex_of(ev->text ? ev->text : "", ev->text_len), "lp", float_bits(ev->logprob), "top", top, "finish",
                     (int)ev->finish, "error", ev->error, "pt", ev->prompt_tokens, "ct", ev->completion_tokens, "cached",
                     ev->cached_tokens, "rank", ev->rank);
}

static int event_parse(const json_t *m, sched_event *ev) {
    memset(ev, 0, sizeof *ev);
    ev->token = (int32_t)get_int(m, "token");
    ev->prompt = (int)get_int(m, "prompt");
    ev->text = bytes_of(json_object_get(m, "text"), &ev->text_len);
    if (!ev->text) return -1;
    ev->logprob = bits_float(json_object_get(m, "lp"));
    ev->rank = (int)get_int(m, "rank");
    const json_t *top = json_object_get(m, "top");
    for (size_t i = 0; i < json_array_size(top) && i < SCHED_MAX_TOP_LOGPROBS; i++) {
        ev->top[i].id = (int32_t)json_integer_value(json_array_get(json_array_get(top, i), 0));
        ev->top[i].logprob = bits_float(json_array_get(json_array_get(top, i), 1));
        ev->n_top = (int)i + 1;
    }
    long finish = get_int(m, "finish");
    ev->finish = finish >= FINISH_NONE && finish <= FINISH_ERROR ? (finish_reason)finish : FINISH_ERROR;
    const char *error = json_string_value(json_object_get(m, "error"));
    snprintf(ev->error, sizeof ev->error, "%s", error ? error : "");
    ev->prompt_tokens = (int)get_int(m, "pt");
    ev->completion_tokens = (int)get_int(m, "ct");
    ev->cached_tokens = (int)get_int(m, "cached");
    return 0;
}

/* ---- node 0 ---------------------------------------------------------------------------- */

typedef struct pending {
    uint64_t id;
    sched_stream *st;
    int node;
    int ack;       /* the node's answer to the submit: 0 none yet, 1 accepted, -1 refused */
    int full;      /* refused for want of room: retrying later may succeed (429) */
    char why[256]; /* refused: the node's message */
    struct pending *next;
} pending;

typedef struct {
    int fd; /* -1: this node takes no sequences */
    int alive;
    pthread_t reader;
    int reader_started;
    pthread_mutex_t wmu;
    sched_stats *stats; /* [ranks_per_node], guarded by ep_remote.mu */
    long *room;         /* [2 * ranks_per_node]: free pages, load (sched_get_rank_room) */
    uint64_t *experts;  /* [n_experts] rows the node's experts ran (sched_expert_tokens), guarded by mu */
    int n_experts;
} node_link;

struct ep_remote {
    sched *front;
    int nnodes, per_node, n_remote;
    int *remote_node; /* [n_remote]: remote rank index -> node */
    node_link *links; /* [nnodes] */
    pthread_mutex_t mu;
    pthread_cond_t acked; /* a submit was answered, a node went away, or closing */
    pending *pend;
    uint64_t next_id;
    int closing; /* ep_remote_close: the readers end their streams as cancelled */
};

typedef struct {
    ep_remote *r;
    int node;
} reader_arg;

static int node_local(const ep_remote *r, int rank) {
    int node = r->remote_node[rank], first = 0;
    while (first < rank && r->remote_node[first] != node) first++;
    return rank - first;
}

static pending *take_pending(ep_remote *r, uint64_t id) { /* caller holds mu */
    for (pending **p = &r->pend; *p; p = &(*p)->next)
        if ((*p)->id == id) {
            pending *hit = *p;
            *p = hit->next;
            return hit;
        }
    return NULL;
}

static pending *find_pending(ep_remote *r, uint64_t id) { /* caller holds mu */
    pending *p = r->pend;
    while (p && p->id != id) p = p->next;
    return p;
}

static sched_stream *find_stream(ep_remote *r, uint64_t id, int last) {
    pthread_mutex_lock(&r->mu);
    sched_stream *st = NULL;
    if (last) {
        pending *p = take_pending(r, id);
        if (p) st = p->st;
        free(p);
    } else {
        pending *p = find_pending(r, id);
        if (p) st = p->st;
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

/* Ends the open streams of node (every node when node < 0) with an error.
 * Submits still waiting for their answer are left to their waiters
 * (await_ack), except when closing. */
static void fail_pending(ep_remote *r, int node, finish_reason why, const char *msg) {
    for (;;) {
        pthread_mutex_lock(&r->mu);
        pending *hit = NULL;
        for (pending **p = &r->pend; *p; p = &(*p)->next)
            if ((node < 0 || (*p)->node == node) && ((*p)->ack != 0 || r->closing)) {
                hit = *p;
                *p = hit->next;
                break;
            }
        pthread_mutex_unlock(&r->mu);
        if (!hit) return;
        sched_event ev = {.token = -1, .finish = why};
        snprintf(ev.error, sizeof ev.error, "%s", msg);
        sched_stream_deliver(hit->st, &ev);
        free(hit);
    }
}

static void handle_stats(ep_remote *r, int node, const json_t *m) {
    const json_t *ranks = json_object_get(m, "ranks");
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < json_array_size(ranks) && (int)i < r->per_node; i++) {
        const json_t *a = json_array_get(ranks, i);
        uint64_t v[11];
        for (int k = 0; k < 11; k++) v[k] = (uint64_t)json_integer_value(json_array_get(a, (size_t)k));
        r->links[node].stats[i] = (sched_stats){(int)v[0], (int)v[1], (int)v[2], (int)v[3], v[4], v[5], v[6], v[7], v[8],
                                                v[9], v[10]};
        r->links[node].room[2 * i] = (long)json_integer_value(json_array_get(a, 11));
        r->links[node].room[2 * i + 1] = (long)json_integer_value(json_array_get(a, 12));
    }
    const json_t *ex = json_object_get(m, "experts");
    node_link *l = &r->links[node];
    size_t n = json_array_size(ex);
    if (n && n <= EP_REMOTE_MAX_EXPERTS && (l->experts || (l->experts = calloc(EP_REMOTE_MAX_EXPERTS, sizeof *l->experts)))) {
        for (size_t e = 0; e < n; e++) l->experts[e] = (uint64_t)json_integer_value(json_array_get(ex, e));
        l->n_experts = (int)n;
    }
    pthread_mutex_unlock(&r->mu);
}

/* A worker's answer to a submit: {"t": "ack", "id", "ok", "full", "error"}. */
static void handle_ack(ep_remote *r, const json_t *m) {
    pthread_mutex_lock(&r->mu);
    pending *p = find_pending(r, (uint64_t)get_int(m, "id"));
    if (p && p->ack == 0) {
        const char *why = json_string_value(json_object_get(m, "error"));
        p->ack = json_is_true(json_object_get(m, "ok")) ? 1 : -1;
        p->full = json_is_true(json_object_get(m, "full"));
        snprintf(p->why, sizeof p->why, "%s", why ? why : "refused");
    }
    pthread_cond_broadcast(&r->acked);
    pthread_mutex_unlock(&r->mu);
}

static void *reader_main(void *p) {
    reader_arg *a = p;
    ep_remote *r = a->r;
    int node = a->node;
    free(a);
    json_t *m;
    while ((m = recv_msg(r->links[node].fd))) {
        const char *t = json_string_value(json_object_get(m, "t"));
        sched_event ev;
        if (t && !strcmp(t, "stats")) handle_stats(r, node, m);
        else if (t && !strcmp(t, "ack")) handle_ack(r, m);
        else if (t && !strcmp(t, "event") && event_parse(m, &ev) == 0) {
            sched_stream *st = find_stream(r, (uint64_t)get_int(m, "id"), ev.finish != FINISH_NONE);
            if (st) sched_stream_deliver(st, &ev);
            else free(ev.text);
        }
        json_decref(m);
    }
    pthread_mutex_lock(&r->mu);
    r->links[node].alive = 0;
    int closing = r->closing;
    pthread_cond_broadcast(&r->acked);
    pthread_mutex_unlock(&r->mu);
    char msg[160];
    snprintf(msg, sizeof msg, "expert-parallel node %d went away (its connection closed)", node);
    if (closing) fail_pending(r, node, FINISH_CANCELLED, "the server stopped");
    else fail_pending(r, node, FINISH_ERROR, msg);
    return NULL;
}

/* Waits for node's answer to submit id, as a local rank's submit returns at
 * once: 0 accepted; else -1 with err (*queue_full set where a retry may
 * succeed: the node's queue was full, it went away or did not answer). The
 * caller then drops the pending entry. A late acceptance after the timeout is
 * cancelled. */
static int await_ack(ep_remote *r, int node, uint64_t id, int *queue_full, ms_err *err) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ACK_TIMEOUT_S;
    pthread_mutex_lock(&r->mu);
    pending *p;
    int timed_out = 0;
    while ((p = find_pending(r, id)) && p->ack == 0 && r->links[node].alive && !r->closing && !timed_out)
        timed_out = pthread_cond_timedwait(&r->acked, &r->mu, &until) == ETIMEDOUT;
    int rc = -1;
    if (!p || p->ack == 1) rc = 0; /* gone from the list: its stream already ended (its events came) */
    else if (p->ack < 0) {
        if (queue_full) *queue_full = p->full;
        ms_err_set(err, "%s", p->why);
    } else {
        if (queue_full) *queue_full = 1;
        if (timed_out) ms_err_set(err, "expert-parallel node %d did not answer within %d s", node, ACK_TIMEOUT_S);
        else ms_err_set(err, "expert-parallel node %d is gone", node);
    }
    pthread_mutex_unlock(&r->mu);
    if (rc != 0 && timed_out) send_msg(r->links[node].fd, &r->links[node].wmu, json_pack("{s:s, s:I}", "t", "cancel", "id", (json_int_t)id));
    return rc;
}

static int remote_submit(void *ctx, int rank, const sched_request *req, sched_stream *st, int *queue_full, ms_err *err) {
    ep_remote *r = ctx;
    int node = r->remote_node[rank];
    node_link *l = &r->links[node];
    pending *p = malloc(sizeof *p);
    if (!p) return ms_err_set(err, "out of memory");
    pthread_mutex_lock(&r->mu);
    if (!l->alive) {
        pthread_mutex_unlock(&r->mu);
        free(p);
        if (queue_full) *queue_full = 1;
        return ms_err_set(err, "expert-parallel node %d is gone", node);
    }
    *p = (pending){.id = ++r->next_id, .st = st, .node = node, .next = r->pend};
    r->pend = p;
    sched_stream_set_tag(st, p->id);
    long *room = &l->room[2 * node_local(r, rank)]; /* counted now; the node's next stats replace it */
    long pages = kv_pages_for(req->n_prompt + 1);
    room[0] -= pages;
    room[1]++;
    uint64_t id = p->id;
    pthread_mutex_unlock(&r->mu);
    int sent = send_msg(l->fd, &l->wmu, request_json(id, node_local(r, rank), req)) == 0;
    if (sent && await_ack(r, node, id, queue_full, err) == 0) return 0;
    pthread_mutex_lock(&r->mu);
    free(take_pending(r, id));
    room[0] += pages, room[1]--;
    pthread_mutex_unlock(&r->mu);
    return sent ? -1 : ms_err_set(err, "cannot reach expert-parallel node %d", node);
}

static void remote_cancel(void *ctx, sched_stream *st) {
    ep_remote *r = ctx;
    uint64_t id = sched_stream_tag(st);
    pthread_mutex_lock(&r->mu);
    int node = -1;
    for (pending *p = r->pend; p; p = p->next)
        if (p->id == id) node = p->node;
    pthread_mutex_unlock(&r->mu);
    if (node >= 0) send_msg(r->links[node].fd, &r->links[node].wmu, json_pack("{s:s, s:I}", "t", "cancel", "id", (json_int_t)id));
}

static void remote_stats(void *ctx, int rank, sched_stats *out) {
    ep_remote *r = ctx;
    pthread_mutex_lock(&r->mu);
    *out = r->links[r->remote_node[rank]].stats[node_local(r, rank)];
    pthread_mutex_unlock(&r->mu);
}

static void remote_expert_tokens(void *ctx, uint64_t *out, int n) {
    ep_remote *r = ctx;
    pthread_mutex_lock(&r->mu);
    for (int node = 1; node < r->nnodes; node++)
        for (int e = 0; e < n && e < r->links[node].n_experts; e++) out[e] += r->links[node].experts[e];
    pthread_mutex_unlock(&r->mu);
}

static void remote_room(void *ctx, int rank, long *free_pages, long *load) {
    ep_remote *r = ctx;
    pthread_mutex_lock(&r->mu);
    const long *room = &r->links[r->remote_node[rank]].room[2 * node_local(r, rank)];
    *free_pages = room[0];
    *load = room[1];
    pthread_mutex_unlock(&r->mu);
}

static int connect_node(uint32_t ipv4, int port, int timeout_ms) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ipv4};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            comm_tcp_tune(fd);
            return fd;
        }
        if (fd >= 0) close(fd);
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms) return -1;
        poll(NULL, 0, 50);
    }
}

ep_remote *ep_remote_open(sched *front, int nnodes, int per_node, const uint32_t *node_ipv4,
                          const uint16_t *control_port, int timeout_ms, ms_err *err) {
    ep_remote *r = calloc(1, sizeof *r);
    if (!r) { ms_err_set(err, "out of memory"); return NULL; }
    r->front = front;
    r->nnodes = nnodes;
    r->per_node = per_node;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->acked, NULL);
    r->links = calloc((size_t)nnodes, sizeof *r->links);
    r->remote_node = calloc((size_t)nnodes * (size_t)per_node, sizeof *r->remote_node);
    int ok = r->links && r->remote_node;
    for (int n = 0; r->links && n < nnodes; n++) {
        node_link *l = &r->links[n];
        l->fd = -1;
        pthread_mutex_init(&l->wmu, NULL);
        if (!ok || n == 0 || !control_port[n]) continue;
        l->stats = calloc((size_t)per_node, sizeof *l->stats);
        l->room = calloc(2 * (size_t)per_node, sizeof *l->room);
        if (!l->stats || !l->room) { ok = 0; break; }
        for (int q = 0; q < per_node; q++) r->remote_node[r->n_remote++] = n;
        if ((l->fd = connect_node(node_ipv4[n], control_port[n], timeout_ms)) < 0) {
            char host[INET_ADDRSTRLEN] = "?";
            inet_ntop(AF_INET, &node_ipv4[n], host, sizeof host);
            ms_err_set(err, "cannot connect to expert-parallel node %d's control port %s:%d", n, host, control_port[n]);
            ep_remote_close(r);
            return NULL;
        }
        l->alive = 1;
    }
    if (!ok) {
        ms_err_set(err, "out of memory");
        ep_remote_close(r);
        return NULL;
    }
    for (int n = 1; n < nnodes; n++) {
        reader_arg *a = r->links[n].fd >= 0 ? malloc(sizeof *a) : NULL;
        if (!a) continue;
        *a = (reader_arg){r, n};
        if (pthread_create(&r->links[n].reader, NULL, reader_main, a) == 0) r->links[n].reader_started = 1;
        else free(a);
    }
    sched_set_remote(front, &(sched_remote){r->n_remote, r, remote_submit, remote_cancel, remote_stats, remote_room,
                                            remote_expert_tokens});
    return r;
}

void ep_remote_close(ep_remote *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->closing = 1;
    pthread_cond_broadcast(&r->acked);
    pthread_mutex_unlock(&r->mu);
    for (int n = 0; r->links && n < r->nnodes; n++)
        if (r->links[n].fd >= 0) shutdown(r->links[n].fd, SHUT_RDWR);
    for (int n = 0; r->links && n < r->nnodes; n++)
        if (r->links[n].reader_started) pthread_join(r->links[n].reader, NULL);
    fail_pending(r, -1, FINISH_CANCELLED, "the server stopped");
    for (int n = 0; r->links && n < r->nnodes; n++) {
        if (r->links[n].fd >= 0) close(r->links[n].fd);
        pthread_mutex_destroy(&r->links[n].wmu);
        free(r->links[n].stats);
        free(r->links[n].room);
        free(r->links[n].experts);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->acked);
    free(r->links);
    free(r->remote_node);
    free(r);
}

/* ---- worker ----------------------------------------------------------------------------- */

typedef struct wreq {
    uint64_t id;
    sched_stream *st;
    struct wreq *next;
} wreq;

typedef struct {
    int fd;
    sched *front;
    pthread_mutex_t wmu, mu;
    pthread_cond_t cv;
    wreq *reqs;
    int pumps;
} worker;

typedef struct {
    worker *w;
    wreq *q;
} pump_arg;

static void *pump_main(void *p) {
    pump_arg *a = p;
    worker *w = a->w;
    wreq *q = a->q;
    free(a);
    sched_event ev;
    for (;;) {
        if (sched_stream_next(q->st, &ev, -1) != 1) continue;
        send_msg(w->fd, &w->wmu, event_json(q->id, &ev)); /* a closed connection: node 0 ends the stream itself */
        free(ev.text);
        if (ev.finish != FINISH_NONE) break;
    }
    pthread_mutex_lock(&w->mu);
    for (wreq **pp = &w->reqs; *pp; pp = &(*pp)->next)
        if (*pp == q) { *pp = q->next; break; }
    w->pumps--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    sched_stream_free(q->st);
    free(q);
    return NULL;
}

/* Answers a submit: accepted (its events follow), or refused with why (full:
 * for want of room, node 0 answers 429; else 400). */
static void answer(worker *w, uint64_t id, int ok, int full, const char *why) {
    send_msg(w->fd, &w->wmu, json_pack("{s:s, s:I, s:b, s:b, s:s}", "t", "ack", "id", (json_int_t)id, "ok", ok, "full",
                                       full, "error", why ? why : ""));
}

static void handle_submit(worker *w, const json_t *m) {
    uint64_t id = (uint64_t)get_int(m, "id");
    sched_request req;
    ms_err err = {{0}};
    int full = 0;
    if (request_parse(m, &req) != 0) {
        request_free(&req);
        answer(w, id, 0, 0, "malformed request from node 0");
        return;
    }
    sched_stream *st = sched_submit_rank(w->front, (int)get_int(m, "rank"), &req, &full, &err);
    request_free(&req);
    wreq *q = st ? malloc(sizeof *q) : NULL;
    pump_arg *a = q ? malloc(sizeof *a) : NULL;
    if (!a) {
        free(q);
        if (st) sched_stream_free(st), ms_err_set(&err, "out of memory"), full = 1;
        answer(w, id, 0, full, err.msg);
        return;
    }
    *q = (wreq){id, st, NULL};
    *a = (pump_arg){w, q};
    pthread_mutex_lock(&w->mu);
    q->next = w->reqs;
    w->reqs = q;
    w->pumps++;
    pthread_mutex_unlock(&w->mu);
    answer(w, id, 1, 0, NULL); /* before the pump's first event */
    pthread_t t;
    if (pthread_create(&t, NULL, pump_main, a) == 0) {
        pthread_detach(t);
        return;
    }
    free(a);
    sched_stream_cancel(st);
    pump_main(&(pump_arg){w, q}); /* cannot happen in practice: drain it here */
}

static void handle_cancel(worker *w, uint64_t id) {
    pthread_mutex_lock(&w->mu);
    for (wreq *q = w->reqs; q; q = q->next)
        if (q->id == id) sched_stream_cancel(q->st);
    pthread_mutex_unlock(&w->mu);
}

static void send_stats(worker *w) {
    json_t *ranks = json_array();
    for (int r = 0; ranks && r < sched_n_ranks(w->front); r++) {
        sched_stats s;
        long free_pages, load;
        sched_get_rank_stats(w->front, r, &s);
        sched_get_rank_room(w->front, r, &free_pages, &load);
        json_array_append_new(ranks, json_pack("[i, i, i, i, I, I, I, I, I, I, I, I, I]", s.running, s.waiting,
                                               s.kv_pages_total, s.kv_pages_free, (json_int_t)s.requests_finished,
                                               (json_int_t)s.prompt_tokens, (json_int_t)s.generation_tokens,
                                               (json_int_t)s.preemptions, (json_int_t)s.steps,
                                               (json_int_t)s.prefix_cache_queries, (json_int_t)s.prefix_cache_hits,
                                               (json_int_t)free_pages, (json_int_t)load));
    }
    json_t *experts = json_array();
    uint64_t *counts = malloc(EP_REMOTE_MAX_EXPERTS * sizeof *counts);
    int n = counts ? sched_expert_tokens(w->front, counts, EP_REMOTE_MAX_EXPERTS) : 0;
    for (int e = 0; experts && e < n; e++) json_array_append_new(experts, json_integer((json_int_t)counts[e]));
    free(counts);
    send_msg(w->fd, &w->wmu, json_pack("{s:s, s:o, s:o}", "t", "stats", "ranks", ranks, "experts", experts));
}

int ep_remote_listen(uint16_t *port, ms_err *err) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof a;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 4) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        *port = ntohs(a.sin_port);
        return fd;
    }
    if (fd >= 0) close(fd);
    return ms_err_set(err, "cannot listen for node 0's requests: %s", strerror(errno));
}

static int accept_node0(int listen_fd, int timeout_ms, ms_err *err) {
    struct pollfd p = {listen_fd, POLLIN, 0};
    int fd = poll(&p, 1, timeout_ms) == 1 ? accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC) : -1;
    close(listen_fd);
    if (fd < 0) return ms_err_set(err, "node 0 did not connect to this node's control port within %.1f s", timeout_ms / 1000.0);
    comm_tcp_tune(fd);
    return fd;
}

int ep_remote_serve(int listen_fd, sched *front, int timeout_ms, ms_err *err) {
    worker w = {.front = front};
    if ((w.fd = accept_node0(listen_fd, timeout_ms, err)) < 0) return -1;
    pthread_mutex_init(&w.wmu, NULL);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    for (;;) {
        struct pollfd p = {w.fd, POLLIN, 0};
        int k = poll(&p, 1, STATS_MS);
        if (k < 0 && errno != EINTR) break;
        if (k > 0) {
            json_t *m = recv_msg(w.fd);
            if (!m) break; /* node 0 closed: it stopped */
            const char *t = json_string_value(json_object_get(m, "t"));
            if (t && !strcmp(t, "submit")) handle_submit(&w, m);
            else if (t && !strcmp(t, "cancel")) handle_cancel(&w, (uint64_t)get_int(m, "id"));
            json_decref(m);
        }
        send_stats(&w); /* after every message and every STATS_MS */
    }
    shutdown(w.fd, SHUT_RDWR);
    /* The open streams end once node 0 stops the world (its sched_free comes
     * after its ep_remote_close) or the world fails: wait for their pumps. */
    pthread_mutex_lock(&w.mu);
    for (wreq *q = w.reqs; q; q = q->next) sched_stream_cancel(q->st);
    while (w.pumps > 0) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    close(w.fd);
    pthread_mutex_destroy(&w.wmu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return 0;
}
