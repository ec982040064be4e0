/* engine/sched.c — see sched.h. The engine thread and its queues.
 *
 * Sequence life: WAITING (in s->waiting, FCFS; preempted ones go back to the
 * front) -> RUNNING (in s->running, ordered by admission; KV pages held) ->
 * finished (stream closed, pages released). A running sequence computes
 * tokens[n_computed .. n_tokens) each step — one token when decoding, a chunk
 * when its prompt (or a recomputation after preemption) is being prefilled —
 * and samples when the chunk reaches its last token. */
#include "engine/sched.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/prefix_affinity.h"
#include "engine/sched_text.h"

/* The ranks of an expert-parallel world (sched_create_ep) share this: how many
 * sequences are queued or running anywhere (an idle rank must keep stepping,
 * with no tokens, while any rank has work), the stop flag and the first fatal
 * error. */
typedef struct sched_group {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy;
    int stopping;
    int failed;
    char error[sizeof(ms_err) + 32];
} sched_group;

/* ------------------------------------------------------------ the stream */

typedef struct event_node {
    sched_event ev;
    struct event_node *next;
} event_node;

struct sched_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    event_node *head, *tail;
    int refs;               /* engine + client */
    int closed;             /* the final event was queued */
    atomic_int cancelled;
    sched *owner;           /* the rank; for a remote sequence the front */
    int remote;             /* events come from sched_stream_deliver */
    uint64_t tag;           /* the transport's id (remote) */
};

static void stream_unref(sched_stream *st) {
    pthread_mutex_lock(&st->mu);
    int left = --st->refs;
    pthread_mutex_unlock(&st->mu);
    if (left) return;
    for (event_node *n = st->head, *next; n; n = next) {
        next = n->next;
        free(n->ev.text);
        free(n);
    }
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}

/* Queues ev (takes ownership of ev->text). */
static double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void stream_push(sched_stream *st, const sched_event *ev) {
    event_node *n = malloc(sizeof *n);
    pthread_mutex_lock(&st->mu);
    if (!n) { /* out of memory: deliver at least the end of the stream */
        free(ev->text);
        if (!st->closed) {
            static const sched_event oom = {.token = -1, .finish = FINISH_ERROR, .error = "out of memory"};
            n = malloc(sizeof *n); /* last try; if this fails too the client times out */
            if (n) n->ev = oom;
        }
    } else {
        n->ev = *ev;
    }
    if (n) n->ev.time_s = monotonic_s();
    if (n && !st->closed) {
        n->next = NULL;
        if (st->tail) st->tail->next = n; else st->head = n;
        st->tail = n;
        if (n->ev.finish != FINISH_NONE) st->closed = 1;
        pthread_cond_signal(&st->cv);
    } else if (n) {
        free(n->ev.text);
        free(n);
    }
    pthread_mutex_unlock(&st->mu);
}

int sched_stream_next(sched_stream *st, sched_event *ev, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&st->mu);
    while (!st->head) {
        if (timeout_ms < 0) pthread_cond_wait(&st->cv, &st->mu);
        else if (pthread_cond_timedwait(&st->cv, &st->mu, &deadline) == ETIMEDOUT) break;
    }
    event_node *n = st->head;
    if (n) {
        st->head = n->next;
        if (!st->head) st->tail = NULL;
    }
    pthread_mutex_unlock(&st->mu);
    if (!n) return 0;
    *ev = n->ev;
    free(n);
    return 1;
}

/* ------------------------------------------------------------ sequences */

typedef struct seq {
    sched_stream *stream;
    int32_t *tokens;        /* prompt + generated */
    int n_tokens, cap_tokens;
    int n_prompt, n_generated, n_computed;
    int n_cached;           /* prompt tokens taken from the prefix cache at first admission */
    int max_tokens, ignore_eos, top_logprobs;
    int min_tokens;         /* sched_request.min_tokens */
    int32_t *stop_ids;      /* sched_request.stop_ids (copy) */
    int n_stop_ids;
    int prompt_lp;          /* sched_request.prompt_logprobs */
    int lp_done;            /* prompt tokens whose events went out (prompt_lp) */
    kv_seq kv;
    sampler *smp;
    sched_text text;        /* detokenizer + stop-string holdback */
    sched_constraint cons;  /* ctx NULL: none */
    uint64_t admitted;      /* admission order: larger = younger */
    int queued_pages;       /* pages counted in sched.waiting_pages while it waits */
    struct seq *next;       /* waiting list link */
} seq;

struct sched {
    model *m;
    const tokenizer *tok;
    sched_config cfg;
    kv_cache kv;
    pthread_t thread;
    pthread_mutex_t mu;     /* guards waiting, n_waiting, stopping, stats */
    pthread_cond_t wake;
    seq *waiting, *waiting_tail;
    int n_waiting;
    int stopping;
    seq **running;          /* engine thread only */
    int n_running;
    uint64_t admissions;
    sched_stats stats;
    float *logits;          /* [max_num_seqs + SCHED_PROMPT_LOGPROB_ROWS, vocab] */
    /* per-step batch arrays, sized max_batched_tokens + max_num_seqs */
    int32_t *b_tokens, *b_pos, *b_seq, *b_rows; /* b_rows: as many as logits */
    kv_seq **b_seqs;
    seq **b_owner;          /* sequence of each batch run */
    int *b_samples;         /* per run: 1 if its last token's logits are sampled */
    int waiting_pages;      /* pages the waiting sequences need (guarded by mu) */
    /* events of the step being run, delivered after its counters are published
     * (a client that sees its last token then sees /metrics count it) */
    struct outbox_item *outbox;
    int n_outbox, cap_outbox, deferring;
    /* expert parallelism: a rank has comm + group; the front has ranks (and no engine thread) */
    comm *comm;
    sched_group *group;
    sched **ranks;
    int n_ranks;
    prefix_affinity *affinity; /* the front's: where prompt prefixes went */
    sched_remote remote;       /* the front's ranks on other nodes (n_ranks 0: none) */
};

typedef struct outbox_item {
    sched_stream *st; /* holds a reference until delivered */
    sched_event ev;
} outbox_item;

static void stream_ref(sched_stream *st) {
    pthread_mutex_lock(&st->mu);
    st->refs++;
    pthread_mutex_unlock(&st->mu);
}

/* Queues ev for st: at once, or during a step at its end (outbox_flush); out
 * of memory for the outbox, at once. */
static void emit(sched *s, sched_stream *st, const sched_event *ev) {
    if (s->deferring && s->n_outbox == s->cap_outbox) {
        int cap = s->cap_outbox ? 2 * s->cap_outbox : 64;
        outbox_item *g = realloc(s->outbox, (size_t)cap * sizeof *g);
        if (g) s->outbox = g, s->cap_outbox = cap;
    }
    if (!s->deferring || s->n_outbox == s->cap_outbox) {
        stream_push(st, ev);
        return;
    }
    stream_ref(st);
    s->outbox[s->n_outbox++] = (outbox_item){st, *ev};
}

/* Delivers the step's events in the order they were emitted. */
static void outbox_flush(sched *s) {
    for (int i = 0; i < s->n_outbox; i++) {
        stream_push(s->outbox[i].st, &s->outbox[i].ev);
        stream_unref(s->outbox[i].st);
    }
    s->n_outbox = 0;
}

static void constraint_free(sched_constraint *c) {
    if (c->ctx && c->free) c->free(c->ctx);
    c->ctx = NULL;
}

static void seq_free(seq *q) {
    if (!q) return;
    constraint_free(&q->cons);
    free(q->tokens);
    free(q->stop_ids);
    sampler_free(q->smp);
    sched_text_free(&q->text);
    free(q);
}

static void group_add_busy(sched_group *g, int d) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->busy += d;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Queues q at the back (or the front) of the waiting list; caller holds s->mu. */
static void enqueue_locked(sched *s, seq *q, int front) {
    q->queued_pages = kv_pages_for(q->n_tokens + 1);
    s->waiting_pages += q->queued_pages;
    s->n_waiting++;
    if (front) {
        q->next = s->waiting;
        s->waiting = q;
        if (!s->waiting_tail) s->waiting_tail = q;
        return;
    }
    q->next = NULL;
    if (s->waiting_tail) s->waiting_tail->next = q; else s->waiting = q;
    s->waiting_tail = q;
}

/* Ends q's stream with `reason` (flushing held-back text unless cancelled). */
static void seq_finish(sched *s, seq *q, finish_reason reason, const char *error) {
    sched_event ev = {.token = -1, .finish = reason};
    if (reason == FINISH_STOP || reason == FINISH_LENGTH) ev.text = sched_text_flush(&q->text, &ev.text_len);
    if (error) snprintf(ev.error, sizeof ev.error, "%s", error);
    ev.prompt_tokens = q->n_prompt;
    ev.completion_tokens = q->n_generated;
    ev.cached_tokens = q->n_cached;
    kv_seq_release(&s->kv, &q->kv);
    pthread_mutex_lock(&s->mu); /* counted before the client can see the end */
    s->stats.requests_finished++;
    pthread_mutex_unlock(&s->mu);
    group_add_busy(s->group, -1);
    emit(s, q->stream, &ev);
    stream_unref(q->stream);
    seq_free(q);
}

static int seq_append(seq *q, int32_t tok) {
    if (q->n_tokens == q->cap_tokens) {
        int cap = q->cap_tokens * 2;
        int32_t *g = realloc(q->tokens, (size_t)cap * sizeof *g);
        if (!g) return -1;
        q->tokens = g;
        q->cap_tokens = cap;
    }
    q->tokens[q->n_tokens++] = tok;
    return 0;
}

/* ------------------------------------------------------------ submit */

static int validate(const sched *s, const sched_request *r, ms_err *err) {
    if (r->n_prompt < 1) return ms_err_set(err, "the prompt is empty");
    if (r->max_tokens < 0) return ms_err_set(err, "max_tokens must be at least 0, got %d", r->max_tokens);
    if (r->prompt_logprobs && r->top_logprobs < 0) return ms_err_set(err, "prompt_logprobs needs top_logprobs >= 0");
    if ((long)r->n_prompt + r->max_tokens > s->cfg.max_model_len)
        return ms_err_set(err, "this model's maximum context length is %d tokens; the request has %d prompt tokens "
                          "and asks for %d completion tokens", s->cfg.max_model_len, r->n_prompt, r->max_tokens);
    int V = s->m->cfg.vocab_size;
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= V)
            return ms_err_set(err, "prompt token %d is out of range [0, %d)", r->prompt[i], V);
    if (r->top_logprobs > SCHED_MAX_TOP_LOGPROBS)
        return ms_err_set(err, "top_logprobs must be at most %d", SCHED_MAX_TOP_LOGPROBS);
    if (r->n_stop < 0 || r->n_stop > SCHED_MAX_STOP) return ms_err_set(err, "at most %d stop strings", SCHED_MAX_STOP);
    if (r->n_bias < 0 || (r->n_bias > 0 && (!r->bias_ids || !r->bias_values)))
        return ms_err_set(err, "logit_bias: bad list");
    if (sample_logit_bias_validate(r->bias_ids, r->bias_values, (size_t)r->n_bias, V, err)) return -1;
    if (r->n_stop_ids < 0 || r->n_stop_ids > SCHED_MAX_STOP_IDS || (r->n_stop_ids > 0 && !r->stop_ids))
        return ms_err_set(err, "stop_token_ids: at most %d ids", SCHED_MAX_STOP_IDS);
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] < 0 || r->stop_ids[i] >= V)
            return ms_err_set(err, "stop_token_ids: token %d is out of range [0, %d)", r->stop_ids[i], V);
    if (r->min_tokens < 0 || r->min_tokens > r->max_tokens)
        return ms_err_set(err, "min_tokens must be in [0, max_tokens = %d], got %d", r->max_tokens, r->min_tokens);
    return sample_params_validate(&r->sampling, err);
}

static seq *seq_create(sched *s, const sched_request *r, ms_err *err) {
    seq *q = calloc(1, sizeof *q);
    if (!q) { ms_err_set(err, "out of memory"); return NULL; }
    q->cap_tokens = r->n_prompt + 16;
    q->tokens = malloc((size_t)q->cap_tokens * sizeof *q->tokens);
    q->smp = sampler_create(&r->sampling, s->m->cfg.vocab_size, err);
    if (q->smp && sampler_set_logit_bias(q->smp, r->bias_ids, r->bias_values, (size_t)r->n_bias, err) != 0) {
        seq_free(q);
        return NULL;
    }
    sched_text_opts to = {.skip_special = r->skip_special, .stop = r->stop, .n_stop = r->n_stop,
                          .include_stop = r->include_stop, .min_tokens = r->min_tokens};
    if (r->n_stop_ids && (q->stop_ids = malloc((size_t)r->n_stop_ids * sizeof *q->stop_ids)))
        memcpy(q->stop_ids, r->stop_ids, (size_t)r->n_stop_ids * sizeof *q->stop_ids), q->n_stop_ids = r->n_stop_ids;
    if (!q->tokens || !q->smp || (r->n_stop_ids && !q->stop_ids) || sched_text_init(&q->text, s->tok, &to, err) != 0) {
        if (!q->tokens || (r->n_stop_ids && !q->stop_ids)) ms_err_set(err, "out of memory");
        seq_free(q);
        return NULL;
    }
    memcpy(q->tokens, r->prompt, (size_t)r->n_prompt * sizeof *q->tokens);
    q->n_tokens = q->n_prompt = r->n_prompt;
    q->max_tokens = r->max_tokens;
    q->ignore_eos = r->ignore_eos;
    q->min_tokens = r->min_tokens;
    q->top_logprobs = r->top_logprobs;
    q->prompt_lp = r->prompt_logprobs != 0;
    q->cons = r->constraint;
    sampler_add_prompt(q->smp, r->prompt, (size_t)r->n_prompt);
    return q;
}

static sched_stream *stream_create(sched *s) {
    sched_stream *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    st->refs = 2;
    st->owner = s;
    return st;
}

/* A rank's free KV pages (less what its waiting sequences need) and sequences. */
static void rank_room(sched *s, long *free_pages, long *load) {
    pthread_mutex_lock(&s->mu);
    *free_pages = (long)s->stats.kv_pages_free - s->waiting_pages;
    *load = s->stats.running + s->n_waiting;
    pthread_mutex_unlock(&s->mu);
}

/* A rank that saw a prompt's prefix keeps its continuations while it has at
 * least half the best rank's free pages and at most this many sequences more
 * than the least loaded rank. */
#define AFFINITY_SLACK 2

/* The data-parallel rank for a new sequence (the front's own, then its remote
 * ones): by default the most free KV pages,
 * then the fewest sequences, then the lowest rank; but the rank an earlier
 * prompt with the same page-aligned prefix went to, when it has room
 * (engine/prefix_affinity.h). */
static void any_rank_room(sched *f, int r, long *free_pages, long *load) {
    if (r < f->n_ranks) {
        rank_room(f->ranks[r], free_pages, load);
        return;
    }
    f->remote.room(f->remote.ctx, r - f->n_ranks, free_pages, load);
}

static int pick_rank(sched *f, const sched_request *req) {
    int best = -1, n = f->n_ranks + (req->constraint.ctx ? 0 : f->remote.n_ranks);
    long best_free = 0, best_load = 0, min_load = 0;
    for (int r = 0; r < n; r++) {
        long free_pages, load;
        any_rank_room(f, r, &free_pages, &load);
        if (r == 0 || load < min_load) min_load = load;
        if (best < 0 || free_pages > best_free || (free_pages == best_free && load < best_load)) {
            best = r;
            best_free = free_pages;
            best_load = load;
        }
    }
    if (f->cfg.no_prefix_caching) return best;
    int pages, pick = best, prev = prefix_affinity_lookup(f->affinity, req->prompt, req->n_prompt, &pages);
    if (prev >= 0 && prev < n && prev != best) {
        long free_pages, load;
        any_rank_room(f, prev, &free_pages, &load);
        if (2 * free_pages >= best_free && load <= min_load + AFFINITY_SLACK) pick = prev;
    }
    prefix_affinity_record(f->affinity, req->prompt, req->n_prompt, pick);
    return pick;
}

static int group_failed(sched_group *g, ms_err *err) {
    pthread_mutex_lock(&g->mu);
    int failed = g->failed;
    if (failed) ms_err_set(err, "the engine has stopped after an error: %s", g->error);
    pthread_mutex_unlock(&g->mu);
    return failed;
}

/* A sequence for remote rank `rank` of front f: validated here, run there. */
static sched_stream *submit_remote(sched *f, int rank, const sched_request *r, int *queue_full, ms_err *err) {
    if (validate(f->ranks[0], r, err) != 0) return NULL;
    sched_stream *st = stream_create(f);
    if (!st) {
        ms_err_set(err, "out of memory");
        return NULL;
    }
    st->remote = 1;
    group_add_busy(f->group, 1);
    if (f->remote.submit(f->remote.ctx, rank, r, st, queue_full, err) != 0) {
        group_add_busy(f->group, -1);
        st->refs = 1;
        stream_unref(st);
        return NULL;
    }
    return st;
}

sched_stream *sched_submit(sched *s, const sched_request *r, int *queue_full, ms_err *err) {
    if (queue_full) *queue_full = 0;
    if (s->group && group_failed(s->group, err)) {
        if (queue_full) *queue_full = 1;
        sched_constraint cons = r->constraint;
        constraint_free(&cons);
        return NULL;
    }
    if (s->ranks) {
        int rank = pick_rank(s, r);
        return rank < s->n_ranks ? sched_submit(s->ranks[rank], r, queue_full, err)
                                 : submit_remote(s, rank - s->n_ranks, r, queue_full, err);
    }
    sched_constraint cons = r->constraint;
    seq *q = validate(s, r, err) == 0 ? seq_create(s, r, err) : NULL;
    if (!q) {
        constraint_free(&cons);
        return NULL;
    }
    sched_stream *st = stream_create(s);
    if (!st) {
        ms_err_set(err, "out of memory");
        seq_free(q);
        return NULL;
    }
    q->stream = st;
    pthread_mutex_lock(&s->mu);
    if (s->n_waiting >= s->cfg.max_queue || s->stopping) {
        int full = s->n_waiting >= s->cfg.max_queue;
        pthread_mutex_unlock(&s->mu);
        if (queue_full) *queue_full = 1;
        ms_err_set(err, full ? "the server is busy: %d requests are waiting" : "the server is shutting down",
                   s->cfg.max_queue);
        st->refs = 1;
        stream_unref(st);
        seq_free(q);
        return NULL;
    }
    enqueue_locked(s, q, 0);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    group_add_busy(s->group, 1);
    return st;
}

sched_stream *sched_submit_rank(sched *f, int rank, const sched_request *r, int *queue_full, ms_err *err) {
    if (rank < 0 || !f->ranks) return sched_submit(f, r, queue_full, err);
    if (rank >= f->n_ranks) {
        sched_constraint cons = r->constraint;
        constraint_free(&cons);
        ms_err_set(err, "no data-parallel rank %d here (%d ranks)", rank, f->n_ranks);
        return NULL;
    }
    if (group_failed(f->group, err)) {
        if (queue_full) *queue_full = 1;
        sched_constraint cons = r->constraint;
        constraint_free(&cons);
        return NULL;
    }
    return sched_submit(f->ranks[rank], r, queue_full, err);
}

void sched_set_remote(sched *f, const sched_remote *rm) { f->remote = *rm; }

void sched_stream_set_tag(sched_stream *st, uint64_t tag) { st->tag = tag; }
uint64_t sched_stream_tag(const sched_stream *st) { return st->tag; }

void sched_stream_deliver(sched_stream *st, const sched_event *ev) {
    int last = ev->finish != FINISH_NONE;
    sched *f = st->owner;
    stream_push(st, ev);
    if (!last) return;
    group_add_busy(f->group, -1);
    stream_unref(st);
}

void sched_stream_cancel(sched_stream *st) {
    atomic_store(&st->cancelled, 1);
    sched *s = st->owner;
    if (st->remote) {
        s->remote.cancel(s->remote.ctx, st);
        return;
    }
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void sched_stream_free(sched_stream *st) {
    if (!st) return;
    sched_stream_cancel(st);
    stream_unref(st);
}

/* ------------------------------------------------------------ the engine step */

static void running_remove(sched *s, int i) {
    memmove(&s->running[i], &s->running[i + 1], (size_t)(s->n_running - i - 1) * sizeof *s->running);
    s->n_running--;
}

/* Frees q's pages and puts it back at the front of the waiting queue; it will
 * recompute prompt + generated tokens when admitted again. */
static void preempt(sched *s, int i) {
    seq *q = s->running[i];
    running_remove(s, i);
    kv_seq_release(&s->kv, &q->kv);
    q->n_computed = 0;
    pthread_mutex_lock(&s->mu);
    enqueue_locked(s, q, 1);
    s->stats.preemptions++;
    pthread_mutex_unlock(&s->mu);
}

static int youngest_running(const sched *s) {
    int y = 0;
    for (int i = 1; i < s->n_running; i++)
        if (s->running[i]->admitted > s->running[y]->admitted) y = i;
    return y;
}

/* Pages q needs to hold n more computed tokens. */
static int pages_needed(const seq *q, int n) { return kv_pages_for(q->n_computed + n) - q->kv.n_pages; }

static void finish_cancelled(sched *s) {
    for (int i = 0; i < s->n_running;) {
        seq *q = s->running[i];
        if (!atomic_load(&q->stream->cancelled)) { i++; continue; }
        running_remove(s, i);
        seq_finish(s, q, FINISH_CANCELLED, NULL);
    }
    pthread_mutex_lock(&s->mu);
    seq **link = &s->waiting, *prev = NULL;
    seq *dead = NULL;
    while (*link) {
        seq *q = *link;
        if (atomic_load(&q->stream->cancelled) || s->stopping) {
            *link = q->next;
            s->n_waiting--;
            s->waiting_pages -= q->queued_pages;
            q->next = dead;
            dead = q;
        } else {
            prev = q;
            link = &q->next;
        }
    }
    s->waiting_tail = prev;
    pthread_mutex_unlock(&s->mu);
    while (dead) {
        seq *q = dead;
        dead = q->next;
        seq_finish(s, q, FINISH_CANCELLED, NULL);
    }
}

/* Makes room for every decoding sequence's next token, preempting the youngest
 * running sequences while pages are short. */
static void ensure_decode_pages(sched *s) {
    for (;;) {
        int need = 0;
        for (int i = 0; i < s->n_running; i++) {
            seq *q = s->running[i];
            if (q->n_tokens - q->n_computed == 1) need += pages_needed(q, 1);
        }
        if (need <= kv_available(&s->kv) || s->n_running == 0) return;
        preempt(s, youngest_running(s));
    }
}

/* Takes q's cached prefix pages; keeps them if the rest of its tokens (+1) fits
 * with a spare page per running sequence, else gives them back. */
static int try_admit(sched *s, seq *q) {
    const int lookup = q->n_tokens - 1; /* the last token needs its logits */
    int want_all = q->prompt_lp && q->lp_done < q->n_prompt; /* every prompt row's logits */
    int hit = want_all ? 0 : kv_prefix_match(&s->kv, &q->kv, q->tokens, lookup);
    if (kv_pages_for(q->n_tokens + 1) - q->kv.n_pages + s->n_running > kv_available(&s->kv)) {
        kv_seq_release(&s->kv, &q->kv);
        return 0;
    }
    if (!want_all) kv_prefix_count(&s->kv, lookup, hit);
    q->n_computed = hit;
    if (!q->admitted) q->n_cached = hit;
    return 1;
}

/* Pops waiting sequences (FCFS) while slots, pages and the token budget allow. */
static void admit(sched *s, int budget_left) {
    for (;;) {
        pthread_mutex_lock(&s->mu);
        seq *q = s->waiting;
        int ok = q && s->n_running < s->cfg.max_num_seqs && budget_left > 0 && try_admit(s, q);
        if (ok) {
            s->waiting = q->next;
            if (!s->waiting) s->waiting_tail = NULL;
            s->n_waiting--;
            s->waiting_pages -= q->queued_pages;
            q->next = NULL;
            if (!q->admitted) s->stats.prompt_tokens += (uint64_t)q->n_prompt;
        }
        pthread_mutex_unlock(&s->mu);
        if (!ok) return;
        q->admitted = ++s->admissions;
        s->running[s->n_running++] = q;
        budget_left -= q->n_tokens - q->n_computed;
    }
}

typedef struct { int n_tokens, n_runs, n_logits; } batch_size;

/* Prompt logprobs: the positions [*lo, *hi) of tokens [n_computed, n_computed + n)
 * whose logits give a prompt token's logprob not yet sent (row p: token p + 1). */
static int prompt_lp_rows(const seq *q, int n, int *lo, int *hi) {
    *lo = q->lp_done - 1 > q->n_computed ? q->lp_done - 1 : q->n_computed;
    *hi = q->n_computed + n < q->n_prompt - 1 ? q->n_computed + n : q->n_prompt - 1;
    if (!q->prompt_lp || *hi < *lo) *hi = *lo;
    return *hi - *lo;
}

/* Adds tokens [n_computed, n_computed + n) of q as one run: logits rows for
 * its prompt logprobs (in order), then for sampling if the run ends q's tokens. */
static void batch_add(sched *s, batch_size *bs, seq *q, int n) {
    int run = bs->n_runs++, first = bs->n_tokens, lo, hi;
    for (int i = 0; i < n; i++) {
        int k = bs->n_tokens++;
        s->b_tokens[k] = q->tokens[q->n_computed + i];
        s->b_pos[k] = q->n_computed + i;
        s->b_seq[k] = run;
    }
    s->b_seqs[run] = &q->kv;
    s->b_owner[run] = q;
    prompt_lp_rows(q, n, &lo, &hi);
    for (int p = lo; p < hi; p++) s->b_rows[bs->n_logits++] = first + p - q->n_computed;
    s->b_samples[run] = q->n_computed + n == q->n_tokens && q->max_tokens > 0;
    if (s->b_samples[run]) s->b_rows[bs->n_logits++] = bs->n_tokens - 1;
}

/* Decodes first (one token each), then prompt chunks under the budget, free
 * pages and the prompt-logprob rows left. */
static batch_size build_batch(sched *s) {
    batch_size bs = {0, 0, 0};
    int budget = s->cfg.max_batched_tokens, free_pages = kv_available(&s->kv), lp_left = SCHED_PROMPT_LOGPROB_ROWS, lo, hi;
    for (int i = 0; i < s->n_running; i++) {
        seq *q = s->running[i];
        if (q->n_tokens - q->n_computed != 1) continue;
        free_pages -= pages_needed(q, 1);
        batch_add(s, &bs, q, 1);
        budget--;
    }
    for (int i = 0; i < s->n_running && budget > 0; i++) {
        seq *q = s->running[i];
        int left = q->n_tokens - q->n_computed;
        if (left <= 1) continue;
        int n = left < budget ? left : budget;
        while (n > 0 && pages_needed(q, n) > free_pages) n = n > 64 ? n - 64 : n - 1;
        while (n > 0 && prompt_lp_rows(q, n, &lo, &hi) > lp_left) n--;
        if (n <= 0) continue;
        free_pages -= pages_needed(q, n);
        lp_left -= prompt_lp_rows(q, n, &lo, &hi);
        batch_add(s, &bs, q, n);
        budget -= n;
    }
    return bs;
}

/* Samples the next token of q from its logits row and streams it. Returns 1 if q finished. */
/* Applies q's constraint to its logits row; 0, or -1 when no token is allowed. */
static int constrain(sched *s, seq *q, float *logits) {
    if (!q->cons.ctx) return 0;
    int left = q->max_tokens - q->n_generated, ctx_left = s->cfg.max_model_len - q->n_tokens;
    return q->cons.mask(q->cons.ctx, logits, left < ctx_left ? left : ctx_left) > 0 ? 0 : -1;
}

static int is_stop_id(const seq *q, int32_t tok) {
    for (int i = 0; i < q->n_stop_ids; i++)
        if (q->stop_ids[i] == tok) return 1;
    return 0;
}

/* min_tokens: while q may not end yet, its ending tokens (EOS unless
 * ignore_eos, the stop ids) get -inf; their values go to saved[] (n + 1 of
 * them) for min_tokens_restore. Returns how many were masked. */
static int min_tokens_mask(const sched *s, const seq *q, float *logits, float *saved) {
    if (q->n_generated >= q->min_tokens) return 0;
    int n = 0;
    if (!q->ignore_eos) saved[n++] = logits[s->m->cfg.eos_token_id], logits[s->m->cfg.eos_token_id] = -INFINITY;
    for (int i = 0; i < q->n_stop_ids; i++) saved[n++] = logits[q->stop_ids[i]], logits[q->stop_ids[i]] = -INFINITY;
    return n;
}

/* Puts back what min_tokens_mask took, in reverse (an id listed twice gets its first value). */
static void min_tokens_restore(const sched *s, const seq *q, float *logits, const float *saved, int n) {
    for (int i = q->n_stop_ids - 1; n > 0 && i >= 0; i--) logits[q->stop_ids[i]] = saved[--n];
    if (n > 0) logits[s->m->cfg.eos_token_id] = saved[--n];
}

static int sample_and_emit(sched *s, seq *q, float *logits) {
    ms_err err = {{0}};
    if (constrain(s, q, logits) != 0) {
        seq_finish(s, q, FINISH_ERROR, "the output constraint allows no token");
        return 1;
    }
    float saved[SCHED_MAX_STOP_IDS + 1];
    int masked = min_tokens_mask(s, q, logits, saved);
    int32_t tok = sampler_sample(q->smp, logits, &err);
    min_tokens_restore(s, q, logits, saved, masked);
    if (tok >= 0 && q->cons.ctx && q->cons.accept(q->cons.ctx, tok) != 0) {
        seq_finish(s, q, FINISH_ERROR, "the sampled token breaks the output constraint");
        return 1;
    }
    if (tok < 0 || seq_append(q, tok) != 0) {
        seq_finish(s, q, FINISH_ERROR, tok < 0 ? err.msg : "out of memory");
        return 1;
    }
    q->n_generated++;
    sched_event ev = {.token = tok};
    if (q->top_logprobs >= 0)
        ev.n_top = sample_logprobs(logits, s->m->cfg.vocab_size, tok, q->top_logprobs, (sample_logprob *)ev.top,
                                   &ev.logprob, NULL);
    if (ev.n_top < 0) ev.n_top = 0;
    /* a constrained output allows EOS only where it may end: then it ends, ignore_eos or not */
    int is_eos = tok == s->m->cfg.eos_token_id && (!q->ignore_eos || q->cons.ctx);
    int stopped = 0;
    if (!is_eos) ev.text = sched_text_push(&q->text, tok, &ev.text_len, &stopped);
    if (!is_eos && !ev.text) {
        seq_finish(s, q, FINISH_ERROR, "out of memory");
        return 1;
    }
    ev.prompt_tokens = q->n_prompt;
    ev.completion_tokens = q->n_generated;
    ev.cached_tokens = q->n_cached;
    int complete = q->cons.ctx && q->cons.complete(q->cons.ctx);
    finish_reason end = is_eos || stopped || complete || is_stop_id(q, tok) ? FINISH_STOP
                        : (q->n_generated >= q->max_tokens || q->n_tokens >= s->cfg.max_model_len) ? FINISH_LENGTH
                                                                                                     : FINISH_NONE;
    emit(s, q->stream, &ev);
    if (end == FINISH_NONE) return 0;
    if (end == FINISH_STOP && stopped) q->text.stopped = 1;
    seq_finish(s, q, end, NULL);
    return 1;
}

/* Sends q's prompt-token events for the run of n tokens just computed (logits
 * rows from *row on, as batch_add laid them out); the first prompt token's
 * event, which has no logprob, goes first. */
static void emit_prompt_events(sched *s, seq *q, int n, int *row) {
    int lo, hi, V = s->m->cfg.vocab_size;
    if (!q->prompt_lp || q->lp_done >= q->n_prompt) return;
    prompt_lp_rows(q, n, &lo, &hi);
    if (q->lp_done == 0) {
        sched_event ev = {.token = q->tokens[0], .prompt = 1, .logprob = NAN, .prompt_tokens = q->n_prompt};
        emit(s, q->stream, &ev);
        q->lp_done = 1;
    }
    for (int p = lo; p < hi; p++) {
        const float *l = s->logits + (size_t)(*row)++ * V;
        sched_event ev = {.token = q->tokens[p + 1], .prompt = 1, .prompt_tokens = q->n_prompt};
        ev.n_top = sample_logprobs(l, V, ev.token, q->top_logprobs, (sample_logprob *)ev.top, &ev.logprob, NULL);
        if (ev.n_top < 0) ev.n_top = 0;
        ev.rank = sample_rank(l, V, ev.token);
        emit(s, q->stream, &ev);
        q->lp_done = p + 2;
    }
}

/* Copies the engine-side counters where sched_get_stats reads them. */
static void publish_stats(sched *s, int stepped, int generated) {
    pthread_mutex_lock(&s->mu);
    s->stats.steps += (uint64_t)stepped;
    s->stats.generation_tokens += (uint64_t)generated;
    s->stats.running = s->n_running;
    s->stats.kv_pages_free = kv_available(&s->kv);
    s->stats.prefix_cache_queries = s->kv.prefix_queries;
    s->stats.prefix_cache_hits = s->kv.prefix_hits;
    pthread_mutex_unlock(&s->mu);
}

/* The work of one engine step (step() delivers its events afterwards). */
static int step_run(sched *s, ms_err *err) {
    finish_cancelled(s);
    ensure_decode_pages(s);
    admit(s, s->cfg.max_batched_tokens - s->n_running);
    batch_size bs = build_batch(s);
    if (bs.n_tokens == 0 && !s->comm) {
        publish_stats(s, 0, 0); /* e.g. the last sequence was cancelled */
        return 0;
    }
    /* a rank of an expert-parallel world steps with its peers even with no tokens */
    model_batch b = {bs.n_tokens, s->b_tokens, s->b_pos, s->b_seq, s->b_seqs, bs.n_runs, s->b_rows, bs.n_logits};
    if (model_forward(s->m, &s->kv, &b, s->logits, err) != 0) {
        if (s->comm) return -1;
        /* A failed step fails the sequences in it; the engine keeps serving. */
        for (int r = 0; r < bs.n_runs; r++) {
            for (int i = 0; i < s->n_running; i++)
                if (s->running[i] == s->b_owner[r]) { running_remove(s, i); break; }
            seq_finish(s, s->b_owner[r], FINISH_ERROR, err->msg);
        }
        publish_stats(s, 1, 0);
        return 0;
    }
    int row = 0, sampled = 0;
    for (int r = 0; r < bs.n_runs; r++) {
        seq *q = s->b_owner[r];
        emit_prompt_events(s, q, q->kv.n_tokens - q->n_computed, &row);
        q->n_computed = q->kv.n_tokens; /* model_forward advanced it past this run */
        kv_prefix_register(&s->kv, &q->kv, q->tokens, q->n_computed);
        int prompt_only = q->max_tokens == 0 && q->n_computed == q->n_tokens;
        if (!s->b_samples[r] && !prompt_only) continue;
        int idx = -1;
        for (int i = 0; i < s->n_running; i++)
            if (s->running[i] == q) idx = i;
        if (prompt_only) {
            if (idx >= 0) running_remove(s, idx);
            seq_finish(s, q, FINISH_LENGTH, NULL);
            continue;
        }
        float *l = s->logits + (size_t)row++ * s->m->cfg.vocab_size;
        sampled++;
        if (sample_and_emit(s, q, l) && idx >= 0) running_remove(s, idx);
    }
    publish_stats(s, 1, sampled);
    return 0;
}

/* One engine step; its events reach the streams after its counters are
 * published. Returns -1 only when an expert-parallel world failed (err set):
 * the rank must stop. */
static int step(sched *s, ms_err *err) {
    s->deferring = 1;
    int rc = step_run(s, err);
    s->deferring = 0;
    outbox_flush(s);
    return rc;
}

/* Ends every running and waiting sequence (the engine is stopping). */
static void finish_all(sched *s, finish_reason reason, const char *error) {
    while (s->n_running) {
        seq *q = s->running[--s->n_running];
        seq_finish(s, q, reason, error);
    }
    pthread_mutex_lock(&s->mu);
    seq *q = s->waiting;
    s->waiting = s->waiting_tail = NULL;
    s->n_waiting = 0;
    s->waiting_pages = 0;
    pthread_mutex_unlock(&s->mu);
    while (q) {
        seq *next = q->next;
        seq_finish(s, q, reason, error);
        q = next;
    }
}

/* Records the world's first fatal error, as seen by this rank (a peer's failure
 * reads "rank 0: expert-parallel group failed: rank 1: ..."), and tells the
 * owner once. */
static void group_fail(sched *s, const char *msg) {
    sched_group *g = s->group;
    pthread_mutex_lock(&g->mu);
    int first = !g->failed;
    if (first) {
        g->failed = 1;
        snprintf(g->error, sizeof g->error, "rank %d: %s", s->comm->rank, msg);
    }
    pthread_mutex_unlock(&g->mu);
    if (first && s->cfg.on_fatal) s->cfg.on_fatal(s->cfg.fatal_ctx, g->error); /* g->error is final once failed */
}

/* A rank of an expert-parallel world: while any rank has work, every rank
 * steps; each iteration starts with an all-reduce of (has work, stopping) so
 * all ranks take the same decision and make the same collective calls. */
static void engine_loop_ep(sched *s) {
    sched_group *g = s->group;
    ms_err err = {{0}};
    for (;;) {
        pthread_mutex_lock(&g->mu);
        while (!s->cfg.follow_world && !g->stopping && g->busy == 0) pthread_cond_wait(&g->cv, &g->mu);
        float v[2] = {0.0f, (float)g->stopping};
        pthread_mutex_unlock(&g->mu);
        pthread_mutex_lock(&s->mu);
        v[0] = (float)(s->n_running + s->n_waiting);
        pthread_mutex_unlock(&s->mu);
        if (s->comm->ops->all_reduce_sum(s->comm, v, 2, &err) != 0 || (v[1] == 0.0f && v[0] > 0.0f && step(s, &err) != 0)) {
            group_fail(s, err.msg);
            break;
        }
        if (v[1] > 0.0f) break;
    }
}

static void engine_loop(sched *s) {
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && s->n_running == 0 && s->n_waiting == 0) pthread_cond_wait(&s->wake, &s->mu);
        int stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping) return;
        ms_err err = {{0}};
        step(s, &err);
    }
}

static void *engine_main(void *arg) {
    sched *s = arg;
    if (s->comm) engine_loop_ep(s);
    else engine_loop(s);
    char error[sizeof(ms_err) + 64] = "";
    if (s->group) {
        pthread_mutex_lock(&s->group->mu);
        if (s->group->failed) snprintf(error, sizeof error, "the engine stopped: %s", s->group->error);
        pthread_mutex_unlock(&s->group->mu);
    }
    finish_all(s, error[0] ? FINISH_ERROR : FINISH_CANCELLED, error[0] ? error : NULL);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static void fill_defaults(sched_config *c, const model *m) {
    if (c->max_num_seqs <= 0) c->max_num_seqs = 16;
    if (c->max_batched_tokens <= 0) c->max_batched_tokens = 512;
    if (c->kv_cache_tokens <= 0) c->kv_cache_tokens = 16384;
    if (c->max_queue <= 0) c->max_queue = 256;
    int cap = c->kv_cache_tokens < m->cfg.max_position_embeddings ? c->kv_cache_tokens : m->cfg.max_position_embeddings;
    if (c->max_model_len <= 0 || c->max_model_len > cap) c->max_model_len = cap;
    if (c->max_batched_tokens < c->max_num_seqs) c->max_batched_tokens = c->max_num_seqs;
}

static int alloc_arrays(sched *s) {
    size_t nt = (size_t)s->cfg.max_batched_tokens + (size_t)s->cfg.max_num_seqs, ns = (size_t)s->cfg.max_num_seqs;
    size_t rows = ns + SCHED_PROMPT_LOGPROB_ROWS;
    s->running = calloc(ns, sizeof *s->running);
    s->logits = malloc(rows * (size_t)s->m->cfg.vocab_size * sizeof *s->logits);
    s->b_tokens = malloc(nt * sizeof(int32_t));
    s->b_pos = malloc(nt * sizeof(int32_t));
    s->b_seq = malloc(nt * sizeof(int32_t));
    s->b_rows = malloc(rows * sizeof(int32_t));
    s->b_seqs = malloc(ns * sizeof(kv_seq *));
    s->b_owner = malloc(ns * sizeof(seq *));
    s->b_samples = malloc(ns * sizeof(int));
    return s->running && s->logits && s->b_tokens && s->b_pos && s->b_seq && s->b_rows && s->b_seqs && s->b_owner &&
                   s->b_samples ? 0 : -1;
}

static void free_arrays(sched *s) {
    free(s->running);
    free(s->logits);
    free(s->outbox);
    free(s->b_tokens);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_rows);
    free(s->b_seqs);
    free(s->b_owner);
    free(s->b_samples);
}

static sched *create(model *m, const tokenizer *tok, const sched_config *cfg, sched_group *g, ms_err *err) {
    sched *s = calloc(1, sizeof *s);
    if (!s) { ms_err_set(err, "out of memory"); return NULL; }
    s->m = m;
    s->tok = tok;
    s->group = g;
    s->comm = m->ep ? ep_comm(m->ep) : NULL;
    if (cfg) s->cfg = *cfg;
    fill_defaults(&s->cfg, m);
    if (alloc_arrays(s) != 0) { ms_err_set(err, "out of memory"); goto fail; }
    if (model_kv_init(m, &s->kv, s->cfg.kv_cache_tokens, err) != 0) goto fail;
    kv_cache_set_prefix_caching(&s->kv, !s->cfg.no_prefix_caching);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->stats.kv_pages_total = s->stats.kv_pages_free = s->kv.n_pages;
    if (pthread_create(&s->thread, NULL, engine_main, s) != 0) {
        ms_err_set(err, "cannot start the engine thread");
        kv_cache_free(&s->kv);
        goto fail;
    }
    return s;
fail:
    free_arrays(s);
    free(s);
    return NULL;
}

sched *sched_create(model *m, const tokenizer *tok, const sched_config *cfg, ms_err *err) {
    if (m->ep) {
        ms_err_set(err, "a model of an expert-parallel world needs sched_create_ep");
        return NULL;
    }
    return create(m, tok, cfg, NULL, err);
}

static void front_free(sched *f) {
    sched_group *g = f->group;
    pthread_mutex_lock(&g->mu);
    g->stopping = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    for (int r = 0; r < f->n_ranks; r++) sched_free(f->ranks[r]);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
    free(f->ranks);
    prefix_affinity_free(f->affinity);
    free(f);
}

sched *sched_create_ep(model *const *models, int n_ranks, const tokenizer *tok, const sched_config *cfg, ms_err *err) {
    sched *f = calloc(1, sizeof *f);
    sched_group *g = calloc(1, sizeof *g);
    sched **ranks = calloc((size_t)n_ranks, sizeof *ranks);
    if (!f || !g || !ranks) {
        free(f); free(g); free(ranks);
        ms_err_set(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    *f = (sched){.m = models[0], .tok = tok, .group = g, .ranks = ranks, .affinity = prefix_affinity_create()};
    if (!f->affinity) {
        ms_err_set(err, "out of memory");
        front_free(f);
        return NULL;
    }
    for (int r = 0; r < n_ranks; r++) {
        int first = models[0]->ep ? ep_rank(models[0]->ep) : 0; /* this node's first global rank */
        if (!models[r]->ep || ep_size(models[r]->ep) < first + n_ranks || ep_rank(models[r]->ep) != first + r) {
            ms_err_set(err, "model %d is not rank %d of a %d-rank expert-parallel world", r, first + r, n_ranks);
            front_free(f);
            return NULL;
        }
        if (!(ranks[r] = create(models[r], tok, cfg, g, err))) {
            front_free(f);
            return NULL;
        }
        f->n_ranks++;
    }
    f->cfg = ranks[0]->cfg;
    return f;
}

void sched_free(sched *s) {
    if (!s) return;
    if (s->ranks) {
        front_free(s);
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    kv_cache_free(&s->kv);
    free_arrays(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s);
}

const sched_config *sched_get_config(const sched *s) { return &s->cfg; }

static void add_stats(sched_stats *a, const sched_stats *b) {
    a->running += b->running;
    a->waiting += b->waiting;
    a->kv_pages_total += b->kv_pages_total;
    a->kv_pages_free += b->kv_pages_free;
    a->requests_finished += b->requests_finished;
    a->prompt_tokens += b->prompt_tokens;
    a->generation_tokens += b->generation_tokens;
    a->preemptions += b->preemptions;
    a->prefix_cache_queries += b->prefix_cache_queries;
    a->prefix_cache_hits += b->prefix_cache_hits;
    if (b->steps > a->steps) a->steps = b->steps; /* the ranks step together */
}

void sched_get_stats(sched *s, sched_stats *out) {
    if (s->ranks) {
        *out = (sched_stats){0};
        for (int r = 0; r < sched_n_ranks(s); r++) {
            sched_stats one;
            sched_get_rank_stats(s, r, &one);
            add_stats(out, &one);
        }
        return;
    }
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->waiting = s->n_waiting;
    pthread_mutex_unlock(&s->mu);
}

int sched_n_ranks(const sched *s) { return s->ranks ? s->n_ranks + s->remote.n_ranks : 1; }

void sched_get_rank_stats(sched *s, int rank, sched_stats *out) {
    if (s->ranks && rank >= s->n_ranks) s->remote.stats(s->remote.ctx, rank - s->n_ranks, out);
    else sched_get_stats(s->ranks ? s->ranks[rank] : s, out);
}

void sched_get_rank_room(sched *s, int rank, long *free_pages, long *load) {
    if (!s->ranks) rank_room(s, free_pages, load);
    else any_rank_room(s, rank, free_pages, load);
}

int sched_expert_tokens(sched *s, uint64_t *out, int cap) {
    int E = s->m->cfg.n_routed_experts;
    if (E > cap) E = cap;
    for (int e = 0; e < E; e++) out[e] = 0;
    uint64_t *one = malloc((size_t)s->m->cfg.n_routed_experts * sizeof *one + 1);
    if (!one) return 0;
    for (int r = 0; r < (s->ranks ? s->n_ranks : 1); r++) { /* this node's experts */
        model_expert_tokens(s->ranks ? s->ranks[r]->m : s->m, one);
        for (int e = 0; e < E; e++) out[e] += one[e];
    }
    free(one);
    if (s->remote.expert_tokens) s->remote.expert_tokens(s->remote.ctx, out, E);
    return E;
}
