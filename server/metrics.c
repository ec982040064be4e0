/* server/metrics.c — see metrics.h. */
#include "server/metrics.h"

#include <string.h>

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                     1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,  0.4, 0.5,
                                    0.75, 1.0,   2.5,  5.0,   7.5,  10.0, 20.0, 40.0, 80.0};
static const double e2e_bounds[] = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
                                    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
static const double token_bounds[] = {1,    2,    5,     10,    20,    50,     100,    200,    500,
                                      1000, 2000, 5000,  10000, 20000, 50000,  100000, 200000};
static const double n_bounds[] = {1, 2, 5, 10, 20, 50};

#define COUNT(a) ((int)(sizeof a / sizeof *a))

void histogram_init(histogram *h, const double *bounds, int n_bounds) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n_bounds < METRICS_MAX_BUCKETS ? n_bounds : METRICS_MAX_BUCKETS;
}

void histogram_observe(histogram *h, double v) {
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->count++;
    h->sum += v;
}

void metrics_init(serving_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    histogram_init(&m->ttft_s, ttft_bounds, COUNT(ttft_bounds));
    histogram_init(&m->itl_s, itl_bounds, COUNT(itl_bounds));
    histogram_init(&m->e2e_s, e2e_bounds, COUNT(e2e_bounds));
    histogram_init(&m->prompt_tokens, token_bounds, COUNT(token_bounds));
    histogram_init(&m->generation_tokens, token_bounds, COUNT(token_bounds));
    histogram_init(&m->max_tokens, token_bounds, COUNT(token_bounds));
    histogram_init(&m->n, n_bounds, COUNT(n_bounds));
}

void metrics_destroy(serving_metrics *m) { pthread_mutex_destroy(&m->mu); }

/* index into success[]: stop, length, abort, error */
static int outcome_index(const request_record *r) {
    if (r->cancelled) return 2;
    if (r->failed) return 3;
    return r->finish == FINISH_LENGTH ? 1 : 0;
}

void metrics_record_request(serving_metrics *m, const request_record *r) {
    pthread_mutex_lock(&m->mu);
    m->success[outcome_index(r)]++;
    if (!r->cancelled && !r->failed) {
        if (r->ttft_s >= 0) histogram_observe(&m->ttft_s, r->ttft_s);
        histogram_observe(&m->e2e_s, r->e2e_s);
        histogram_observe(&m->prompt_tokens, r->prompt_tokens);
        histogram_observe(&m->generation_tokens, r->completion_tokens);
        histogram_observe(&m->max_tokens, r->max_tokens);
        histogram_observe(&m->n, r->n);
    }
    pthread_mutex_unlock(&m->mu);
}

void metrics_record_itl(serving_metrics *m, double gap_s) {
    pthread_mutex_lock(&m->mu);
    histogram_observe(&m->itl_s, gap_s);
    pthread_mutex_unlock(&m->mu);
}

void metrics_record_status(serving_metrics *m, int status) {
    if (status < 100 || status >= 600) return;
    pthread_mutex_lock(&m->mu);
    m->status_count[status]++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

static void head(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(FILE *f, const char *name, const char *help, double v) {
    head(f, name, "gauge", help);
    fprintf(f, "%s %.17g\n", name, v);
}

static void counter(FILE *f, const char *name, const char *help, double v) {
    head(f, name, "counter", help);
    fprintf(f, "%s %.17g\n", name, v);
}

static void write_histogram(FILE *f, const char *name, const char *help, const histogram *h) {
    head(f, name, "histogram", help);
    uint64_t cum = 0;
    for (int b = 0; b < h->n_bounds; b++) {
        cum += h->counts[b];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[b], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)cum, name,
            h->sum, name, (unsigned long long)h->count);
}

static void write_engine(FILE *f, const sched_stats *st, int ready, int inflight) {
    sched_stats z = {0};
    if (!st) st = &z;
    gauge(f, "mlaserve:ready", "1 when the model is loaded and the server accepts requests", ready);
    gauge(f, "mlaserve:num_requests_running", "Requests in the running batch", st->running);
    gauge(f, "mlaserve:num_requests_waiting", "Requests waiting to be scheduled", st->waiting);
    gauge(f, "mlaserve:num_requests_inflight", "Generation requests being answered over HTTP", inflight);
    gauge(f, "mlaserve:kv_cache_usage_perc", "KV cache usage, 0 to 1 (prefix-cached pages not in use count as free)",
          st->kv_pages_total ? 1.0 - (double)st->kv_pages_free / st->kv_pages_total : 0.0);
    gauge(f, "mlaserve:kv_pages_total", "KV cache pages (64 tokens each)", st->kv_pages_total);
    gauge(f, "mlaserve:kv_pages_free", "KV cache pages free or holding only reclaimable prefix-cache data",
          st->kv_pages_free);
    counter(f, "mlaserve:prompt_tokens_total", "Prompt tokens processed (prefilled)", (double)st->prompt_tokens);
    counter(f, "mlaserve:generation_tokens_total", "Tokens generated", (double)st->generation_tokens);
    counter(f, "mlaserve:num_preemptions_total", "Sequences preempted for lack of KV pages", (double)st->preemptions);
    counter(f, "mlaserve:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache",
            (double)st->prefix_cache_queries);
    counter(f, "mlaserve:prefix_cache_hits_total", "Prompt tokens found in the prefix cache",
            (double)st->prefix_cache_hits);
    counter(f, "mlaserve:engine_steps_total", "Engine steps (model forwards)", (double)st->steps);
    counter(f, "mlaserve:engine_requests_finished_total", "Sequences the engine finished",
            (double)st->requests_finished);
}

static void write_requests(FILE *f, const serving_metrics *m) {
    static const char *const reasons[] = {"stop", "length", "abort", "error"};
    head(f, "mlaserve:request_success_total", "counter", "Finished generation requests by finish reason");
    for (int i = 0; i < 4; i++)
        fprintf(f, "mlaserve:request_success_total{finished_reason=\"%s\"} %llu\n", reasons[i],
                (unsigned long long)m->success[i]);
    head(f, "mlaserve:http_requests_total", "counter", "HTTP responses by status code");
    for (int code = 100; code < 600; code++)
        if (m->status_count[code])
            fprintf(f, "mlaserve:http_requests_total{code=\"%d\"} %llu\n", code,
                    (unsigned long long)m->status_count[code]);
    write_histogram(f, "mlaserve:time_to_first_token_seconds", "Time from request arrival to the first token",
                    &m->ttft_s);
    write_histogram(f, "mlaserve:inter_token_latency_seconds", "Time between consecutive tokens of a stream",
                    &m->itl_s);
    write_histogram(f, "mlaserve:e2e_request_latency_seconds", "Time from request arrival to its last token",
                    &m->e2e_s);
    write_histogram(f, "mlaserve:request_prompt_tokens", "Prompt tokens per request", &m->prompt_tokens);
    write_histogram(f, "mlaserve:request_generation_tokens", "Generated tokens per request", &m->generation_tokens);
    write_histogram(f, "mlaserve:request_params_max_tokens", "max_tokens per request", &m->max_tokens);
    write_histogram(f, "mlaserve:request_params_n", "n per request", &m->n);
}

void metrics_write(FILE *f, serving_metrics *m, const sched_stats *st, int ready, int inflight) {
    write_engine(f, st, ready, inflight);
    pthread_mutex_lock(&m->mu);
    write_requests(f, m);
    pthread_mutex_unlock(&m->mu);
}

void metrics_write_ep(FILE *f, const sched_stats *ranks, int n_ranks, const uint64_t *expert_tokens, int n_experts) {
    head(f, "mlaserve:dp_rank_requests_running", "gauge", "Requests running on each data-parallel rank");
    for (int r = 0; r < n_ranks; r++) fprintf(f, "mlaserve:dp_rank_requests_running{rank=\"%d\"} %d\n", r, ranks[r].running);
    head(f, "mlaserve:dp_rank_requests_waiting", "gauge", "Requests waiting on each data-parallel rank");
    for (int r = 0; r < n_ranks; r++) fprintf(f, "mlaserve:dp_rank_requests_waiting{rank=\"%d\"} %d\n", r, ranks[r].waiting);
    head(f, "mlaserve:dp_rank_kv_pages_free", "gauge", "Free KV pages on each data-parallel rank");
    for (int r = 0; r < n_ranks; r++)
        fprintf(f, "mlaserve:dp_rank_kv_pages_free{rank=\"%d\"} %d\n", r, ranks[r].kv_pages_free);
    head(f, "mlaserve:dp_rank_requests_finished_total", "counter", "Sequences finished on each data-parallel rank");
    for (int r = 0; r < n_ranks; r++)
        fprintf(f, "mlaserve:dp_rank_requests_finished_total{rank=\"%d\"} %llu\n", r,
                (unsigned long long)ranks[r].requests_finished);
    head(f, "mlaserve:expert_tokens_total", "counter", "Token rows each routed expert has run (summed over MoE layers)");
    for (int e = 0; e < n_experts; e++)
        fprintf(f, "mlaserve:expert_tokens_total{expert=\"%d\"} %llu\n", e, (unsigned long long)expert_tokens[e]);
}
