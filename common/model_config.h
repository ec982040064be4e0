/* common/model_config.h — the model hyper-parameters read from config.json.
 *
 * Supports DeepseekV3ForCausalLM and DeepseekV2ForCausalLM (V2, V2-Lite, V3,
 * R1, V3.1 share this shape). model_config_load() validates what the engine
 * relies on (positive sizes, top-k ≤ experts, groups dividing experts, known
 * scoring/top-k methods) and fails with the file and the field named. Values are
 * plain data, copied freely. */
#ifndef MS_MODEL_CONFIG_H
#define MS_MODEL_CONFIG_H

#include "common/err.h"

typedef enum { MODEL_ARCH_V2 = 2, MODEL_ARCH_V3 = 3 } model_arch;
typedef enum { SCORING_SOFTMAX, SCORING_SIGMOID } scoring_func;
typedef enum { TOPK_GREEDY, TOPK_GROUP_LIMITED_GREEDY, TOPK_NOAUX_TC } topk_method;

typedef struct model_config {
    model_arch arch;
    int vocab_size;
    int hidden_size;            /* D */
    int intermediate_size;      /* dense MLP */
    int moe_intermediate_size;  /* per expert */
    int n_layers;               /* num_hidden_layers (MTP layers not counted) */
    int n_mtp_layers;           /* num_nextn_predict_layers, 0 if absent */
    int first_k_dense;          /* first_k_dense_replace */
    int moe_layer_freq;
    int n_heads;
    int q_lora_rank;            /* 0 = plain q_proj (V2-Lite) */
    int kv_lora_rank;
    int qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int n_routed_experts, n_shared_experts, n_experts_per_tok;
    int n_group, topk_group;
    scoring_func scoring;
    topk_method topk;
    int norm_topk_prob;
    float routed_scaling_factor;
    float rms_norm_eps;
    double rope_theta;
    int yarn;                   /* rope_scaling.type == "yarn" */
    double rope_factor, beta_fast, beta_slow, mscale, mscale_all_dim;
    int original_max_position;
    int max_position_embeddings;
    int bos_token_id, eos_token_id;
    int fp8;                    /* quantization_config.quant_method == "fp8" */
    int weight_block;           /* 128 */
} model_config;

/* Parses dir/config.json. */
int model_config_load(const char *dir, model_config *cfg, ms_err *err);
/* Parses config.json text; `origin` names it in errors. */
int model_config_parse(const char *json_text, const char *origin, model_config *cfg, ms_err *err);

/* Whether decoder layer l uses a MoE MLP (else dense). */
int model_config_is_moe_layer(const model_config *cfg, int layer);

#endif
