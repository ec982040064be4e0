/* common/model_config.c — see model_config.h. */
#include "common/model_config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    json_t *root;
    const char *origin;
    ms_err *err;
    int failed;
} reader;

static json_t *field(reader *r, json_t *obj, const char *key, int required) {
    json_t *v = json_object_get(obj, key);
    if ((!v || json_is_null(v)) && required && !r->failed) {
        r->failed = 1;
        ms_err_set(r->err, "%s: missing field \"%s\"", r->origin, key);
    }
    return v && !json_is_null(v) ? v : NULL;
}

static int get_int(reader *r, json_t *obj, const char *key, int required, int dflt) {
    json_t *v = field(r, obj, key, required);
    if (!v) return dflt;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1LL << 30)) {
        if (!r->failed) ms_err_set(r->err, "%s: field \"%s\" must be a non-negative integer", r->origin, key);
        r->failed = 1;
        return dflt;
    }
    return (int)json_integer_value(v);
}

static double get_num(reader *r, json_t *obj, const char *key, int required, double dflt) {
    json_t *v = field(r, obj, key, required);
    if (!v) return dflt;
    if (!json_is_number(v)) {
        if (!r->failed) ms_err_set(r->err, "%s: field \"%s\" must be a number", r->origin, key);
        r->failed = 1;
        return dflt;
    }
    return json_number_value(v);
}

static const char *get_str(reader *r, json_t *obj, const char *key, const char *dflt) {
    json_t *v = field(r, obj, key, 0);
    if (!v) return dflt;
    if (!json_is_string(v)) {
        if (!r->failed) ms_err_set(r->err, "%s: field \"%s\" must be a string", r->origin, key);
        r->failed = 1;
        return dflt;
    }
    return json_string_value(v);
}

static int parse_arch(reader *r, model_config *c) {
    json_t *archs = json_object_get(r->root, "architectures");
    const char *a = json_string_value(json_array_get(archs, 0));
    if (!a) return ms_err_set(r->err, "%s: missing \"architectures\"", r->origin);
    if (strcmp(a, "DeepseekV3ForCausalLM") == 0) c->arch = MODEL_ARCH_V3;
    else if (strcmp(a, "DeepseekV2ForCausalLM") == 0) c->arch = MODEL_ARCH_V2;
    else
        return ms_err_set(r->err, "%s: unsupported architecture %s (supported: DeepseekV3ForCausalLM, "
                          "DeepseekV2ForCausalLM)", r->origin, a);
    return 0;
}

static void parse_sizes(reader *r, model_config *c) {
    json_t *o = r->root;
    c->vocab_size = get_int(r, o, "vocab_size", 1, 0);
    c->hidden_size = get_int(r, o, "hidden_size", 1, 0);
    c->intermediate_size = get_int(r, o, "intermediate_size", 1, 0);
    c->moe_intermediate_size = get_int(r, o, "moe_intermediate_size", 1, 0);
    c->n_layers = get_int(r, o, "num_hidden_layers", 1, 0);
    c->n_mtp_layers = get_int(r, o, "num_nextn_predict_layers", 0, 0);
    c->first_k_dense = get_int(r, o, "first_k_dense_replace", 0, 0);
    c->moe_layer_freq = get_int(r, o, "moe_layer_freq", 0, 1);
    c->n_heads = get_int(r, o, "num_attention_heads", 1, 0);
    c->q_lora_rank = get_int(r, o, "q_lora_rank", 0, 0);
    c->kv_lora_rank = get_int(r, o, "kv_lora_rank", 1, 0);
    c->qk_nope_head_dim = get_int(r, o, "qk_nope_head_dim", 1, 0);
    c->qk_rope_head_dim = get_int(r, o, "qk_rope_head_dim", 1, 0);
    c->v_head_dim = get_int(r, o, "v_head_dim", 1, 0);
    c->n_routed_experts = get_int(r, o, "n_routed_experts", 0, 0);
    c->n_shared_experts = get_int(r, o, "n_shared_experts", 0, 0);
    c->n_experts_per_tok = get_int(r, o, "num_experts_per_tok", 0, 0);
    c->n_group = get_int(r, o, "n_group", 0, 1);
    c->topk_group = get_int(r, o, "topk_group", 0, 1);
    c->max_position_embeddings = get_int(r, o, "max_position_embeddings", 0, 4096);
    c->bos_token_id = get_int(r, o, "bos_token_id", 0, 0);
    c->eos_token_id = get_int(r, o, "eos_token_id", 0, 1);
    json_t *tie = json_object_get(o, "tie_word_embeddings");
    if (json_is_true(tie) && !r->failed) {
        r->failed = 1;
        ms_err_set(r->err, "%s: tie_word_embeddings=true is not supported by DeepSeek checkpoints", r->origin);
    }
}

static void parse_routing(reader *r, model_config *c) {
    json_t *o = r->root;
    const char *sf = get_str(r, o, "scoring_func", "softmax");
    const char *tm = get_str(r, o, "topk_method", c->arch == MODEL_ARCH_V3 ? "noaux_tc" : "greedy");
    c->norm_topk_prob = json_is_true(json_object_get(o, "norm_topk_prob"));
    c->routed_scaling_factor = (float)get_num(r, o, "routed_scaling_factor", 0, 1.0);
    c->rms_norm_eps = (float)get_num(r, o, "rms_norm_eps", 0, 1e-6);
    if (r->failed) return;
    if (strcmp(sf, "softmax") == 0) c->scoring = SCORING_SOFTMAX;
    else if (strcmp(sf, "sigmoid") == 0) c->scoring = SCORING_SIGMOID;
    else { r->failed = 1; ms_err_set(r->err, "%s: unsupported scoring_func %s", r->origin, sf); return; }
    if (strcmp(tm, "greedy") == 0) c->topk = TOPK_GREEDY;
    else if (strcmp(tm, "group_limited_greedy") == 0) c->topk = TOPK_GROUP_LIMITED_GREEDY;
    else if (strcmp(tm, "noaux_tc") == 0) c->topk = TOPK_NOAUX_TC;
    else { r->failed = 1; ms_err_set(r->err, "%s: unsupported topk_method %s", r->origin, tm); }
}

static void parse_rope(reader *r, model_config *c) {
    c->rope_theta = get_num(r, r->root, "rope_theta", 0, 10000.0);
    json_t *rs = json_object_get(r->root, "rope_scaling");
    c->rope_factor = 1.0;
    if (!json_is_object(rs)) return;
    const char *type = get_str(r, rs, "type", NULL);
    if (!type) type = get_str(r, rs, "rope_type", "");
    if (r->failed) return;
    if (strcmp(type, "yarn") != 0) {
        r->failed = 1;
        ms_err_set(r->err, "%s: unsupported rope_scaling type \"%s\" (supported: yarn)", r->origin, type);
        return;
    }
    c->yarn = 1;
    c->rope_factor = get_num(r, rs, "factor", 1, 1.0);
    c->original_max_position = get_int(r, rs, "original_max_position_embeddings", 1, 4096);
    c->beta_fast = get_num(r, rs, "beta_fast", 0, 32.0);
    c->beta_slow = get_num(r, rs, "beta_slow", 0, 1.0);
    c->mscale = get_num(r, rs, "mscale", 0, 1.0);
    c->mscale_all_dim = get_num(r, rs, "mscale_all_dim", 0, 0.0);
}

static void parse_quant(reader *r, model_config *c) {
    c->weight_block = 128;
    json_t *q = json_object_get(r->root, "quantization_config");
    if (!json_is_object(q)) return;
    const char *m = get_str(r, q, "quant_method", "");
    if (r->failed) return;
    if (strcmp(m, "fp8") != 0) {
        r->failed = 1;
        ms_err_set(r->err, "%s: unsupported quantization_config.quant_method \"%s\" (supported: fp8)", r->origin, m);
        return;
    }
    json_t *bs = json_object_get(q, "weight_block_size");
    if (json_is_array(bs) && (json_integer_value(json_array_get(bs, 0)) != 128 ||
                              json_integer_value(json_array_get(bs, 1)) != 128)) {
        r->failed = 1;
        ms_err_set(r->err, "%s: unsupported weight_block_size (supported: [128, 128])", r->origin);
        return;
    }
    c->fp8 = 1;
}

static int validate(const model_config *c, const char *origin, ms_err *err) {
    if (!c->vocab_size || !c->hidden_size || !c->n_layers || !c->n_heads || !c->kv_lora_rank ||
        !c->qk_rope_head_dim || !c->v_head_dim)
        return ms_err_set(err, "%s: sizes must be positive", origin);
    if (c->qk_rope_head_dim % 2) return ms_err_set(err, "%s: qk_rope_head_dim must be even", origin);
    int has_moe = c->n_layers > c->first_k_dense;
    if (has_moe && (!c->n_routed_experts || !c->n_experts_per_tok || !c->moe_intermediate_size))
        return ms_err_set(err, "%s: MoE layers need n_routed_experts, num_experts_per_tok, "
                          "moe_intermediate_size", origin);
    if (c->n_experts_per_tok > c->n_routed_experts)
        return ms_err_set(err, "%s: num_experts_per_tok > n_routed_experts", origin);
    if (c->n_group < 1 || c->n_routed_experts % c->n_group || c->topk_group < 1 || c->topk_group > c->n_group)
        return ms_err_set(err, "%s: n_group must divide n_routed_experts and 1 <= topk_group <= n_group", origin);
    if (c->topk_group * (c->n_routed_experts / c->n_group) < c->n_experts_per_tok)
        return ms_err_set(err, "%s: topk_group groups hold fewer experts than num_experts_per_tok", origin);
    if (c->moe_layer_freq < 1) return ms_err_set(err, "%s: moe_layer_freq must be >= 1", origin);
    return 0;
}

int model_config_parse(const char *text, const char *origin, model_config *cfg, ms_err *err) {
    memset(cfg, 0, sizeof *cfg);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return ms_err_set(err, "%s: bad JSON: %s (line %d)", origin, root ? "not an object" : jerr.text, jerr.line);
    }
    reader r = {root, origin, err, 0};
    int rc = parse_arch(&r, cfg);
    if (rc == 0) {
        parse_sizes(&r, cfg);
        parse_routing(&r, cfg);
        parse_rope(&r, cfg);
        parse_quant(&r, cfg);
        rc = r.failed ? -1 : validate(cfg, origin, err);
    }
    json_decref(root);
    return rc;
}

int model_config_load(const char *dir, model_config *cfg, ms_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return ms_err_set(err, "%s: cannot open (is %s a model directory?)", path, dir);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[65536];
    size_t n;
    while (mem && (n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, mem);
    fclose(f);
    if (!mem) return ms_err_set(err, "out of memory");
    fclose(mem);
    int rc = model_config_parse(text, path, cfg, err);
    free(text);
    return rc;
}

int model_config_is_moe_layer(const model_config *cfg, int layer) {
    return cfg->n_routed_experts > 0 && layer >= cfg->first_k_dense && layer % cfg->moe_layer_freq == 0;
}
