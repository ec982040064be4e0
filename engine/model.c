/* engine/model.c — model_forward(): one engine step of the DeepSeek-V2/V3 graph
 * (golden SPEC §5), expressed as backend ops. Comments quote the reference math.
 * Scratch buffers are owned by the model and grown on demand. */
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"

enum {
    S_H, S_A, S_OUT, S_QA, S_Q, S_KVA, S_C, S_KPE, S_O,                /* per-token */
    S_CTX_C, S_CTX_PE, S_KVB,                                          /* prefill: per context token */
    S_QD, S_QLAT, S_QPE, S_OLAT, S_OD,                                 /* absorbed decode */
    S_RLOG, S_RIDX, S_RW, S_XE, S_DE, S_G, S_U,                        /* MLP / MoE */
    S_LBX, S_LBY,                                                      /* linear_batch fallback */
    S_LOGX, S_LOGITS,
    S_COUNT
};

/* Host-side bookkeeping the graph reads or writes on the CPU: block-table
 * pointers, context lengths, token lists, router decisions, traced activations. */
enum { H_SEQS, H_CTXLEN, H_ROWS, H_RW, H_RIDX, H_RWALL, H_TRACE, H_OPS, H_EXP, H_COUNT };

typedef struct model_scratch {
    void *buf[S_COUNT];      /* backend memory (device memory on a GPU) */
    size_t size[S_COUNT];
    void *host[H_COUNT];     /* host memory */
    size_t host_size[H_COUNT];
} model_scratch;

void model_scratch_free(model *m) {
    if (!m->scratch) return;
    for (int i = 0; i < S_COUNT; i++) m->be->ops->free(m->be, m->scratch->buf[i]);
    for (int i = 0; i < H_COUNT; i++) free(m->scratch->host[i]);
    free(m->scratch);
    m->scratch = NULL;
}

/* Host scratch slot of at least `bytes` (contents not preserved when it grows). */
static void *hscratch(model *m, int slot, size_t bytes) {
    model_scratch *s = m->scratch;
    if (s->host_size[slot] < bytes || !s->host[slot]) {
        free(s->host[slot]);
        s->host[slot] = malloc(bytes ? bytes : 1);
        s->host_size[slot] = s->host[slot] ? bytes : 0;
    }
    return s->host[slot];
}

/* Calls the trace hook with a host copy of backend activations h [n, dim]. */
static void trace_out(model *m, int layer, const float *h, int n, int dim) {
    if (!m->trace) return;
    float *host = hscratch(m, H_TRACE, (size_t)n * dim * sizeof *host);
    m->be->ops->download(m->be, host, h, (size_t)n * dim * sizeof *host);
    m->trace(m->trace_ctx, layer, host, n, dim);
}

/* Scratch slot of at least `bytes`; contents are not preserved when it grows. */
static void *scratch(model *m, int slot, size_t bytes) {
    model_scratch *s = m->scratch;
    if (s->size[slot] < bytes) {
        m->be->ops->free(m->be, s->buf[slot]);
        s->buf[slot] = m->be->ops->alloc(m->be, bytes);
        s->size[slot] = s->buf[slot] ? bytes : 0;
    }
    return s->buf[slot];
}

static float *fscratch(model *m, int slot, size_t n) { return scratch(m, slot, n * sizeof(float)); }

/* Runs independent products as one backend op (the CPU splits them all over its
 * threads in one go). Backends without linear_batch get them one by one, strided
 * rows going through contiguous scratch. */
static void linear_batch(model *m, const linear_op *ops, int n) {
    const backend_ops *op = m->be->ops;
    if (op->linear_batch) {
        op->linear_batch(m->be, ops, n);
        return;
    }
    for (int i = 0; i < n; i++) {
        const linear_op *o = &ops[i];
        const int64_t in = o->transposed ? o->w.rows : o->w.cols, out = o->transposed ? o->w.cols : o->w.rows;
        const int strided = o->ldx != in || o->ldy != out;
        const float *x = o->x;
        float *y = o->y;
        if (strided) {
            float *bx = fscratch(m, S_LBX, (size_t)o->m * in);
            y = fscratch(m, S_LBY, (size_t)o->m * out);
            op->copy_2d(m->be, bx, in, o->x, o->ldx, o->m, in);
            x = bx;
        }
        if (o->transposed) op->linear_t(m->be, &o->w, x, y, o->m);
        else op->linear(m->be, &o->w, x, y, o->m);
        if (strided) op->copy_2d(m->be, o->y, o->ldy, y, out, o->m, out);
    }
}

static linear_op lin(const weight *w, const float *x, int64_t ldx, float *y, int64_t ldy, int m, int transposed) {
    linear_op o = {.w = *w, .x = x, .y = y, .m = m, .transposed = transposed, .ldx = ldx, .ldy = ldy};
    return o;
}

/* A run of batch tokens belonging to one sequence. */
typedef struct { int first, count, seq, pos0; } seq_run;

/* ---------------------------------------------------------------- attention */

/* q = q_b(RMSNorm(q_a(a))) | q_proj(a) -> [n, H, dn+dr]; q_pe = rope(q[..., dn:]) */
static float *attn_query(model *m, const layer_weights *L, const float *a, int n, const int32_t *pos) {
    const model_config *c = &m->cfg;
    const backend_ops *op = m->be->ops;
    int qdim = c->qk_nope_head_dim + c->qk_rope_head_dim;
    float *q = fscratch(m, S_Q, (size_t)n * c->n_heads * qdim);
    if (c->q_lora_rank) {
        float *qa = fscratch(m, S_QA, (size_t)n * c->q_lora_rank);
        op->linear(m->be, &L->q_a, a, qa, n);
        op->rmsnorm(m->be, &L->q_a_norm, qa, qa, n, c->q_lora_rank, c->rms_norm_eps);
        op->linear(m->be, &L->q_b, qa, q, n);
    } else {
        op->linear(m->be, &L->q_proj, a, q, n);
    }
    op->rope(m->be, &m->rope, q + c->qk_nope_head_dim, n, c->n_heads, (int64_t)c->n_heads * qdim, qdim, pos);
    return q;
}

/* kv = kv_a(a); c = RMSNorm(kv[:, :kvr]); k_pe = rope(kv[:, kvr:]); both cached. */
static void attn_latent(model *m, kv_cache *kv, int l, const layer_weights *L, const float *a, const model_batch *b,
                        const seq_run *runs, int n_runs) {
    const model_config *c = &m->cfg;
    const backend_ops *op = m->be->ops;
    int n = b->n_tokens, kvr = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    float *kva = fscratch(m, S_KVA, (size_t)n * (kvr + dr));
    float *cc = fscratch(m, S_C, (size_t)n * kvr), *kpe = fscratch(m, S_KPE, (size_t)n * dr);
    op->linear(m->be, &L->kv_a, a, kva, n);
    op->copy_2d(m->be, cc, kvr, kva, kvr + dr, n, kvr);
    op->copy_2d(m->be, kpe, dr, kva + kvr, kvr + dr, n, dr);
    op->rmsnorm(m->be, &L->kv_a_norm, cc, cc, n, kvr, c->rms_norm_eps);
    op->rope(m->be, &m->rope, kpe, n, 1, dr, dr, b->pos);
    for (int r = 0; r < n_runs; r++)
        op->kv_write(m->be, kv, b->seqs[runs[r].seq], l, runs[r].pos0, runs[r].count,
                     cc + (size_t)runs[r].first * kvr, kvr, kpe + (size_t)runs[r].first * dr, dr);
}

/* Expanded causal attention for one run: K/V = kv_b(c) over the whole context. */
static void attn_naive(model *m, const kv_cache *kv, int l, const layer_weights *L, const model_batch *b,
                       const seq_run *run, const float *q, float *o) {
    const model_config *c = &m->cfg;
    const backend_ops *op = m->be->ops;
    int H = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    int kvr = c->kv_lora_rank, ctx = run->pos0 + run->count, qdim = dn + dr;
    float *cc = fscratch(m, S_CTX_C, (size_t)ctx * kvr), *pe = fscratch(m, S_CTX_PE, (size_t)ctx * dr);
    float *kvb = fscratch(m, S_KVB, (size_t)ctx * H * (dn + dv));
    op->kv_gather(m->be, kv, b->seqs[run->seq], l, ctx, cc, kvr, pe, dr);
    op->linear(m->be, &L->kv_b, cc, kvb, ctx);
    op->mla_prefill(m->be, run->count, run->pos0, H, dn, dr, dv, q + (size_t)run->first * H * qdim, kvb, pe,
                    m->softmax_scale, o + (size_t)run->first * H * dv);
}

/* Absorbed attention for the tokens listed in rows (one query token each):
 * q_lat[h] = W_UK[h]ᵀ q_nope[h]; attend over the latent cache; o[h] = W_UV[h] o_lat[h]. */
static void attn_absorb(model *m, const kv_cache *kv, int l, const layer_weights *L, const model_batch *b,
                        const int32_t *rows, int nd, const float *q, float *o) {
    const model_config *c = &m->cfg;
    const backend_ops *op = m->be->ops;
    int H = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    int kvr = c->kv_lora_rank, qdim = dn + dr;
    float *qd = fscratch(m, S_QD, (size_t)nd * H * qdim);
    float *qlat = fscratch(m, S_QLAT, (size_t)nd * H * kvr), *qpe = fscratch(m, S_QPE, (size_t)nd * H * dr);
    float *olat = fscratch(m, S_OLAT, (size_t)nd * H * kvr), *od = fscratch(m, S_OD, (size_t)nd * H * dv);
    linear_op *ops = hscratch(m, H_OPS, (size_t)H * sizeof *ops);
    const kv_seq **seqs = hscratch(m, H_SEQS, (size_t)nd * sizeof *seqs);
    int32_t *ctx = hscratch(m, H_CTXLEN, (size_t)nd * sizeof *ctx);
    op->copy_rows(m->be, qd, NULL, q, rows, nd, (int64_t)H * qdim);
    for (int i = 0; i < nd; i++) {
        seqs[i] = b->seqs[b->seq[rows[i]]];
        ctx[i] = b->pos[rows[i]] + 1;
    }
    for (int h = 0; h < H; h++) {
        weight w_uk = weight_rows(&L->kv_b, (int64_t)h * (dn + dv), dn);
        ops[h] = lin(&w_uk, qd + (size_t)h * qdim, (int64_t)H * qdim, qlat + (size_t)h * kvr, (int64_t)H * kvr, nd, 1);
    }
    linear_batch(m, ops, H);
    op->copy_2d(m->be, qpe, dr, qd + dn, qdim, nd * H, dr);
    op->mla_decode(m->be, kv, l, nd, seqs, ctx, H, qlat, qpe, m->softmax_scale, olat);
    for (int h = 0; h < H; h++) {
        weight w_uv = weight_rows(&L->kv_b, (int64_t)h * (dn + dv) + dn, dv);
        ops[h] = lin(&w_uv, olat + (size_t)h * kvr, (int64_t)H * kvr, od + (size_t)h * dv, (int64_t)H * dv, nd, 0);
    }
    linear_batch(m, ops, H);
    op->copy_rows(m->be, o, rows, od, NULL, nd, (int64_t)H * dv);
}

/* ATTN_AUTO: the expanded form for a run of several tokens unless it continues
 * a cached context 8x its length or more (then re-expanding the context through
 * kv_b costs more than attending in the latent space). bench-7b, bench_model
 * --phases chunk, 64-token chunks: after 64 / 192 cached, naive 76 / 73 tok/s vs
 * absorbed 73 / 70; 50 after 448: 59 vs 62; 64 after 2000: 46 vs 53. */
static int use_naive(const model *m, const seq_run *run) {
    if (m->attn != ATTN_AUTO) return m->attn == ATTN_NAIVE;
    return run->count > 1 && run->pos0 < 8 * run->count;
}

/* h += o_proj(attention(a)) */
static void attention(model *m, kv_cache *kv, int l, const float *a, float *out, const model_batch *b,
                      const seq_run *runs, int n_runs) {
    const model_config *c = &m->cfg;
    const layer_weights *L = &m->layers[l];
    int n = b->n_tokens, H = c->n_heads, dv = c->v_head_dim;
    float *q = attn_query(m, L, a, n, b->pos);
    attn_latent(m, kv, l, L, a, b, runs, n_runs);
    float *o = fscratch(m, S_O, (size_t)n * H * dv);
    int32_t *rows = hscratch(m, H_ROWS, (size_t)n * sizeof *rows);
    int nd = 0;
    for (int r = 0; r < n_runs; r++) {
        if (use_naive(m, &runs[r])) {
            attn_naive(m, kv, l, L, b, &runs[r], q, o);
            continue;
        }
        for (int i = 0; i < runs[r].count; i++) rows[nd++] = runs[r].first + i;
    }
    if (nd) attn_absorb(m, kv, l, L, b, rows, nd, q, o);
    m->be->ops->linear(m->be, &L->o_proj, o, out, n);
}

/* -------------------------------------------------------------------- MLP */

/* out = down(silu(gate(x)) * up(x)) for m rows; inter = rows of gate. */
static void mlp(model *mdl, const weight *g, const weight *u, const weight *d, const float *x, float *out, int m) {
    const backend_ops *op = mdl->be->ops;
    float *gb = fscratch(mdl, S_G, (size_t)m * g->rows), *ub = fscratch(mdl, S_U, (size_t)m * u->rows);
    linear_op gu[2] = {lin(g, x, g->cols, gb, g->rows, m, 0), lin(u, x, u->cols, ub, u->rows, m, 0)};
    linear_batch(mdl, gu, 2);
    op->silu_mul(mdl->be, gb, ub, gb, (int64_t)m * g->rows);
    op->linear(mdl->be, d, gb, out, m);
}

typedef struct { model *m; const layer_weights *L; } expert_ctx;

/* ep_expert_fn: y = routed expert e (x), m rows. */
static void run_expert(void *ctx, int e, const float *x, float *y, int m) {
    expert_ctx *c = ctx;
    mlp(c->m, &c->L->exp_gate[e], &c->L->exp_up[e], &c->L->exp_down[e], x, y, m);
}

/* Rows of routed experts gathered per batch of experts_local (bounds its scratch). */
#define EXPERT_GROUP_ROWS 1024

/* Routed experts [e0, e1) over their rows (rows/rw in expert order, ex[e] = first
 * row of e), and the shared experts too when `shared`: every gate and up product
 * in one linear_batch, one silu_mul, every down product in a second batch. The
 * shared output lands in out; each routed row is added into out in ascending
 * expert order (the order engine/ep.c keeps across ranks). */
static void expert_group(model *m, const layer_weights *L, const float *x, int n, int shared, const int32_t *rows,
                         const float *rw, const int32_t *ex, int e0, int e1, float *out) {
    const backend_ops *op = m->be->ops;
    const int D = m->cfg.hidden_size;
    const int64_t Is = shared ? L->sh_gate.rows : 0, Ir = m->cfg.moe_intermediate_size;
    const int r0 = ex[e0], R = ex[e1] - r0, ns = shared ? n : 0;
    float *xe = fscratch(m, S_XE, (size_t)R * D), *de = fscratch(m, S_DE, (size_t)R * D);
    float *g = fscratch(m, S_G, (size_t)ns * Is + (size_t)R * Ir), *u = fscratch(m, S_U, (size_t)ns * Is + (size_t)R * Ir);
    linear_op *ops = hscratch(m, H_OPS, (size_t)(2 * (e1 - e0) + 2) * sizeof *ops);
    float *gr = g + (size_t)ns * Is, *ur = u + (size_t)ns * Is; /* routed part */
    op->copy_rows(m->be, xe, NULL, x, rows + r0, R, D);
    int k = 0;
    if (shared) {
        ops[k++] = lin(&L->sh_gate, x, D, g, Is, n, 0);
        ops[k++] = lin(&L->sh_up, x, D, u, Is, n, 0);
    }
    for (int e = e0; e < e1; e++) {
        const int me = ex[e + 1] - ex[e], r = ex[e] - r0;
        if (!me) continue;
        __atomic_fetch_add(&m->expert_tokens[e], (uint64_t)me, __ATOMIC_RELAXED);
        ops[k++] = lin(&L->exp_gate[e], xe + (size_t)r * D, D, gr + (size_t)r * Ir, Ir, me, 0);
        ops[k++] = lin(&L->exp_up[e], xe + (size_t)r * D, D, ur + (size_t)r * Ir, Ir, me, 0);
    }
    linear_batch(m, ops, k);
    op->silu_mul(m->be, g, u, g, (int64_t)ns * Is + (int64_t)R * Ir);
    k = 0;
    if (shared) ops[k++] = lin(&L->sh_down, g, Is, out, D, n, 0);
    for (int e = e0; e < e1; e++) {
        const int me = ex[e + 1] - ex[e], r = ex[e] - r0;
        if (me) ops[k++] = lin(&L->exp_down[e], gr + (size_t)r * Ir, Ir, de + (size_t)r * D, D, me, 0);
    }
    linear_batch(m, ops, k);
    op->axpy_rows(m->be, out, rows + r0, de, NULL, rw + r0, R, D);
}

/* out = SharedMLP(x) + Σ_j w_j · Expert_idx_j(x), every expert on this rank. */
static void experts_local(model *m, const layer_weights *L, const float *x, const int32_t *idx, const float *w,
                          float *out, int n) {
    const int E = m->cfg.n_routed_experts, K = m->cfg.n_experts_per_tok, shared = m->cfg.n_shared_experts > 0;
    int32_t *rows = hscratch(m, H_ROWS, (size_t)n * K * sizeof *rows);
    float *rw = hscratch(m, H_RW, (size_t)n * K * sizeof *rw);
    int32_t *ex = hscratch(m, H_EXP, (size_t)(E + 1) * sizeof *ex);
    /* rows of each expert, tokens ascending: counting sort on the expert id */
    memset(ex, 0, (size_t)(E + 1) * sizeof *ex);
    for (int i = 0; i < n * K; i++) ex[idx[i] + 1]++;
    for (int e = 0; e < E; e++) ex[e + 1] += ex[e];
    for (int i = 0; i < n * K; i++) { /* ex[e] advances to the end of e's rows */
        rows[ex[idx[i]]] = i / K;
        rw[ex[idx[i]]++] = w[i];
    }
    for (int e = E; e > 0; e--) ex[e] = ex[e - 1];
    ex[0] = 0;
    if (!shared) m->be->ops->zero(m->be, out, (int64_t)n * m->cfg.hidden_size);
    const int cap = n > EXPERT_GROUP_ROWS ? n : EXPERT_GROUP_ROWS;
    for (int e0 = 0; e0 < E;) {
        int e1 = e0 + 1;
        while (e1 < E && ex[e1 + 1] - ex[e0] <= cap) e1++;
        expert_group(m, L, x, n, shared && e0 == 0, rows, rw, ex, e0, e1, out);
        e0 = e1;
    }
}

/* The router's top-k experts and weights per token, on the host: idx/w [n, K]. */
static void route(model *m, const layer_weights *L, const float *x, int n, int32_t *idx, float *w) {
    const backend_ops *op = m->be->ops;
    int E = m->cfg.n_routed_experts, K = m->cfg.n_experts_per_tok;
    router_params rp = m->router;
    rp.bias = L->router_bias;
    float *logits = fscratch(m, S_RLOG, (size_t)n * E), *dw = fscratch(m, S_RW, (size_t)n * K);
    int32_t *didx = scratch(m, S_RIDX, (size_t)n * K * sizeof *didx);
    op->linear(m->be, &L->router, x, logits, n);
    op->router(m->be, &rp, logits, n, didx, dw);
    /* The routing decisions drive host-side grouping: bring them over. */
    op->download(m->be, idx, didx, (size_t)n * K * sizeof *idx);
    op->download(m->be, w, dw, (size_t)n * K * sizeof *w);
}

/* out = Σ_j w_j · Expert_idx_j(x) + SharedMLP(x). n may be 0 with expert parallelism. */
static int moe(model *m, const layer_weights *L, const float *x, float *out, int n, ms_err *err) {
    const model_config *c = &m->cfg;
    int K = c->n_experts_per_tok, D = c->hidden_size;
    int32_t *idx = hscratch(m, H_RIDX, (size_t)n * K * sizeof *idx);
    float *w = hscratch(m, H_RWALL, (size_t)n * K * sizeof *w);
    if (!idx || !w) return ms_err_set(err, "out of memory");
    if (n) route(m, L, x, n, idx, w);
    if (!m->ep) {
        if (n) experts_local(m, L, x, idx, w, out, n);
        return 0;
    }
    if (n) {
        if (c->n_shared_experts) mlp(m, &L->sh_gate, &L->sh_up, &L->sh_down, x, out, n);
        else m->be->ops->zero(m->be, out, (int64_t)n * D);
    }
    expert_ctx ec = {m, L};
    return ep_moe(m->ep, m->be, n, D, K, x, idx, w, out, run_expert, &ec, m->expert_tokens, err);
}

/* ------------------------------------------------------------------ driver */

static int make_runs(const model_batch *b, seq_run *runs, ms_err *err) {
    int n_runs = 0;
    for (int i = 0; i < b->n_tokens; i++) {
        if (b->seq[i] < 0 || b->seq[i] >= b->n_seqs) return ms_err_set(err, "batch token %d: bad sequence index", i);
        if (n_runs && runs[n_runs - 1].seq == b->seq[i]) {
            seq_run *r = &runs[n_runs - 1];
            if (b->pos[i] != r->pos0 + r->count) return ms_err_set(err, "batch token %d: positions not consecutive", i);
            r->count++;
            continue;
        }
        for (int r = 0; r < n_runs; r++)
            if (runs[r].seq == b->seq[i]) return ms_err_set(err, "batch token %d: sequence tokens not contiguous", i);
        runs[n_runs++] = (seq_run){i, 1, b->seq[i], b->pos[i]};
    }
    return n_runs;
}

/* Each run continues its sequence's cache: reserve pages up to its last position. */
static int reserve_pages(kv_cache *kv, const model_batch *b, const seq_run *runs, int n_runs, ms_err *err) {
    for (int r = 0; r < n_runs; r++) {
        kv_seq *s = b->seqs[runs[r].seq];
        if (runs[r].pos0 > s->n_tokens)
            return ms_err_set(err, "sequence %d: position %d leaves a gap after %d cached tokens", runs[r].seq,
                              runs[r].pos0, s->n_tokens);
        if (kv_seq_reserve(kv, s, runs[r].pos0 + runs[r].count, err) != 0) return -1;
    }
    return 0;
}

static void final_logits(model *m, const float *h, const model_batch *b, float *logits) {
    const backend_ops *op = m->be->ops;
    int D = m->cfg.hidden_size;
    if (m->trace) {
        float *all = fscratch(m, S_A, (size_t)b->n_tokens * D);
        op->rmsnorm(m->be, &m->final_norm, h, all, b->n_tokens, D, m->cfg.rms_norm_eps);
        trace_out(m, m->cfg.n_layers, all, b->n_tokens, D);
    }
    if (!b->n_logits) return;
    float *x = fscratch(m, S_LOGX, (size_t)b->n_logits * D);
    op->copy_rows(m->be, x, NULL, h, b->logit_rows, b->n_logits, D);
    op->rmsnorm(m->be, &m->final_norm, x, x, b->n_logits, D, m->cfg.rms_norm_eps);
    size_t bytes = (size_t)b->n_logits * m->cfg.vocab_size * sizeof *logits;
    float *dl = scratch(m, S_LOGITS, bytes);
    op->linear(m->be, &m->lm_head, x, dl, b->n_logits);
    op->download(m->be, logits, dl, bytes); /* logits = lm_head(RMSNorm(h)), to the caller's host memory */
}

static int check_batch(const model *m, const model_batch *b, ms_err *err) {
    int n = b->n_tokens;
    if (n < 0 || (n == 0 && !m->ep)) return ms_err_set(err, "empty batch");
    for (int i = 0; i < n; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= m->cfg.vocab_size)
            return ms_err_set(err, "token id %d out of range [0, %d)", b->tokens[i], m->cfg.vocab_size);
    for (int i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= n) return ms_err_set(err, "bad logit row %d", b->logit_rows[i]);
    return 0;
}

static int forward(model *m, kv_cache *kv, const model_batch *b, float *logits, ms_err *err) {
    const model_config *c = &m->cfg;
    const backend_ops *op = m->be->ops;
    int n = b->n_tokens, D = c->hidden_size;
    seq_run *runs = malloc((size_t)n * sizeof *runs);
    if (!runs) return ms_err_set(err, "out of memory");
    int n_runs = make_runs(b, runs, err);
    if (n_runs < 0 || reserve_pages(kv, b, runs, n_runs, err) != 0) { free(runs); return -1; }

    float *h = fscratch(m, S_H, (size_t)n * D), *a = fscratch(m, S_A, (size_t)n * D);
    float *out = fscratch(m, S_OUT, (size_t)n * D);
    op->embedding(m->be, &m->embed, b->tokens, n, h);
    trace_out(m, -1, h, n, D);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        op->rmsnorm(m->be, &L->attn_norm, h, a, n, D, c->rms_norm_eps);  /* a = RMSNorm(h) */
        attention(m, kv, l, a, out, b, runs, n_runs);
        op->axpy(m->be, 1.0f, out, h, (int64_t)n * D);                   /* h = h + attn */
        op->rmsnorm(m->be, &L->ffn_norm, h, a, n, D, c->rms_norm_eps);   /* b = RMSNorm(h) */
        if (!L->is_moe) mlp(m, &L->gate, &L->up, &L->down, a, out, n);
        else if (moe(m, L, a, out, n, err) != 0) { free(runs); return -1; }
        op->axpy(m->be, 1.0f, out, h, (int64_t)n * D);                   /* h = h + ffn */
        trace_out(m, l, h, n, D);
    }
    for (int r = 0; r < n_runs; r++) {
        kv_seq *s = b->seqs[runs[r].seq];
        if (runs[r].pos0 + runs[r].count > s->n_tokens) s->n_tokens = runs[r].pos0 + runs[r].count;
    }
    free(runs);
    final_logits(m, h, b, logits);
    return 0;
}

/* A rank with no tokens this step still takes part in every MoE exchange. */
static int forward_empty(model *m, ms_err *err) {
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (m->layers[l].is_moe && moe(m, &m->layers[l], NULL, NULL, 0, err) != 0) return -1;
    return 0;
}

int model_forward(model *m, kv_cache *kv, const model_batch *b, float *logits, ms_err *err) {
    int rc = check_batch(m, b, err);
    if (rc == 0 && !m->scratch && !(m->scratch = calloc(1, sizeof *m->scratch))) rc = ms_err_set(err, "out of memory");
    if (!m->ep) return rc ? rc : forward(m, kv, b, logits, err);
    if (rc == 0) rc = ep_step_begin(m->ep, b->n_tokens, err);
    if (rc == 0) rc = b->n_tokens ? forward(m, kv, b, logits, err) : forward_empty(m, err);
    if (rc != 0) ep_abort(m->ep, err->msg); /* the other ranks must not wait for this one */
    return rc;
}
