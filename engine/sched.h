/* engine/sched.h — the engine thread: a request queue feeding iteration-level
 * (continuous) batching over the model, with per-request event streams.
 *
 * Threads: sched_submit / sched_stream_next / sched_stream_cancel /
 * sched_stream_free / sched_stats are called from any thread (HTTP workers);
 * the model runs only on the scheduler's own engine thread, which never blocks
 * on a client. They meet in a mutex-protected waiting queue (requests in) and a
 * per-request stream of events (tokens out).
 *
 * Every engine step: running sequences each contribute one decode token; waiting
 * requests are admitted FCFS while free KV pages and the token budget
 * (max_batched_tokens) allow, long prompts split into chunks; all of it runs as
 * one model_forward. When pages run out during decode, the youngest running
 * sequence is preempted (pages freed, prompt + generated tokens recomputed later,
 * its stream unaffected). Finished or cancelled sequences leave at once.
 *
 * Text: the engine detokenizes incrementally (never half a UTF-8 character) and
 * applies stop strings itself: text that could be the start of a stop string is
 * held back until it is known not to be, and a matched stop string never reaches
 * the stream. Greedy output of a request does not depend on the batch.
 *
 * Counters: a step's events reach the streams only after the step's counters
 * are published (sched_get_stats), so a client holding a token or the end of
 * its stream sees them counted (tokens, finished requests, pages freed). */
#ifndef MS_SCHED_H
#define MS_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/sample.h"
#include "common/tokenizer.h"
#include "engine/model.h"

#define SCHED_MAX_STOP 8
#define SCHED_MAX_STOP_IDS 64
#define SCHED_MAX_TOP_LOGPROBS 20
/* Prompt tokens per step whose logprobs (sched_request.prompt_logprobs) one
 * step computes at most, over all sequences: the engine's logits buffer holds
 * max_num_seqs + this many rows of vocab_size floats. */
#define SCHED_PROMPT_LOGPROB_ROWS 64

typedef enum {
    FINISH_NONE = 0,
    FINISH_STOP,      /* EOS, a stop token or a stop string */
    FINISH_LENGTH,    /* max_tokens or the context limit */
    FINISH_CANCELLED, /* the client went away (sched_stream_cancel) */
    FINISH_ERROR      /* the engine failed this request; message in the event */
} finish_reason;

typedef struct sched_config {
    int max_num_seqs;        /* running sequences at most (default 16) */
    int max_batched_tokens;  /* tokens per step at most (default 512) */
    int kv_cache_tokens;     /* KV pool size in tokens (default 16384) */
    int max_model_len;       /* prompt + completion limit (default: the model's, capped by the pool) */
    int max_queue;           /* waiting requests at most; submit fails beyond (default 256) */
    int no_prefix_caching;   /* 1 disables reuse of cached prompt pages */
    /* Expert parallelism only: called once, from an engine thread, when the
     * world fails (a rank's step failed); every request then ends with
     * FINISH_ERROR and later submissions fail. */
    void (*on_fatal)(void *ctx, const char *message);
    void *fatal_ctx;
    /* Expert parallelism, a node other than node 0: its ranks join every step
     * agreement of the world even with no work (node 0's front decides when the
     * world steps; server/ep_launch.h), instead of waiting for local work. */
    int follow_world;
} sched_config;

/* A per-request constraint on the tokens the sampler may pick (structured
 * outputs, forced tool calls). The engine calls, on its own thread:
 *   mask(ctx, logits, tokens_left)  before each sampling: set logits[i] to
 *       -INFINITY for every token that may not come next (tokens_left: tokens
 *       the request may still generate, this one included); returns how many
 *       are allowed, <= 0 when nothing is (the request then fails);
 *   accept(ctx, token)  after sampling: advance; -1 if token was not allowed;
 *   complete(ctx)       1 once the output is complete: the request then ends
 *                       with FINISH_STOP without sampling an EOS;
 *   free(ctx)           when the request ends (or its submission fails).
 * Logprobs of a constrained request are those of the masked distribution. */
typedef struct sched_constraint {
    void *ctx;               /* NULL: unconstrained */
    int (*mask)(void *ctx, float *logits, int tokens_left);
    int (*accept)(void *ctx, int32_t token);
    int (*complete)(void *ctx);
    void (*free)(void *ctx);
} sched_constraint;

typedef struct sched_request {
    const int32_t *prompt;   /* copied by sched_submit */
    int n_prompt;
    int max_tokens;          /* completion tokens at most; 0: compute the prompt only, then FINISH_LENGTH */
    sample_params sampling;
    /* OpenAI logit_bias: n_bias (bias_ids[i], bias_values[i]) pairs added to
     * the logits the sampler draws from (common/sample.h step 0; copied by
     * sched_submit). Logprobs stay those of the model's logits. */
    const int32_t *bias_ids;
    const float *bias_values;
    int n_bias;
    int ignore_eos;
    const char *stop[SCHED_MAX_STOP]; /* stop strings (copied), NULL-terminated or n_stop */
    int n_stop;
    int include_stop;        /* vLLM include_stop_str_in_output: a matched stop string stays in the text */
    /* vLLM stop_token_ids: generating one of these ends the request (FINISH_STOP)
     * like EOS, its text kept unless it is a special token skipped by
     * skip_special (copied, at most SCHED_MAX_STOP_IDS). */
    const int32_t *stop_ids;
    int n_stop_ids;
    /* vLLM min_tokens: before this many completion tokens, EOS and stop_ids
     * cannot be sampled (logprobs still show the model's values) and stop
     * strings are not looked for. At most max_tokens. */
    int min_tokens;
    int top_logprobs;        /* -1: no logprobs; 0..20: chosen token's logprob + that many alternatives */
    /* 1: also one event per prompt token (sched_event.prompt), before any
     * generated token, with its logprob given the tokens before it and
     * top_logprobs alternatives (needs top_logprobs >= 0). Such a prompt is
     * computed in full (no prefix-cache reuse), at most
     * SCHED_PROMPT_LOGPROB_ROWS tokens per step; after a preemption its
     * events are not sent again. */
    int prompt_logprobs;
    int skip_special;        /* detokenize without special tokens (default 1 for chat) */
    sched_constraint constraint; /* owned by the scheduler from sched_submit on, even when it fails */
} sched_request;

typedef struct sched_logprob {
    int32_t id;
    float logprob;
} sched_logprob;

/* One event of a stream: a generated token and the text it completed (possibly
 * empty while a UTF-8 character or a possible stop string is pending), or the
 * end of the stream (finish != FINISH_NONE, possibly with final text), or a
 * prompt token's logprobs (prompt = 1: no text; the first prompt token has
 * no logprob: NAN, n_top 0). */
typedef struct sched_event {
    int32_t token;           /* -1 for a pure finish event */
    int prompt;              /* 1: token is a prompt token (sched_request.prompt_logprobs) */
    char *text;              /* malloc'd, NUL-terminated; owned by the caller after next() */
    size_t text_len;
    float logprob;           /* of token, when requested */
    int rank;                /* prompt token events: 1 + how many tokens had a higher logit (0: not computed) */
    int n_top;
    sched_logprob top[SCHED_MAX_TOP_LOGPROBS];
    finish_reason finish;
    char error[256];         /* FINISH_ERROR only */
    int prompt_tokens, completion_tokens; /* running totals */
    int cached_tokens;       /* prompt tokens whose KV came from the prefix cache */
    double time_s;           /* CLOCK_MONOTONIC seconds when the engine emitted it */
} sched_event;

typedef struct sched sched;
typedef struct sched_stream sched_stream;

typedef struct sched_stats {
    int running, waiting;
    int kv_pages_total, kv_pages_free;
    uint64_t requests_finished, prompt_tokens, generation_tokens, preemptions, steps;
    uint64_t prefix_cache_queries, prefix_cache_hits; /* prompt tokens looked up / found */
} sched_stats;

/* Starts the engine thread over model m (not owned) and tok (not owned). */
sched *sched_create(model *m, const tokenizer *tok, const sched_config *cfg, ms_err *err);

/* Expert parallelism (engine/ep.h): models[r] is rank r of one world
 * (model_set_ep); the world may have more ranks than n_ranks (other nodes' ranks
 * that follow the step agreement of server/ep_launch.h with no sequences:
 * ep_follow). Returns a front scheduler with the same API: one engine thread,
 * KV pool and running set per rank (cfg applies to each rank: kv_cache_tokens
 * and max_num_seqs are per rank); each new request goes to the rank with the
 * most free KV pages, or, when it continues an earlier prompt's page-aligned
 * prefix and that rank has room, to where that prompt went (prefix-cache
 * affinity: engine/prefix_affinity.h); all ranks step together while any has
 * work (an idle rank steps with no tokens, running its experts for the
 * others); stats add up. */
sched *sched_create_ep(model *const *models, int n_ranks, const tokenizer *tok, const sched_config *cfg, ms_err *err);
/* Stops the engine thread; waiting and running requests finish with FINISH_CANCELLED. */
void sched_free(sched *s);

/* Data-parallel ranks on other nodes (server/ep_remote.h carries the calls).
 * A front (sched_create_ep) given these also assigns new sequences to them,
 * after its own ranks by index, on the same rule (most free KV pages, then
 * fewest sequences; prefix affinity); constrained requests (a constraint ctx)
 * stay local. For a remote sequence the front validates the request, creates
 * its stream and calls submit; the transport then hands the stream its events
 * with sched_stream_deliver, the last one (finish set) exactly once. A remote
 * sequence counts as work of the world until its last event is delivered. */
typedef struct sched_remote {
    int n_ranks;
    void *ctx;
    /* 0, or -1 with err (queue_full set when it is a capacity refusal); st is
     * the transport's from success on, until its last event is delivered. */
    int (*submit)(void *ctx, int rank, const sched_request *req, sched_stream *st, int *queue_full, ms_err *err);
    void (*cancel)(void *ctx, sched_stream *st); /* any thread; idempotent */
    void (*stats)(void *ctx, int rank, sched_stats *out); /* the last known */
    /* the last known sched_get_rank_room of the rank */
    void (*room)(void *ctx, int rank, long *free_pages, long *load);
    /* out[e] += the last known rows routed expert e ran on the remote ranks, e < n (NULL: none) */
    void (*expert_tokens)(void *ctx, uint64_t *out, int n);
} sched_remote;

/* Before the first submission; the front keeps a copy of *rm. */
void sched_set_remote(sched *front, const sched_remote *rm);
/* The transport queues ev on a remote stream (takes ownership of ev->text). */
void sched_stream_deliver(sched_stream *st, const sched_event *ev);
/* The transport's id for a remote stream (set once, before submit returns). */
void sched_stream_set_tag(sched_stream *st, uint64_t tag);
uint64_t sched_stream_tag(const sched_stream *st);

/* Queues a request on data-parallel rank `rank` of a front (its own ranks
 * only), or as sched_submit when rank < 0: what a node runs for node 0. */
sched_stream *sched_submit_rank(sched *front, int rank, const sched_request *req, int *queue_full, ms_err *err);
/* The effective limits (defaults filled in). */
const sched_config *sched_get_config(const sched *s);

/* Queues a request. Returns a stream, or NULL with err when the request is
 * invalid (the message names the field: prompt too long for the context, ...)
 * or the queue is full (*queue_full set to 1). */
sched_stream *sched_submit(sched *s, const sched_request *req, int *queue_full, ms_err *err);
/* Blocks until the next event (or timeout_ms passes: returns 0 with no event;
 * timeout_ms < 0 waits forever). Returns 1 with *ev filled. After an event with
 * finish != FINISH_NONE there are no more. */
int sched_stream_next(sched_stream *st, sched_event *ev, int timeout_ms);
/* Asks the engine to stop the request at its next step (idempotent). */
void sched_stream_cancel(sched_stream *st);
/* Releases the caller's handle (cancels the request if it is still running). */
void sched_stream_free(sched_stream *st);

void sched_get_stats(sched *s, sched_stats *out);

/* Data-parallel ranks (1 without expert parallelism) and one rank's stats. */
int sched_n_ranks(const sched *s);
void sched_get_rank_stats(sched *s, int rank, sched_stats *out);
/* What rank assignment weighs: free KV pages less what waiting sequences need,
 * and running + waiting sequences. */
void sched_get_rank_room(sched *s, int rank, long *free_pages, long *load);

/* out[e] = rows routed expert e has run, summed over ranks and layers (a
 * front's remote ranks too, as last reported); returns the number of experts
 * written (at most cap). */
int sched_expert_tokens(sched *s, uint64_t *out, int cap);

#endif
