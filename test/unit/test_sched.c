/* test/unit/test_sched.c — the continuous-batching scheduler on tiny-v3.
 * References: the golden greedy continuations (test/golden/tiny-v3/results) and
 * the engine's own single-request output (batch independence, preemption). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/backend_cpu.h"
#include "engine/sched.h"

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* Criterion's limit for the two 16-client tests: ~20 s in a release build,
 * 10-30x that under ASan/TSan (make sanitize). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLOW_TEST_TIMEOUT_S 3000
#else
#define SLOW_TEST_TIMEOUT_S 300
#endif

/* How long a stream may stay silent: 60 s, times MLASERVE_TEST_TIME_SCALE
 * (make sanitize sets it: ASan/TSan run the engine 10-30x slower, and a
 * request queued behind 15 others legitimately waits that much longer). */
static int event_wait_ms(void) {
    int scale = atoi(env_or("MLASERVE_TEST_TIME_SCALE", "1"));
    return 60000 * (scale > 0 && scale <= 100 ? scale : 1);
}

typedef struct {
    backend *be;
    model *m;
    tokenizer *tok;
    sched *s;
} fixture;

static void open_fixture(fixture *f, sched_config cfg) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-v3", env_or("MLASERVE_TEST_MODELS", "build/models"));
    ms_err err = {{0}};
    f->be = backend_cpu_create(2, &err);
    f->m = model_load(dir, f->be, &err);
    cr_assert(f->m, "%s", err.msg);
    f->tok = tokenizer_load(dir, &err);
    cr_assert(f->tok, "%s", err.msg);
    f->s = sched_create(f->m, f->tok, &cfg, &err);
    cr_assert(f->s, "%s", err.msg);
}

static void close_fixture(fixture *f) {
    sched_free(f->s);
    tokenizer_free(f->tok);
    model_free(f->m);
    backend_cpu_free(f->be);
}

static sched_request greedy_request(const int32_t *ids, int n, int max_tokens) {
    sched_request r;
    memset(&r, 0, sizeof r);
    r.prompt = ids;
    r.n_prompt = n;
    r.max_tokens = max_tokens;
    r.sampling = sample_params_default();
    r.sampling.temperature = 0;
    r.ignore_eos = 1;
    r.top_logprobs = -1;
    r.skip_special = 1;
    return r;
}

typedef struct {
    int32_t tokens[512];
    int n;
    char text[8192];
    size_t text_len;
    finish_reason finish;
    int completion_tokens, cached_tokens;
    int timed_out;           /* no event within the bound */
} result;

/* Reads a stream to its end; gives up (res->timed_out) after a bounded wait.
 * Safe on any thread: it never asserts (Criterion asserts unwind the caller). */
static void drain_quiet(sched_stream *st, result *res) {
    memset(res, 0, sizeof *res);
    for (;;) {
        sched_event ev;
        if (sched_stream_next(st, &ev, event_wait_ms()) != 1) {
            res->timed_out = 1;
            break;
        }
        if (ev.token >= 0 && res->n < 512) res->tokens[res->n++] = ev.token;
        if (ev.text && res->text_len + ev.text_len < sizeof res->text) {
            memcpy(res->text + res->text_len, ev.text, ev.text_len);
            res->text_len += ev.text_len;
        }
        free(ev.text);
        if (ev.finish != FINISH_NONE) {
            res->finish = ev.finish;
            res->completion_tokens = ev.completion_tokens;
            res->cached_tokens = ev.cached_tokens;
            break;
        }
    }
    sched_stream_free(st);
}

/* drain_quiet on the test's own thread, failing the test on a timeout. */
static void drain(sched_stream *st, result *res) {
    drain_quiet(st, res);
    cr_assert(!res->timed_out, "no event within %d ms", event_wait_ms());
}

static void run_one(fixture *f, const int32_t *ids, int n, int max_tokens, result *res) {
    sched_request r = greedy_request(ids, n, max_tokens);
    ms_err err = {{0}};
    sched_stream *st = sched_submit(f->s, &r, NULL, &err);
    cr_assert(st, "%s", err.msg);
    drain(st, res);
}

static json_t *golden(const char *prompt) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny-v3/results/%s.json", env_or("MLASERVE_GOLDEN", "test/golden"), prompt);
    json_t *j = json_load_file(path, 0, NULL);
    cr_assert(j, "cannot read %s", path);
    return j;
}

static int32_t *ids_of(json_t *arr, int *n) {
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static const char *prompts[] = {"bos_only", "en_short", "code_py", "zh", "en_long", "mixed", "chat"};

Test(sched, greedy_matches_golden) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    json_t *g = golden("en_short");
    int n, nw;
    int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
    int32_t *want = ids_of(json_object_get(json_object_get(g, "greedy"), "new_tokens"), &nw);
    result res;
    run_one(&f, ids, n, nw, &res);
    cr_expect_eq(res.finish, FINISH_LENGTH);
    cr_assert_eq(res.n, nw);
    for (int i = 0; i < nw; i++) cr_expect_eq(res.tokens[i], want[i], "step %d", i);
    free(ids);
    free(want);
    json_decref(g);
    close_fixture(&f);
}

typedef struct {
    fixture *f;
    int32_t *ids;
    int n, max_tokens;
    result res;
} client;

static void *client_main(void *p) {
    client *c = p;
    sched_request r = greedy_request(c->ids, c->n, c->max_tokens);
    sched_stream *st = sched_submit(c->f->s, &r, NULL, NULL);
    if (!st) {
        c->res.timed_out = 1; /* reported by the main thread */
        return NULL;
    }
    drain_quiet(st, &c->res);
    return NULL;
}

/* 16 concurrent requests (7 prompts, repeated) each equal their solo run. */
static void concurrent_equals_solo(sched_config cfg, int max_tokens, int expect_preemption) {
    fixture f;
    open_fixture(&f, cfg);
    client cl[16];
    result solo[7];
    for (int p = 0; p < 7; p++) {
        json_t *g = golden(prompts[p]);
        int n;
        int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
        run_one(&f, ids, n, max_tokens, &solo[p]);
        free(ids);
        json_decref(g);
    }
    pthread_t th[16];
    for (int i = 0; i < 16; i++) {
        json_t *g = golden(prompts[i % 7]);
        cl[i].f = &f;
        cl[i].ids = ids_of(json_object_get(g, "ids"), &cl[i].n);
        cl[i].max_tokens = max_tokens;
        json_decref(g);
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    for (int i = 0; i < 16; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 16; i++) {
        const result *want = &solo[i % 7];
        cr_expect(!cl[i].res.timed_out, "client %d: not submitted or no event within %d ms", i, event_wait_ms());
        cr_expect_eq(cl[i].res.n, want->n, "client %d: %d tokens, solo %d", i, cl[i].res.n, want->n);
        cr_expect_eq(memcmp(cl[i].res.tokens, want->tokens, (size_t)want->n * 4), 0, "client %d (%s) differs from solo",
                     i, prompts[i % 7]);
        cr_expect_eq(cl[i].res.text_len, want->text_len);
        free(cl[i].ids);
    }
    sched_stats st;
    sched_get_stats(f.s, &st);
    cr_expect_eq(st.requests_finished, 23);
    if (expect_preemption) cr_expect(st.preemptions > 0, "the small KV pool should have forced preemption");
    close_fixture(&f);
}

Test(sched, concurrent_requests_equal_solo_runs, .timeout = SLOW_TEST_TIMEOUT_S) {
    concurrent_equals_solo((sched_config){.max_num_seqs = 8, .max_batched_tokens = 96}, 24, 0);
}

Test(sched, preemption_keeps_outputs, .timeout = SLOW_TEST_TIMEOUT_S) {
    /* 6 pages of 64 tokens for up to 8 sequences that each grow by 2 pages while decoding. */
    concurrent_equals_solo((sched_config){.max_num_seqs = 8, .max_batched_tokens = 128, .kv_cache_tokens = 384}, 100, 1);
}

Test(sched, stop_string_never_leaks) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    json_t *g = golden("en_short");
    int n;
    int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
    result full;
    run_one(&f, ids, n, 20, &full);
    cr_assert(full.text_len > 12);
    /* A stop string straddling the middle of the generated text. */
    char stop[8];
    size_t at = full.text_len / 2;
    while (at > 0 && ((unsigned char)full.text[at] & 0xC0) == 0x80) at--; /* start of a UTF-8 char */
    size_t sl = 0;
    while (sl < 5 && at + sl < full.text_len) sl++;
    while (at + sl < full.text_len && ((unsigned char)full.text[at + sl] & 0xC0) == 0x80) sl++;
    cr_assert(sl < sizeof stop);
    memcpy(stop, full.text + at, sl);
    stop[sl] = '\0';
    const char *first = strstr(full.text, stop);
    sched_request r = greedy_request(ids, n, 20);
    r.stop[0] = stop;
    r.n_stop = 1;
    sched_stream *st = sched_submit(f.s, &r, NULL, NULL);
    result res;
    drain(st, &res);
    cr_expect_eq(res.finish, FINISH_STOP);
    cr_expect_eq(res.text_len, (size_t)(first - full.text), "text ends right before the stop string");
    cr_expect_eq(memcmp(res.text, full.text, res.text_len), 0);
    cr_expect_null(strstr(res.text, stop));
    free(ids);
    json_decref(g);
    close_fixture(&f);
}

/* vLLM's stop_token_ids, min_tokens and include_stop_str_in_output, against
 * the plain greedy run as the oracle. */
Test(sched, stop_ids_min_tokens_include_stop) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    json_t *g = golden("en_short");
    int n;
    int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
    result full;
    run_one(&f, ids, n, 16, &full);
    cr_assert_eq(full.n, 16);
    /* stop id: the first occurrence of the 4th token ends the request, its text kept */
    int32_t stop_id = full.tokens[3];
    int first = 0;
    while (full.tokens[first] != stop_id) first++;
    sched_request r = greedy_request(ids, n, 16);
    r.stop_ids = &stop_id;
    r.n_stop_ids = 1;
    result res;
    drain(sched_submit(f.s, &r, NULL, NULL), &res);
    cr_expect_eq(res.finish, FINISH_STOP);
    cr_expect_eq(res.n, first + 1);
    cr_expect(memcmp(res.tokens, full.tokens, (size_t)(first + 1) * sizeof *res.tokens) == 0);
    /* min_tokens: the stop id cannot come before first + 2 tokens */
    r.min_tokens = first + 2;
    drain(sched_submit(f.s, &r, NULL, NULL), &res);
    cr_expect(res.n >= first + 2, "%d tokens", res.n);
    cr_expect(memcmp(res.tokens, full.tokens, (size_t)first * sizeof *res.tokens) == 0, "same until the masked position");
    for (int i = 0; i < first + 2 && i < res.n; i++) cr_expect(res.tokens[i] != stop_id, "stop id at %d", i);
    cr_expect(res.finish == FINISH_LENGTH || res.tokens[res.n - 1] == stop_id);
    /* include_stop: the text ends with the stop string; min_tokens past it: no match there */
    char stop[64];
    size_t sl = strlen(full.text) < 4 ? strlen(full.text) : 4;
    const char *at = full.text + full.text_len / 2;
    while (((unsigned char)*at & 0xC0) == 0x80) at--;
    while (sl < full.text_len - (size_t)(at - full.text) && ((unsigned char)at[sl] & 0xC0) == 0x80) sl++;
    memcpy(stop, at, sl);
    stop[sl] = '\0';
    const char *hit = strstr(full.text, stop);
    sched_request q = greedy_request(ids, n, 16);
    q.stop[0] = stop;
    q.n_stop = 1;
    q.include_stop = 1;
    drain(sched_submit(f.s, &q, NULL, NULL), &res);
    cr_expect_eq(res.finish, FINISH_STOP);
    cr_expect_eq(res.text_len, (size_t)(hit - full.text) + sl, "text ends with the stop string");
    cr_expect_eq(memcmp(res.text, full.text, res.text_len), 0);
    q.include_stop = 0;
    q.min_tokens = 16;
    drain(sched_submit(f.s, &q, NULL, NULL), &res);
    cr_expect_eq(res.finish, FINISH_LENGTH, "no stop string is looked for before min_tokens");
    cr_expect_eq(res.text_len, full.text_len);
    /* bad values */
    ms_err err = {{0}};
    q.min_tokens = 17;
    cr_expect_null(sched_submit(f.s, &q, NULL, &err));
    cr_expect(strstr(err.msg, "min_tokens"), "%s", err.msg);
    int32_t bad = 999999;
    r.min_tokens = 0;
    r.stop_ids = &bad;
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    cr_expect(strstr(err.msg, "stop_token_ids"), "%s", err.msg);
    free(ids);
    json_decref(g);
    close_fixture(&f);
}

Test(sched, rejects_bad_requests) {
    fixture f;
    open_fixture(&f, (sched_config){.kv_cache_tokens = 256});
    int32_t ids[300] = {0};
    ms_err err = {{0}};
    sched_request r = greedy_request(ids, 200, 100);
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    cr_expect(strstr(err.msg, "256"), "names the limit: %s", err.msg);
    r = greedy_request(ids, 0, 10);
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    ids[0] = 999999;
    r = greedy_request(ids, 1, 10);
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    cr_expect(strstr(err.msg, "out of range"), "%s", err.msg);
    r = greedy_request(ids + 1, 1, 10);
    r.sampling.top_p = 2;
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    cr_expect(strstr(err.msg, "top_p"), "%s", err.msg);
    close_fixture(&f);
}

Test(sched, cancel_frees_pages) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    int32_t ids[4] = {0, 671, 4787, 13769};
    sched_request r = greedy_request(ids, 4, 5000);
    sched_stream *st = sched_submit(f.s, &r, NULL, NULL);
    cr_assert(st);
    sched_event ev;
    cr_assert_eq(sched_stream_next(st, &ev, event_wait_ms()), 1);
    free(ev.text);
    sched_stream_cancel(st);
    int finished = 0;
    for (int i = 0; i < 10000 && !finished; i++) {
        cr_assert_eq(sched_stream_next(st, &ev, event_wait_ms()), 1);
        finished = ev.finish == FINISH_CANCELLED;
        free(ev.text);
    }
    cr_expect(finished);
    sched_stream_free(st);
    sched_stats s;
    for (int i = 0; i < 100; i++) { /* the engine frees pages when it retires the sequence */
        sched_get_stats(f.s, &s);
        if (s.running == 0) break;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    close_fixture(&f);
}

/* A step's counters are published before its events reach the streams: a
 * client holding its n-th token sees generation_tokens count it, and one
 * holding its final event sees the request finished, nothing running and
 * every page free (the order /metrics readers and load balancers rely on). */
Test(sched, counters_are_published_before_events, .timeout = 120) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    int32_t ids[5] = {0, 671, 4787, 13769, 46012};
    uint64_t tokens = 0;
    for (int req = 1; req <= 4; req++) {
        ids[4] = 46012 + req; /* no prefix-cache state matters here, but keep prompts apart */
        sched_request r = greedy_request(ids, 5, 40);
        sched_stream *st = sched_submit(f.s, &r, NULL, NULL);
        cr_assert(st);
        for (;;) {
            sched_event ev;
            cr_assert_eq(sched_stream_next(st, &ev, event_wait_ms()), 1);
            free(ev.text);
            sched_stats s;
            sched_get_stats(f.s, &s);
            if (ev.token >= 0) tokens++;
            cr_assert(s.generation_tokens >= tokens, "request %d token %llu: generation_tokens %llu", req,
                      (unsigned long long)tokens, (unsigned long long)s.generation_tokens);
            if (ev.finish == FINISH_NONE) continue;
            cr_assert_eq(ev.finish, FINISH_LENGTH);
            cr_assert_eq(s.requests_finished, (uint64_t)req);
            cr_assert_eq(s.running, 0, "request %d ended but %d running", req, s.running);
            cr_assert_eq(s.kv_pages_free, s.kv_pages_total, "request %d ended with %d of %d pages free", req,
                         s.kv_pages_free, s.kv_pages_total);
            break;
        }
        sched_stream_free(st);
    }
    close_fixture(&f);
}

Test(sched, queue_full_is_reported) {
    fixture f;
    open_fixture(&f, (sched_config){.max_num_seqs = 1, .max_queue = 2});
    int32_t ids[2] = {0, 671};
    sched_stream *st[8];
    int n_ok = 0, full = 0;
    for (int i = 0; i < 8; i++) {
        sched_request r = greedy_request(ids, 2, 200);
        int qf = 0;
        st[n_ok] = sched_submit(f.s, &r, &qf, NULL);
        if (st[n_ok]) n_ok++;
        full |= qf;
    }
    cr_expect(full, "the queue of 2 must overflow with 8 quick submits");
    for (int i = 0; i < n_ok; i++) sched_stream_free(st[i]);
    close_fixture(&f);
}

/* The second request with the same 130-token prompt reuses its 2 full pages and
 * produces the same tokens; with caching off nothing is reused. */
static void prefix_reuse(int disabled) {
    fixture f;
    open_fixture(&f, (sched_config){.no_prefix_caching = disabled});
    json_t *g = golden("en_long");
    int n;
    int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
    cr_assert_eq(n, 130);
    result a, b;
    run_one(&f, ids, n, 16, &a);
    run_one(&f, ids, n, 16, &b);
    cr_expect_eq(a.cached_tokens, 0);
    cr_expect_eq(b.cached_tokens, disabled ? 0 : 128, "cached %d", b.cached_tokens);
    cr_expect_eq(a.n, b.n);
    cr_expect_eq(memcmp(a.tokens, b.tokens, (size_t)a.n * sizeof a.tokens[0]), 0, "same continuation");
    sched_stats st;
    sched_get_stats(f.s, &st);
    if (!disabled) cr_expect_eq(st.prefix_cache_hits, 128);
    free(ids);
    json_decref(g);
    close_fixture(&f);
}

/* A prompt waiting for pages is looked up in the prefix cache at every step
 * until it fits; the counters must count it once, when it is admitted. With
 * 3 pages, A (130 + 50 tokens) holds all of them and B waits ~50 steps. */
Test(sched, prefix_counters_count_each_admission_once, .timeout = 120) {
    fixture f;
    open_fixture(&f, (sched_config){.max_num_seqs = 2, .kv_cache_tokens = 192});
    json_t *g = golden("en_long");
    int n;
    int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
    cr_assert_eq(n, 130);
    result warm, a, b;
    run_one(&f, ids, n, 1, &warm); /* registers the prompt's 2 full pages */
    sched_request ra = greedy_request(ids, n, 50), rb = greedy_request(ids, n, 8);
    ms_err err = {{0}};
    sched_stream *sa = sched_submit(f.s, &ra, NULL, &err);
    cr_assert(sa, "%s", err.msg);
    sched_stream *sb = sched_submit(f.s, &rb, NULL, &err);
    cr_assert(sb, "%s", err.msg);
    drain(sa, &a);
    drain(sb, &b);
    cr_expect_eq(a.n, 50);
    cr_expect_eq(b.n, 8);
    sched_stats st;
    sched_get_stats(f.s, &st);
    cr_expect_eq(st.preemptions, 0, "the test assumes B waits rather than preempts");
    cr_expect_eq(st.prefix_cache_queries, 3 * 128, "queried %llu tokens for 3 admissions of 128 cacheable tokens",
                 (unsigned long long)st.prefix_cache_queries);
    cr_expect_eq(st.prefix_cache_hits, 2 * 128, "hit %llu tokens", (unsigned long long)st.prefix_cache_hits);
    free(ids);
    json_decref(g);
    close_fixture(&f);
}

Test(sched, prefix_cache_reuses_full_pages) { prefix_reuse(0); }
Test(sched, prefix_cache_can_be_disabled) { prefix_reuse(1); }

/* ---- the constraint seam (sched_constraint), with a hand-written constraint:
 * only tokens from a fixed cycle are allowed (expected output = that cycle),
 * complete after `length` tokens. */
typedef struct {
    int32_t cycle[3];
    int pos, length, frees, masks, reject_all, last_tokens_left;
} toy_constraint;

static int toy_mask(void *ctx, float *logits, int tokens_left) {
    toy_constraint *c = ctx;
    c->masks++;
    c->last_tokens_left = tokens_left;
    int32_t keep = c->cycle[c->pos % 3];
    float v = logits[keep];
    for (int i = 0; i < 129280; i++) logits[i] = -INFINITY;
    if (c->reject_all) return 0;
    logits[keep] = v;
    return 1;
}
static int toy_accept(void *ctx, int32_t tok) {
    toy_constraint *c = ctx;
    if (tok != c->cycle[c->pos % 3]) return -1;
    c->pos++;
    return 0;
}
static int toy_complete(void *ctx) { return ((toy_constraint *)ctx)->pos >= ((toy_constraint *)ctx)->length; }
static void toy_free(void *ctx) { ((toy_constraint *)ctx)->frees++; }

static sched_constraint toy(toy_constraint *c) { return (sched_constraint){c, toy_mask, toy_accept, toy_complete, toy_free}; }

Test(sched, constraint_masks_every_step_and_ends_when_complete) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    int32_t ids[4] = {0, 671, 4787, 13769};
    toy_constraint c = {.cycle = {100, 2000, 30000}, .length = 7};
    sched_request r = greedy_request(ids, 4, 50);
    r.top_logprobs = 2;
    r.constraint = toy(&c);
    ms_err err = {{0}};
    sched_stream *st = sched_submit(f.s, &r, NULL, &err);
    cr_assert(st, "%s", err.msg);
    result res;
    drain(st, &res);
    cr_expect_eq(res.finish, FINISH_STOP, "complete => stop");
    cr_assert_eq(res.n, 7);
    for (int i = 0; i < 7; i++) cr_expect_eq(res.tokens[i], c.cycle[i % 3], "token %d", i);
    cr_expect_eq(c.masks, 7);
    cr_expect_eq(c.last_tokens_left, 50 - 6, "tokens_left counts this token");
    close_fixture(&f);
    cr_expect_eq(c.frees, 1, "freed exactly once");
}

Test(sched, constraint_allowing_nothing_fails_the_request) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    int32_t ids[2] = {0, 671};
    toy_constraint c = {.cycle = {5, 5, 5}, .length = 3, .reject_all = 1};
    sched_request r = greedy_request(ids, 2, 10);
    r.constraint = toy(&c);
    ms_err err = {{0}};
    sched_stream *st = sched_submit(f.s, &r, NULL, &err);
    cr_assert(st, "%s", err.msg);
    result res;
    drain(st, &res);
    cr_expect_eq(res.finish, FINISH_ERROR);
    cr_expect_eq(res.n, 0);
    /* a rejected submission still frees the constraint */
    toy_constraint c2 = {.cycle = {5, 5, 5}, .length = 3};
    r = greedy_request(ids, 0, 10);
    r.constraint = toy(&c2);
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    cr_expect_eq(c2.frees, 1);
    close_fixture(&f);
    cr_expect_eq(c.frees, 1);
}

/* Prefix-cache stress: 500 requests whose prompts share one of 6 prefixes
 * (1-3 full pages) plus a short unique tail, 16 in flight at a time, on a
 * 12-page pool so cached pages are evicted and re-filled all the time. After
 * the run every page is free or evictable (no reference leaked), the cache was
 * hit, and a prompt repeated at the end still gives its first greedy token
 * (reference: the same prompt run at the start). */
Test(sched, prefix_cache_stress_500_requests_frees_every_page, .timeout = SLOW_TEST_TIMEOUT_S) {
    fixture f;
    open_fixture(&f, (sched_config){.kv_cache_tokens = 12 * 64, .max_num_seqs = 16});
    enum { N = 500, INFLIGHT = 16, MAXLEN = 3 * 64 + 8 };
    static int32_t prompts[N][MAXLEN];
    int lens[N];
    for (int i = 0; i < N; i++) {
        int base = i % 6, pages = 1 + base % 3;
        lens[i] = pages * 64 + 1 + i % 7;
        for (int t = 0; t < lens[i]; t++)
            prompts[i][t] = t < pages * 64 ? 1000 + base * 500 + t : 20000 + (i * 7 + t) % 5000;
    }
    result first, again;
    run_one(&f, prompts[0], lens[0], 1, &first);
    sched_stream *st[INFLIGHT] = {0};
    int next = 0, done = 0, errors = 0;
    while (done < N) {
        for (int k = 0; k < INFLIGHT && next < N; k++)
            if (!st[k]) {
                sched_request r = greedy_request(prompts[next], lens[next], 1);
                ms_err err = {{0}};
                st[k] = sched_submit(f.s, &r, NULL, &err);
                cr_assert(st[k], "submit %d: %s", next, err.msg);
                next++;
            }
        for (int k = 0; k < INFLIGHT; k++)
            if (st[k]) {
                result res;
                drain(st[k], &res);
                st[k] = NULL;
                errors += res.finish != FINISH_LENGTH || res.n != 1;
                done++;
            }
    }
    cr_expect_eq(errors, 0);
    run_one(&f, prompts[0], lens[0], 1, &again);
    cr_expect_eq(again.tokens[0], first.tokens[0], "same greedy token after all the evictions");
    sched_stats s;
    sched_get_stats(f.s, &s);
    cr_expect_eq(s.kv_pages_free, s.kv_pages_total, "every page free or evictable: %d of %d", s.kv_pages_free,
                 s.kv_pages_total);
    cr_expect(s.prefix_cache_hits > 64 * 100, "the cache served prefixes (%llu tokens)",
                 (unsigned long long)s.prefix_cache_hits);
    cr_expect_eq(s.running, 0);
    close_fixture(&f);
}

/* ---- prompt logprobs (sched_request.prompt_logprobs) */

typedef struct {
    int n_prompt_events, n_tokens;   /* prompt events; generated tokens */
    int order_ok;                    /* every prompt event came before every generated token */
    int32_t prompt[256], tokens[256];
    float prompt_lp[256], token_lp[256];
    sched_logprob top[256][3];
    int n_top[256];
    finish_reason finish;
    int completion_tokens, timed_out;
} lp_result;

static void drain_lp(sched_stream *st, lp_result *res) {
    memset(res, 0, sizeof *res);
    res->order_ok = 1;
    for (;;) {
        sched_event ev;
        if (sched_stream_next(st, &ev, event_wait_ms()) != 1) {
            res->timed_out = 1;
            break;
        }
        free(ev.text);
        if (ev.prompt && res->n_prompt_events < 256) {
            int i = res->n_prompt_events++;
            res->order_ok &= res->n_tokens == 0;
            res->prompt[i] = ev.token;
            res->prompt_lp[i] = ev.logprob;
            res->n_top[i] = ev.n_top;
            for (int k = 0; k < ev.n_top && k < 3; k++) res->top[i][k] = ev.top[k];
        } else if (ev.token >= 0 && res->n_tokens < 256) {
            res->tokens[res->n_tokens] = ev.token;
            res->token_lp[res->n_tokens++] = ev.logprob;
        }
        if (ev.finish != FINISH_NONE) {
            res->finish = ev.finish;
            res->completion_tokens = ev.completion_tokens;
            break;
        }
    }
    sched_stream_free(st);
}

static sched_request lp_request(const int32_t *ids, int n, int max_tokens) {
    sched_request r = greedy_request(ids, n, max_tokens);
    r.top_logprobs = 3;
    r.prompt_logprobs = 1;
    return r;
}

/* golden top-20 logit of token id at one position, or NAN */
static double golden_logit(json_t *top20_row, int32_t id) {
    size_t k;
    json_t *e;
    json_array_foreach(top20_row, k, e) if (json_integer_value(json_array_get(e, 0)) == id) return json_real_value(json_array_get(e, 1));
    return NAN;
}

/* The golden 130-token prompt plus its first 8 greedy tokens, scored with
 * max_tokens 0 (3 steps of <= 64 logits rows): one event per prompt token, the
 * first without a logprob; the prompt part agrees with DeepSeek's reference
 * logits (log-softmax keeps logit differences), the continuation part with the
 * logprobs the engine reported while generating it, and each continuation
 * token is the top alternative (it was greedy). */
Test(sched, prompt_logprobs_match_golden_and_generation, .timeout = 120) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    json_t *g = golden("en_long");
    int n;
    int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
    json_t *top20 = json_object_get(g, "top20");
    ms_err err = {{0}};
    sched_request gr = greedy_request(ids, n, 8);
    gr.top_logprobs = 3;
    lp_result gen, sc;
    drain_lp(sched_submit(f.s, &gr, NULL, &err), &gen);
    cr_assert_eq(gen.n_tokens, 8);
    cr_expect_eq(gen.n_prompt_events, 0, "no prompt events unless asked");
    int32_t full[140];
    memcpy(full, ids, (size_t)n * sizeof *ids);
    memcpy(full + n, gen.tokens, 8 * sizeof *ids);
    sched_request r = lp_request(full, n + 8, 0);
    sched_stream *st = sched_submit(f.s, &r, NULL, &err);
    cr_assert(st, "%s", err.msg);
    drain_lp(st, &sc);
    cr_assert(!sc.timed_out);
    cr_expect_eq(sc.finish, FINISH_LENGTH);
    cr_expect_eq(sc.n_tokens, 0);
    cr_expect_eq(sc.completion_tokens, 0);
    cr_assert_eq(sc.n_prompt_events, n + 8);
    cr_expect(isnan(sc.prompt_lp[0]) && sc.n_top[0] == 0, "the first prompt token has no logprob");
    for (int i = 0; i < n + 8; i++) cr_expect_eq(sc.prompt[i], full[i], "event %d is prompt token %d", i, i);
    for (int i = 1; i < n; i++) {
        json_t *row = json_array_get(top20, (size_t)i - 1);
        cr_assert_eq(sc.n_top[i], 3);
        double g0 = golden_logit(row, sc.top[i][0].id);
        for (int k = 1; k < 3; k++) {
            double gk = golden_logit(row, sc.top[i][k].id);
            cr_expect(fabs((sc.top[i][k].logprob - sc.top[i][0].logprob) - (gk - g0)) <= 2e-4,
                      "position %d alternative %d: logprob gap %g, golden logit gap %g", i - 1, k,
                      sc.top[i][k].logprob - sc.top[i][0].logprob, gk - g0);
        }
        double gt = golden_logit(row, full[i]);
        if (!isnan(gt))
            cr_expect(fabs((sc.prompt_lp[i] - sc.top[i][0].logprob) - (gt - g0)) <= 2e-4, "position %d: token", i - 1);
    }
    for (int i = 0; i < 8; i++) {
        cr_expect(fabsf(sc.prompt_lp[n + i] - gen.token_lp[i]) <= 1e-3f, "continuation %d: %g scored, %g generated", i,
                  sc.prompt_lp[n + i], gen.token_lp[i]);
        cr_expect_eq(sc.top[n + i][0].id, gen.tokens[i], "continuation %d was the greedy choice", i);
    }
    free(ids);
    json_decref(g);
    close_fixture(&f);
}

/* A client thread: submits req, drains it into res. */
typedef struct {
    fixture *f;
    sched_request req;
    lp_result res;
} lp_client;

static void *lp_client_main(void *p) {
    lp_client *c = p;
    sched_stream *st = sched_submit(c->f->s, &c->req, NULL, NULL);
    if (st) drain_lp(st, &c->res);
    else c->res.timed_out = 1;
    return NULL;
}

/* 4 prompt-logprob requests (130 + 100 tokens each: 4 pages) on a 6-page pool
 * are preempted and recompute their prompts; each still sends every prompt
 * event exactly once, in order, and equals its solo run. */
Test(sched, prompt_logprobs_are_sent_once_across_preemption, .timeout = SLOW_TEST_TIMEOUT_S) {
    fixture f;
    open_fixture(&f, (sched_config){.max_num_seqs = 4, .max_batched_tokens = 128, .kv_cache_tokens = 384});
    json_t *g = golden("en_long");
    int n;
    int32_t *ids = ids_of(json_object_get(g, "ids"), &n);
    lp_client solo = {&f, lp_request(ids, n, 100), {0}}, cl[4];
    lp_client_main(&solo);
    cr_assert(!solo.res.timed_out);
    cr_assert_eq(solo.res.n_prompt_events, n);
    cr_assert_eq(solo.res.n_tokens, 100);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        cl[i] = (lp_client){&f, lp_request(ids, n, 100), {0}};
        pthread_create(&th[i], NULL, lp_client_main, &cl[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        const lp_result *c = &cl[i].res;
        cr_expect(!c->timed_out && c->order_ok, "client %d", i);
        cr_expect_eq(c->n_prompt_events, n, "client %d: %d prompt events", i, c->n_prompt_events);
        cr_expect_eq(memcmp(c->prompt, ids, (size_t)n * sizeof *ids), 0, "client %d: prompt tokens in order", i);
        for (int k = 1; k < n && k < c->n_prompt_events; k++)
            cr_expect(fabsf(c->prompt_lp[k] - solo.res.prompt_lp[k]) <= 1e-4f, "client %d position %d", i, k);
        cr_expect_eq(c->n_tokens, 100);
        cr_expect_eq(memcmp(c->tokens, solo.res.tokens, 100 * sizeof *ids), 0, "client %d equals its solo run", i);
    }
    sched_stats st;
    for (int k = 0; k < 200; k++) { /* the step's counters are published just after its events */
        sched_get_stats(f.s, &st);
        if (st.generation_tokens >= 500) break;
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    cr_expect(st.preemptions > 0, "the 6-page pool should have forced preemption");
    cr_expect_eq(st.generation_tokens, 500, "prompt logits rows are not generated tokens: %llu",
                 (unsigned long long)st.generation_tokens);
    free(ids);
    json_decref(g);
    close_fixture(&f);
}

Test(sched, prompt_logprobs_need_top_logprobs) {
    fixture f;
    open_fixture(&f, (sched_config){0});
    int32_t ids[2] = {0, 671};
    ms_err err = {{0}};
    sched_request r = lp_request(ids, 2, 1);
    r.top_logprobs = -1;
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    cr_expect(strstr(err.msg, "top_logprobs"), "%s", err.msg);
    r = greedy_request(ids, 2, -1);
    cr_expect_null(sched_submit(f.s, &r, NULL, &err));
    cr_expect(strstr(err.msg, "max_tokens"), "%s", err.msg);
    close_fixture(&f);
}

/* ---- batch-invariant mode (model_set_batch_invariant) */

static sched_request logprob_request(const int32_t *ids, int n) {
    sched_request r = greedy_request(ids, n, 24);
    r.top_logprobs = 2;
    return r;
}

/* #3's batch invariance, held exactly: 16 concurrent greedy requests (7
 * prompts, chunked differently under a 40-token step budget, prefix-cache hits
 * for the repeats, decode batches of 1..8) give the tokens and the logprob
 * bits of each prompt's solo run. */
Test(sched, batch_invariant_mode_concurrent_equals_solo_bitwise, .timeout = SLOW_TEST_TIMEOUT_S) {
    fixture f;
    open_fixture(&f, (sched_config){.max_num_seqs = 8, .max_batched_tokens = 40});
    ms_err err = {{0}};
    sched_free(f.s); /* the mode is set before the engine runs */
    cr_assert_eq(model_set_batch_invariant(f.m, 1, &err), 0, "%s", err.msg);
    sched_config cfg = {.max_num_seqs = 8, .max_batched_tokens = 40};
    f.s = sched_create(f.m, f.tok, &cfg, &err);
    cr_assert(f.s, "%s", err.msg);
    lp_client solo[7], cl[16];
    int32_t *ids[7];
    for (int p = 0; p < 7; p++) {
        json_t *g = golden(prompts[p]);
        int n;
        ids[p] = ids_of(json_object_get(g, "ids"), &n);
        solo[p] = (lp_client){&f, logprob_request(ids[p], n), {0}};
        json_decref(g);
        lp_client_main(&solo[p]);
        cr_assert(!solo[p].res.timed_out && solo[p].res.n_tokens == 24, "solo %s", prompts[p]);
    }
    pthread_t th[16];
    for (int i = 0; i < 16; i++) {
        cl[i] = (lp_client){&f, solo[i % 7].req, {0}};
        pthread_create(&th[i], NULL, lp_client_main, &cl[i]);
    }
    for (int i = 0; i < 16; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 16; i++) {
        const lp_result *a = &cl[i].res, *b = &solo[i % 7].res;
        cr_expect(!a->timed_out, "client %d", i);
        cr_expect_eq(a->n_tokens, b->n_tokens, "client %d", i);
        cr_expect_eq(memcmp(a->tokens, b->tokens, sizeof a->tokens), 0, "client %d (%s): tokens differ from solo", i,
                     prompts[i % 7]);
        cr_expect_eq(memcmp(a->token_lp, b->token_lp, sizeof a->token_lp), 0,
                     "client %d (%s): logprob bits differ from solo", i, prompts[i % 7]);
    }
    for (int p = 0; p < 7; p++) free(ids[p]);
    close_fixture(&f);
}
