/* engine/model.h — the DeepSeek-V2/V3 model graph, written once against the
 * backend seam (engine/backend.h).
 *
 * model_load() reads config.json, maps the safetensors shards and binds every
 * tensor the graph needs, checking dtype and shape against the config; a
 * missing or misshapen tensor fails with its name and file. The MTP layer
 * (model.layers.<num_hidden_layers>.*) is checked for presence only and kept
 * mapped for speculative decoding later. Weights stay in their checkpoint dtype.
 *
 * model_forward() runs one engine step: a batch of tokens from one or more
 * sequences (each sequence's tokens contiguous in the batch, at consecutive
 * positions continuing its cache), writes their latents into the paged KV
 * cache and returns logits for the requested rows. A sequence with several
 * tokens in the batch (a prompt chunk) uses the expanded causal attention;
 * a single token uses the absorbed attention over the latent cache.
 * One thread drives a model at a time. */
#ifndef MS_MODEL_H
#define MS_MODEL_H

#include <stdint.h>

#include "common/err.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "engine/backend.h"
#include "engine/ep.h"
#include "engine/kv.h"

typedef struct layer_weights {
    int is_moe;
    weight attn_norm;               /* [D] */
    weight q_a, q_a_norm, q_b;      /* V3: [qr, D], [qr], [H*(dn+dr), qr] */
    weight q_proj;                  /* V2-Lite: [H*(dn+dr), D] */
    weight kv_a, kv_a_norm;         /* [kvr+dr, D], [kvr] */
    weight kv_b;                    /* [H*(dn+dv), kvr]: per head dn rows W_UK then dv rows W_UV */
    weight o_proj;                  /* [D, H*dv] */
    weight ffn_norm;                /* [D] */
    weight gate, up, down;          /* dense: [I, D], [I, D], [D, I] */
    weight router;                  /* MoE: [E, D] */
    const float *router_bias;       /* [E] or NULL */
    weight *exp_gate, *exp_up, *exp_down; /* [E] each: [Im, D], [Im, D], [D, Im] */
    weight sh_gate, sh_up, sh_down; /* shared experts: [Im*Ns, D], [Im*Ns, D], [D, Im*Ns] */
} layer_weights;

typedef enum { ATTN_AUTO, ATTN_ABSORB, ATTN_NAIVE } attn_mode;

typedef struct model model;

/* Called after the embedding (layer -1), after each decoder layer, and with
 * layer == n_layers for the final-norm output: h is [n_tokens, D]. For tests. */
typedef void (*model_trace_fn)(void *ctx, int layer, const float *h, int n_tokens, int dim);

struct model {
    model_config cfg;
    safetensors *st;
    backend *be;
    weight embed, final_norm, lm_head;
    layer_weights *layers;          /* [n_layers] */
    double *inv_freq;               /* [rope_dim/2], YaRN-corrected */
    rope_params rope;
    router_params router;
    float softmax_scale;
    attn_mode attn;                 /* ATTN_AUTO by default */
    model_trace_fn trace;
    void *trace_ctx;
    int has_mtp;
    struct model_scratch *scratch;  /* grown on demand */
    const void **placed;            /* backend copies of weights (weight_place), released at free */
    int n_placed, cap_placed;
    ep *ep;                         /* expert parallelism (model_set_ep), or NULL: one rank */
    uint64_t *expert_tokens;        /* [n_routed_experts] rows each routed expert ran on this rank */
};

typedef struct model_batch {
    int n_tokens;
    const int32_t *tokens;          /* [n_tokens] */
    const int32_t *pos;             /* [n_tokens] position within its sequence */
    const int32_t *seq;             /* [n_tokens] index into seqs */
    kv_seq *const *seqs;
    int n_seqs;
    const int32_t *logit_rows;      /* token indices whose logits are wanted */
    int n_logits;
} model_batch;

/* Loads dir on be. `progress` (may be NULL) receives load progress lines. */
model *model_load(const char *dir, backend *be, ms_err *err);
void model_free(model *m);

/* Runs the batch; logits: [n_logits, vocab_size] floats (host memory).
 * Reserves KV pages for the batch; fails (nothing written) if none are free.
 * With expert parallelism every rank calls it once per step, n_tokens = 0
 * allowed (the rank still takes part in each MoE exchange); any failure then
 * fails the whole world (ep_abort) and the other ranks' calls return -1. */
int model_forward(model *m, kv_cache *kv, const model_batch *b, float *logits, ms_err *err);

/* Makes this model one rank of an expert-parallel world over c: routed experts
 * run where owner[e] says (NULL: contiguous slices, engine/ep.h). */
int model_set_ep(model *m, comm *c, const int32_t *owner, ms_err *err);

/* Batch-invariant mode: every token's logits are bit-identical whatever else
 * shares its steps (other sequences, how its prompt was split into chunks):
 * the backend's batch-invariant kernels, and every token through the absorbed
 * attention (so a row does not depend on where its chunk starts). Slower for
 * long prompts. -1 with err if the backend has no such mode. */
int model_set_batch_invariant(model *m, int on, ms_err *err);

/* BF16-activation mode: the weight products round their activations to bf16
 * (sums in fp32) where the backend has faster kernels for it — on the CPU,
 * AVX512_BF16 dot products for FP8/BF16 weights (~2x the multiply-adds per
 * instruction; logits move by ~1e-2 against fp32). -1 with err if the backend
 * or this machine cannot. */
int model_set_bf16_activations(model *m, int on, ms_err *err);

/* out[e] = rows routed expert e has run on this rank since load (summed over
 * layers; experts owned elsewhere stay 0). Safe from any thread. */
void model_expert_tokens(const model *m, uint64_t *out);

/* A KV cache sized for this model holding n_tokens tokens (rounded up to pages). */
int model_kv_init(const model *m, kv_cache *kv, int n_tokens, ms_err *err);

/* Bytes of weights one decoded token reads (attention + dense/shared + top-k experts + head). */
double model_active_weight_bytes(const model *m);

#endif
