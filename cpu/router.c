/* cpu/router.c — RoPE and the MoE router on the CPU (reference semantics).
 *
 * Router, following Hugging Face MoEGate for DeepSeek-V2/V3 (golden SPEC §5, §7):
 *   s      = sigmoid(logits) | softmax(logits)
 *   choice = s + bias (bias only for noaux_tc; used for selection only)
 *   groups (n_group > 1): group score = sum of the 2 largest choices (noaux_tc)
 *   or the largest (group_limited_greedy); the best topk_group groups stay, the
 *   others are excluded (-inf: an excluded expert is never picked, where HF's
 *   0.0 fill could pick one if fewer than top_k kept scores were positive)
 *   idx    = top_k largest choices, in descending order, ties to the lower id
 *   w      = s[idx], divided by (Σw + 1e-20) if renormalize, times scale. */
#include <math.h>
#include <stdlib.h>

#include "cpu/cpu_attn.h"

void cpu_rope(const rope_params *rp, float *x, int n_tok, int n_vec, int64_t tok_stride, int64_t vec_stride,
              const int32_t *pos) {
    int half = rp->dim / 2;
    for (int t = 0; t < n_tok; t++) {
        for (int i = 0; i < half; i++) {
            double angle = (double)pos[t] * rp->inv_freq[i];
            float c = (float)(cos(angle) * rp->attn_factor), s = (float)(sin(angle) * rp->attn_factor);
            for (int v = 0; v < n_vec; v++) {
                float *p = x + t * tok_stride + v * vec_stride + 2 * i;
                float a = p[0], b = p[1];
                p[0] = a * c - b * s;
                p[1] = a * s + b * c;
            }
        }
    }
}

/* Index of the largest value among v[i] for i in [0, n) with !taken[i]; ties -> lowest. */
static int argmax_free(const float *v, const unsigned char *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

static void score_experts(const router_params *rp, const float *logits, float *s) {
    int E = rp->n_experts;
    if (rp->sigmoid) {
        for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-logits[e]));
        return;
    }
    float m = -INFINITY, sum = 0.0f;
    for (int e = 0; e < E; e++) m = logits[e] > m ? logits[e] : m;
    for (int e = 0; e < E; e++) sum += (s[e] = expf(logits[e] - m));
    for (int e = 0; e < E; e++) s[e] /= sum;
}

/* Sets choice[e] = -inf for experts outside the topk_group best groups. */
static void limit_groups(const router_params *rp, float *choice) {
    int G = rp->n_group, per = rp->n_experts / G;
    float gscore[G];
    unsigned char keep[G];
    for (int g = 0; g < G; g++) {
        const float *c = choice + g * per;
        float top1 = -INFINITY, top2 = -INFINITY;
        for (int e = 0; e < per; e++) {
            if (c[e] > top1) { top2 = top1; top1 = c[e]; }
            else if (c[e] > top2) top2 = c[e];
        }
        gscore[g] = rp->group_sum_top2 ? top1 + top2 : top1;
        keep[g] = 0;
    }
    for (int k = 0; k < rp->topk_group; k++) keep[argmax_free(gscore, keep, G)] = 1;
    for (int g = 0; g < G; g++)
        if (!keep[g])
            for (int e = 0; e < per; e++) choice[g * per + e] = -INFINITY;
}

void cpu_router(const router_params *rp, const float *logits, int n, int32_t *idx, float *w) {
    int E = rp->n_experts, K = rp->top_k;
    float s[E], choice[E];
    unsigned char taken[E];
    for (int t = 0; t < n; t++) {
        score_experts(rp, logits + (size_t)t * E, s);
        for (int e = 0; e < E; e++) {
            choice[e] = s[e] + (rp->bias ? rp->bias[e] : 0.0f);
            taken[e] = 0;
        }
        if (rp->n_group > 1) limit_groups(rp, choice);
        float sum = 0.0f;
        for (int k = 0; k < K; k++) {
            int e = argmax_free(choice, taken, E);
            taken[e] = 1;
            idx[(size_t)t * K + k] = e;
            sum += (w[(size_t)t * K + k] = s[e]);
        }
        float norm = rp->renormalize ? 1.0f / (sum + 1e-20f) : 1.0f;
        for (int k = 0; k < K; k++) w[(size_t)t * K + k] *= norm * rp->scale;
    }
}
