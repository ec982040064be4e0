/* common/sample.h — next-token sampling from logits (one sampler per request).
 *
 * Pipeline, in vLLM's order, over the logits of one position:
 *   0. logit bias (OpenAI's logit_bias, sampler_set_logit_bias): logit += bias
 *      for each listed token;
 *   1. penalties (skipped when all are neutral):
 *        repetition (HF/CTRL): for every distinct token seen in prompt or output,
 *          logit > 0 ? logit / r : logit * r            (r = 1 disables)
 *        frequency (OpenAI):  logit -= f * count_in_output(token)
 *        presence  (OpenAI):  logit -= p * (count_in_output(token) > 0)
 *   2. temperature < SAMPLE_GREEDY_EPS (1e-5, vLLM's epsilon): greedy — argmax of
 *      the penalised logits, ties to the lowest id; steps 3-6 are skipped.
 *      Otherwise logits /= temperature.
 *   3. top-k: keep the k largest (ties broken towards lower ids). k <= 0 or
 *      k >= vocab disables.
 *   4. top-p (on the softmax renormalised over what top-k kept): keep, in
 *      descending order, each token whose higher-ranked mass is < top_p (i.e.
 *      the smallest prefix reaching top_p; the top token always stays).
 *   5. min-p: keep tokens with prob >= min_p * max_prob.
 *   6. draw from the softmax of what is left with the sampler's own RNG
 *      (splitmix64 seeded by params.seed): same seed + same logits sequence =>
 *      same tokens, on any thread, whatever other samplers do.
 * NaN logits count as -inf. Cost per step: a few O(vocab) passes (copy,
 * scale, exp) plus, for top-k, a k-entry heap over the vocabulary (O(vocab log k)
 * worst case, ~O(vocab) in practice) and, for top-p, a scan gathering the tokens
 * near the maximum and a mass-weighted quickselect that finds the nucleus cut in
 * expected linear time: the vocabulary is never sorted.
 *
 * A sampler belongs to one request and is used by one thread at a time; the
 * free functions (sample_params_*, sample_logprobs) are pure and thread-safe. */
#ifndef MS_SAMPLE_H
#define MS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SAMPLE_GREEDY_EPS 1e-5f

typedef struct sample_params {
    float temperature;        /* >= 0; < SAMPLE_GREEDY_EPS means greedy */
    int32_t top_k;            /* >= 1 keeps k tokens; 0 or -1 disables */
    float top_p;              /* (0, 1]; 1 disables */
    float min_p;              /* [0, 1]; 0 disables */
    float repetition_penalty; /* > 0; 1 disables */
    float presence_penalty;   /* [-2, 2]; 0 disables */
    float frequency_penalty;  /* [-2, 2]; 0 disables */
    uint64_t seed;            /* RNG seed (the caller picks one when the request has none) */
} sample_params;

/* temperature 1, top_k 0, top_p 1, min_p 0, repetition 1, presence 0, frequency 0, seed 0. */
sample_params sample_params_default(void);

/* 0 if every field is in range, else -1 with err naming the parameter and its
 * value (e.g. "top_p must be in (0, 1], got 1.5"). */
int sample_params_validate(const sample_params *p, ms_err *err);

typedef struct sampler sampler;

/* A sampler over a vocabulary of n_vocab logits. Validates p. NULL on error. */
sampler *sampler_create(const sample_params *p, int32_t n_vocab, ms_err *err);
void sampler_free(sampler *s);

/* Logit biases added before anything else (step 0): n pairs (ids[i],
 * bias[i]), copied; replaces any earlier set. Each id in [0, n_vocab), each
 * bias finite and in [-SAMPLE_MAX_LOGIT_BIAS, SAMPLE_MAX_LOGIT_BIAS]; a
 * repeated id adds up. 0, or -1 with err naming the bad entry. */
#define SAMPLE_MAX_LOGIT_BIAS 100.0f
int sampler_set_logit_bias(sampler *s, const int32_t *ids, const float *bias, size_t n, ms_err *err);
/* The check sampler_set_logit_bias makes, for callers that validate early. */
int sample_logit_bias_validate(const int32_t *ids, const float *bias, size_t n, int32_t n_vocab, ms_err *err);

/* Records prompt tokens (they count for the repetition penalty only). Ids
 * outside [0, n_vocab) are ignored. */
void sampler_add_prompt(sampler *s, const int32_t *ids, size_t n);

/* Records a generated token that did not come from sampler_sample (it counts
 * for all penalties). sampler_sample records its own choice already. */
void sampler_accept(sampler *s, int32_t id);

/* Picks the next token from logits[n_vocab] (not modified) and records it as
 * generated. Returns the id, or -1 with err when no logit is finite. */
int32_t sampler_sample(sampler *s, const float *logits, ms_err *err);

/* The distribution sampler_sample would draw from for these logits (steps
 * 1-5; greedy gives a one-hot), written to probs[n_vocab] (0 for removed
 * tokens). Does not advance the RNG or record anything. -1 if no logit is finite. */
int sampler_probs(sampler *s, const float *logits, float *probs, ms_err *err);

typedef struct sample_logprob {
    int32_t id;
    float logprob;
} sample_logprob;

/* The rank of token chosen in logits[n_vocab]: 1 + how many logits are
 * strictly greater (vLLM's prompt_logprobs "rank"; NaN counts as -inf). 0 when
 * chosen is out of range. */
int sample_rank(const float *logits, int32_t n_vocab, int32_t chosen);

/* Log-softmax of logits[n_vocab] (the caller chooses which logits: raw model
 * output for OpenAI-style logprobs): *chosen_logprob for token `chosen`, and the
 * top_n most likely tokens in top[0..] in descending order (ties: lower id
 * first). Returns how many entries of top were filled (min(top_n, n_vocab)),
 * or -1 when chosen is out of range or no logit is finite. */
int sample_logprobs(const float *logits, int32_t n_vocab, int32_t chosen, int top_n, sample_logprob *top,
                    float *chosen_logprob, ms_err *err);

#endif
