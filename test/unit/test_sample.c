/* test/unit/test_sample.c — common/sample against hand-computed distributions.
 *
 * References: hand-computed softmaxes for each transformation (penalties with
 * HF/CTRL + OpenAI semantics, temperature, top-k, top-p with vLLM's rule, min-p),
 * a brute-force full-sort oracle for top-k/top-p on a 129280-token vocabulary,
 * and chi-square bounds of many seeded draws against sampler_probs. */
#include <criterion/criterion.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/sample.h"

#define N_VOCAB_BIG 129280

static sampler *make(sample_params p, int32_t n_vocab) {
    ms_err err = {{0}};
    sampler *s = sampler_create(&p, n_vocab, &err);
    cr_assert(s, "sampler_create: %s", err.msg);
    return s;
}

/* softmax of x[n] into out[n] */
static void softmax(const double *x, int n, double *out) {
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < n; i++) z += out[i] = exp(x[i] - mx);
    for (int i = 0; i < n; i++) out[i] /= z;
}

static void expect_probs(sampler *s, const float *logits, const double *want, int n) {
    float got[64];
    ms_err err = {{0}};
    cr_assert_eq(sampler_probs(s, logits, got, &err), 0, "%s", err.msg);
    for (int i = 0; i < n; i++)
        cr_expect(fabs(got[i] - want[i]) < 1e-6, "p[%d] = %.9f, want %.9f", i, got[i], want[i]);
}

/* logits whose softmax is q[n] */
static void logits_of(const double *q, int n, float *out) {
    for (int i = 0; i < n; i++) out[i] = q[i] > 0 ? (float)log(q[i]) : -INFINITY;
}

static void expect_invalid(sample_params p, const char *name) {
    ms_err err = {{0}};
    cr_expect_eq(sample_params_validate(&p, &err), -1, "%s accepted", name);
    cr_expect(strstr(err.msg, name), "error '%s' does not name %s", err.msg, name);
    cr_expect_null(sampler_create(&p, 10, NULL));
}

Test(sample, validate_names_bad_parameter) {
    sample_params d = sample_params_default(), p;
    cr_expect_eq(sample_params_validate(&d, NULL), 0);
    p = d; p.temperature = -0.1f; expect_invalid(p, "temperature");
    p = d; p.temperature = NAN; expect_invalid(p, "temperature");
    p = d; p.top_k = -2; expect_invalid(p, "top_k");
    p = d; p.top_p = 0.0f; expect_invalid(p, "top_p");
    p = d; p.top_p = 1.5f; expect_invalid(p, "top_p");
    p = d; p.min_p = -0.5f; expect_invalid(p, "min_p");
    p = d; p.min_p = 1.01f; expect_invalid(p, "min_p");
    p = d; p.repetition_penalty = 0.0f; expect_invalid(p, "repetition_penalty");
    p = d; p.presence_penalty = 2.5f; expect_invalid(p, "presence_penalty");
    p = d; p.frequency_penalty = -3.0f; expect_invalid(p, "frequency_penalty");
    p = d; p.top_k = -1; p.top_p = 1.0f; p.min_p = 1.0f; p.temperature = 0.0f;
    cr_expect_eq(sample_params_validate(&p, NULL), 0);
    ms_err err = {{0}};
    cr_expect_null(sampler_create(&d, 0, &err));
    cr_expect(strstr(err.msg, "vocabulary"));
}

Test(sample, greedy_ties_lowest_id) {
    sample_params p = sample_params_default();
    p.temperature = 0.0f;
    sampler *s = make(p, 5);
    float l1[5] = {1, 3, 2, 3, -1};
    cr_expect_eq(sampler_sample(s, l1, NULL), 1);
    float l2[5] = {NAN, -INFINITY, 0.5f, 0.5f, 0.25f};
    cr_expect_eq(sampler_sample(s, l2, NULL), 2);
    float l3[5] = {-INFINITY, -INFINITY, NAN, -INFINITY, -INFINITY};
    ms_err err = {{0}};
    cr_expect_eq(sampler_sample(s, l3, &err), -1);
    cr_expect(strstr(err.msg, "finite"));
    sampler_free(s);
}

/* logits {2, -1, 0.5, 1}; prompt {0}; output {1, 1, 2}; r = 2, f = 0.5, p = 0.25:
 *   id 0: 2/2 = 1;  id 1: -1*2 - 0.5*2 - 0.25 = -3.25;  id 2: 0.5/2 - 0.5 - 0.25 = -0.5;  id 3: 1 */
Test(sample, penalties_hand_computed) {
    sample_params p = sample_params_default();
    p.repetition_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    sampler *s = make(p, 4);
    int32_t prompt[] = {0, 0, 77, -1}; /* out-of-range ids are ignored */
    sampler_add_prompt(s, prompt, 4);
    sampler_accept(s, 1);
    sampler_accept(s, 1);
    sampler_accept(s, 2);
    float logits[4] = {2, -1, 0.5f, 1};
    double x[4] = {1, -3.25, -0.5, 1}, want[4];
    softmax(x, 4, want);
    expect_probs(s, logits, want, 4);
    sampler_free(s);
}

/* Penalties apply before greedy; sampler_sample records its own choice. */
Test(sample, greedy_sees_penalties) {
    sample_params p = sample_params_default();
    p.temperature = 0.0f;
    p.presence_penalty = 0.5f;
    sampler *s = make(p, 3);
    float logits[3] = {3.0f, 2.9f, 2.7f};
    cr_expect_eq(sampler_sample(s, logits, NULL), 0); /* nothing generated yet */
    cr_expect_eq(sampler_sample(s, logits, NULL), 1); /* 3 - 0.5 < 2.9 */
    cr_expect_eq(sampler_sample(s, logits, NULL), 2); /* 2.5, 2.4 < 2.7 */
    sampler_free(s);
}

/* Bias first, then penalties (vLLM's order), then temperature:
 * logits {1, 2, 0.5, -1}, bias {id 0: +3, id 2: -1, id 0 again: +1}, r = 2 on
 * prompt {0, 2}, T = 2:  id 0: (1+4)/2 = 2.5;  id 1: 2;  id 2: (0.5-1)*2 = -1;
 * id 3: -1;  then / 2. */
Test(sample, logit_bias_hand_computed) {
    sample_params p = sample_params_default();
    p.repetition_penalty = 2.0f;
    p.temperature = 2.0f;
    sampler *s = make(p, 4);
    int32_t prompt[] = {0, 2}, ids[] = {0, 2, 0};
    float bias[] = {3.0f, -1.0f, 1.0f};
    sampler_add_prompt(s, prompt, 2);
    ms_err err = {{0}};
    cr_assert_eq(sampler_set_logit_bias(s, ids, bias, 3, &err), 0, "%s", err.msg);
    float logits[4] = {1, 2, 0.5f, -1};
    double x[4] = {1.25, 1, -0.5, -0.5}, want[4];
    softmax(x, 4, want);
    expect_probs(s, logits, want, 4);
    /* replacing the set: an empty one restores the plain distribution */
    cr_assert_eq(sampler_set_logit_bias(s, NULL, NULL, 0, &err), 0);
    double y[4] = {0.25, 1, 0.125, -0.5}; /* penalties and temperature only */
    softmax(y, 4, want);
    expect_probs(s, logits, want, 4);
    sampler_free(s);
}

/* +100 forces a token under greedy and sampling alike; -100 bans the argmax. */
Test(sample, logit_bias_forces_and_bans) {
    sample_params p = sample_params_default();
    p.temperature = 0.0f;
    sampler *g = make(p, 5);
    float logits[5] = {0.5f, 4.0f, 1.0f, 3.5f, -2.0f};
    int32_t ban = 1, force = 4;
    float minus = -100.0f, plus = 100.0f;
    cr_assert_eq(sampler_set_logit_bias(g, &ban, &minus, 1, NULL), 0);
    cr_expect_eq(sampler_sample(g, logits, NULL), 3);
    cr_assert_eq(sampler_set_logit_bias(g, &force, &plus, 1, NULL), 0);
    cr_expect_eq(sampler_sample(g, logits, NULL), 4);
    sampler_free(g);
    p.temperature = 1.0f;
    p.seed = 11;
    sampler *s = make(p, 5);
    cr_assert_eq(sampler_set_logit_bias(s, &force, &plus, 1, NULL), 0);
    for (int i = 0; i < 100; i++) cr_expect_eq(sampler_sample(s, logits, NULL), 4);
    sampler_free(s);
}

Test(sample, logit_bias_rejects_bad_entries) {
    sampler *s = make(sample_params_default(), 10);
    int32_t ids[] = {3, 10};
    float ok[] = {1.0f, 1.0f}, big[] = {100.5f, 0.0f}, nan[] = {NAN, 0.0f};
    ms_err err = {{0}};
    cr_expect_eq(sampler_set_logit_bias(s, ids, ok, 2, &err), -1);
    cr_expect(strstr(err.msg, "token 10 is out of range"), "%s", err.msg);
    cr_expect_eq(sampler_set_logit_bias(s, ids, big, 1, &err), -1);
    cr_expect(strstr(err.msg, "[-100, 100]"), "%s", err.msg);
    cr_expect_eq(sampler_set_logit_bias(s, ids, nan, 1, &err), -1);
    int32_t neg = -1;
    cr_expect_eq(sampler_set_logit_bias(s, &neg, ok, 1, &err), -1);
    /* a refused set leaves the sampler as it was: no bias */
    float logits[10] = {0};
    logits[7] = 1.0f;
    cr_expect_eq(sample_logit_bias_validate(ids, ok, 1, 10, NULL), 0);
    sample_params gp = sample_params_default();
    gp.temperature = 0.0f;
    sampler *g = make(gp, 10);
    cr_expect_eq(sampler_set_logit_bias(g, ids, ok, 2, NULL), -1);
    cr_expect_eq(sampler_sample(g, logits, NULL), 7);
    sampler_free(g);
    sampler_free(s);
}

Test(sample, repetition_penalty_prompt_only) {
    sample_params p = sample_params_default();
    p.repetition_penalty = 1.5f;
    sampler *s = make(p, 3);
    int32_t prompt[] = {2, 0};
    sampler_add_prompt(s, prompt, 2);
    float logits[3] = {3.0f, 0.0f, -3.0f};
    double x[3] = {2.0, 0.0, -4.5}, want[3];
    softmax(x, 3, want);
    expect_probs(s, logits, want, 3);
    sampler_free(s);
}

/* T = 2 on logits {0, ln 2, ln 4}: weights 1, sqrt 2, 2. */
Test(sample, temperature_hand_computed) {
    sample_params p = sample_params_default();
    p.temperature = 2.0f;
    sampler *s = make(p, 3);
    float logits[3] = {0.0f, (float)log(2.0), (float)log(4.0)};
    double z = 3 + sqrt(2.0), want[3] = {1 / z, sqrt(2.0) / z, 2 / z};
    expect_probs(s, logits, want, 3);
    sampler_free(s);
}

Test(sample, top_k_hand_computed) {
    sample_params p = sample_params_default();
    p.top_k = 2;
    sampler *s = make(p, 4);
    float logits[4] = {1, 3, 2, 3};
    double want[4] = {0, 0.5, 0, 0.5};
    expect_probs(s, logits, want, 4);
    sampler_free(s);
    p.top_k = 1; /* tie: the lower id stays */
    s = make(p, 4);
    double want1[4] = {0, 1, 0, 0};
    expect_probs(s, logits, want1, 4);
    sampler_free(s);
    p.top_k = 4; /* k >= vocab: disabled */
    s = make(p, 4);
    double x[4] = {1, 3, 2, 3}, want4[4];
    softmax(x, 4, want4);
    expect_probs(s, logits, want4, 4);
    sampler_free(s);
}

/* q = {0.05, 0.5, 0.15, 0.3}: descending 0.5, 0.3, 0.15, 0.05; a token stays
 * while the mass ranked above it is < top_p. */
Test(sample, top_p_hand_computed) {
    double q[4] = {0.05, 0.5, 0.15, 0.3};
    float logits[4];
    logits_of(q, 4, logits);
    struct { float top_p; double want[4]; } cases[] = {
        {0.4f, {0, 1, 0, 0}},
        {0.75f, {0, 0.5 / 0.8, 0, 0.3 / 0.8}},
        {0.85f, {0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95}},
        {1.0f, {0.05, 0.5, 0.15, 0.3}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sample_params p = sample_params_default();
        p.top_p = cases[c].top_p;
        sampler *s = make(p, 4);
        expect_probs(s, logits, cases[c].want, 4);
        sampler_free(s);
    }
}

/* top-p works on the distribution renormalised over the top-k. */
Test(sample, top_k_then_top_p) {
    double q[5] = {0.4, 0.3, 0.2, 0.06, 0.04};
    float logits[5];
    logits_of(q, 5, logits);
    sample_params p = sample_params_default();
    p.top_k = 3;    /* 0.4/0.9, 0.3/0.9, 0.2/0.9 = 0.444, 0.333, 0.222 */
    p.top_p = 0.7f; /* above the 2nd: 0.444 < 0.7 keeps it; above the 3rd: 0.778 */
    sampler *s = make(p, 5);
    double want[5] = {0.4 / 0.7, 0.3 / 0.7, 0, 0, 0};
    expect_probs(s, logits, want, 5);
    sampler_free(s);
}

/* min_p 0.2 of max 0.5 = 0.1: drops 0.05 only. */
Test(sample, min_p_hand_computed) {
    double q[4] = {0.05, 0.5, 0.15, 0.3};
    float logits[4];
    logits_of(q, 4, logits);
    sample_params p = sample_params_default();
    p.min_p = 0.2f;
    sampler *s = make(p, 4);
    double want[4] = {0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95};
    expect_probs(s, logits, want, 4);
    sampler_free(s);
}

/* ---- large vocabulary: compare with a full-sort oracle ---- */

typedef struct {
    float l;
    int32_t id;
} ranked;

static int ranked_cmp(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static uint64_t test_rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void random_logits(float *l, int n, uint64_t seed, float scale) {
    for (int i = 0; i < n; i++) l[i] = scale * (float)((double)(test_rng(&seed) >> 11) * 0x1.0p-53 - 0.5);
    for (int i = 0; i < n; i += 97) l[i] = l[(i * 7) % n]; /* some exact ties */
}

/* Kept set of top-k then top-p by full sort (temperature 1). */
static void oracle_keep(const float *l, int n, int k, double top_p, unsigned char *keep) {
    ranked *r = malloc((size_t)n * sizeof *r);
    for (int i = 0; i < n; i++) r[i] = (ranked){l[i], i};
    qsort(r, (size_t)n, sizeof *r, ranked_cmp);
    int m = k > 0 && k < n ? k : n;
    double z = 0, cum = 0;
    for (int j = 0; j < m; j++) z += exp((double)r[j].l - r[0].l);
    memset(keep, 0, (size_t)n);
    for (int j = 0; j < m && cum < top_p * z; j++) {
        keep[r[j].id] = 1;
        cum += exp((double)r[j].l - r[0].l);
    }
    free(r);
}

static void check_big(int k, float top_p, float scale) {
    float *l = malloc(N_VOCAB_BIG * sizeof *l), *probs = malloc(N_VOCAB_BIG * sizeof *probs);
    unsigned char *keep = malloc(N_VOCAB_BIG);
    random_logits(l, N_VOCAB_BIG, 42 + (uint64_t)k, scale);
    sample_params p = sample_params_default();
    p.top_k = k;
    p.top_p = top_p;
    sampler *s = make(p, N_VOCAB_BIG);
    cr_assert_eq(sampler_probs(s, l, probs, NULL), 0);
    oracle_keep(l, N_VOCAB_BIG, k, top_p, keep);
    int n_keep = 0, n_bad = 0;
    double sum = 0;
    for (int i = 0; i < N_VOCAB_BIG; i++) {
        n_keep += keep[i];
        sum += probs[i];
        if ((probs[i] > 0) != keep[i]) n_bad++;
    }
    /* a token exactly at the top_p boundary may flip with float rounding */
    cr_expect_leq(n_bad, 1, "k=%d top_p=%g scale=%g: %d of %d kept tokens differ", k, top_p, scale, n_bad, n_keep);
    cr_expect(fabs(sum - 1) < 1e-4, "probabilities sum to %g", sum);
    sampler_free(s);
    free(l);
    free(probs);
    free(keep);
}

Test(sample, big_vocab_matches_full_sort) {
    check_big(0, 0.9f, 40.0f);  /* peaked: small nucleus */
    check_big(0, 0.9f, 2.0f);   /* flat: nucleus of most of the vocabulary */
    check_big(0, 0.5f, 12.0f);  /* several partial-selection chunks */
    check_big(50, 1.0f, 10.0f); /* top-k only */
    check_big(1000, 0.8f, 10.0f);
    check_big(N_VOCAB_BIG - 1, 0.95f, 8.0f);
}

/* ---- reproducibility ---- */

typedef struct {
    uint64_t seed;
    int32_t out[100];
} run_args;

static void *run_sequence(void *arg) {
    run_args *a = arg;
    float *l = malloc(N_VOCAB_BIG * sizeof *l);
    sample_params p = sample_params_default();
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.top_k = 0;
    p.frequency_penalty = 0.3f;
    p.seed = a->seed;
    sampler *s = sampler_create(&p, N_VOCAB_BIG, NULL);
    for (int t = 0; t < 100; t++) {
        random_logits(l, N_VOCAB_BIG, (uint64_t)t, 6.0f);
        a->out[t] = sampler_sample(s, l, NULL);
    }
    sampler_free(s);
    free(l);
    return NULL;
}

Test(sample, seed_reproducible_across_threads) {
    run_args a = {.seed = 1234}, b = {.seed = 1234}, c = {.seed = 1235};
    pthread_t tb, tc;
    pthread_create(&tb, NULL, run_sequence, &b);
    pthread_create(&tc, NULL, run_sequence, &c);
    run_sequence(&a);
    pthread_join(tb, NULL);
    pthread_join(tc, NULL);
    int same_c = 0;
    for (int t = 0; t < 100; t++) {
        cr_assert_geq(a.out[t], 0);
        cr_expect_eq(a.out[t], b.out[t], "step %d: %d vs %d", t, a.out[t], b.out[t]);
        same_c += a.out[t] == c.out[t];
    }
    cr_expect_lt(same_c, 50, "a different seed gave %d/100 identical tokens", same_c);
}

/* ---- distribution: counts of many draws vs sampler_probs ---- */

static void check_distribution(sample_params p, const float *logits, int n, int draws) {
    sampler *probe = make(p, n);
    float probs[64];
    cr_assert_eq(sampler_probs(probe, logits, probs, NULL), 0);
    sampler_free(probe);
    sampler *s = make(p, n);
    int count[64] = {0};
    for (int d = 0; d < draws; d++) {
        int32_t id = sampler_sample(s, logits, NULL);
        cr_assert(id >= 0 && id < n);
        count[id]++;
    }
    sampler_free(s);
    double chi2 = 0;
    int dof = -1;
    for (int i = 0; i < n; i++) {
        if (probs[i] == 0) {
            cr_expect_eq(count[i], 0, "token %d removed but drawn %d times", i, count[i]);
            continue;
        }
        double e = probs[i] * draws;
        chi2 += (count[i] - e) * (count[i] - e) / e;
        dof++;
    }
    /* chi-square: mean dof, sd sqrt(2 dof); 6 sd is far beyond chance */
    double bound = dof + 6 * sqrt(2.0 * (dof > 0 ? dof : 1)) + 5;
    cr_expect_lt(chi2, bound, "chi2 = %.2f with %d dof (bound %.2f)", chi2, dof, bound);
}

Test(sample, draws_follow_distribution) {
    float logits[12];
    for (int i = 0; i < 12; i++) logits[i] = 0.3f * (float)((i * 5) % 12);
    sample_params p = sample_params_default();
    p.seed = 7;
    check_distribution(p, logits, 12, 200000);
    p.temperature = 0.6f;
    check_distribution(p, logits, 12, 200000);
    p.temperature = 1.7f;
    p.top_k = 5;
    check_distribution(p, logits, 12, 200000);
    p.top_k = 0;
    p.top_p = 0.7f;
    check_distribution(p, logits, 12, 200000);
    p.top_p = 1.0f;
    p.min_p = 0.3f;
    check_distribution(p, logits, 12, 200000);
}

/* ---- logprobs ---- */

Test(sample, logprobs_hand_computed) {
    float logits[4] = {0.0f, (float)log(3.0), NAN, (float)log(3.0)};
    sample_logprob top[4];
    float chosen;
    ms_err err = {{0}};
    /* softmax: 1/7, 3/7, 0, 3/7 */
    cr_assert_eq(sample_logprobs(logits, 4, 0, 3, top, &chosen, &err), 3, "%s", err.msg);
    cr_expect(fabsf(chosen - (float)log(1.0 / 7)) < 1e-6f);
    cr_expect_eq(top[0].id, 1);
    cr_expect_eq(top[1].id, 3);
    cr_expect_eq(top[2].id, 0);
    cr_expect(fabsf(top[0].logprob - (float)log(3.0 / 7)) < 1e-6f);
    cr_expect(fabsf(top[2].logprob - (float)log(1.0 / 7)) < 1e-6f);
    cr_expect_eq(sample_logprobs(logits, 4, 2, 10, top, &chosen, NULL), 4);
    cr_expect(isinf(chosen) && chosen < 0);
    cr_expect_eq(top[3].id, 2);
    cr_expect_eq(sample_logprobs(logits, 4, 1, 0, NULL, &chosen, NULL), 0);
    cr_expect_eq(sample_logprobs(logits, 4, 4, 1, top, &chosen, &err), -1);
    cr_expect(strstr(err.msg, "outside"));
}

/* vLLM's rank: 1 + how many logits are strictly greater (ties share a rank). */
Test(sample, rank_hand_computed) {
    float logits[5] = {0.5f, 2.0f, NAN, 2.0f, -1.0f};
    cr_expect_eq(sample_rank(logits, 5, 1), 1);
    cr_expect_eq(sample_rank(logits, 5, 3), 1);
    cr_expect_eq(sample_rank(logits, 5, 0), 3);
    cr_expect_eq(sample_rank(logits, 5, 4), 4);
    cr_expect_eq(sample_rank(logits, 5, 2), 5, "NaN counts as -inf: below every number");
    cr_expect_eq(sample_rank(logits, 5, 5), 0, "out of range");
    cr_expect_eq(sample_rank(logits, 5, -1), 0);
}
