/* engine/ep.c — see ep.h. Dispatch, local experts, combine over engine/comm.h.
 *
 * Send layout to rank p (in p order): the local tokens with an expert on p, in
 * token order, as K int32 ids (meta, host) + one D-float row (x, backend).
 * Return layout to source p: for each record received from p, one D-float row
 * per valid id, in slot order. Buffers grow on demand and live until ep_free. */
#include "engine/ep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    void *p;
    size_t bytes;
} ep_buf;

enum { B_X_SEND, B_X_RECV, B_Y_SEND, B_Y_RECV, B_XE, B_YE, B_COUNT };           /* backend memory */
enum { M_SEND, M_RECV, M_ROWS, M_SLOT, M_OFF, M_CURSOR, M_TOK, M_RES, M_CY, M_CA, M_COUNT }; /* host memory */

struct ep {
    comm *comm;
    int n_experts;
    int32_t *owner;               /* [n_experts] */
    int world_tokens;             /* Σ n over ranks for the current step */
    ep_buf dev[B_COUNT], host[M_COUNT];
    size_t *send_bytes, *recv_bytes, *send_bytes2, *recv_bytes2; /* [size] each */
    int *send_count, *recv_count; /* records per peer */
    ep_timing timing;
    long steps, fault_step;       /* MLASERVE_EP_FAULT */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int ep_default_owner(int expert, int n_experts, int size) { return (int)((long)expert * size / n_experts); }

int ep_check_placement(const int32_t *owner, int n_experts, int size, ms_err *err) {
    for (int e = 0; e < n_experts; e++)
        if (owner[e] < 0 || owner[e] >= size)
            return ms_err_set(err, "expert %d is placed on rank %d, but there are %d ranks", e, owner[e], size);
    for (int r = 0; r < size; r++) {
        int any = 0;
        for (int e = 0; e < n_experts && !any; e++) any = owner[e] == r;
        if (!any) return ms_err_set(err, "rank %d owns no expert (%d experts over %d ranks)", r, n_experts, size);
    }
    return 0;
}

/* MLASERVE_EP_FAULT=RANK:STEP -> the step number this rank fails at, or 0. */
static long fault_step_from_env(int rank) {
    const char *v = getenv("MLASERVE_EP_FAULT");
    int r;
    long s;
    if (!v || sscanf(v, "%d:%ld", &r, &s) != 2 || r != rank || s < 1) return 0;
    return s;
}

ep *ep_create(comm *c, int n_experts, const int32_t *owner, ms_err *err) {
    if (n_experts < c->size) {
        ms_err_set(err, "%d ranks for %d routed experts: every rank needs at least one expert", c->size, n_experts);
        return NULL;
    }
    ep *e = calloc(1, sizeof *e);
    size_t W = (size_t)c->size;
    if (e) {
        e->owner = malloc((size_t)n_experts * sizeof *e->owner);
        e->send_bytes = calloc(W * 4, sizeof *e->send_bytes);
        e->send_count = calloc(W * 2, sizeof *e->send_count);
    }
    if (!e || !e->owner || !e->send_bytes || !e->send_count) {
        if (e) { free(e->owner); free(e->send_bytes); free(e->send_count); free(e); }
        ms_err_set(err, "out of memory");
        return NULL;
    }
    e->recv_bytes = e->send_bytes + W;
    e->send_bytes2 = e->send_bytes + 2 * W;
    e->recv_bytes2 = e->send_bytes + 3 * W;
    e->recv_count = e->send_count + W;
    e->comm = c;
    e->n_experts = n_experts;
    for (int x = 0; x < n_experts; x++) e->owner[x] = owner ? owner[x] : ep_default_owner(x, n_experts, c->size);
    if (ep_check_placement(e->owner, n_experts, c->size, err) != 0) {
        ep_free(e, NULL);
        return NULL;
    }
    e->fault_step = fault_step_from_env(c->rank);
    return e;
}

void ep_free(ep *e, backend *be) {
    if (!e) return;
    for (int i = 0; i < B_COUNT; i++)
        if (e->dev[i].p) be->ops->free(be, e->dev[i].p);
    for (int i = 0; i < M_COUNT; i++) free(e->host[i].p);
    free(e->owner);
    free(e->send_bytes);
    free(e->send_count);
    free(e);
}

int ep_rank(const ep *e) { return e->comm->rank; }
int ep_size(const ep *e) { return e->comm->size; }
int ep_owner(const ep *e, int expert) { return e->owner[expert]; }
comm *ep_comm(const ep *e) { return e->comm; }
ep_timing ep_get_timing(const ep *e) { return e->timing; }

void ep_abort(ep *e, const char *reason) { e->comm->ops->abort(e->comm, reason); }

/* Buffer of at least `bytes` (at least 1: comms never see NULL); contents not kept. */
static void *dev_buf(ep *e, backend *be, int slot, size_t bytes) {
    ep_buf *b = &e->dev[slot];
    if (!bytes) bytes = 1;
    if (b->bytes < bytes) {
        if (b->p) be->ops->free(be, b->p);
        b->p = be->ops->alloc(be, bytes);
        b->bytes = b->p ? bytes : 0;
    }
    return b->p;
}

static void *host_buf(ep *e, int slot, size_t bytes) {
    ep_buf *b = &e->host[slot];
    if (!bytes) bytes = 1;
    if (b->bytes < bytes) {
        free(b->p);
        b->p = malloc(bytes);
        b->bytes = b->p ? bytes : 0;
    }
    return b->p;
}

static int fail(ep *e, ms_err *err, const char *what) {
    ms_err_set(err, "expert parallel: %s", what);
    ep_abort(e, err->msg);
    return -1;
}

int ep_step_begin(ep *e, int n, ms_err *err) {
    comm *c = e->comm;
    if (e->fault_step && ++e->steps == e->fault_step) {
        ms_err_set(err, "injected fault (MLASERVE_EP_FAULT) at step %ld", e->steps);
        ep_abort(e, err->msg);
        return -1;
    }
    int32_t *all = host_buf(e, M_ROWS, (size_t)c->size * sizeof *all);
    if (!all) return fail(e, err, "out of memory");
    int32_t mine = n;
    if (c->ops->all_gather(c, &mine, sizeof mine, all, err) != 0) return -1;
    long total = 0;
    for (int p = 0; p < c->size; p++) total += all[p];
    e->world_tokens = (int)total;
    return 0;
}

/* ---------------------------------------------------------------- dispatch */

/* Fills the meta and x send buffers; returns the number of records or -1. */
static int pack(ep *e, backend *be, int n, int D, int K, const float *x, const int32_t *idx) {
    int W = e->comm->size, records = 0;
    int32_t *meta = host_buf(e, M_SEND, (size_t)n * W * K * sizeof *meta);
    int32_t *tok = host_buf(e, M_TOK, (size_t)n * W * sizeof *tok);
    float *xs = dev_buf(e, be, B_X_SEND, (size_t)n * W * D * sizeof *xs);
    if (!meta || !tok || !xs) return -1;
    for (int p = 0; p < W; p++) {
        e->send_count[p] = 0;
        for (int t = 0; t < n; t++) {
            int any = 0;
            for (int k = 0; k < K; k++) any |= e->owner[idx[t * K + k]] == p;
            if (!any) continue;
            for (int k = 0; k < K; k++) {
                int32_t x_id = idx[t * K + k];
                meta[(size_t)records * K + k] = e->owner[x_id] == p ? x_id : -1;
            }
            tok[records++] = t;
            e->send_count[p]++;
        }
        e->send_bytes[p] = (size_t)e->send_count[p] * K * sizeof *meta;
        e->send_bytes2[p] = (size_t)e->send_count[p] * D * sizeof *xs;
    }
    be->ops->copy_rows(be, xs, NULL, x, tok, records, D);
    return records;
}

static int dispatch(ep *e, backend *be, int n, int D, int K, const float *x, const int32_t *idx, ms_err *err) {
    comm *c = e->comm;
    if (pack(e, be, n, D, K, x, idx) < 0) return fail(e, err, "out of memory");
    size_t cap = (size_t)e->world_tokens;
    int32_t *meta_in = host_buf(e, M_RECV, cap * K * sizeof *meta_in);
    float *x_in = dev_buf(e, be, B_X_RECV, cap * D * sizeof *x_in);
    if (!meta_in || !x_in) return fail(e, err, "out of memory");
    if (c->ops->all_to_all_v(c, e->host[M_SEND].p, e->send_bytes, meta_in, cap * K * sizeof *meta_in, e->recv_bytes,
                             err) != 0)
        return -1;
    if (c->ops->all_to_all_v(c, e->dev[B_X_SEND].p, e->send_bytes2, x_in, cap * D * sizeof *x_in, e->recv_bytes2,
                             err) != 0)
        return -1;
    int records = 0;
    for (int p = 0; p < c->size; p++) records += (e->recv_count[p] = (int)(e->recv_bytes[p] / (K * sizeof *meta_in)));
    return records;
}

/* ---------------------------------------------------------------- experts */

/* Runs every local expert over the received records; writes result rows into
 * the return buffer (record i's valid slots at off[i]..). */
static int run_experts(ep *e, backend *be, int records, int D, int K, ep_expert_fn fn, void *fn_ctx,
                       uint64_t *counts) {
    const int32_t *meta = e->host[M_RECV].p;
    const float *x_in = e->dev[B_X_RECV].p;
    int32_t *off = host_buf(e, M_OFF, (size_t)(records + 1) * sizeof *off);
    int32_t *rows = host_buf(e, M_ROWS, (size_t)records * sizeof *rows);
    int32_t *slot = host_buf(e, M_SLOT, (size_t)records * sizeof *slot);
    if (!off || !rows || !slot) return -1;
    off[0] = 0;
    for (int i = 0; i < records; i++) {
        int valid = 0;
        for (int k = 0; k < K; k++) valid += meta[(size_t)i * K + k] >= 0;
        off[i + 1] = off[i] + valid;
    }
    float *ys = dev_buf(e, be, B_Y_SEND, (size_t)off[records] * D * sizeof *ys);
    float *xe = dev_buf(e, be, B_XE, (size_t)records * D * sizeof *xe);
    float *ye = dev_buf(e, be, B_YE, (size_t)records * D * sizeof *ye);
    if (!ys || !xe || !ye) return -1;
    for (int x_id = 0; x_id < e->n_experts; x_id++) {
        if (e->owner[x_id] != e->comm->rank) continue;
        int m = 0;
        for (int i = 0; i < records; i++) {
            int at = off[i];
            for (int k = 0; k < K; k++) {
                int32_t id = meta[(size_t)i * K + k];
                if (id == x_id) { rows[m] = i; slot[m++] = at; }
                if (id >= 0) at++;
            }
        }
        if (!m) continue;
        be->ops->copy_rows(be, xe, NULL, x_in, rows, m, D);
        fn(fn_ctx, x_id, xe, ye, m);
        be->ops->copy_rows(be, ys, slot, ye, NULL, m, D);
        if (counts) __atomic_fetch_add(&counts[x_id], (uint64_t)m, __ATOMIC_RELAXED);
    }
    int at = 0;
    for (int p = 0; p < e->comm->size; p++) {
        e->send_bytes[p] = (size_t)(off[at + e->recv_count[p]] - off[at]) * D * sizeof *ys;
        at += e->recv_count[p];
    }
    return 0;
}

/* ---------------------------------------------------------------- combine */

/* Row of the return buffer holding each (token, slot) of this rank's tokens: res[t * K + k]. */
static int locate_results(ep *e, int n, int D, int K, const int32_t *idx, int32_t *res) {
    int W = e->comm->size;
    size_t *cursor = host_buf(e, M_CURSOR, (size_t)W * sizeof *cursor);
    if (!cursor) return -1;
    size_t at = 0;
    for (int p = 0; p < W; p++) {
        cursor[p] = at;
        at += e->recv_bytes[p] / ((size_t)D * sizeof(float));
    }
    for (int p = 0; p < W; p++) /* records to p were sent in token order; slots in k order */
        for (int t = 0; t < n; t++)
            for (int k = 0; k < K; k++)
                if (e->owner[idx[t * K + k]] == p) res[t * K + k] = (int32_t)cursor[p]++;
    return 0;
}

/* out[t] += w · y for each token's results in ascending expert order, as one axpy_rows. */
static int combine(ep *e, backend *be, int n, int D, int K, const int32_t *idx, const float *w, const int32_t *res,
                   const float *y_in, float *out) {
    int32_t *ty = host_buf(e, M_CY, (size_t)n * K * 2 * sizeof *ty), *tx = ty + (size_t)n * K;
    float *ta = host_buf(e, M_CA, (size_t)n * K * sizeof *ta);
    if (!ty || !ta) return -1;
    for (int t = 0; t < n; t++) {
        int order[64];
        for (int k = 0; k < K; k++) { /* insertion sort of the slots by expert id */
            int j = k;
            while (j > 0 && idx[t * K + order[j - 1]] > idx[t * K + k]) { order[j] = order[j - 1]; j--; }
            order[j] = k;
        }
        for (int j = 0; j < K; j++) {
            int k = order[j];
            ty[t * K + j] = t, tx[t * K + j] = res[t * K + k], ta[t * K + j] = w[t * K + k];
        }
    }
    be->ops->axpy_rows(be, out, ty, y_in, tx, ta, n * K, D);
    return 0;
}

int ep_moe(ep *e, backend *be, int n, int D, int K, const float *x, const int32_t *idx, const float *w, float *out,
           ep_expert_fn fn, void *fn_ctx, uint64_t *counts, ms_err *err) {
    comm *c = e->comm;
    if (K > 64) return fail(e, err, "more than 64 experts per token");
    for (int i = 0; i < n * K; i++)
        if (idx[i] < 0 || idx[i] >= e->n_experts) return fail(e, err, "router picked an expert out of range");
    double t0 = now_s();
    int records = dispatch(e, be, n, D, K, x, idx, err);
    if (records < 0) return -1;
    double t1 = now_s();
    if (run_experts(e, be, records, D, K, fn, fn_ctx, counts) != 0) return fail(e, err, "out of memory");
    double t2 = now_s();
    size_t cap = (size_t)n * K * D * sizeof(float);
    float *y_in = dev_buf(e, be, B_Y_RECV, cap);
    int32_t *res = host_buf(e, M_RES, (size_t)n * K * sizeof *res);
    if (!y_in || !res) return fail(e, err, "out of memory");
    if (c->ops->all_to_all_v(c, e->dev[B_Y_SEND].p, e->send_bytes, y_in, cap, e->recv_bytes, err) != 0) return -1;
    if (locate_results(e, n, D, K, idx, res) != 0 || combine(e, be, n, D, K, idx, w, res, y_in, out) != 0)
        return fail(e, err, "out of memory");
    double t3 = now_s();
    e->timing.dispatch_s += t1 - t0;
    e->timing.expert_s += t2 - t1;
    e->timing.combine_s += t3 - t2;
    e->timing.calls++;
    return 0;
}
