/* engine/model_load.c — model_load(): binds checkpoint tensors to the graph's
 * weights (see model.h), checking each one's dtype and shape against config.json,
 * and precomputes the YaRN RoPE frequencies, softmax scale and router settings. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/model.h"

typedef struct {
    model *m;
    const char *dir;
    ms_err *err;
} binder;

/* Hands host tensor data to the backend (zero-copy on the CPU) and remembers it. */
static const void *place(binder *b, const void *host, size_t bytes, const char *name) {
    model *m = b->m;
    if (m->n_placed == m->cap_placed) {
        int cap = m->cap_placed ? m->cap_placed * 2 : 256;
        const void **g = realloc(m->placed, (size_t)cap * sizeof *g);
        if (!g) { ms_err_set(b->err, "out of memory"); return NULL; }
        m->placed = g;
        m->cap_placed = cap;
    }
    const void *p = m->be->ops->weight_place(m->be, host, bytes);
    if (!p) {
        ms_err_set(b->err, "%s: cannot place tensor %s (%zu bytes) on the %s backend", b->dir, name, bytes,
                   m->be->ops->name);
        return NULL;
    }
    m->placed[m->n_placed++] = p;
    return p;
}

/* Binds NAME (a 1-D [rows] or 2-D [rows, cols] tensor). Projections may be FP8
 * with NAME_scale_inv beside them; `proj` says whether FP8 is allowed. */
static int bind(binder *b, weight *w, const char *name, int64_t rows, int64_t cols, int proj) {
    const st_tensor *t = safetensors_find(b->m->st, name);
    if (!t) return ms_err_set(b->err, "%s: tensor %s is missing from the checkpoint", b->dir, name);
    const char *file = safetensors_file_of(b->m->st, t);
    int want_dims = cols ? 2 : 1;
    if (t->n_dims != want_dims || t->shape[0] != rows || (cols && t->shape[1] != cols))
        return ms_err_set(b->err, "%s: tensor %s has shape [%lld%s%lld], config.json implies [%lld%s%lld]", file, name,
                          (long long)t->shape[0], t->n_dims > 1 ? ", " : "", t->n_dims > 1 ? (long long)t->shape[1] : 0LL,
                          (long long)rows, cols ? ", " : "", (long long)cols);
    memset(w, 0, sizeof *w);
    w->dtype = t->dtype;
    w->rows = rows;
    w->cols = cols ? cols : rows;
    if (!cols) w->rows = 1;
    if (!(w->data = place(b, t->data, t->nbytes, name))) return -1;
    if (t->dtype != DTYPE_F8_E4M3) return 0;
    if (!proj) return ms_err_set(b->err, "%s: tensor %s is F8_E4M3, which is only supported for projections", file, name);
    char sname[512];
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    const st_tensor *s = safetensors_find(b->m->st, sname);
    int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    if (!s) return ms_err_set(b->err, "%s: FP8 tensor %s has no %s", file, name, sname);
    if (s->dtype != DTYPE_F32 || s->n_dims != 2 || s->shape[0] != sr || s->shape[1] != sc)
        return ms_err_set(b->err, "%s: tensor %s must be F32 [%lld, %lld]", safetensors_file_of(b->m->st, s), sname,
                          (long long)sr, (long long)sc);
    return (w->scale = place(b, s->data, s->nbytes, sname)) ? 0 : -1;
}

static int bindf(binder *b, weight *w, int64_t rows, int64_t cols, int proj, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int bindf(binder *b, weight *w, int64_t rows, int64_t cols, int proj, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return bind(b, w, name, rows, cols, proj);
}

static int bind_attention(binder *b, int l, layer_weights *L) {
    const model_config *c = &b->m->cfg;
    int64_t D = c->hidden_size, H = c->n_heads, qdim = c->qk_nope_head_dim + c->qk_rope_head_dim;
    const char *p = "model.layers";
    int rc = bindf(b, &L->attn_norm, D, 0, 0, "%s.%d.input_layernorm.weight", p, l);
    if (!rc && c->q_lora_rank) {
        rc = bindf(b, &L->q_a, c->q_lora_rank, D, 1, "%s.%d.self_attn.q_a_proj.weight", p, l);
        if (!rc) rc = bindf(b, &L->q_a_norm, c->q_lora_rank, 0, 0, "%s.%d.self_attn.q_a_layernorm.weight", p, l);
        if (!rc) rc = bindf(b, &L->q_b, H * qdim, c->q_lora_rank, 1, "%s.%d.self_attn.q_b_proj.weight", p, l);
    } else if (!rc) {
        rc = bindf(b, &L->q_proj, H * qdim, D, 1, "%s.%d.self_attn.q_proj.weight", p, l);
    }
    if (!rc) rc = bindf(b, &L->kv_a, c->kv_lora_rank + c->qk_rope_head_dim, D, 1,
                        "%s.%d.self_attn.kv_a_proj_with_mqa.weight", p, l);
    if (!rc) rc = bindf(b, &L->kv_a_norm, c->kv_lora_rank, 0, 0, "%s.%d.self_attn.kv_a_layernorm.weight", p, l);
    if (!rc) rc = bindf(b, &L->kv_b, H * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, 1,
                        "%s.%d.self_attn.kv_b_proj.weight", p, l);
    if (!rc) rc = bindf(b, &L->o_proj, D, H * c->v_head_dim, 1, "%s.%d.self_attn.o_proj.weight", p, l);
    if (!rc) rc = bindf(b, &L->ffn_norm, D, 0, 0, "%s.%d.post_attention_layernorm.weight", p, l);
    return rc;
}

static int bind_mlp3(binder *b, weight *g, weight *u, weight *d, int64_t inter, const char *prefix) {
    int64_t D = b->m->cfg.hidden_size;
    int rc = bindf(b, g, inter, D, 1, "%s.gate_proj.weight", prefix);
    if (!rc) rc = bindf(b, u, inter, D, 1, "%s.up_proj.weight", prefix);
    if (!rc) rc = bindf(b, d, D, inter, 1, "%s.down_proj.weight", prefix);
    return rc;
}

static int bind_moe(binder *b, int l, layer_weights *L) {
    const model_config *c = &b->m->cfg;
    char prefix[256];
    int E = c->n_routed_experts;
    int rc = bindf(b, &L->router, E, c->hidden_size, 0, "model.layers.%d.mlp.gate.weight", l);
    if (rc) return rc;
    if (c->topk == TOPK_NOAUX_TC) {
        weight bias;
        if ((rc = bindf(b, &bias, E, 0, 0, "model.layers.%d.mlp.gate.e_score_correction_bias", l))) return rc;
        if (bias.dtype != DTYPE_F32)
            return ms_err_set(b->err, "%s: model.layers.%d.mlp.gate.e_score_correction_bias must be F32", b->dir, l);
        L->router_bias = bias.data;
    }
    L->exp_gate = calloc((size_t)E, sizeof(weight));
    L->exp_up = calloc((size_t)E, sizeof(weight));
    L->exp_down = calloc((size_t)E, sizeof(weight));
    if (!L->exp_gate || !L->exp_up || !L->exp_down) return ms_err_set(b->err, "out of memory");
    for (int e = 0; e < E && !rc; e++) {
        snprintf(prefix, sizeof prefix, "model.layers.%d.mlp.experts.%d", l, e);
        rc = bind_mlp3(b, &L->exp_gate[e], &L->exp_up[e], &L->exp_down[e], c->moe_intermediate_size, prefix);
    }
    if (!rc && c->n_shared_experts) {
        snprintf(prefix, sizeof prefix, "model.layers.%d.mlp.shared_experts", l);
        rc = bind_mlp3(b, &L->sh_gate, &L->sh_up, &L->sh_down,
                       (int64_t)c->moe_intermediate_size * c->n_shared_experts, prefix);
    }
    return rc;
}

static int bind_layer(binder *b, int l) {
    layer_weights *L = &b->m->layers[l];
    int rc = bind_attention(b, l, L);
    if (rc) return rc;
    L->is_moe = model_config_is_moe_layer(&b->m->cfg, l);
    if (L->is_moe) return bind_moe(b, l, L);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "model.layers.%d.mlp", l);
    return bind_mlp3(b, &L->gate, &L->up, &L->down, b->m->cfg.intermediate_size, prefix);
}

/* YaRN per golden SPEC §5 (identical in model.py and HF). */
static double yarn_corr_dim(const model_config *c, double beta) {
    return c->qk_rope_head_dim * log(c->original_max_position / (beta * 2 * M_PI)) / (2 * log(c->rope_theta));
}

static double yarn_mscale(double factor, double mscale) {
    return factor <= 1.0 ? 1.0 : 0.1 * mscale * log(factor) + 1.0;
}

static int init_rope(model *m, ms_err *err) {
    const model_config *c = &m->cfg;
    int half = c->qk_rope_head_dim / 2;
    m->inv_freq = calloc((size_t)half, sizeof *m->inv_freq);
    if (!m->inv_freq) return ms_err_set(err, "out of memory");
    double low = 0, high = 0;
    if (c->yarn) {
        low = fmax(floor(yarn_corr_dim(c, c->beta_fast)), 0.0);
        high = fmin(ceil(yarn_corr_dim(c, c->beta_slow)), c->qk_rope_head_dim - 1);
        if (low == high) high += 0.001;
    }
    for (int i = 0; i < half; i++) {
        double base = 1.0 / pow(c->rope_theta, (2.0 * i) / c->qk_rope_head_dim);
        if (!c->yarn) { m->inv_freq[i] = base; continue; }
        double ramp = fmin(fmax((i - low) / (high - low), 0.0), 1.0);
        m->inv_freq[i] = base / c->rope_factor * ramp + base * (1.0 - ramp);
    }
    m->rope = (rope_params){c->qk_rope_head_dim, m->inv_freq, 1.0};
    double scale = 1.0 / sqrt((double)(c->qk_nope_head_dim + c->qk_rope_head_dim));
    if (c->yarn) {
        if (c->mscale_all_dim) {
            double ms = yarn_mscale(c->rope_factor, c->mscale_all_dim);
            scale *= ms * ms;
        }
        m->rope.attn_factor = yarn_mscale(c->rope_factor, c->mscale) / yarn_mscale(c->rope_factor, c->mscale_all_dim);
    }
    m->softmax_scale = (float)scale;
    return 0;
}

static void init_router(model *m) {
    const model_config *c = &m->cfg;
    router_params *r = &m->router;
    r->n_experts = c->n_routed_experts;
    r->top_k = c->n_experts_per_tok;
    r->n_group = c->topk == TOPK_GREEDY ? 1 : c->n_group;
    r->topk_group = c->topk == TOPK_GREEDY ? 1 : c->topk_group;
    r->sigmoid = c->scoring == SCORING_SIGMOID;
    r->group_sum_top2 = c->topk == TOPK_NOAUX_TC;
    r->renormalize = c->n_experts_per_tok > 1 && c->norm_topk_prob;
    /* HF V3 scales always; HF V2 scales only when it does not renormalise. */
    r->scale = (c->arch == MODEL_ARCH_V2 && r->renormalize) ? 1.0f : c->routed_scaling_factor;
}

/* The MTP module is kept mapped for speculative decoding; only its presence is noted. */
static void note_mtp(model *m) {
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.eh_proj.weight", m->cfg.n_layers);
    m->has_mtp = m->cfg.n_mtp_layers > 0 && safetensors_find(m->st, name) != NULL;
}

static void progress(int done, int total) {
    if (!isatty(STDERR_FILENO)) return;
    fprintf(stderr, "\rloading: layer %d/%d", done, total);
    if (done == total) fputc('\n', stderr);
}

model *model_load(const char *dir, backend *be, ms_err *err) {
    model *m = calloc(1, sizeof *m);
    if (!m) { ms_err_set(err, "out of memory"); return NULL; }
    m->be = be;
    if (model_config_load(dir, &m->cfg, err) != 0 || !(m->st = safetensors_open_dir(dir, err))) goto fail;
    const model_config *c = &m->cfg;
    binder b = {m, dir, err};
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->expert_tokens = calloc((size_t)(c->n_routed_experts ? c->n_routed_experts : 1), sizeof *m->expert_tokens);
    if (!m->layers || !m->expert_tokens) { ms_err_set(err, "out of memory"); goto fail; }
    if (bind(&b, &m->embed, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, 0) ||
        bind(&b, &m->final_norm, "model.norm.weight", c->hidden_size, 0, 0) ||
        bind(&b, &m->lm_head, "lm_head.weight", c->vocab_size, c->hidden_size, 1))
        goto fail;
    for (int l = 0; l < c->n_layers; l++) {
        if (bind_layer(&b, l) != 0) goto fail;
        progress(l + 1, c->n_layers);
    }
    if (init_rope(m, err) != 0) goto fail;
    init_router(m);
    note_mtp(m);
    return m;
fail:
    model_free(m);
    return NULL;
}

void model_scratch_free(model *m);

void model_free(model *m) {
    if (!m) return;
    for (int l = 0; m->layers && l < m->cfg.n_layers; l++) {
        free(m->layers[l].exp_gate);
        free(m->layers[l].exp_up);
        free(m->layers[l].exp_down);
    }
    free(m->layers);
    free(m->inv_freq);
    for (int i = 0; i < m->n_placed; i++) m->be->ops->weight_release(m->be, m->placed[i]);
    free(m->placed);
    model_scratch_free(m);
    ep_free(m->ep, m->be);
    free(m->expert_tokens);
    safetensors_close(m->st);
    free(m);
}

int model_set_ep(model *m, comm *c, const int32_t *owner, ms_err *err) {
    if (m->ep) return ms_err_set(err, "expert parallelism is already set up");
    if (!m->cfg.n_routed_experts) return ms_err_set(err, "expert parallelism needs a model with routed experts");
    m->ep = ep_create(c, m->cfg.n_routed_experts, owner, err);
    return m->ep ? 0 : -1;
}

int model_set_batch_invariant(model *m, int on, ms_err *err) {
    if (!m->be->ops->set_batch_invariant)
        return ms_err_set(err, "the %s backend has no batch-invariant mode", m->be->ops->name);
    m->be->ops->set_batch_invariant(m->be, on);
    m->attn = on ? ATTN_ABSORB : ATTN_AUTO;
    return 0;
}

int model_set_bf16_activations(model *m, int on, ms_err *err) {
    if (!m->be->ops->set_bf16_activations)
        return ms_err_set(err, "the %s backend has no bf16-activation mode", m->be->ops->name);
    return m->be->ops->set_bf16_activations(m->be, on, err);
}

void model_expert_tokens(const model *m, uint64_t *out) {
    for (int e = 0; e < m->cfg.n_routed_experts; e++)
        out[e] = m->expert_tokens ? __atomic_load_n(&m->expert_tokens[e], __ATOMIC_RELAXED) : 0;
}

int model_kv_init(const model *m, kv_cache *kv, int n_tokens, ms_err *err) {
    return kv_cache_init(kv, m->be, m->cfg.n_layers, m->cfg.kv_lora_rank, m->cfg.qk_rope_head_dim,
                         kv_pages_for(n_tokens), err);
}

static double weight_bytes(const weight *w) {
    double b = (double)w->rows * (double)w->cols * (double)dtype_size(w->dtype);
    if (w->scale) b += (double)((w->rows + 127) / 128) * (double)weight_scale_cols(w) * 4.0;
    return w->data ? b : 0.0;
}

double model_active_weight_bytes(const model *m) {
    double total = weight_bytes(&m->lm_head) + (double)m->cfg.hidden_size * dtype_size(m->embed.dtype);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        const weight *attn[] = {&L->q_a, &L->q_b, &L->q_proj, &L->kv_a, &L->kv_b, &L->o_proj,
                                &L->gate, &L->up, &L->down, &L->sh_gate, &L->sh_up, &L->sh_down, &L->router};
        for (size_t i = 0; i < sizeof attn / sizeof attn[0]; i++) total += weight_bytes(attn[i]);
        if (L->is_moe)
            total += m->cfg.n_experts_per_tok *
                     (weight_bytes(&L->exp_gate[0]) + weight_bytes(&L->exp_up[0]) + weight_bytes(&L->exp_down[0]));
    }
    return total;
}
