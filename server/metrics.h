/* server/metrics.h — the serving metrics of `mlaserve serve` and their
 * Prometheus text rendering.
 *
 * Owns: counters and histograms fed by the HTTP workers (one observation per
 * finished request, one per inter-token gap) plus a renderer that also takes
 * the scheduler's gauges (engine/sched.h sched_stats). Names follow vLLM's
 * one to one with the `mlaserve:` prefix in place of `vllm:` (table in
 * docs/operations.md), so existing Grafana dashboards only need the prefix
 * changed; histogram buckets are vLLM's.
 *
 * Thread-safety: metrics_* functions lock the struct's own mutex; call them
 * from any thread. */
#ifndef MS_METRICS_H
#define MS_METRICS_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/sched.h"

#define METRICS_MAX_BUCKETS 32

typedef struct histogram {
    const double *bounds;    /* upper bounds, ascending; +Inf is implicit */
    int n_bounds;
    uint64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    uint64_t count;
    double sum;
} histogram;

void histogram_init(histogram *h, const double *bounds, int n_bounds);
void histogram_observe(histogram *h, double v);

/* What one finished generation request contributes. */
typedef struct request_record {
    finish_reason finish;    /* of the request (the first choice that ended abnormally, else the last) */
    int failed, cancelled;
    double ttft_s;           /* < 0: no token was generated */
    double e2e_s;
    int prompt_tokens, completion_tokens;
    int max_tokens, n;
} request_record;

typedef struct serving_metrics {
    pthread_mutex_t mu;
    histogram ttft_s, itl_s, e2e_s, prompt_tokens, generation_tokens, max_tokens, n;
    uint64_t success[5];     /* by finish_reason: stop, length, abort (cancelled), error */
    uint64_t status_count[600];
} serving_metrics;

void metrics_init(serving_metrics *m);
void metrics_destroy(serving_metrics *m);
void metrics_record_request(serving_metrics *m, const request_record *r);
/* One inter-token gap of a stream (seconds between two token events). */
void metrics_record_itl(serving_metrics *m, double gap_s);
void metrics_record_status(serving_metrics *m, int status);

/* Everything, in Prometheus text format 0.0.4. st may be NULL (engine not
 * loaded yet: gauges 0). ready: the server accepts requests; inflight:
 * generations being answered. */
void metrics_write(FILE *f, serving_metrics *m, const sched_stats *st, int ready, int inflight);

/* Per data-parallel rank (label rank="r"): running/waiting requests, free KV
 * pages, finished sequences; and per routed expert (label expert="e"): rows the
 * expert has run, summed over layers — the load-balance view of expert
 * parallelism (also with one rank). */
void metrics_write_ep(FILE *f, const sched_stats *ranks, int n_ranks, const uint64_t *expert_tokens, int n_experts);

#endif
