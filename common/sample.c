/* common/sample.c — next-token sampling (see sample.h for the pipeline).
 *
 * Owns per sampler: a copy of the params, the RNG state, a scratch copy of the
 * logits, the candidate list for top-k/top-p, and (only when a penalty is
 * active) per-token output counts and a list of the distinct tokens seen, so
 * penalties cost O(distinct tokens seen), not O(vocab). One thread at a time. */
#include "common/sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float logit;
    int32_t id;
    float w; /* exp(logit - max logit), set before top-p */
} cand;

struct sampler {
    sample_params p;
    int32_t n_vocab;
    uint64_t rng;          /* splitmix64 state */
    bool penalties;        /* any penalty not neutral */
    uint32_t *out_count;   /* [n_vocab] times generated (penalties only) */
    uint8_t *seen_flag;    /* [n_vocab] bit 0: in prompt, bit 1: in output (penalties only) */
    int32_t *seen;         /* [n_vocab] distinct ids with seen_flag != 0, n_seen of them */
    size_t n_seen;
    float *work;           /* [n_vocab] biased, penalised, temperature-scaled logits */
    int32_t *bias_id;      /* logit bias: n_bias (id, bias) pairs */
    float *bias;
    size_t n_bias;
    cand *cand;            /* candidates kept by top-k / top-p */
    size_t cand_cap;
};

/* What survives filtering: every token of work[] (all) or cand[0..n), each
 * weighted exp(logit - lmax), weights < min_p dropped (min-p). work[] holds
 * logits until final_weights turns them into weights. */
typedef struct {
    bool greedy;
    int32_t greedy_id;
    bool all;
    size_t n;
    float lmax;
    bool have_w; /* cand[].w already holds exp(logit - lmax) */
} cand_set;

sample_params sample_params_default(void) {
    return (sample_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                           .repetition_penalty = 1.0f, .presence_penalty = 0.0f, .frequency_penalty = 0.0f,
                           .seed = 0};
}

int sample_params_validate(const sample_params *p, ms_err *err) {
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return ms_err_set(err, "temperature must be a finite number >= 0, got %g", p->temperature);
    if (p->top_k < -1) return ms_err_set(err, "top_k must be -1 or 0 (disabled) or >= 1, got %d", (int)p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return ms_err_set(err, "top_p must be in (0, 1], got %g", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) return ms_err_set(err, "min_p must be in [0, 1], got %g", p->min_p);
    if (!(p->repetition_penalty > 0.0f) || isinf(p->repetition_penalty))
        return ms_err_set(err, "repetition_penalty must be a finite number > 0, got %g", p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return ms_err_set(err, "presence_penalty must be in [-2, 2], got %g", p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return ms_err_set(err, "frequency_penalty must be in [-2, 2], got %g", p->frequency_penalty);
    return 0;
}

/* ---- RNG: splitmix64 (golden SPEC §4.2's generator), u in [0, 1) ---- */

static uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *state) { return (double)(rng_next(state) >> 11) * 0x1.0p-53; }

/* ---- lifetime and history ---- */

sampler *sampler_create(const sample_params *p, int32_t n_vocab, ms_err *err) {
    if (sample_params_validate(p, err)) return NULL;
    if (n_vocab <= 0) {
        ms_err_set(err, "sampler: vocabulary size must be > 0, got %d", (int)n_vocab);
        return NULL;
    }
    sampler *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed;
    s->penalties = p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    if (!s->work) goto oom;
    if (s->penalties) {
        s->out_count = calloc((size_t)n_vocab, sizeof *s->out_count);
        s->seen_flag = calloc((size_t)n_vocab, sizeof *s->seen_flag);
        s->seen = malloc((size_t)n_vocab * sizeof *s->seen);
        if (!s->out_count || !s->seen_flag || !s->seen) goto oom;
    }
    return s;
oom:
    sampler_free(s);
    ms_err_set(err, "sampler: out of memory (vocabulary of %d)", (int)n_vocab);
    return NULL;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->out_count);
    free(s->seen_flag);
    free(s->seen);
    free(s->work);
    free(s->cand);
    free(s->bias_id);
    free(s->bias);
    free(s);
}

int sample_logit_bias_validate(const int32_t *ids, const float *bias, size_t n, int32_t n_vocab, ms_err *err) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= n_vocab)
            return ms_err_set(err, "logit_bias: token %d is out of range [0, %d)", (int)ids[i], (int)n_vocab);
        if (!(bias[i] >= -SAMPLE_MAX_LOGIT_BIAS && bias[i] <= SAMPLE_MAX_LOGIT_BIAS))
            return ms_err_set(err, "logit_bias: the bias of token %d must be in [-100, 100], got %g", (int)ids[i],
                              bias[i]);
    }
    return 0;
}

int sampler_set_logit_bias(sampler *s, const int32_t *ids, const float *bias, size_t n, ms_err *err) {
    if (sample_logit_bias_validate(ids, bias, n, s->n_vocab, err)) return -1;
    int32_t *i2 = n ? malloc(n * sizeof *i2) : NULL;
    float *b2 = n ? malloc(n * sizeof *b2) : NULL;
    if (n && (!i2 || !b2)) {
        free(i2);
        free(b2);
        return ms_err_set(err, "sampler: out of memory");
    }
    if (n) memcpy(i2, ids, n * sizeof *i2), memcpy(b2, bias, n * sizeof *b2);
    free(s->bias_id);
    free(s->bias);
    s->bias_id = i2;
    s->bias = b2;
    s->n_bias = n;
    return 0;
}

static void mark_seen(sampler *s, int32_t id, uint8_t flag) {
    if (!s->seen_flag[id]) s->seen[s->n_seen++] = id;
    s->seen_flag[id] |= flag;
}

void sampler_add_prompt(sampler *s, const int32_t *ids, size_t n) {
    if (!s->penalties) return;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < s->n_vocab) mark_seen(s, ids[i], 1);
}

void sampler_accept(sampler *s, int32_t id) {
    if (!s->penalties || id < 0 || id >= s->n_vocab) return;
    mark_seen(s, id, 2);
    s->out_count[id]++;
}

/* ---- step 1: penalties ---- */

static void apply_penalties(const sampler *s, float *logits) {
    const sample_params *p = &s->p;
    for (size_t k = 0; k < s->n_seen; k++) {
        int32_t id = s->seen[k];
        float l = logits[id];
        if (p->repetition_penalty != 1.0f) l = l > 0.0f ? l / p->repetition_penalty : l * p->repetition_penalty;
        uint32_t c = s->out_count[id];
        l -= p->frequency_penalty * (float)c;
        if (c > 0) l -= p->presence_penalty;
        logits[id] = l;
    }
}

/* ---- candidate ordering: larger logit first, then lower id ---- */

static bool cand_before(cand a, cand b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

static void cand_swap(cand *a, cand *b) {
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Min-heap on cand_before (the root is the candidate ranked last). */
static void heap_sift_down(cand *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_before(h[m], h[l])) m = l;
        if (r < n && cand_before(h[m], h[r])) m = r;
        if (m == i) return;
        cand_swap(&h[i], &h[m]);
        i = m;
    }
}

static void heap_sift_up(cand *h, size_t i) {
    while (i > 0 && cand_before(h[(i - 1) / 2], h[i])) {
        cand_swap(&h[i], &h[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

/* The k best finite entries of logits[n] into out[0..k) (unordered); returns how many. */
static size_t select_top_k(const float *logits, int32_t n, size_t k, cand *out) {
    size_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        cand c = {logits[i], i, 0.0f};
        if (c.logit == -INFINITY) continue;
        if (m < k) {
            out[m] = c;
            heap_sift_up(out, m++);
        } else if (cand_before(c, out[0])) {
            out[0] = c;
            heap_sift_down(out, m, 0);
        }
    }
    return m;
}

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return cand_before(*x, *y) ? -1 : cand_before(*y, *x) ? 1 : 0;
}

static int cand_reserve(sampler *s, size_t n) {
    if (n <= s->cand_cap) return 0;
    cand *c = realloc(s->cand, n * sizeof *c);
    if (!c) return -1;
    s->cand = c;
    s->cand_cap = n;
    return 0;
}

/* ---- step 4: top-p ---- */

/* Keeps the nucleus of c[0..n) (each c.w = exp(logit - lmax), z = the total
 * the top-p fraction refers to): the tokens ranked before the first rank at
 * which the mass ranked above reaches top_p * z. A quickselect weighted by
 * mass finds that rank in expected O(n) without sorting; the kept tokens end
 * up in c[0..returned) in an order fixed by the input order. */
static size_t nucleus(cand *c, size_t n, double z, double top_p) {
    double limit = top_p * z, acc = 0.0; /* acc: mass of c[0..lo), all ranked first */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cand_before(c[mid], c[lo])) cand_swap(&c[mid], &c[lo]);
        if (cand_before(c[hi - 1], c[lo])) cand_swap(&c[hi - 1], &c[lo]);
        if (cand_before(c[hi - 1], c[mid])) cand_swap(&c[hi - 1], &c[mid]);
        cand pivot = c[mid]; /* median of three */
        cand_swap(&c[mid], &c[hi - 1]);
        size_t store = lo;
        double left = 0.0;
        for (size_t i = lo; i < hi - 1; i++)
            if (cand_before(c[i], pivot)) {
                left += c[i].w;
                cand_swap(&c[i], &c[store++]);
            }
        cand_swap(&c[store], &c[hi - 1]); /* pivot at its final rank */
        if (acc + left >= limit) {
            hi = store; /* the cut lies among the tokens ranked before the pivot */
        } else if (acc + left + pivot.w >= limit) {
            return store + 1; /* the pivot is the last token kept */
        } else {
            acc += left + pivot.w;
            lo = store + 1;
        }
    }
    return lo > 0 || n == 0 ? lo : 1; /* the top token always stays */
}

/* Top-p over the whole vocabulary: gathers the tokens within `gap` of the max,
 * widening the gap until they hold top_p of the mass (everything outside ranks
 * strictly lower, so the nucleus lies inside), then takes the nucleus there. */
static int top_p_all(sampler *s, cand_set *set) {
    const float *w = s->work;
    double z = 0.0; /* total mass, summed by the first scan */
    for (float gap = 16.0f;; gap *= 2.0f) {
        bool first = gap == 16.0f, last = gap > 1e4f;
        float lo = last ? -INFINITY : set->lmax - gap;
        size_t n = 0;
        double mass = 0.0;
        for (int32_t i = 0; i < s->n_vocab; i++) {
            if (w[i] == -INFINITY) continue;
            float x = expf(w[i] - set->lmax);
            if (first) z += x;
            if (w[i] < lo) continue;
            if (n == s->cand_cap && cand_reserve(s, s->cand_cap ? 2 * s->cand_cap : 1024)) return -1;
            s->cand[n++] = (cand){w[i], i, x};
            mass += x;
        }
        if (last || mass >= s->p.top_p * z) {
            set->all = false;
            set->have_w = true;
            set->n = nucleus(s->cand, n, z, s->p.top_p);
            return 0;
        }
    }
}

/* Fills cand[0..n).w = exp(logit - lmax); returns their sum. */
static double cand_weights(cand *c, size_t n, float lmax) {
    double z = 0.0;
    for (size_t j = 0; j < n; j++) z += c[j].w = expf(c[j].logit - lmax);
    return z;
}

/* ---- steps 1-5 ---- */

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return x[best] == -INFINITY ? -1 : best;
}

static int prepare(sampler *s, const float *logits, cand_set *set, ms_err *err) {
    const sample_params *p = &s->p;
    int32_t n = s->n_vocab;
    float *w = s->work;
    for (int32_t i = 0; i < n; i++) w[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    for (size_t k = 0; k < s->n_bias; k++) w[s->bias_id[k]] += s->bias[k];
    if (s->penalties) apply_penalties(s, w);
    *set = (cand_set){.all = true, .n = (size_t)n};
    if (p->temperature < SAMPLE_GREEDY_EPS) {
        set->greedy = true;
        set->greedy_id = argmax(w, n);
        if (set->greedy_id < 0) return ms_err_set(err, "sampler: no finite logit to choose from");
        return 0;
    }
    float lmax = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        w[i] /= p->temperature;
        if (w[i] > lmax) lmax = w[i];
    }
    if (lmax == -INFINITY || isnan(lmax)) return ms_err_set(err, "sampler: no finite logit to choose from");
    set->lmax = lmax;
    if (p->top_k >= 1 && p->top_k < n) {
        if (cand_reserve(s, (size_t)p->top_k)) return ms_err_set(err, "sampler: out of memory");
        set->all = false;
        set->n = select_top_k(w, n, (size_t)p->top_k, s->cand);
        if (p->top_p < 1.0f) {
            set->n = nucleus(s->cand, set->n, cand_weights(s->cand, set->n, lmax), p->top_p);
            set->have_w = true;
        }
    } else if (p->top_p < 1.0f) {
        if (top_p_all(s, set)) return ms_err_set(err, "sampler: out of memory");
    }
    return 0;
}

/* Step 5 and the weights to draw from: replaces work[] (all) or cand[].w with
 * exp(l - lmax), 0 where min-p removes the token; returns their sum. */
static double final_weights(sampler *s, const cand_set *set) {
    float lmax = set->lmax, min_p = s->p.min_p;
    double z = 0.0;
    if (set->all) {
        for (int32_t i = 0; i < s->n_vocab; i++) {
            float x = expf(s->work[i] - lmax);
            s->work[i] = x < min_p ? 0.0f : x;
            z += s->work[i];
        }
    } else {
        for (size_t j = 0; j < set->n; j++) {
            float x = set->have_w ? s->cand[j].w : expf(s->cand[j].logit - lmax);
            s->cand[j].w = x < min_p ? 0.0f : x;
            z += s->cand[j].w;
        }
    }
    return z;
}

static int32_t draw(sampler *s, const cand_set *set) {
    double z = final_weights(s, set);
    double target = rng_uniform(&s->rng) * z, cum = 0.0;
    size_t n = set->all ? (size_t)s->n_vocab : set->n;
    int32_t last = -1;
    for (size_t j = 0; j < n; j++) {
        float x = set->all ? s->work[j] : s->cand[j].w;
        if (x == 0.0f) continue;
        last = set->all ? (int32_t)j : s->cand[j].id;
        cum += x;
        if (cum > target) break;
    }
    return last; /* the top token always has weight 1, so last >= 0 */
}

int32_t sampler_sample(sampler *s, const float *logits, ms_err *err) {
    cand_set set;
    if (prepare(s, logits, &set, err)) return -1;
    int32_t id = set.greedy ? set.greedy_id : draw(s, &set);
    sampler_accept(s, id);
    return id;
}

int sampler_probs(sampler *s, const float *logits, float *probs, ms_err *err) {
    cand_set set;
    if (prepare(s, logits, &set, err)) return -1;
    memset(probs, 0, (size_t)s->n_vocab * sizeof *probs);
    if (set.greedy) {
        probs[set.greedy_id] = 1.0f;
        return 0;
    }
    double z = final_weights(s, &set);
    size_t n = set.all ? (size_t)s->n_vocab : set.n;
    for (size_t j = 0; j < n; j++) {
        int32_t id = set.all ? (int32_t)j : s->cand[j].id;
        probs[id] = (float)((set.all ? s->work[j] : s->cand[j].w) / z);
    }
    return 0;
}

/* ---- logprobs ---- */

int sample_rank(const float *logits, int32_t n_vocab, int32_t chosen) {
    if (chosen < 0 || chosen >= n_vocab) return 0;
    float lc = isnan(logits[chosen]) ? -INFINITY : logits[chosen];
    int rank = 1;
    for (int32_t i = 0; i < n_vocab; i++) rank += logits[i] > lc; /* NaN compares false */
    return rank;
}

int sample_logprobs(const float *logits, int32_t n_vocab, int32_t chosen, int top_n, sample_logprob *top,
                    float *chosen_logprob, ms_err *err) {
    if (chosen < 0 || chosen >= n_vocab)
        return ms_err_set(err, "logprobs: token %d outside the vocabulary of %d", (int)chosen, (int)n_vocab);
    float lmax = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++)
        if (logits[i] > lmax) lmax = logits[i];
    if (lmax == -INFINITY) return ms_err_set(err, "logprobs: no finite logit");
    double z = 0.0;
    for (int32_t i = 0; i < n_vocab; i++)
        if (!isnan(logits[i])) z += exp((double)logits[i] - lmax);
    double log_z = (double)lmax + log(z);
    float lc = logits[chosen];
    if (chosen_logprob) *chosen_logprob = isnan(lc) ? -INFINITY : (float)((double)lc - log_z);
    size_t k = top_n < 0 ? 0 : (size_t)top_n < (size_t)n_vocab ? (size_t)top_n : (size_t)n_vocab;
    if (k == 0 || !top) return 0;
    cand *heap = malloc(k * sizeof *heap);
    if (!heap) return ms_err_set(err, "logprobs: out of memory");
    size_t m = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        cand c = {isnan(logits[i]) ? -INFINITY : logits[i], i, 0.0f};
        if (m < k) {
            heap[m] = c;
            heap_sift_up(heap, m++);
        } else if (cand_before(c, heap[0])) {
            heap[0] = c;
            heap_sift_down(heap, m, 0);
        }
    }
    qsort(heap, m, sizeof *heap, cand_cmp);
    for (size_t j = 0; j < m; j++)
        top[j] = (sample_logprob){heap[j].id, (float)((double)heap[j].logit - log_z)};
    free(heap);
    return (int)m;
}
