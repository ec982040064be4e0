/* common/modelgen.c — see modelgen.h. The SPEC section each part implements is
 * named above it. Owns nothing global; every run allocates its own buffers. */
#include "common/modelgen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/threadpool.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "modelgen writes host-order words as safetensors little-endian data"
#endif

/* ---- §4.1 seed, §4.2 splitmix64, §4.3 master values ---------------------- */

uint64_t modelgen_fnv1a64(const void *bytes, size_t n) {
    const uint8_t *p = bytes;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t modelgen_state0(const char *seed_name, uint64_t global_seed) {
    return modelgen_fnv1a64(seed_name, strlen(seed_name)) ^ global_seed;
}

static inline uint64_t splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t modelgen_splitmix64(uint64_t *state) {
    *state += MODELGEN_GOLDEN_GAMMA;
    return splitmix64_mix(*state);
}

uint64_t modelgen_random_at(uint64_t state0, uint64_t i) {
    return splitmix64_mix(state0 + (i + 1) * MODELGEN_GOLDEN_GAMMA);
}

float modelgen_master(uint64_t r, double amp, int64_t off) {
    int64_t k = (int64_t)(r >> 40) - 8388608;
    double s = amp / 8388608.0;
    return (float)((double)(k + off) * s); /* one double multiply, then RNE to float */
}

void modelgen_masters(uint64_t state0, double amp, int64_t off, uint64_t first, size_t n, float *out) {
    uint64_t state = state0 + first * MODELGEN_GOLDEN_GAMMA;
    for (size_t j = 0; j < n; j++) out[j] = modelgen_master(modelgen_splitmix64(&state), amp, off);
}

/* ---- §4.6 FP8 e4m3 with 128x128 block scales ------------------------------ */

float modelgen_fp8_scale(float amax) { return amax > 0 ? (float)(amax / 448.0f) : 1.0f; }

/* SPEC §4.6 e4m3_encode on the float's bits. For |x| in [2^-6, 448) the top
 * bits (a >> 20) are exactly (float exponent << 3 | 3 mantissa bits), so the
 * code is (a >> 20) - (120 << 3) after rounding the 20 dropped bits to
 * nearest even (same trick as BF16, §4.4); a carry out of the mantissa bumps
 * the exponent exactly like "q == 16: q = 8; e += 1". Branch-free on the
 * common path because the rounding direction is a coin flip. */
uint8_t modelgen_e4m3(float x) {
    uint32_t a = f32_bits(x) & 0x7FFFFFFFu;
    uint8_t sign = x < 0 ? 0x80 : 0x00;
    if (a >= 0x43E00000u) return sign | 0x7E; /* |x| >= 448: saturate */
    if (a < 0x3C800000u) {                    /* |x| < 2^-6: subnormal, rne(|x| * 512) */
        float t = f32_from_bits(a) * 512.0f;     /* exact: scaling by 2^9 */
        float q = (t + 8388608.0f) - 8388608.0f;      /* RNE to an integer, 0..8 */
        return sign | (uint8_t)q;
    }
    return sign | (uint8_t)(((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - (120u << 3));
}

/* Quantises one block of rows x cols values (row strides ld_w, ld_q) and
 * returns its scale. */
static float fp8_block(const float *w, size_t rows, size_t cols, size_t ld_w, uint8_t *q, size_t ld_q) {
    float amax = 0.0f;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            float a = fabsf(w[r * ld_w + c]);
            if (a > amax) amax = a;
        }
    float s = modelgen_fp8_scale(amax);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) q[r * ld_q + c] = modelgen_e4m3(w[r * ld_w + c] / s);
    return s;
}

void modelgen_fp8_band(const float *w, size_t rows, size_t cols, uint8_t *q, float *scales) {
    size_t B = MODELGEN_FP8_BLOCK;
    for (size_t c0 = 0; c0 < cols; c0 += B)
        scales[c0 / B] = fp8_block(w + c0, rows, cols - c0 < B ? cols - c0 : B, cols, q + c0, cols);
}

/* ---- §3 tensor inventory --------------------------------------------------- */

static const char *const class_names[MODELGEN_CLASS_COUNT] = {"embed", "linear", "attn_b", "router",
                                                               "bias",  "norm",   "head"};

const char *modelgen_class_name(modelgen_class c) {
    if (c == MODELGEN_SCALE) return "scale";
    return (unsigned)c < MODELGEN_CLASS_COUNT ? class_names[c] : "?";
}

const char *modelgen_shard_file(int shard) {
    static const char *const files[MODELGEN_SHARDS] = {"model-00001-of-00002.safetensors",
                                                       "model-00002-of-00002.safetensors"};
    return (unsigned)shard < MODELGEN_SHARDS ? files[shard] : NULL;
}

/* config.json values that shape the inventory (SPEC §3 notation). */
typedef struct model_dims {
    uint64_t D, V, L, H, qr, kvr, dn, dr, dv, I, Im, E, Ns, K0, M, moe_freq;
    int has_qr; /* q_lora_rank not null */
    int fp8;    /* quantization_config.quant_method == "fp8" */
    int noaux;  /* topk_method == "noaux_tc" */
} model_dims;

/* Reads a non-negative integer; absent/null gives dflt unless required. */
static int cfg_uint(json_t *root, const char *key, int required, uint64_t dflt, uint64_t *out, ms_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return ms_err_set(err, "config.json: missing \"%s\"", key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return ms_err_set(err, "config.json: \"%s\" must be a non-negative integer", key);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_dims(json_t *cfg, model_dims *d, ms_err *err) {
    struct { const char *key; uint64_t *out; int required; uint64_t dflt; } keys[] = {
        {"hidden_size", &d->D, 1, 0},
        {"vocab_size", &d->V, 1, 0},
        {"num_hidden_layers", &d->L, 1, 0},
        {"num_attention_heads", &d->H, 1, 0},
        {"kv_lora_rank", &d->kvr, 1, 0},
        {"qk_nope_head_dim", &d->dn, 1, 0},
        {"qk_rope_head_dim", &d->dr, 1, 0},
        {"v_head_dim", &d->dv, 1, 0},
        {"intermediate_size", &d->I, 1, 0},
        {"moe_intermediate_size", &d->Im, 0, 0},
        {"n_routed_experts", &d->E, 0, 0},
        {"n_shared_experts", &d->Ns, 0, 0},
        {"first_k_dense_replace", &d->K0, 0, 0},
        {"num_nextn_predict_layers", &d->M, 0, 0},
        {"moe_layer_freq", &d->moe_freq, 0, 1},
        {"q_lora_rank", &d->qr, 0, 0},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (cfg_uint(cfg, keys[i].key, keys[i].required, keys[i].dflt, keys[i].out, err)) return -1;
    json_t *qr = json_object_get(cfg, "q_lora_rank");
    d->has_qr = qr && !json_is_null(qr);
    if (d->moe_freq == 0) return ms_err_set(err, "config.json: \"moe_layer_freq\" must be >= 1");
    if (d->E > 0 && d->Im == 0) return ms_err_set(err, "config.json: MoE needs \"moe_intermediate_size\"");
    json_t *tm = json_object_get(cfg, "topk_method");
    d->noaux = json_is_string(tm) && strcmp(json_string_value(tm), "noaux_tc") == 0;
    json_t *qc = json_object_get(cfg, "quantization_config");
    json_t *qm = qc ? json_object_get(qc, "quant_method") : NULL;
    d->fp8 = json_is_string(qm) && strcmp(json_string_value(qm), "fp8") == 0;
    if (qc && !json_is_null(qc) && !d->fp8)
        return ms_err_set(err, "config.json: unsupported quantization_config (only quant_method \"fp8\")");
    return 0;
}

typedef struct plan_builder {
    modelgen_plan *plan;
    size_t cap;
    int shard;
    int fp8;
    ms_err *err;
} plan_builder;

static int add_tensor(plan_builder *b, const char *name, const char *seed_name, dtype_t dt, modelgen_class cls,
                      int ndim, uint64_t rows, uint64_t cols) {
    modelgen_plan *p = b->plan;
    if (p->n_tensors == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        modelgen_tensor *t = realloc(p->tensors, cap * sizeof *t);
        if (!t) return ms_err_set(b->err, "out of memory building the tensor list");
        p->tensors = t;
        b->cap = cap;
    }
    modelgen_tensor *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->seed_name, sizeof t->seed_name, "%s", seed_name ? seed_name : name);
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = rows;
    t->shape[1] = ndim == 2 ? cols : 1;
    t->value_class = cls;
    t->shard = b->shard;
    t->nbytes = rows * t->shape[1] * dtype_size(dt);
    t->scale_index = -1;
    return 0;
}

/* Joins prefix+suffix into buf. Our names are bounded (the longest, with two
 * 20-digit indices, is under 100 bytes), so clamping never happens in practice. */
static const char *join(char buf[MODELGEN_NAME_MAX], const char *prefix, const char *suffix) {
    size_t a = strlen(prefix), b = strlen(suffix);
    if (a > MODELGEN_NAME_MAX - 1) a = MODELGEN_NAME_MAX - 1;
    if (b > MODELGEN_NAME_MAX - 1 - a) b = MODELGEN_NAME_MAX - 1 - a;
    memmove(buf, prefix, a);
    memcpy(buf + a, suffix, b);
    buf[a + b] = '\0';
    return buf;
}

static int add_bf16(plan_builder *b, const char *prefix, const char *suffix, modelgen_class cls, int ndim,
                    uint64_t rows, uint64_t cols) {
    char name[MODELGEN_NAME_MAX];
    return add_tensor(b, join(name, prefix, suffix), NULL, DTYPE_BF16, cls, ndim, rows, cols);
}

/* A PROJ tensor: FP8 + weight_scale_inv when the config is FP8, else BF16. */
static int add_proj(plan_builder *b, const char *prefix, const char *suffix, modelgen_class cls, uint64_t rows,
                    uint64_t cols) {
    if (!b->fp8) return add_bf16(b, prefix, suffix, cls, 2, rows, cols);
    char name[MODELGEN_NAME_MAX], scale[MODELGEN_NAME_MAX];
    if (add_tensor(b, join(name, prefix, suffix), NULL, DTYPE_F8_E4M3, cls, 2, rows, cols)) return -1;
    b->plan->tensors[b->plan->n_tensors - 1].scale_index = (int)b->plan->n_tensors;
    uint64_t blk = MODELGEN_FP8_BLOCK;
    return add_tensor(b, join(scale, name, "_scale_inv"), NULL, DTYPE_F32, MODELGEN_SCALE, 2,
                      (rows + blk - 1) / blk, (cols + blk - 1) / blk);
}

static int add_mtp(plan_builder *b, const model_dims *d, const char *P) {
    char name[MODELGEN_NAME_MAX];
    /* The MTP copies are seeded by the main tensors' names (SPEC §3). */
    if (add_tensor(b, join(name, P, "embed_tokens.weight"), "model.embed_tokens.weight", DTYPE_BF16,
                   MODELGEN_EMBED, 2, d->V, d->D) ||
        add_bf16(b, P, "enorm.weight", MODELGEN_NORM, 1, d->D, 0) ||
        add_bf16(b, P, "hnorm.weight", MODELGEN_NORM, 1, d->D, 0) ||
        add_bf16(b, P, "eh_proj.weight", MODELGEN_LINEAR, 2, d->D, 2 * d->D) ||
        add_bf16(b, P, "shared_head.norm.weight", MODELGEN_NORM, 1, d->D, 0))
        return -1;
    return add_tensor(b, join(name, P, "shared_head.head.weight"), "lm_head.weight", DTYPE_BF16, MODELGEN_HEAD,
                      2, d->V, d->D);
}

static int add_attention(plan_builder *b, const model_dims *d, const char *A) {
    uint64_t qk = d->H * (d->dn + d->dr);
    if (d->has_qr) {
        if (add_proj(b, A, "q_a_proj.weight", MODELGEN_LINEAR, d->qr, d->D) ||
            add_bf16(b, A, "q_a_layernorm.weight", MODELGEN_NORM, 1, d->qr, 0) ||
            add_proj(b, A, "q_b_proj.weight", MODELGEN_ATTN_B, qk, d->qr))
            return -1;
    } else if (add_proj(b, A, "q_proj.weight", MODELGEN_ATTN_B, qk, d->D)) {
        return -1;
    }
    if (add_proj(b, A, "kv_a_proj_with_mqa.weight", MODELGEN_LINEAR, d->kvr + d->dr, d->D) ||
        add_bf16(b, A, "kv_a_layernorm.weight", MODELGEN_NORM, 1, d->kvr, 0) ||
        add_proj(b, A, "kv_b_proj.weight", MODELGEN_ATTN_B, d->H * (d->dn + d->dv), d->kvr))
        return -1;
    return add_proj(b, A, "o_proj.weight", MODELGEN_LINEAR, d->D, d->H * d->dv);
}

/* gate/up/down projections of width n under prefix Q (dense MLP or one expert). */
static int add_ffn(plan_builder *b, const char *Q, uint64_t n, uint64_t D) {
    return add_proj(b, Q, "gate_proj.weight", MODELGEN_LINEAR, n, D) ||
                   add_proj(b, Q, "up_proj.weight", MODELGEN_LINEAR, n, D) ||
                   add_proj(b, Q, "down_proj.weight", MODELGEN_LINEAR, D, n)
               ? -1
               : 0;
}

static int add_mlp(plan_builder *b, const model_dims *d, const char *Q, uint64_t layer) {
    int moe = d->E > 0 && layer >= d->K0 && layer % d->moe_freq == 0;
    if (!moe) return add_ffn(b, Q, d->I, d->D);
    if (add_bf16(b, Q, "gate.weight", MODELGEN_ROUTER, 2, d->E, d->D)) return -1;
    if (d->noaux) {
        char name[MODELGEN_NAME_MAX];
        if (add_tensor(b, join(name, Q, "gate.e_score_correction_bias"), NULL, DTYPE_F32, MODELGEN_BIAS, 1, d->E,
                       0))
            return -1;
    }
    for (uint64_t e = 0; e < d->E; e++) {
        char prefix[MODELGEN_NAME_MAX];
        snprintf(prefix, sizeof prefix, "%sexperts.%llu.", Q, (unsigned long long)e);
        if (add_ffn(b, prefix, d->Im, d->D)) return -1;
    }
    if (d->Ns > 0) {
        char prefix[MODELGEN_NAME_MAX];
        if (add_ffn(b, join(prefix, Q, "shared_experts."), d->Im * d->Ns, d->D)) return -1;
    }
    return 0;
}

static int add_layer(plan_builder *b, const model_dims *d, uint64_t l) {
    char P[MODELGEN_NAME_MAX], A[MODELGEN_NAME_MAX], Q[MODELGEN_NAME_MAX];
    snprintf(P, sizeof P, "model.layers.%llu.", (unsigned long long)l);
    b->shard = l < d->L / 2 ? 0 : 1; /* SPEC §4.7 */
    if (l >= d->L && add_mtp(b, d, P)) return -1;
    if (add_bf16(b, P, "input_layernorm.weight", MODELGEN_NORM, 1, d->D, 0) ||
        add_attention(b, d, join(A, P, "self_attn.")) ||
        add_bf16(b, P, "post_attention_layernorm.weight", MODELGEN_NORM, 1, d->D, 0))
        return -1;
    return add_mlp(b, d, join(Q, P, "mlp."), l);
}

static int build_inventory(modelgen_plan *plan, const model_dims *d, ms_err *err) {
    plan_builder b = {.plan = plan, .fp8 = d->fp8, .err = err};
    if (add_bf16(&b, "", "model.embed_tokens.weight", MODELGEN_EMBED, 2, d->V, d->D)) return -1;
    for (uint64_t l = 0; l < d->L + d->M; l++)
        if (add_layer(&b, d, l)) return -1;
    b.shard = 1;
    if (add_bf16(&b, "", "model.norm.weight", MODELGEN_NORM, 1, d->D, 0) ||
        add_bf16(&b, "", "lm_head.weight", MODELGEN_HEAD, 2, d->V, d->D))
        return -1;
    return 0;
}

/* ---- gen.json ------------------------------------------------------------- */

static int parse_gen(modelgen_plan *plan, json_t *gen, ms_err *err) {
    json_t *seed = json_object_get(gen, "seed");
    if (!json_is_integer(seed)) return ms_err_set(err, "gen.json: \"seed\" must be an integer");
    plan->seed = (uint64_t)json_integer_value(seed);
    json_t *shards = json_object_get(gen, "shards");
    if (shards && (!json_is_integer(shards) || json_integer_value(shards) != MODELGEN_SHARDS))
        return ms_err_set(err, "gen.json: only \"shards\": 2 is supported");
    json_t *classes = json_object_get(gen, "classes");
    if (!json_is_object(classes)) return ms_err_set(err, "gen.json: missing \"classes\" object");
    for (int c = 0; c < MODELGEN_CLASS_COUNT; c++) {
        json_t *cl = json_object_get(classes, class_names[c]);
        json_t *amp = cl ? json_object_get(cl, "amp") : NULL;
        json_t *off = cl ? json_object_get(cl, "off") : NULL;
        if (!json_is_number(amp) || (off && !json_is_integer(off)))
            return ms_err_set(err, "gen.json: class \"%s\" needs a numeric \"amp\" and an integer \"off\"",
                              class_names[c]);
        plan->classes[c].amp = json_number_value(amp);
        plan->classes[c].off = off ? (int64_t)json_integer_value(off) : 0;
    }
    json_t *files = json_object_get(gen, "tokenizer_files");
    if (!files) return 0;
    if (!json_is_array(files)) return ms_err_set(err, "gen.json: \"tokenizer_files\" must be an array");
    plan->tokenizer_files = calloc(json_array_size(files) + 1, sizeof *plan->tokenizer_files);
    if (!plan->tokenizer_files) return ms_err_set(err, "out of memory");
    for (size_t i = 0; i < json_array_size(files); i++) {
        const char *f = json_string_value(json_array_get(files, i));
        if (!f || !*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, ".."))
            return ms_err_set(err, "gen.json: tokenizer_files[%zu] must be a plain file name", i);
        if (!(plan->tokenizer_files[i] = strdup(f))) return ms_err_set(err, "out of memory");
        plan->n_tokenizer_files = i + 1;
    }
    return 0;
}

/* ---- §4.7 in-file order and offsets --------------------------------------- */

static int file_order_cmp(const void *a, const void *b) {
    const modelgen_tensor *x = *(const modelgen_tensor *const *)a, *y = *(const modelgen_tensor *const *)b;
    size_t sx = dtype_size(x->dtype), sy = dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name); /* strcmp compares as unsigned bytes */
}

/* The tensors of one shard in file order; caller frees *out. */
static int shard_order(const modelgen_plan *plan, int shard, modelgen_tensor ***out, size_t *n, ms_err *err) {
    modelgen_tensor **list = malloc((plan->n_tensors + 1) * sizeof *list);
    if (!list) return ms_err_set(err, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < plan->n_tensors; i++)
        if (plan->tensors[i].shard == shard) list[k++] = &plan->tensors[i];
    qsort(list, k, sizeof *list, file_order_cmp);
    *out = list;
    *n = k;
    return 0;
}

static int assign_offsets(modelgen_plan *plan, ms_err *err) {
    plan->total_bytes = 0;
    for (int s = 0; s < MODELGEN_SHARDS; s++) {
        modelgen_tensor **list;
        size_t n;
        if (shard_order(plan, s, &list, &n, err)) return -1;
        uint64_t off = 0;
        for (size_t i = 0; i < n; i++) {
            list[i]->offset = off;
            off += list[i]->nbytes;
        }
        plan->total_bytes += off;
        free(list);
    }
    return 0;
}

int modelgen_plan_init(modelgen_plan *plan, const char *config_json, const char *gen_json, ms_err *err) {
    memset(plan, 0, sizeof *plan);
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    if (!cfg) return ms_err_set(err, "config.json: line %d: %s", jerr.line, jerr.text);
    json_t *gen = json_loads(gen_json, 0, &jerr);
    if (!gen) {
        json_decref(cfg);
        return ms_err_set(err, "gen.json: line %d: %s", jerr.line, jerr.text);
    }
    model_dims d;
    int rc = -1;
    if (!json_is_object(cfg)) ms_err_set(err, "config.json: not a JSON object");
    else if (!json_is_object(gen)) ms_err_set(err, "gen.json: not a JSON object");
    else if (parse_dims(cfg, &d, err) == 0 && parse_gen(plan, gen, err) == 0 &&
             build_inventory(plan, &d, err) == 0 && assign_offsets(plan, err) == 0)
        rc = 0;
    json_decref(cfg);
    json_decref(gen);
    if (rc) modelgen_plan_free(plan);
    return rc;
}

void modelgen_plan_free(modelgen_plan *plan) {
    free(plan->tensors);
    for (size_t i = 0; i < plan->n_tokenizer_files; i++) free(plan->tokenizer_files[i]);
    free(plan->tokenizer_files);
    memset(plan, 0, sizeof *plan);
}

int modelgen_plan_find(const modelgen_plan *plan, const char *name) {
    for (size_t i = 0; i < plan->n_tensors; i++)
        if (strcmp(plan->tensors[i].name, name) == 0) return (int)i;
    return -1;
}

/* ---- text buffers for the JSON we emit ------------------------------------- */

typedef struct strbuf {
    char *data;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *sb, const char *fmt, ...) {
    if (sb->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->data ? sb->data + sb->len : NULL, sb->data ? sb->cap - sb->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { sb->failed = 1; return; }
        if (sb->data && sb->len + (size_t)n < sb->cap) { sb->len += (size_t)n; return; }
        size_t cap = sb->cap ? sb->cap : 4096;
        while (cap <= sb->len + (size_t)n) cap *= 2;
        char *p = realloc(sb->data, cap);
        if (!p) { sb->failed = 1; return; }
        sb->data = p;
        sb->cap = cap;
    }
}

/* §4.7 header: compact JSON, file order, space-padded to a multiple of 8. */
static void safetensors_header(strbuf *sb, modelgen_tensor **list, size_t n) {
    sb_printf(sb, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        const modelgen_tensor *t = list[i];
        sb_printf(sb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu", t->name, dtype_name(t->dtype),
                  (unsigned long long)t->shape[0]);
        if (t->ndim == 2) sb_printf(sb, ",%llu", (unsigned long long)t->shape[1]);
        sb_printf(sb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->offset,
                  (unsigned long long)(t->offset + t->nbytes));
    }
    sb_printf(sb, "}");
    while (!sb->failed && sb->len % 8) sb_printf(sb, " ");
}

static int name_cmp(const void *a, const void *b) {
    return strcmp((*(const modelgen_tensor *const *)a)->name, (*(const modelgen_tensor *const *)b)->name);
}

/* §4.7 index: Python json.dumps(obj, indent=2) + "\n", weight_map keys sorted. */
static int index_json(const modelgen_plan *plan, strbuf *sb, ms_err *err) {
    const modelgen_tensor **list = malloc((plan->n_tensors + 1) * sizeof *list);
    if (!list) return ms_err_set(err, "out of memory");
    for (size_t i = 0; i < plan->n_tensors; i++) list[i] = &plan->tensors[i];
    qsort(list, plan->n_tensors, sizeof *list, name_cmp);
    sb_printf(sb, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
              (unsigned long long)plan->total_bytes);
    for (size_t i = 0; i < plan->n_tensors; i++)
        sb_printf(sb, "%s\n    \"%s\": \"%s\"", i ? "," : "", list[i]->name, modelgen_shard_file(list[i]->shard));
    sb_printf(sb, plan->n_tensors ? "\n  }\n}\n" : "}\n}\n");
    free(list);
    return sb->failed ? ms_err_set(err, "out of memory") : 0;
}

/* ---- file helpers ----------------------------------------------------------- */

#define PATH_BYTES 4096

static int path_join(char buf[PATH_BYTES], const char *dir, const char *name, ms_err *err) {
    int n = snprintf(buf, PATH_BYTES, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_BYTES) return ms_err_set(err, "path too long: %s/%s", dir, name);
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off, const char *path, ms_err *err) {
    const char *p = buf;
    while (n) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return ms_err_set(err, "%s: write failed: %s", path, k < 0 ? strerror(errno) : "short write");
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int write_file(const char *dir, const char *name, const void *data, size_t n, ms_err *err) {
    char path[PATH_BYTES];
    if (path_join(path, dir, name, err)) return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return ms_err_set(err, "%s: %s", path, strerror(errno));
    int rc = pwrite_all(fd, data, n, 0, path, err);
    if (close(fd) && rc == 0) rc = ms_err_set(err, "%s: %s", path, strerror(errno));
    return rc;
}

static int copy_file(const char *src_dir, const char *dst_dir, const char *name, ms_err *err) {
    char src[PATH_BYTES], dst[PATH_BYTES];
    if (path_join(src, src_dir, name, err) || path_join(dst, dst_dir, name, err)) return -1;
    int in = open(src, O_RDONLY);
    if (in < 0) return ms_err_set(err, "tokenizer file %s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        close(in);
        return ms_err_set(err, "%s: %s", dst, strerror(errno));
    }
    static const size_t buf_bytes = 1 << 20;
    char *buf = malloc(buf_bytes);
    int rc = buf ? 0 : ms_err_set(err, "out of memory");
    uint64_t off = 0;
    while (rc == 0) {
        ssize_t k = read(in, buf, buf_bytes);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) rc = ms_err_set(err, "%s: read failed: %s", src, strerror(errno));
        if (k <= 0) break;
        rc = pwrite_all(out, buf, (size_t)k, off, dst, err);
        off += (uint64_t)k;
    }
    free(buf);
    close(in);
    if (close(out) && rc == 0) rc = ms_err_set(err, "%s: %s", dst, strerror(errno));
    return rc;
}

/* Removes a temporary directory we created and the plain files in it. */
static void remove_tmp_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[PATH_BYTES];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && path_join(path, dir, e->d_name, NULL) == 0)
                unlink(path);
        closedir(d);
    }
    rmdir(dir);
}

/* out_dir must not exist or be an empty directory (rename replaces those only). */
static int check_out_dir(const char *out_dir, ms_err *err) {
    struct stat st;
    if (stat(out_dir, &st) != 0) return errno == ENOENT ? 0 : ms_err_set(err, "%s: %s", out_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return ms_err_set(err, "%s: exists and is not a directory", out_dir);
    DIR *d = opendir(out_dir);
    if (!d) return ms_err_set(err, "%s: %s", out_dir, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty ? 0 : ms_err_set(err, "%s: exists and is not empty (remove it or choose another --out)", out_dir);
}

/* ---- parallel value generation --------------------------------------------- */

#define CHUNK_BYTES ((size_t)32 << 20) /* output bytes generated per pwrite */
#define TASK_ELEMS ((size_t)1 << 16)   /* BF16/F32 elements per pool task */

typedef struct gen_job {
    const modelgen_tensor *t;
    uint64_t state0;
    double amp;
    int64_t off;
    uint64_t first;   /* BF16/F32: first element of the chunk; FP8: first 128-row band */
    size_t n;         /* BF16/F32: elements in the chunk */
    uint8_t *out;     /* the chunk's bytes */
    float *scales;    /* FP8: the whole tensor's weight_scale_inv */
    float **scratch;  /* FP8: per thread, one 128x128 block of masters */
} gen_job;

static void gen_plain_task(void *ctx, int task, int thread) {
    const gen_job *j = ctx;
    size_t begin = (size_t)task * TASK_ELEMS;
    size_t n = j->n - begin < TASK_ELEMS ? j->n - begin : TASK_ELEMS;
    uint64_t state = j->state0 + (j->first + begin) * MODELGEN_GOLDEN_GAMMA;
    if (j->t->dtype == DTYPE_BF16) {
        uint16_t *o = (uint16_t *)j->out + begin;
        for (size_t i = 0; i < n; i++) o[i] = f32_to_bf16(modelgen_master(modelgen_splitmix64(&state), j->amp, j->off));
    } else {
        float *o = (float *)j->out + begin;
        for (size_t i = 0; i < n; i++) o[i] = modelgen_master(modelgen_splitmix64(&state), j->amp, j->off);
    }
}

/* One 128x128 block (edge blocks partial) of the chunk's bands. */
static void gen_fp8_task(void *ctx, int task, int thread) {
    const gen_job *j = ctx;
    uint64_t rows = j->t->shape[0], cols = j->t->shape[1], B = MODELGEN_FP8_BLOCK;
    uint64_t n_col_blocks = (cols + B - 1) / B;
    uint64_t band = j->first + (uint64_t)task / n_col_blocks, cb = (uint64_t)task % n_col_blocks;
    uint64_t r0 = band * B, c0 = cb * B;
    size_t nr = rows - r0 < B ? rows - r0 : B, nc = cols - c0 < B ? cols - c0 : B;
    float *w = j->scratch[thread];
    for (size_t r = 0; r < nr; r++) modelgen_masters(j->state0, j->amp, j->off, (r0 + r) * cols + c0, nc, w + r * nc);
    uint8_t *q = j->out + (band - j->first) * B * cols + c0;
    j->scales[band * n_col_blocks + cb] = fp8_block(w, nr, nc, nc, q, cols);
}

typedef struct progress_state {
    FILE *f;
    uint64_t done_bytes, total_bytes;
    size_t done_tensors, total_tensors;
    struct timespec last;
} progress_state;

static void progress_show(progress_state *p, const char *name, int force) {
    if (!p->f) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double dt = (double)(now.tv_sec - p->last.tv_sec) + 1e-9 * (double)(now.tv_nsec - p->last.tv_nsec);
    if (!force && dt < 0.2) return;
    p->last = now;
    fprintf(p->f, "\rmkmodel: %5.1f%%  %.2f / %.2f GB  tensor %zu/%zu  %-60.60s",
            p->total_bytes ? 100.0 * (double)p->done_bytes / (double)p->total_bytes : 100.0,
            (double)p->done_bytes / 1e9, (double)p->total_bytes / 1e9, p->done_tensors, p->total_tensors, name);
    fflush(p->f);
}

typedef struct writer {
    const modelgen_plan *plan;
    threadpool *pool;
    float **scratch; /* per thread, one FP8 block of masters */
    uint8_t *chunk;  /* CHUNK_BYTES, or one FP8 band if bigger */
    float *scales;   /* largest scale tensor */
    progress_state progress;
} writer;

/* Generates tensor t and writes it (and its scales) at data_base + offsets of fd. */
static int write_tensor(writer *w, const modelgen_tensor *t, int fd, uint64_t data_base, const char *path,
                        ms_err *err) {
    gen_job j = {.t = t, .out = w->chunk, .scales = w->scales, .scratch = w->scratch};
    j.state0 = modelgen_state0(t->seed_name, w->plan->seed);
    j.amp = w->plan->classes[t->value_class].amp;
    j.off = w->plan->classes[t->value_class].off;
    uint64_t n_elems = t->shape[0] * t->shape[1];
    if (t->dtype != DTYPE_F8_E4M3) {
        size_t per_chunk = CHUNK_BYTES / dtype_size(t->dtype);
        for (uint64_t first = 0; first < n_elems; first += per_chunk) {
            j.first = first;
            j.n = n_elems - first < per_chunk ? (size_t)(n_elems - first) : per_chunk;
            threadpool_run(w->pool, (int)((j.n + TASK_ELEMS - 1) / TASK_ELEMS), gen_plain_task, &j);
            size_t bytes = j.n * dtype_size(t->dtype);
            if (pwrite_all(fd, w->chunk, bytes, data_base + t->offset + first * dtype_size(t->dtype), path, err))
                return ms_err_prefix(err, "tensor %s", t->name);
            w->progress.done_bytes += bytes;
            progress_show(&w->progress, t->name, 0);
        }
        return 0;
    }
    uint64_t blk = MODELGEN_FP8_BLOCK, cols = t->shape[1], band_bytes = blk * cols;
    uint64_t n_bands = (t->shape[0] + blk - 1) / blk;
    uint64_t per_chunk = CHUNK_BYTES / band_bytes ? CHUNK_BYTES / band_bytes : 1;
    for (uint64_t first = 0; first < n_bands; first += per_chunk) {
        uint64_t nb = n_bands - first < per_chunk ? n_bands - first : per_chunk;
        j.first = first;
        threadpool_run(w->pool, (int)(nb * ((cols + blk - 1) / blk)), gen_fp8_task, &j);
        uint64_t r_end = (first + nb) * blk < t->shape[0] ? (first + nb) * blk : t->shape[0];
        size_t bytes = (size_t)((r_end - first * blk) * cols);
        if (pwrite_all(fd, w->chunk, bytes, data_base + t->offset + first * band_bytes, path, err))
            return ms_err_prefix(err, "tensor %s", t->name);
        w->progress.done_bytes += bytes;
        progress_show(&w->progress, t->name, 0);
    }
    const modelgen_tensor *s = &w->plan->tensors[t->scale_index];
    if (pwrite_all(fd, w->scales, s->nbytes, data_base + s->offset, path, err))
        return ms_err_prefix(err, "tensor %s", s->name);
    w->progress.done_bytes += s->nbytes;
    return 0;
}

static int write_shard(writer *w, int shard, const char *dir, ms_err *err) {
    modelgen_tensor **list;
    size_t n;
    if (shard_order(w->plan, shard, &list, &n, err)) return -1;
    strbuf hdr = {0};
    safetensors_header(&hdr, list, n);
    char path[PATH_BYTES];
    int rc = hdr.failed ? ms_err_set(err, "out of memory") : path_join(path, dir, modelgen_shard_file(shard), err);
    int fd = -1;
    if (rc == 0 && (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
        rc = ms_err_set(err, "%s: %s", path, strerror(errno));
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)hdr.len >> (8 * i));
    if (rc == 0) rc = pwrite_all(fd, len_le, 8, 0, path, err);
    if (rc == 0) rc = pwrite_all(fd, hdr.data, hdr.len, 8, path, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (list[i]->value_class == MODELGEN_SCALE) continue; /* written with its weight */
        rc = write_tensor(w, list[i], fd, 8 + hdr.len, path, err);
        w->progress.done_tensors++;
    }
    if (fd >= 0 && close(fd) && rc == 0) rc = ms_err_set(err, "%s: %s", path, strerror(errno));
    free(hdr.data);
    free(list);
    return rc;
}

static int writer_init(writer *w, const modelgen_plan *plan, int n_threads, ms_err *err) {
    memset(w, 0, sizeof *w);
    w->plan = plan;
    if (!(w->pool = threadpool_create(n_threads))) return ms_err_set(err, "cannot start worker threads");
    uint64_t max_cols = 0, max_scales = 0;
    for (size_t i = 0; i < plan->n_tensors; i++) {
        const modelgen_tensor *t = &plan->tensors[i];
        if (t->dtype == DTYPE_F8_E4M3 && t->shape[1] > max_cols) max_cols = t->shape[1];
        if (t->value_class == MODELGEN_SCALE && t->nbytes > max_scales) max_scales = t->nbytes;
    }
    size_t chunk = CHUNK_BYTES > MODELGEN_FP8_BLOCK * max_cols ? CHUNK_BYTES : MODELGEN_FP8_BLOCK * max_cols;
    int n = threadpool_size(w->pool);
    w->chunk = malloc(chunk);
    w->scales = malloc(max_scales ? max_scales : 4);
    w->scratch = calloc((size_t)n, sizeof *w->scratch);
    if (!w->chunk || !w->scales || !w->scratch) return ms_err_set(err, "out of memory");
    for (int i = 0; max_cols && i < n; i++)
        if (!(w->scratch[i] = malloc(MODELGEN_FP8_BLOCK * MODELGEN_FP8_BLOCK * sizeof(float))))
            return ms_err_set(err, "out of memory");
    return 0;
}

static void writer_free(writer *w) {
    if (w->scratch)
        for (int i = 0; i < threadpool_size(w->pool); i++) free(w->scratch[i]);
    free(w->scratch);
    free(w->chunk);
    free(w->scales);
    if (w->pool) threadpool_free(w->pool);
}

/* Everything of §2 into dir. */
static int write_checkpoint(const modelgen_plan *plan, const modelgen_opts *o, const char *dir, ms_err *err) {
    if (write_file(dir, "config.json", o->config_json, strlen(o->config_json), err)) return -1;
    if (o->generation_config_json && write_file(dir, "generation_config.json", o->generation_config_json,
                                                strlen(o->generation_config_json), err))
        return -1;
    if (plan->n_tokenizer_files && !o->tokenizer_dir)
        return ms_err_set(err, "gen.json lists tokenizer_files but no tokenizer directory was given");
    for (size_t i = 0; i < plan->n_tokenizer_files; i++)
        if (copy_file(o->tokenizer_dir, dir, plan->tokenizer_files[i], err)) return -1;
    writer w;
    int rc = writer_init(&w, plan, o->n_threads, err);
    w.progress.f = o->progress;
    w.progress.total_bytes = plan->total_bytes;
    for (size_t i = 0; i < plan->n_tensors; i++)
        w.progress.total_tensors += plan->tensors[i].value_class != MODELGEN_SCALE;
    for (int s = 0; rc == 0 && s < MODELGEN_SHARDS; s++) rc = write_shard(&w, s, dir, err);
    if (rc == 0) {
        progress_show(&w.progress, "done", 1);
        if (o->progress) fputc('\n', o->progress);
    } else if (o->progress) {
        fputc('\n', o->progress);
    }
    writer_free(&w);
    if (rc) return -1;
    strbuf idx = {0};
    rc = index_json(plan, &idx, err);
    if (rc == 0) rc = write_file(dir, "model.safetensors.index.json", idx.data, idx.len, err);
    free(idx.data);
    return rc;
}

int modelgen_write(const modelgen_opts *o, ms_err *err) {
    modelgen_plan plan;
    if (modelgen_plan_init(&plan, o->config_json, o->gen_json, err)) return -1;
    char out[PATH_BYTES], tmp[PATH_BYTES];
    size_t len = strlen(o->out_dir);
    while (len > 1 && o->out_dir[len - 1] == '/') len--; /* "out/" must not put the temp dir inside out */
    int rc = len + 16 < PATH_BYTES ? 0 : ms_err_set(err, "--out path too long");
    if (rc == 0) {
        memcpy(out, o->out_dir, len);
        out[len] = '\0';
        memcpy(tmp, out, len);
        memcpy(tmp + len, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
        rc = check_out_dir(out, err);
    }
    if (rc == 0) {
        if (!mkdtemp(tmp)) rc = ms_err_set(err, "%s: cannot create %s: %s", out, tmp, strerror(errno));
        else chmod(tmp, 0755);
    }
    if (rc == 0) {
        rc = write_checkpoint(&plan, o, tmp, err);
        if (rc == 0 && rename(tmp, out) != 0)
            rc = ms_err_set(err, "%s: cannot rename %s into place: %s", out, tmp, strerror(errno));
        if (rc) remove_tmp_dir(tmp);
    }
    modelgen_plan_free(&plan);
    return rc;
}
