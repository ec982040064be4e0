/* fuzz/fuzz_model_config.c — config.json parsing (model_config_parse) on
 * arbitrary text.
 *
 * Properties (common/model_config.h): the parse fails with a message, or the
 * config satisfies what the engine relies on — positive sizes, even rope dim,
 * 1 <= topk_group <= n_group dividing n_routed_experts, top-k <= experts,
 * moe_layer_freq >= 1 — and model_config_is_moe_layer() is defined for every
 * layer (it divides by moe_layer_freq). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/model_config.h"
#include "fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1); /* the parser takes NUL-terminated text */
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    model_config cfg;
    ms_err err = {{0}};
    if (model_config_parse(text, "fuzz/config.json", &cfg, &err) == 0) {
        FUZZ_CHECK(cfg.vocab_size > 0 && cfg.hidden_size > 0 && cfg.n_layers > 0 && cfg.n_heads > 0 &&
                       cfg.kv_lora_rank > 0 && cfg.qk_rope_head_dim > 0 && cfg.v_head_dim > 0,
                   "non-positive size accepted");
        FUZZ_CHECK(cfg.qk_rope_head_dim % 2 == 0, "odd rope dim");
        FUZZ_CHECK(cfg.moe_layer_freq >= 1, "moe_layer_freq %d", cfg.moe_layer_freq);
        FUZZ_CHECK(cfg.n_group >= 1 && cfg.n_routed_experts % cfg.n_group == 0 && cfg.topk_group >= 1 &&
                       cfg.topk_group <= cfg.n_group,
                   "groups %d/%d of %d experts", cfg.topk_group, cfg.n_group, cfg.n_routed_experts);
        FUZZ_CHECK(cfg.n_experts_per_tok <= cfg.n_routed_experts, "top-k %d > %d experts",
                   cfg.n_experts_per_tok, cfg.n_routed_experts);
        int n_moe = 0;
        for (int l = 0; l < cfg.n_layers && l < 4096; l++) n_moe += model_config_is_moe_layer(&cfg, l);
        FUZZ_CHECK(!n_moe || (cfg.n_routed_experts > 0 && cfg.n_experts_per_tok > 0 && cfg.moe_intermediate_size > 0),
                   "MoE layer without experts");
    } else {
        FUZZ_CHECK(err.msg[0], "failed without a message");
    }
    free(text);
    return 0;
}
