/* server/http.c — see http.h.
 *
 * One MHD thread per connection, so a worker may block: a non-streaming
 * generation waits for its events inside the access handler; a streaming one
 * waits inside the response's content-reader callback, which MHD calls again
 * as soon as the previous SSE chunk is on the socket (so chunks are not
 * buffered). Both wait in slices of STREAM_POLL_MS and between slices look at
 * the client socket: a hung-up client cancels its requests (the engine frees
 * their KV pages at its next step). */
#include "server/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/chat_template.h"
#include "common/sha256.h"
#include "server/conn_guard.h"
#include "server/cors.h"
#include "server/metrics.h"
#include "server/oai_responses.h"
#include "server/resp_store.h"
#include "server/openai.h"
#include "server/version.h"

#define STREAM_POLL_MS 100     /* wait slice between client-disconnect checks (one stream) */
#define BG_CANCEL_WAIT_S 10   /* POST /v1/responses/{id}/cancel waits this long for the runner to stop */
#define MULTI_POLL_MS 5        /* the same with n > 1 streams read round-robin */
#define SSE_BLOCK_BYTES 65536
#define REQUEST_ID_MAX 64      /* X-Request-Id values longer than this (or not printable) are replaced */
#define HEALTH_GENERATE_TIMEOUT_MS 30000
#define CONNECTION_MEMORY_BYTES (64 * 1024) /* per-connection pool: bounds the request head */

/* ------------------------------------------------------------ logging */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_emit(const char *line) {
    pthread_mutex_lock(&log_mu);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
}

static void log_timestamp(char ts[64]) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, 64, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, 64 - n, ".%03ldZ", now.tv_nsec / 1000000);
}

/* One JSON line {"ts","level","request_id"?,"msg",...fields} (fields: an object, stolen). */
static void log_json_fields(const char *level, const char *request_id, const char *msg, json_t *fields) {
    char ts[64];
    log_timestamp(ts);
    json_t *o = json_pack("{s:s,s:s}", "ts", ts, "level", level);
    if (o && request_id) json_object_set_new(o, "request_id", json_string(request_id));
    if (o) json_object_set_new(o, "msg", oai_json_string_lossy(msg, strlen(msg)));
    if (o && fields) json_object_update(o, fields);
    json_decref(fields);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    log_emit(s ? s : msg);
    free(s);
    json_decref(o);
}

/* One line: text "TS LEVEL [request_id] msg" or JSON {"ts","level","request_id"?,"msg"}; the
 * level as callers spell it, upper case in text, lower case in JSON (as the access log). */
static void log_line(int json, const char *level_in, const char *request_id, const char *msg) {
    char level[16];
    size_t n = 0;
    for (; level_in[n] && n < sizeof level - 1; n++)
        level[n] = (char)(json ? tolower((unsigned char)level_in[n]) : toupper((unsigned char)level_in[n]));
    level[n] = 0;
    if (json) {
        log_json_fields(level, request_id, msg, NULL);
        return;
    }
    char ts[64], line[2300];
    log_timestamp(ts);
    if (request_id) snprintf(line, sizeof line, "%s %-5s [%s] %s", ts, level, request_id, msg);
    else snprintf(line, sizeof line, "%s %-5s %s", ts, level, msg);
    log_emit(line);
}

void serve_log(int json, const char *level, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_line(json, level, NULL, msg);
}

void serve_log_request(int json, const char *level, const char *request_id, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_line(json, level, request_id, msg);
}

/* ------------------------------------------------------------ server state */

struct http_server {
    http_config cfg;
    char *host, *served_model, *model_root; /* copies */
    char **aliases;          /* copies of cfg->aliases */
    int n_aliases;
    uint8_t (*key_hashes)[SHA256_DIGEST_BYTES]; /* SHA-256 of each API key */
    int n_keys;
    struct MHD_Daemon *daemon;
    int port;
    char fingerprint[32];
    long created;
    sched *engine;           /* NULL while loading */
    const tokenizer *tok;
    const cons_vocab *vocab;
    chat_template_variant variant;
    int vocab_size;
    atomic_int ready, draining, abort_all;
    atomic_int inflight;     /* generations between submit and their last event */
    serving_metrics metrics;
    conn_guard *guard;       /* request-head deadline (slowloris) */
    resp_store *store;       /* stored Responses (--responses-store), NULL: none */
    /* background responses: their registry (cancel / delete find a runner by
     * id) and how many runner threads are alive (http_stop waits for none) */
    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cv;    /* signalled when a runner stores its final Response or ends */
    struct bg_entry *bg;     /* running ones */
    int bg_threads;
};

typedef enum {
    R_CHAT, R_COMPLETIONS, R_MODELS, R_MODEL, R_HEALTH, R_HEALTH_GENERATE, R_READY, R_METRICS, R_TOKENIZE, R_DETOKENIZE,
    R_VERSION, R_PING, R_INVOCATIONS, R_RESPONSES, R_RESPONSE, R_RESPONSE_ITEMS, R_RESPONSE_CANCEL
} route_id;

typedef struct route {
    const char *path;
    route_id id;
    const char *method;      /* the one allowed, or "GET, DELETE" */
    int auth;                /* needs the API key */
} route;

static const route routes[] = {
    {"/v1/chat/completions", R_CHAT, "POST", 1},
    {"/v1/completions", R_COMPLETIONS, "POST", 1},
    {"/v1/responses", R_RESPONSES, "POST", 1},     /* OpenAI's Responses API (server/oai_responses.h) */
    {"/v1/models", R_MODELS, "GET", 1},
    {"/health", R_HEALTH, "GET", 0},
    {"/health/generate", R_HEALTH_GENERATE, "GET", 0},
    {"/ready", R_READY, "GET", 0},
    {"/metrics", R_METRICS, "GET", 0},
    {"/tokenize", R_TOKENIZE, "POST", 1},
    {"/detokenize", R_DETOKENIZE, "POST", 1},
    {"/version", R_VERSION, "GET", 0},
    {"/ping", R_PING, "GET", 0},                   /* SageMaker's health check (= /health) */
    {"/invocations", R_INVOCATIONS, "POST", 1},    /* SageMaker's inference route: chat or completions by body */
};

/* Per-connection (per-request) state: MHD's con_cls. */
typedef struct conn_state {
    const route *rt;
    char *body;
    size_t len, cap;
    int too_large;
    int status;              /* of the response queued */
    double t_start;
    char method[8];
    char path[128];
    char request_id[REQUEST_ID_MAX + 1];
    char cors_origin[CORS_MAX_ORIGIN + 1]; /* Access-Control-Allow-Origin to send, "" for none */
    /* generation requests, for the access log (written by the handler / stream reader only) */
    int is_generation;
    int prompt_tokens, completion_tokens, cached_tokens;
    double ttft_s;
    const atomic_int *draining; /* the server's: set, every answer closes its connection */
    int refused;             /* a POST refused before its body (401, 404, 405): answered once the body is read */
    oai_error refusal;
} conn_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ responses */

/* Headers every answer carries: X-Request-Id, and CORS for an allowed origin. */
static void add_common_headers(struct MHD_Response *r, const conn_state *cs) {
    if (!cs) return;
    if (cs->request_id[0]) MHD_add_response_header(r, "X-Request-Id", cs->request_id);
    if (!cs->cors_origin[0]) return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", cs->cors_origin);
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    if (strcmp(cs->cors_origin, "*")) MHD_add_response_header(r, "Vary", "Origin");
}

static enum MHD_Result queue_json(struct MHD_Connection *c, conn_state *cs, int status, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s) s = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}"),
            status = 500;
    if (!s) return MHD_NO;
    size_t n = strlen(s);
    s[n] = 0;
    char *body = realloc(s, n + 2); /* newline-terminated: friendlier to curl users */
    if (body) body[n++] = '\n', s = body;
    struct MHD_Response *r = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    add_common_headers(r, cs);
    if (status == 405 && cs && cs->rt) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, cs->rt->method);
    if (status == 429 || status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    /* while draining, a keep-alive client must reconnect (to another replica) */
    if (cs && cs->draining && atomic_load(cs->draining)) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (cs) cs->status = status;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result queue_error(struct MHD_Connection *c, conn_state *cs, const oai_error *e) {
    return queue_json(c, cs, e->status, oai_error_json(e));
}

static enum MHD_Result queue_text(struct MHD_Connection *c, conn_state *cs, int status, const char *ctype, char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_common_headers(r, cs);
    cs->status = status;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ------------------------------------------------------------ client liveness */

/* 1 if the client hung up (or the socket failed). */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 1;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) < 0) return errno != EINTR;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* ------------------------------------------------------------ generation */

typedef struct gen_choice {
    sched_stream *stream;
    oai_choice acc;          /* non-streaming: the whole text; streaming: counters only */
    int role_sent;
    int done;
    double t_last;           /* engine time of its last token event (inter-token latency) */
    finish_reason finish;
} gen_choice;

/* A background response while its runner generates (under h->bg_mu). */
typedef struct bg_entry {
    char id[64];
    atomic_int cancel;       /* POST .../cancel or DELETE asked: the runner cancels at its next poll slice */
    int forget;              /* DELETE: the runner stores nothing more */
    struct bg_entry *next;
} bg_entry;

typedef struct gen_job {
    http_server *h;
    struct MHD_Connection *conn; /* NULL for a background response (nobody waits on a connection) */
    conn_state *cs;          /* touched only from the handler / stream reader (it dies in on_completed) */
    conn_state own_cs;       /* background: cs points here (the request's id and counters, kept) */
    bg_entry *bg;            /* background: its registry entry until the final Response is stored */
    json_t *items;           /* responses: its input items as stored (made at the first store), else NULL */
    oai_request req;
    gen_choice *ch;
    int n_ch, n_done;
    char **echo;             /* completions echo: prompt text per prompt, else NULL */
    char id[64];
    long created;
    double t_start, t_first;
    int failed;              /* a choice ended with FINISH_ERROR */
    char error[256];
    int cancelled;
    double t_checked;        /* last client liveness check */
    oai_resp_stream *rs;     /* /v1/responses (streaming or not): the event machine, else NULL */
    /* streaming output */
    char *out;
    size_t out_len, out_pos, out_cap;
    int finished;            /* [DONE] queued */
    int counted;             /* inflight released */
} gen_job;

static int job_completion_tokens(const gen_job *j) {
    int n = 0;
    for (int i = 0; i < j->n_ch; i++) n += j->ch[i].acc.completion_tokens;
    return n;
}

/* The request's finish reason for the metrics: LENGTH if any choice hit its limit, else STOP. */
static finish_reason job_finish(const gen_job *j) {
    for (int i = 0; i < j->n_ch; i++)
        if (j->ch[i].finish == FINISH_LENGTH) return FINISH_LENGTH;
    return FINISH_STOP;
}

static void job_release_inflight(gen_job *j) {
    if (j->counted) return;
    j->counted = 1;
    http_server *h = j->h;
    int prompt_tokens = 0;
    for (int p = 0; p < j->req.n_prompts; p++) prompt_tokens += j->req.prompts[p].n_ids;
    request_record rec = {.finish = job_finish(j), .failed = j->failed, .cancelled = j->cancelled,
                          .ttft_s = j->t_first > 0 ? j->t_first - j->t_start : -1, .e2e_s = now_s() - j->t_start,
                          .prompt_tokens = prompt_tokens, .completion_tokens = job_completion_tokens(j),
                          .max_tokens = j->req.max_tokens, .n = j->req.n};
    metrics_record_request(&h->metrics, &rec);
    atomic_fetch_sub(&h->inflight, 1);
}

static void job_free(gen_job *j) {
    if (!j) return;
    for (int i = 0; i < j->n_ch; i++) {
        if (j->ch[i].stream) sched_stream_free(j->ch[i].stream); /* cancels if still running */
        oai_choice_free(&j->ch[i].acc);
    }
    if (j->n_done < j->n_ch) j->cancelled = 1;
    job_release_inflight(j);
    for (int i = 0; j->echo && i < j->req.n_prompts; i++) free(j->echo[i]);
    free(j->echo);
    if (j->rs) oai_resp_stream_free(j->rs);
    free(j->rs);
    json_decref(j->items);
    free(j->ch);
    free(j->out);
    oai_request_free(&j->req);
    free(j);
}

static void job_cancel(gen_job *j) {
    j->cancelled = 1;
    for (int i = 0; i < j->n_ch; i++)
        if (!j->ch[i].done) sched_stream_cancel(j->ch[i].stream);
}

static void random_hex(char *out, int n_hex) {
    unsigned char b[32];
    int nb = (n_hex + 1) / 2;
    if (getrandom(b, (size_t)nb, 0) != nb) {
        uint64_t x = (uint64_t)now_s() * 1000003u ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < nb; i++) x = x * 6364136223846793005ull + 1442695040888963407ull, b[i] = (unsigned char)(x >> 56);
    }
    for (int i = 0; i < n_hex; i++) out[i] = "0123456789abcdef"[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n_hex] = 0;
}

static uint64_t random_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s = (uint64_t)(now_s() * 1e9);
    return s;
}

/* Submits every choice. 0, or -1 with e filled (nothing left submitted). */
static int job_submit(gen_job *j, oai_error *e) {
    http_server *h = j->h;
    uint64_t base_seed = random_seed();
    for (int i = 0; i < j->n_ch; i++) {
        sched_request sr;
        int queue_full = 0;
        ms_err err = {{0}};
        if (oai_sched_request(&j->req, i, base_seed, &sr, &err) == 0)
            j->ch[i].stream = sched_submit(h->engine, &sr, &queue_full, &err);
        if (!j->ch[i].stream) {
            for (int k = 0; k < i; k++) sched_stream_free(j->ch[k].stream), j->ch[k].stream = NULL;
            if (queue_full)
                oai_error_set(e, 429, "rate_limit_error", NULL, "queue_full",
                              "The server's request queue is full; retry later (%s)", err.msg);
            else
                oai_error_set(e, 400, "invalid_request_error", NULL, NULL, "%s", err.msg);
            return -1;
        }
    }
    return 0;
}

/* Every STREAM_POLL_MS (events or not): cancels the job if the client hung up
 * or the server is shutting down. Returns 1 if the client is gone. */
static int job_check_client(gen_job *j) {
    double t = now_s();
    if (t - j->t_checked < STREAM_POLL_MS / 1e3) return 0;
    j->t_checked = t;
    int gone = j->conn && client_gone(j->conn);
    int asked = j->bg && atomic_load(&j->bg->cancel); /* a background response: cancel or DELETE */
    if ((gone || asked || atomic_load(&j->h->abort_all)) && !j->cancelled) job_cancel(j);
    return gone;
}

/* Waits for the next event of any unfinished choice: 1 with *which and *ev set,
 * 0 on timeout (one slice). */
static int job_next(gen_job *j, int *which, sched_event *ev) {
    int active = j->n_ch - j->n_done;
    if (active == 1) {
        for (int i = 0; i < j->n_ch; i++)
            if (!j->ch[i].done) {
                *which = i;
                return sched_stream_next(j->ch[i].stream, ev, STREAM_POLL_MS);
            }
    }
    for (int round = 0; round * MULTI_POLL_MS < STREAM_POLL_MS; round++)
        for (int i = 0; i < j->n_ch; i++) {
            if (j->ch[i].done) continue;
            if (sched_stream_next(j->ch[i].stream, ev, round ? MULTI_POLL_MS / 2 : 0)) {
                *which = i;
                return 1;
            }
        }
    return 0;
}

/* A malformed tool call fell back to content: say so in the log, with the request id. */
static void log_choice_warning(gen_job *j, int i) {
    const char *w = oai_choice_warning(&j->ch[i].acc);
    if (w) serve_log_request(j->h->cfg.log_json, "warn", j->cs->request_id, "choice %d: %s", i, w);
}

/* Bookkeeping common to both modes after an event of choice i. */
static void job_note(gen_job *j, int i, const sched_event *ev) {
    gen_choice *ch = &j->ch[i];
    if (ev->token >= 0 && !ev->prompt) {
        if (j->t_first == 0) j->t_first = ev->time_s;
        if (ch->t_last > 0) metrics_record_itl(&j->h->metrics, ev->time_s - ch->t_last);
        ch->t_last = ev->time_s;
    }
    conn_state *cs = j->cs;
    if (j->t_first > 0) cs->ttft_s = j->t_first - j->t_start;
    if (i % j->req.n == 0 && ev->cached_tokens > 0 && ev->finish != FINISH_NONE) cs->cached_tokens += ev->cached_tokens;
    if (ev->completion_tokens > 0 && ev->finish != FINISH_NONE) cs->completion_tokens += ev->completion_tokens;
    if (ev->finish != FINISH_NONE) {
        ch->finish = ev->finish;
        ch->done = 1;
        j->n_done++;
        if (ev->finish == FINISH_ERROR) {
            j->failed = 1;
            snprintf(j->error, sizeof j->error, "%s", ev->error);
        }
    }
}

static oai_usage job_usage(const gen_job *j) {
    oai_usage u = {0};
    for (int p = 0; p < j->req.n_prompts; p++) {
        u.prompt_tokens += j->req.prompts[p].n_ids;
        u.cached_tokens += j->ch[p * j->req.n].acc.cached_tokens; /* prompts are counted once: first choice */
    }
    for (int i = 0; i < j->n_ch; i++) {
        u.completion_tokens += j->ch[i].acc.completion_tokens;
        u.reasoning_tokens += oai_choice_reasoning_tokens(&j->ch[i].acc);
    }
    return u;
}

static gen_job *job_create(http_server *h, struct MHD_Connection *c, conn_state *cs, oai_request *req) {
    gen_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->h = h;
    j->conn = c;
    j->cs = cs;
    j->req = *req;
    memset(req, 0, sizeof *req);
    j->n_ch = j->req.n_prompts * j->req.n;
    j->ch = calloc((size_t)j->n_ch, sizeof *j->ch);
    if (!j->ch) {
        oai_request_free(&j->req);
        free(j);
        return NULL;
    }
    j->counted = 1; /* not in flight until submitted */
    if (j->req.echo && (j->echo = calloc((size_t)j->req.n_prompts, sizeof *j->echo)))
        for (int p = 0; p < j->req.n_prompts; p++)
            j->echo[p] = j->req.prompts[p].text ? strdup(j->req.prompts[p].text) /* as sent */
                         : tokenizer_decode(h->tok, j->req.prompts[p].ids, (size_t)j->req.prompts[p].n_ids, 0);
    for (int i = 0; i < j->n_ch; i++) {
        if (oai_choice_init(&j->ch[i].acc, &j->req, j->echo ? j->echo[i / j->req.n] : NULL) != 0) {
            job_free(j);
            return NULL;
        }
    }
    snprintf(j->id, sizeof j->id, "%s", j->req.responses ? "resp_" : j->req.kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    random_hex(j->id + strlen(j->id), 24);
    j->created = (long)time(NULL);
    if (j->req.responses && (!(j->rs = malloc(sizeof *j->rs)) || oai_resp_stream_init(j->rs, j->id, j->created) != 0)) {
        job_free(j);
        return NULL;
    }
    j->t_start = cs->t_start;
    cs->is_generation = 1;
    for (int p = 0; p < j->req.n_prompts; p++) cs->prompt_tokens += j->req.prompts[p].n_ids;
    return j;
}

/* 1 when the Response has an answer a follow-up can continue from (completed or incomplete). */
static int answered(const json_t *response) {
    const char *status = json_string_value(json_object_get(response, "status"));
    return status && (!strcmp(status, "completed") || !strcmp(status, "incomplete"));
}

/* The conversation an answered Response ended (new reference), else NULL. */
static json_t *history_of(gen_job *j, const json_t *response) {
    return answered(response) ? oai_responses_history(&j->req, &j->ch[0].acc) : NULL;
}

/* Stores j's Response with its input items and, when answered, its
 * conversation (history). 0, or -1 with a warning (out of memory, too large). */
static int put_response(gen_job *j, const json_t *response, const json_t *history) {
    if (!j->items) j->items = oai_responses_items(&j->req, j->id);
    if (response && j->items && (history || !answered(response)) &&
        resp_store_put(j->h->store, j->id, response, history, j->items) == 0)
        return 0;
    serve_log_request(j->h->cfg.log_json, "warn", j->cs->request_id, "response %s not stored (out of memory or too large)",
                      j->id);
    return -1;
}

/* Keeps a finished Response (completed or incomplete) when it asked to be stored. */
static void store_response(gen_job *j, const json_t *response) {
    if (!j->req.resp_store || !j->h->store || !answered(response)) return;
    json_t *history = history_of(j, response);
    put_response(j, response, history);
    json_decref(history);
}

/* Non-streaming: collect everything, then answer once. */
static enum MHD_Result generate_blocking(gen_job *j, conn_state *cs) {
    http_server *h = j->h;
    sched_event ev;
    int which;
    while (j->n_done < j->n_ch) {
        job_check_client(j);
        if (!job_next(j, &which, &ev)) continue;
        if (j->rs) json_decref(oai_resp_stream_event(j->rs, &j->req, &j->ch[which].acc, h->tok, &ev)); /* the same machine as streaming */
        else oai_choice_add(&j->ch[which].acc, &j->req, h->tok, &ev);
        free(ev.text);
        job_note(j, which, &ev);
        if (ev.finish != FINISH_NONE) log_choice_warning(j, which);
    }
    enum MHD_Result ret;
    if (j->cancelled && client_gone(j->conn)) {
        ret = MHD_NO; /* nobody to answer */
        cs->status = 499;
    } else if (j->rs) {
        json_t *resp = oai_resp_stream_final(j->rs);
        if (resp) store_response(j, resp);
        ret = queue_json(j->conn, cs, 200, resp);
        if (j->failed)
            serve_log_request(h->cfg.log_json, "error", cs->request_id, "engine failed the request: %s", j->error);
    } else if (j->failed) {
        oai_error e;
        serve_log_request(h->cfg.log_json, "error", cs->request_id, "engine failed the request: %s", j->error);
        oai_error_set(&e, 500, "server_error", NULL, NULL, "The engine failed this request: %s", j->error);
        ret = queue_error(j->conn, cs, &e);
    } else {
        oai_usage u = job_usage(j); /* best_of: every candidate's tokens count */
        oai_choice *flat = malloc((size_t)j->n_ch * sizeof *flat); /* oai_response_json wants them contiguous */
        int *keep = malloc((size_t)j->n_ch * sizeof *keep);
        json_t *resp = NULL;
        if (flat && keep) {
            for (int i = 0; i < j->n_ch; i++) flat[i] = j->ch[i].acc;
            int n_keep = oai_best_choices(&j->req, flat, keep);
            for (int k = 0; k < n_keep; k++) flat[k] = j->ch[keep[k]].acc;
            oai_request shown = j->req; /* the choices returned: n_return per prompt */
            shown.n = j->req.n_return;
            resp = oai_response_json(&shown, j->id, j->created, h->fingerprint, flat, n_keep,
                                     (const char *const *)j->echo, &u);
        }
        free(flat);
        free(keep);
        ret = queue_json(j->conn, cs, 200, resp);
    }
    job_free(j);
    return ret;
}

/* ---- streaming ---- */

static int out_append(gen_job *j, const char *s, size_t n) {
    if (j->out_len + n > j->out_cap) {
        size_t cap = (j->out_len + n) * 2 + 256;
        char *o = realloc(j->out, cap);
        if (!o) return -1;
        j->out = o, j->out_cap = cap;
    }
    memcpy(j->out + j->out_len, s, n);
    j->out_len += n;
    return 0;
}

/* "data: <json>\n\n" (steals the reference); a Responses event is named
 * first ("event: <type>\n"), as OpenAI sends them. */
static int out_event(gen_job *j, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    const char *type = j->rs ? json_string_value(json_object_get(o, "type")) : NULL;
    int rc = type && (out_append(j, "event: ", 7) || out_append(j, type, strlen(type)) || out_append(j, "\n", 1));
    json_decref(o);
    if (!s) return -1;
    rc = rc || out_append(j, "data: ", 6) || out_append(j, s, strlen(s)) || out_append(j, "\n\n", 2);
    free(s);
    return rc ? -1 : 0;
}

/* stream_options.continuous_usage_stats (vLLM): choice i's usage so far in
 * each of its chunks. Returns the chunk. */
static json_t *stamp_usage(const gen_job *j, int i, json_t *chunk) {
    if (!chunk || !j->req.continuous_usage) return chunk;
    int prompt = j->req.prompts[i / j->req.n].n_ids, done = j->ch[i].acc.completion_tokens;
    json_object_set_new(chunk, "usage", json_pack("{s:i,s:i,s:i}", "prompt_tokens", prompt, "completion_tokens", done,
                                                  "total_tokens", prompt + done));
    return chunk;
}

/* A Responses event array: each event out, the array released. */
static void out_events(gen_job *j, json_t *events) {
    size_t k;
    json_t *e;
    json_array_foreach(events, k, e) out_event(j, json_incref(e));
    json_decref(events);
}

static void stream_first_chunks(gen_job *j) {
    if (j->rs) {
        out_events(j, oai_resp_stream_begin(j->rs, &j->req));
        return;
    }
    for (int i = 0; i < j->n_ch; i++) {
        if (j->req.kind == OAI_CHAT)
            out_event(j, stamp_usage(j, i, oai_chunk_json(&j->req, j->id, j->created, j->h->fingerprint, i, "assistant",
                                                          "", 0, NULL, FINISH_NONE)));
        else if (!j->req.prompt_logprobs) { /* with them, the echo waits for the prompt's logprobs */
            json_t *echo = oai_stream_echo(&j->req, &j->ch[i].acc, j->id, j->created, j->h->fingerprint, i);
            if (echo) out_event(j, stamp_usage(j, i, echo));
        }
        j->ch[i].role_sent = 1;
    }
}

/* Turns one event into SSE chunks. */
static void stream_event(gen_job *j, int i, const sched_event *ev) {
    http_server *h = j->h;
    if (j->rs) { /* Responses: a failure ends in response.failed, not an error object */
        json_t *events = oai_resp_stream_event(j->rs, &j->req, &j->ch[i].acc, h->tok, ev);
        json_t *last = json_array_get(events, json_array_size(events) - 1);
        if (ev->finish != FINISH_NONE && json_object_get(last, "response")) store_response(j, json_object_get(last, "response"));
        out_events(j, events);
        if (ev->finish == FINISH_ERROR)
            serve_log_request(h->cfg.log_json, "error", j->cs->request_id, "engine failed the request: %s", ev->error);
        if (ev->finish != FINISH_NONE) log_choice_warning(j, i);
        return;
    }
    json_t *chunks = oai_stream_event(&j->req, &j->ch[i].acc, h->tok, ev, j->id, j->created, h->fingerprint, i);
    size_t k;
    json_t *c;
    json_array_foreach(chunks, k, c) out_event(j, stamp_usage(j, i, json_incref(c)));
    json_decref(chunks);
    if (ev->finish == FINISH_ERROR) {
        oai_error e;
        serve_log_request(h->cfg.log_json, "error", j->cs->request_id, "engine failed the request: %s", ev->error);
        oai_error_set(&e, 500, "server_error", NULL, NULL, "The engine failed this request: %s", ev->error);
        out_event(j, oai_error_json(&e));
    }
    if (ev->finish != FINISH_NONE) log_choice_warning(j, i);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    gen_job *j = cls;
    (void)pos;
    while (j->out_pos == j->out_len) {
        j->out_pos = j->out_len = 0;
        if (j->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        if (j->n_done == j->n_ch) {
            if (j->req.include_usage && !j->rs) {
                oai_usage u = job_usage(j);
                out_event(j, oai_usage_chunk_json(&j->req, j->id, j->created, j->h->fingerprint, &u));
            }
            if (!j->rs) out_append(j, "data: [DONE]\n\n", 14); /* Responses end with response.completed */
            j->finished = 1;
            job_release_inflight(j);
            continue;
        }
        sched_event ev;
        int which;
        /* a hung-up client ends the response (job_free, via MHD, frees the
         * streams); at shutdown the streams end with FINISH_CANCELLED */
        if (job_check_client(j)) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!job_next(j, &which, &ev)) continue;
        job_note(j, which, &ev);
        stream_event(j, which, &ev);
        free(ev.text);
    }
    size_t n = j->out_len - j->out_pos;
    if (n > max) n = max;
    memcpy(buf, j->out + j->out_pos, n);
    j->out_pos += n;
    return (ssize_t)n;
}

static void stream_free_cb(void *cls) { job_free(cls); }

static enum MHD_Result generate_streaming(gen_job *j, conn_state *cs) {
    stream_first_chunks(j);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK_BYTES, stream_reader, j,
                                                               stream_free_cb);
    if (!r) {
        job_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_common_headers(r, cs);
    cs->status = 200;
    enum MHD_Result ret = MHD_queue_response(j->conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* the job is freed with the response (stream_free_cb) */
    return ret;
}

/* ---- background responses (POST /v1/responses with "background": true) ----
 * The handler stores the Response as "queued" and answers it; a detached
 * runner thread then reads the engine's events through the same event
 * machine, stores "in_progress" at the first event and the final Response
 * (completed, incomplete, failed or cancelled) at the end. Clients poll
 * GET /v1/responses/{id}; POST .../cancel and DELETE reach the runner through
 * its registry entry. Stores go through bg_store (under bg_mu) so a DELETE
 * is never undone by a later store. */

static bg_entry *bg_find(http_server *h, const char *id) {
    bg_entry *e = h->bg;
    while (e && strcmp(e->id, id)) e = e->next;
    return e;
}

/* Stores response for the runner's entry unless DELETE forgot it; then, when
 * last, unlinks and frees the entry (cancel waiters read the store once it is gone). */
static void bg_store(gen_job *j, const json_t *response, const json_t *history, int last) {
    http_server *h = j->h;
    pthread_mutex_lock(&h->bg_mu);
    if (!j->bg->forget) put_response(j, response, history);
    if (last) {
        bg_entry **p = &h->bg;
        while (*p != j->bg) p = &(*p)->next;
        *p = j->bg->next;
        free(j->bg);
        j->bg = NULL;
        pthread_cond_broadcast(&h->bg_cv);
    }
    pthread_mutex_unlock(&h->bg_mu);
}

/* The runner's end: the final Response stored (with its conversation when
 * it has an answer to continue from), the entry gone. */
static void bg_finish(gen_job *j) {
    json_t *resp = oai_resp_stream_final(j->rs);
    if (!resp) resp = oai_resp_stream_pending(j->rs, &j->req, "failed"); /* out of memory in the event machine */
    const char *status = json_string_value(json_object_get(resp, "status"));
    json_t *history = history_of(j, resp);
    if (j->failed)
        serve_log_request(j->h->cfg.log_json, "error", j->cs->request_id, "engine failed background response %s: %s",
                          j->id, j->error);
    serve_log_request(j->h->cfg.log_json, "INFO", j->cs->request_id, "background response %s %s: %d output tokens",
                      j->id, status ? status : "failed", job_completion_tokens(j));
    bg_store(j, resp, history, 1);
    json_decref(history);
    json_decref(resp);
}

static void *bg_main(void *arg) {
    gen_job *j = arg;
    http_server *h = j->h;
    sched_event ev;
    int which, started = 0;
    while (j->n_done < j->n_ch) {
        job_check_client(j);
        if (!job_next(j, &which, &ev)) continue;
        if (!started) {
            started = 1;
            json_t *running = oai_resp_stream_pending(j->rs, &j->req, "in_progress");
            bg_store(j, running, NULL, 0);
            json_decref(running);
        }
        json_decref(oai_resp_stream_event(j->rs, &j->req, &j->ch[which].acc, h->tok, &ev));
        free(ev.text);
        job_note(j, which, &ev);
        if (ev.finish != FINISH_NONE) log_choice_warning(j, which);
    }
    bg_finish(j);
    job_free(j);
    pthread_mutex_lock(&h->bg_mu);
    h->bg_threads--;
    pthread_cond_broadcast(&h->bg_cv);
    pthread_mutex_unlock(&h->bg_mu);
    return NULL;
}

/* Answers the queued Response and leaves the submitted job to a runner (or,
 * when none can start, cancels it: 503). */
static enum MHD_Result generate_background(gen_job *j, conn_state *cs) {
    http_server *h = j->h;
    struct MHD_Connection *c = j->conn;
    j->own_cs = *cs;
    j->own_cs.body = NULL;
    j->cs = &j->own_cs;
    j->conn = NULL;
    json_t *queued = oai_resp_stream_pending(j->rs, &j->req, "queued");
    bg_entry *e = calloc(1, sizeof *e);
    pthread_t t;
    /* Registered under the lock the runner's stores take: it cannot store
     * before the entry is in. No history until it ends: previous_response_id
     * on it is a 400 meanwhile. */
    pthread_mutex_lock(&h->bg_mu);
    int ok = e && queued && put_response(j, queued, NULL) == 0;
    if (ok) {
        snprintf(e->id, sizeof e->id, "%s", j->id);
        j->bg = e;
        if ((ok = pthread_create(&t, NULL, bg_main, j) == 0)) {
            e->next = h->bg, h->bg = e; /* j is the runner's now */
            h->bg_threads++;
            pthread_detach(t);
        } else {
            resp_store_delete(h->store, j->id);
        }
    }
    pthread_mutex_unlock(&h->bg_mu);
    if (ok) return queue_json(c, cs, 200, queued);
    free(e);
    j->bg = NULL;
    json_decref(queued);
    job_free(j); /* cancels the submitted streams */
    oai_error err;
    oai_error_set(&err, 503, "service_unavailable", NULL, NULL, "could not start the background response (out of memory)");
    return queue_error(c, cs, &err);
}

static int not_ready_error(http_server *h, oai_error *e) {
    if (atomic_load(&h->draining))
        return oai_error_set(e, 503, "service_unavailable", NULL, "shutting_down", "The server is shutting down");
    if (!atomic_load(&h->ready))
        return oai_error_set(e, 503, "service_unavailable", NULL, "loading", "The model is still loading; retry later");
    return 0;
}

/* oai_ctx.resp_history: the conversation a stored response ended. */
static json_t *stored_history(void *cls, const char *id) {
    json_t *history = NULL;
    return resp_store_get(cls, id, NULL, &history, NULL) ? history : NULL;
}

static oai_ctx parse_ctx(http_server *h) {
    return (oai_ctx){.tok = h->tok, .served_model = h->served_model, .aliases = (const char *const *)h->aliases,
                     .n_aliases = h->n_aliases, .max_model_len = sched_get_config(h->engine)->max_model_len,
                     .vocab_size = h->vocab_size, .variant = h->variant, .reasoning_flag = h->cfg.reasoning_flag,
                     .vocab = h->vocab, .resp_history = h->store ? stored_history : NULL, .resp_cls = h->store};
}

/* kind: OAI_CHAT or OAI_COMPLETION; responses: a /v1/responses body (chat underneath). */
/* Parses the request: from b when the route has parsed the body already, else from the bytes. */
static int parse_generate(http_server *h, conn_state *cs, const json_t *b, oai_kind kind, int responses,
                          oai_request *req, oai_error *e) {
    oai_ctx ctx = parse_ctx(h);
    const char *body = cs->body ? cs->body : "";
    if (b) return responses ? oai_responses_parse_json(b, &ctx, req, e) : oai_parse_request_json(kind, b, &ctx, req, e);
    return responses ? oai_responses_parse(body, cs->len, &ctx, req, e) : oai_parse_request(kind, body, cs->len, &ctx, req, e);
}

static enum MHD_Result handle_generate(http_server *h, struct MHD_Connection *c, conn_state *cs, const json_t *b,
                                       oai_kind kind, int responses) {
    oai_error e;
    if (not_ready_error(h, &e)) return queue_error(c, cs, &e);
    oai_request req;
    if (parse_generate(h, cs, b, kind, responses, &req, &e) != 0) return queue_error(c, cs, &e);
    if (req.ignored[0]) serve_log_request(h->cfg.log_json, "warn", cs->request_id, "ignored request fields: %s", req.ignored);
    gen_job *j = job_create(h, c, cs, &req);
    if (!j) {
        oai_request_free(&req);
        oai_error_set(&e, 503, "service_unavailable", NULL, NULL, "out of memory");
        return queue_error(c, cs, &e);
    }
    /* A generation is bounded by max_tokens and ends when the client hangs up;
     * MHD's idle timeout would otherwise fire after a long queue wait or a long
     * non-streaming answer. on_completed restores it for keep-alive. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    atomic_fetch_add(&h->inflight, 1);
    j->counted = 0;
    if (job_submit(j, &e) != 0) {
        j->counted = 1;
        atomic_fetch_sub(&h->inflight, 1);
        job_free(j);
        return queue_error(c, cs, &e);
    }
    if (j->req.resp_background) return generate_background(j, cs);
    return j->req.stream ? generate_streaming(j, cs) : generate_blocking(j, cs);
}

/* ------------------------------------------------------------ other routes */

/* The engine once ready (ready is set after engine: reading it first is race-free), else NULL. */
static sched *engine_of(http_server *h) { return atomic_load(&h->ready) ? h->engine : NULL; }

static int model_served(const http_server *h, const char *id) {
    oai_ctx ctx = {.served_model = h->served_model, .aliases = (const char *const *)h->aliases, .n_aliases = h->n_aliases};
    return oai_model_served(&ctx, id);
}

/* One model card: the served model under the name id (itself or an alias). */
static json_t *model_card(const http_server *h, const char *id, int max_len) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:i}", "id", id, "object", "model", "created", (json_int_t)h->created,
                     "owned_by", "mlaserve", "root", h->model_root, "max_model_len", max_len);
}

static enum MHD_Result handle_models(http_server *h, struct MHD_Connection *c, conn_state *cs, const char *id) {
    sched *eng = engine_of(h);
    int max_len = eng ? sched_get_config(eng)->max_model_len : 0;
    if (id) {
        if (!model_served(h, id)) {
            oai_error e;
            oai_error_set(&e, 404, "invalid_request_error", "model", "model_not_found", "The model `%.200s` does not exist.", id);
            return queue_error(c, cs, &e);
        }
        return queue_json(c, cs, 200, model_card(h, id, max_len));
    }
    json_t *data = json_pack("[o]", model_card(h, h->served_model, max_len));
    for (int i = 0; data && i < h->n_aliases; i++) json_array_append_new(data, model_card(h, h->aliases[i], max_len));
    return queue_json(c, cs, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* ---- stored responses: GET / DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items ---- */

static enum MHD_Result response_not_found(struct MHD_Connection *c, conn_state *cs, const char *id) {
    oai_error e;
    oai_error_set(&e, 404, "invalid_request_error", "response_id", "not_found",
                  "Response with id '%.80s' not found (stored responses live in one server process, the oldest "
                  "evicted first)", id);
    return queue_error(c, cs, &e);
}

/* DELETE: forgets it; a background response still running is cancelled and stores nothing more. */
static int forget_response(http_server *h, const char *id) {
    pthread_mutex_lock(&h->bg_mu);
    bg_entry *e = bg_find(h, id);
    if (e) {
        e->forget = 1;
        atomic_store(&e->cancel, 1);
    }
    int found = resp_store_delete(h->store, id) || e;
    pthread_mutex_unlock(&h->bg_mu);
    return found;
}

static enum MHD_Result handle_response(http_server *h, struct MHD_Connection *c, conn_state *cs, const char *id) {
    if (!strcmp(cs->method, "DELETE")) {
        if (!h->store || !forget_response(h, id)) return response_not_found(c, cs, id);
        return queue_json(c, cs, 200, json_pack("{s:s,s:s,s:b}", "id", id, "object", "response", "deleted", 1));
    }
    json_t *resp = NULL;
    if (!h->store || !resp_store_get(h->store, id, &resp, NULL, NULL)) return response_not_found(c, cs, id);
    return queue_json(c, cs, 200, resp);
}

/* POST /v1/responses/{id}/cancel: a running background response is
 * cancelled and answered once its runner stored it "cancelled" (or, should
 * the engine not end it within BG_CANCEL_WAIT_S, as it stands); a finished
 * background one is answered as it is; others are a 400, as OpenAI's. */
static enum MHD_Result handle_response_cancel(http_server *h, struct MHD_Connection *c, conn_state *cs, const char *id) {
    if (!h->store) return response_not_found(c, cs, id);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += BG_CANCEL_WAIT_S;
    pthread_mutex_lock(&h->bg_mu);
    bg_entry *e = bg_find(h, id);
    if (e) atomic_store(&e->cancel, 1);
    while (bg_find(h, id) && pthread_cond_timedwait(&h->bg_cv, &h->bg_mu, &until) != ETIMEDOUT) {}
    pthread_mutex_unlock(&h->bg_mu);
    json_t *resp = NULL;
    if (!resp_store_get(h->store, id, &resp, NULL, NULL)) return response_not_found(c, cs, id);
    if (!json_is_true(json_object_get(resp, "background"))) {
        json_decref(resp);
        oai_error e2;
        oai_error_set(&e2, 400, "invalid_request_error", "response_id", NULL,
                      "Only responses created with 'background': true can be cancelled");
        return queue_error(c, cs, &e2);
    }
    return queue_json(c, cs, 200, resp);
}

/* ?limit=1..100 (20), order=asc|desc (desc, as OpenAI), after=<item id>. 0, or -1 with e. */
static int items_query(struct MHD_Connection *c, long *limit, int *asc, const char **after, oai_error *e) {
    const char *l = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    const char *o = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "order");
    char *end = NULL;
    *limit = l ? strtol(l, &end, 10) : 20;
    if (l && (*end || *limit < 1 || *limit > 100))
        return oai_error_set(e, 400, "invalid_request_error", "limit", NULL, "'limit' must be an integer from 1 to 100");
    if (o && strcmp(o, "asc") && strcmp(o, "desc"))
        return oai_error_set(e, 400, "invalid_request_error", "order", NULL, "'order' must be \"asc\" or \"desc\"");
    *asc = o && !strcmp(o, "asc");
    *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    return 0;
}

static enum MHD_Result handle_response_items(http_server *h, struct MHD_Connection *c, conn_state *cs, const char *id) {
    long limit = 20;
    int asc = 0;
    const char *after = NULL;
    oai_error e;
    if (items_query(c, &limit, &asc, &after, &e)) return queue_error(c, cs, &e);
    json_t *items = NULL;
    if (!h->store || !resp_store_get(h->store, id, NULL, NULL, &items)) return response_not_found(c, cs, id);
    long n = (long)json_array_size(items), start = 0;
    if (after) { /* the page after that item, in the order asked */
        start = -1;
        for (long k = 0; k < n && start < 0; k++) {
            json_t *it = json_array_get(items, (size_t)(asc ? k : n - 1 - k));
            const char *iid = json_string_value(json_object_get(it, "id"));
            if (iid && !strcmp(iid, after)) start = k + 1;
        }
        if (start < 0) {
            json_decref(items);
            oai_error_set(&e, 400, "invalid_request_error", "after", NULL, "'after': no item '%.80s' in this response", after);
            return queue_error(c, cs, &e);
        }
    }
    json_t *data = json_array();
    for (long k = start; k < n && k < start + limit; k++)
        json_array_append(data, json_array_get(items, (size_t)(asc ? k : n - 1 - k)));
    size_t m = json_array_size(data);
    json_t *first = m ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = m ? json_object_get(json_array_get(data, m - 1), "id") : NULL;
    json_t *page = json_pack("{s:s,s:o,s:O,s:O,s:b}", "object", "list", "data", data, "first_id", first ? first : json_null(),
                             "last_id", last ? last : json_null(), "has_more", start + limit < n);
    json_decref(items);
    return queue_json(c, cs, 200, page);
}

/* Per-rank and per-expert series (metrics_write_ep). */
static void write_ep_metrics(FILE *f, sched *eng) {
    int n_ranks = sched_n_ranks(eng);
    sched_stats *rs = calloc((size_t)n_ranks, sizeof *rs);
    uint64_t *experts = malloc(4096 * sizeof *experts);
    if (rs && experts) {
        for (int r = 0; r < n_ranks; r++) sched_get_rank_stats(eng, r, &rs[r]);
        metrics_write_ep(f, rs, n_ranks, experts, sched_expert_tokens(eng, experts, 4096));
    }
    free(rs);
    free(experts);
}

static enum MHD_Result handle_metrics(http_server *h, struct MHD_Connection *c, conn_state *cs) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return MHD_NO;
    sched_stats st = {0};
    sched *eng = engine_of(h);
    if (eng) sched_get_stats(eng, &st);
    metrics_write(f, &h->metrics, eng ? &st : NULL, atomic_load(&h->ready) && !atomic_load(&h->draining),
                  atomic_load(&h->inflight));
    if (eng) write_ep_metrics(f, eng);
    if (h->store) {
        int n = 0;
        size_t bytes = 0;
        resp_store_usage(h->store, &n, &bytes);
        fprintf(f, "# HELP mlaserve:responses_stored Responses kept for previous_response_id (--responses-store).\n"
                   "# TYPE mlaserve:responses_stored gauge\nmlaserve:responses_stored %d\n"
                   "# HELP mlaserve:responses_stored_bytes Bytes of JSON the stored Responses hold.\n"
                   "# TYPE mlaserve:responses_stored_bytes gauge\nmlaserve:responses_stored_bytes %zu\n",
                n, bytes);
    }
    fprintf(f, "# HELP mlaserve_build_info The running build (value 1).\n# TYPE mlaserve_build_info gauge\n"
               "mlaserve_build_info{version=\"%s\",commit=\"%s\"} 1\n", mlaserve_version, mlaserve_commit);
    fclose(f);
    return queue_text(c, cs, 200, "text/plain; version=0.0.4", text);
}

/* GET /health/generate: one real 1-token greedy generation through the engine
 * (a 1-token prompt), answered 200 with its latency or 503 with the reason.
 * Bounded by HEALTH_GENERATE_TIMEOUT_MS; the probe's request is cancelled if it
 * does not finish in time (a stuck engine). */
static enum MHD_Result handle_health_generate(http_server *h, struct MHD_Connection *c, conn_state *cs) {
    oai_error e;
    if (not_ready_error(h, &e)) return queue_error(c, cs, &e);
    int32_t prompt = tokenizer_bos_id(h->tok) >= 0 ? tokenizer_bos_id(h->tok) : 0;
    sched_request sr = {.prompt = &prompt, .n_prompt = 1, .max_tokens = 1, .sampling = sample_params_default(),
                        .ignore_eos = 1, .top_logprobs = -1, .skip_special = 1};
    sr.sampling.temperature = 0;
    int queue_full = 0;
    ms_err err = {{0}};
    double t0 = now_s();
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u); /* bounded here instead */
    sched_stream *st = sched_submit(h->engine, &sr, &queue_full, &err);
    if (!st) {
        oai_error_set(&e, 503, "service_unavailable", NULL, queue_full ? "queue_full" : "engine_error",
                      "health check could not submit: %s", err.msg);
        return queue_error(c, cs, &e);
    }
    sched_event ev = {0};
    finish_reason fin = FINISH_NONE;
    int tokens = 0;
    while (fin == FINISH_NONE && (now_s() - t0) * 1e3 < HEALTH_GENERATE_TIMEOUT_MS) {
        if (!sched_stream_next(st, &ev, STREAM_POLL_MS)) continue;
        tokens += ev.token >= 0;
        fin = ev.finish;
        free(ev.text);
    }
    sched_stream_free(st);
    double ms = (now_s() - t0) * 1e3;
    if (fin != FINISH_LENGTH || tokens != 1) {
        oai_error_set(&e, 503, "service_unavailable", NULL, "engine_unhealthy", "the engine did not generate a token (%s, %.0f ms)",
                      fin == FINISH_NONE ? "timed out" : fin == FINISH_ERROR ? ev.error : "ended early", ms);
        serve_log_request(h->cfg.log_json, "warn", cs->request_id, "%s", e.message);
        return queue_error(c, cs, &e);
    }
    return queue_json(c, cs, 200, json_pack("{s:s,s:i,s:f}", "status", "ok", "tokens", tokens, "latency_ms", ms));
}

static int check_model_field(http_server *h, json_t *b, oai_error *e) {
    json_t *m = json_object_get(b, "model");
    if (!m || json_is_null(m)) return 0;
    if (!json_is_string(m)) return oai_error_set(e, 400, "invalid_request_error", "model", NULL, "'model' must be a string");
    if (!model_served(h, json_string_value(m)))
        return oai_error_set(e, 404, "invalid_request_error", "model", "model_not_found", "The model `%.200s` does not exist.",
                             json_string_value(m));
    return 0;
}

static json_t *load_body(conn_state *cs, oai_error *e) {
    json_t *b = oai_parse_body(cs->body ? cs->body : "", cs->len, e);
    if (b && !json_is_object(b)) {
        json_decref(b);
        b = NULL;
        oai_error_set(e, 400, "invalid_request_error", NULL, "invalid_json", "The request body must be a JSON object");
    }
    return b;
}

/* POST /invocations (AWS SageMaker's container contract, as vLLM serves it): a
 * body with "messages" is a chat completion, one with "prompt" a completion. */
static enum MHD_Result handle_invocations(http_server *h, struct MHD_Connection *c, conn_state *cs) {
    oai_error e;
    json_t *b = load_body(cs, &e);
    if (!b) return queue_error(c, cs, &e);
    int chat = json_object_get(b, "messages") != NULL, completion = json_object_get(b, "prompt") != NULL;
    int responses = json_object_get(b, "input") != NULL;
    if (chat + completion + responses != 1) {
        json_decref(b);
        oai_error_set(&e, 400, "invalid_request_error", NULL, NULL,
                      "/invocations needs one of 'messages' (chat completion), 'prompt' (completion) or 'input' "
                      "(Responses API)");
        return queue_error(c, cs, &e);
    }
    enum MHD_Result r = handle_generate(h, c, cs, b, completion ? OAI_COMPLETION : OAI_CHAT, responses);
    json_decref(b);
    return r;
}

static int opt_bool(json_t *b, const char *name, int dflt, int *out, oai_error *e) {
    json_t *v = json_object_get(b, name);
    if (!v || json_is_null(v)) return *out = dflt, 0;
    if (!json_is_boolean(v)) return oai_error_set(e, 400, "invalid_request_error", name, NULL, "'%s' must be a boolean", name);
    *out = json_is_true(v);
    return 0;
}

/* vLLM's /tokenize: {"prompt", "add_special_tokens"=true} or {"messages", and
 * what else shapes a chat prompt: "tools", "chat_template_kwargs",
 * "add_generation_prompt"=true, "continue_final_message"=false, a "prefix" last
 * message} — rendered exactly as /v1/chat/completions renders it. */
static enum MHD_Result handle_tokenize(http_server *h, struct MHD_Connection *c, conn_state *cs) {
    oai_error e;
    if (not_ready_error(h, &e)) return queue_error(c, cs, &e);
    json_t *b = load_body(cs, &e);
    if (!b) return queue_error(c, cs, &e);
    json_t *prompt = json_object_get(b, "prompt"), *msgs = json_object_get(b, "messages");
    char *text = NULL;
    size_t len = 0;
    int special = 0, rc = check_model_field(h, b, &e);
    if (!rc && json_is_string(prompt)) {
        rc = opt_bool(b, "add_special_tokens", 1, &special, &e);
        if (!rc && !(text = malloc(json_string_length(prompt) + 1))) rc = oai_error_set(&e, 503, "service_unavailable", NULL, NULL, "out of memory");
        if (!rc) memcpy(text, json_string_value(prompt), (len = json_string_length(prompt)) + 1);
    } else if (!rc && json_is_array(msgs)) { /* rendered as the chat endpoint would: tools, kwargs, prefix */
        oai_features f;
        oai_ctx ctx = parse_ctx(h);
        rc = oai_features_parse(b, 1, &f, &e) || oai_render_chat(b, &ctx, &f, &text, &len, &e);
        oai_features_free(&f);
    } else if (!rc) {
        rc = oai_error_set(&e, 400, "invalid_request_error", "prompt", NULL, "a string 'prompt' or a 'messages' array is required");
    }
    int32_t *ids = NULL;
    size_t n = 0;
    ms_err err = {{0}};
    if (!rc && tokenizer_encode(h->tok, text, len, &ids, &n, &err) != 0)
        rc = oai_error_set(&e, 400, "invalid_request_error", json_is_string(prompt) ? "prompt" : "messages", NULL, "%s", err.msg);
    free(text);
    json_decref(b);
    if (rc) return queue_error(c, cs, &e);
    json_t *arr = json_array();
    int bos = special && tokenizer_add_bos(h->tok) && tokenizer_bos_id(h->tok) >= 0;
    if (bos) json_array_append_new(arr, json_integer(tokenizer_bos_id(h->tok)));
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    return queue_json(c, cs, 200, json_pack("{s:i,s:i,s:o}", "count", (int)n + bos, "max_model_len",
                                            sched_get_config(h->engine)->max_model_len, "tokens", arr));
}

static enum MHD_Result handle_detokenize(http_server *h, struct MHD_Connection *c, conn_state *cs) {
    oai_error e;
    if (not_ready_error(h, &e)) return queue_error(c, cs, &e);
    json_t *b = load_body(cs, &e);
    if (!b) return queue_error(c, cs, &e);
    int rc = check_model_field(h, b, &e);
    json_t *toks = json_object_get(b, "tokens");
    size_t n = json_array_size(toks);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!rc && !json_is_array(toks))
        rc = oai_error_set(&e, 400, "invalid_request_error", "tokens", NULL, "'tokens' must be an array of token ids");
    if (!rc && !ids) rc = oai_error_set(&e, 503, "service_unavailable", NULL, NULL, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        json_t *v = json_array_get(toks, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= h->vocab_size)
            rc = oai_error_set(&e, 400, "invalid_request_error", "tokens", NULL,
                               "'tokens'[%zu] must be a token id in [0, %d)", i, h->vocab_size);
        else
            ids[i] = (int32_t)json_integer_value(v);
    }
    json_decref(b);
    if (rc) {
        free(ids);
        return queue_error(c, cs, &e);
    }
    size_t len = 0;
    char *text = tokenizer_decode_len(h->tok, ids, n, 0, &len);
    free(ids);
    if (!text) {
        oai_error_set(&e, 503, "service_unavailable", NULL, NULL, "out of memory");
        return queue_error(c, cs, &e);
    }
    json_t *o = json_pack("{s:o}", "prompt", oai_json_string_lossy(text, len));
    free(text);
    return queue_json(c, cs, 200, o);
}

/* ------------------------------------------------------------ dispatch */

/* The Bearer token is compared with every key through SHA-256 with no early
 * exit, so the time depends on neither the content nor which key matched. */
static int auth_ok(http_server *h, struct MHD_Connection *c) {
    if (h->n_keys == 0) return 1;
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!hdr || strncasecmp(hdr, "Bearer ", 7)) return 0;
    const char *tok = hdr + 7;
    while (*tok == ' ') tok++;
    uint8_t a[SHA256_DIGEST_BYTES];
    sha256_of(tok, strlen(tok), a);
    int ok = 0;
    for (int k = 0; k < h->n_keys; k++) {
        volatile uint8_t diff = 0;
        for (int i = 0; i < SHA256_DIGEST_BYTES; i++) diff |= a[i] ^ h->key_hashes[k][i];
        ok |= diff == 0;
    }
    return ok;
}

/* The route of url; *path_id: the {id} in it (model or response id, copied into id_buf), else NULL. */
static const route *find_route(const char *url, const char **path_id, char id_buf[128]) {
    static const route model_route = {"/v1/models/{id}", R_MODEL, "GET", 1};
    static const route response_route = {"/v1/responses/{id}", R_RESPONSE, "GET, DELETE", 1};
    static const route items_route = {"/v1/responses/{id}/input_items", R_RESPONSE_ITEMS, "GET", 1};
    static const route cancel_route = {"/v1/responses/{id}/cancel", R_RESPONSE_CANCEL, "POST", 1};
    *path_id = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (!strcmp(url, routes[i].path)) return &routes[i];
    if (!strncmp(url, "/v1/models/", 11) && url[11]) {
        *path_id = url + 11;
        return &model_route;
    }
    if (strncmp(url, "/v1/responses/", 14) || !url[14]) return NULL;
    const char *id = url + 14, *slash = strchr(id, '/');
    size_t n = slash ? (size_t)(slash - id) : strlen(id);
    if (n == 0 || n >= 128 || (slash && strcmp(slash, "/input_items") && strcmp(slash, "/cancel"))) return NULL;
    memcpy(id_buf, id, n);
    id_buf[n] = 0;
    *path_id = id_buf;
    return !slash ? &response_route : !strcmp(slash, "/cancel") ? &cancel_route : &items_route;
}

/* method is one of the route's ("GET" or "GET, DELETE"). */
static int method_allowed(const route *rt, const char *method) {
    size_t n = strlen(method);
    for (const char *m = rt->method; *m; m += strspn(m, ", ")) {
        size_t k = strcspn(m, ", ");
        if (k == n && !strncmp(m, method, n)) return 1;
        m += k;
    }
    return 0;
}

static enum MHD_Result dispatch(http_server *h, struct MHD_Connection *c, conn_state *cs, const char *url) {
    const char *path_id;
    char id_buf[128];
    find_route(url, &path_id, id_buf);
    switch (cs->rt->id) {
    case R_CHAT: return handle_generate(h, c, cs, NULL, OAI_CHAT, 0);
    case R_COMPLETIONS: return handle_generate(h, c, cs, NULL, OAI_COMPLETION, 0);
    case R_RESPONSES: return handle_generate(h, c, cs, NULL, OAI_CHAT, 1);
    case R_MODELS: return handle_models(h, c, cs, NULL);
    case R_MODEL: return handle_models(h, c, cs, path_id);
    case R_RESPONSE: return handle_response(h, c, cs, path_id);
    case R_RESPONSE_ITEMS: return handle_response_items(h, c, cs, path_id);
    case R_RESPONSE_CANCEL: return handle_response_cancel(h, c, cs, path_id);
    case R_HEALTH:
    case R_PING: return queue_json(c, cs, 200, json_pack("{s:s}", "status", "ok"));
    case R_INVOCATIONS: return handle_invocations(h, c, cs);
    case R_HEALTH_GENERATE: return handle_health_generate(h, c, cs);
    case R_READY: {
        int ok = atomic_load(&h->ready) && !atomic_load(&h->draining);
        return queue_json(c, cs, ok ? 200 : 503,
                          json_pack("{s:s}", "status", ok ? "ready" : atomic_load(&h->draining) ? "draining" : "loading"));
    }
    case R_METRICS: return handle_metrics(h, c, cs);
    case R_TOKENIZE: return handle_tokenize(h, c, cs);
    case R_DETOKENIZE: return handle_detokenize(h, c, cs);
    case R_VERSION: return queue_json(c, cs, 200, json_pack("{s:s,s:s}", "version", mlaserve_version, "commit", mlaserve_commit));
    }
    return MHD_NO;
}

/* OPTIONS on a route: 204 with Allow; for a CORS preflight (Origin and
 * Access-Control-Request-Method sent) also the methods, headers and max age
 * the browser may cache, or 403 when the origin is not allowed. No API key:
 * browsers send none with a preflight. */
static enum MHD_Result answer_options(struct MHD_Connection *c, conn_state *cs) {
    char allow[48];
    snprintf(allow, sizeof allow, "%s%s, OPTIONS", cs->rt->method, method_allowed(cs->rt, "GET") ? ", HEAD" : "");
    const char *want = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Method");
    int preflight = want && MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (preflight && !cs->cors_origin[0]) {
        oai_error e;
        oai_error_set(&e, 403, "invalid_request_error", NULL, "cors_origin_not_allowed",
                      "Origin not allowed by this server's --allowed-origins");
        return queue_error(c, cs, &e);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Allow", allow);
    add_common_headers(r, cs);
    if (preflight) {
        MHD_add_response_header(r, "Access-Control-Allow-Methods", allow);
        MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                cors_allow_headers(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                                               "Access-Control-Request-Headers")));
        MHD_add_response_header(r, "Access-Control-Max-Age", CORS_MAX_AGE_S);
    }
    cs->status = 204;
    enum MHD_Result ret = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    return ret;
}

/* A POST's refusal waits for its body (libmicrohttpd closes a connection
 * answered with the body unread, and a keep-alive client would lose it),
 * unless the body is declared too large or the client waits for "100
 * Continue" before sending it. */
static enum MHD_Result refuse(http_server *h, struct MHD_Connection *c, conn_state *cs, const char *method,
                              const oai_error *e) {
    const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    const char *clen = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (strcmp(method, "POST") || (expect && strcasestr(expect, "100-continue")) ||
        (clen && strtoull(clen, NULL, 10) > h->cfg.max_body_bytes))
        return queue_error(c, cs, e);
    cs->refusal = *e;
    cs->refused = 1;
    return MHD_YES;
}

/* Route, method, auth and declared body size: for a POST on the first call,
 * before any body is read; for other methods on the second (see on_request).
 * *answered: the request is settled (answered, or refused once its body is in). */
static enum MHD_Result first_call(http_server *h, struct MHD_Connection *c, conn_state *cs, const char *url,
                                  const char *method, int *answered) {
    oai_error e;
    const char *path_id;
    char id_buf[128];
    *answered = 1;
    cs->rt = find_route(url, &path_id, id_buf);
    if (!cs->rt) {
        oai_error_set(&e, 404, "invalid_request_error", NULL, "not_found", "No route %.100s %.100s", method, url);
        return refuse(h, c, cs, method, &e);
    }
    if (!strcmp(method, "OPTIONS")) return answer_options(c, cs);
    int head_of_get = !strcmp(method, "HEAD") && method_allowed(cs->rt, "GET"); /* libmicrohttpd drops the body */
    if (!method_allowed(cs->rt, method) && !head_of_get) {
        oai_error_set(&e, 405, "invalid_request_error", NULL, "method_not_allowed", "%.100s %s: use %s", method,
                      cs->rt->path, cs->rt->method);
        return refuse(h, c, cs, method, &e);
    }
    if (cs->rt->auth && !auth_ok(h, c)) {
        oai_error_set(&e, 401, "authentication_error", NULL, "invalid_api_key",
                      "Missing or invalid API key (send 'Authorization: Bearer <key>')");
        return refuse(h, c, cs, method, &e);
    }
    const char *clen = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (clen && strtoull(clen, NULL, 10) > h->cfg.max_body_bytes) {
        oai_error_set(&e, 413, "invalid_request_error", NULL, "request_too_large",
                      "The request body (%.30s bytes) is larger than the limit of %zu bytes", clen, h->cfg.max_body_bytes);
        return queue_error(c, cs, &e);
    }
    *answered = 0;
    return MHD_YES;
}

/* X-Request-Id as sent when it is 1..REQUEST_ID_MAX printable ASCII characters
 * (no spaces or quotes: it goes into log lines), else a fresh random one. */
static void set_request_id(struct MHD_Connection *c, conn_state *cs) {
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = v ? strlen(v) : 0;
    int ok = n > 0 && n <= REQUEST_ID_MAX;
    for (size_t i = 0; ok && i < n; i++) ok = v[i] > 0x20 && v[i] < 0x7f && v[i] != '"' && v[i] != '\\';
    if (ok) memcpy(cs->request_id, v, n + 1);
    else random_hex(cs->request_id, 32);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    http_server *h = cls;
    (void)version;
    conn_state *cs = *con_cls;
    if (!cs) {
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        *con_cls = cs;
        cs->t_start = now_s();
        cs->ttft_s = -1;
        cs->draining = &h->draining;
        conn_guard_headers_done(h->guard, c);
        snprintf(cs->method, sizeof cs->method, "%s", method);
        snprintf(cs->path, sizeof cs->path, "%s", url);
        set_request_id(c, cs);
        const char *origin = cors_allow_origin(h->cfg.allowed_origins,
                                               MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"));
        if (origin) snprintf(cs->cors_origin, sizeof cs->cors_origin, "%s", origin);
        /* A request without a body is answered on the next call: libmicrohttpd
         * closes a connection whose response is queued on the first one, and
         * keep-alive (probes, load balancers, browsers' preflights) would be lost. */
        if (strcmp(method, "POST")) return MHD_YES;
        int answered;
        enum MHD_Result r = first_call(h, c, cs, url, method, &answered);
        return answered ? r : MHD_YES; /* else wait for the body */
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cs->refused) { /* read and dropped; an undeclared body beyond the limit drops the connection */
            cs->len += n;
            return cs->len > h->cfg.max_body_bytes ? MHD_NO : MHD_YES;
        }
        if (cs->too_large || cs->len + n > h->cfg.max_body_bytes) {
            cs->too_large = 1; /* keep reading and dropping it: then answer 413 */
            return MHD_YES;
        }
        if (cs->len + n + 1 > cs->cap) {
            size_t cap = (cs->len + n + 1) * 2;
            if (cap > h->cfg.max_body_bytes + 1) cap = h->cfg.max_body_bytes + 1;
            char *b = realloc(cs->body, cap);
            if (!b) return MHD_NO;
            cs->body = b, cs->cap = cap;
        }
        memcpy(cs->body + cs->len, upload_data, n);
        cs->len += n;
        cs->body[cs->len] = 0;
        return MHD_YES;
    }
    if (cs->status) return MHD_YES; /* already answered */
    if (cs->refused) return queue_error(c, cs, &cs->refusal);
    if (strcmp(method, "POST")) {
        int answered;
        enum MHD_Result r = first_call(h, c, cs, url, method, &answered);
        return answered ? r : dispatch(h, c, cs, url);
    }
    if (cs->too_large) {
        oai_error e;
        oai_error_set(&e, 413, "invalid_request_error", NULL, "request_too_large",
                      "The request body is larger than the limit of %zu bytes", h->cfg.max_body_bytes);
        return queue_error(c, cs, &e);
    }
    return dispatch(h, c, cs, url);
}

/* The access log line: text, or JSON with the generation fields when --log-format json. */
static void access_log(http_server *h, const conn_state *cs, int status) {
    double ms = (now_s() - cs->t_start) * 1e3;
    const char *rid = cs->request_id[0] ? cs->request_id : NULL;
    if (!h->cfg.log_json) {
        if (cs->is_generation)
            serve_log_request(0, "INFO", rid, "\"%s %s\" %d %.1fms prompt=%d completion=%d cached=%d ttft=%.1fms",
                              cs->method, cs->path, status, ms, cs->prompt_tokens, cs->completion_tokens,
                              cs->cached_tokens, cs->ttft_s >= 0 ? cs->ttft_s * 1e3 : -1.0);
        else
            serve_log_request(0, "INFO", rid, "\"%s %s\" %d %.1fms", cs->method, cs->path, status, ms);
        return;
    }
    json_t *o = json_pack("{s:s,s:o,s:i,s:f}", "method", cs->method, "path", oai_json_string_lossy(cs->path, strlen(cs->path)),
                          "status", status, "duration_ms", round(ms * 1e3) / 1e3);
    if (o && cs->is_generation) {
        json_object_set_new(o, "prompt_tokens", json_integer(cs->prompt_tokens));
        json_object_set_new(o, "completion_tokens", json_integer(cs->completion_tokens));
        json_object_set_new(o, "cached_tokens", json_integer(cs->cached_tokens));
        json_object_set_new(o, "ttft_ms", cs->ttft_s >= 0 ? json_real(round(cs->ttft_s * 1e6) / 1e3) : json_null());
    }
    log_json_fields("info", rid, "request", o);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    http_server *h = cls;
    conn_state *cs = *con_cls;
    if (!cs) return;
    /* from 0 (generation) back to the idle timeout; this also restarts its clock */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)h->cfg.idle_timeout_s);
    conn_guard_rearm(h->guard, c); /* the next request head on this keep-alive connection has a deadline too */
    int status = cs->status ? cs->status : 499;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && status == 200) status = 499; /* client went away mid-response */
    metrics_record_status(&h->metrics, status);
    if (!cs->rt || (cs->rt->id != R_HEALTH && cs->rt->id != R_READY && cs->rt->id != R_METRICS) || status >= 400)
        access_log(h, cs, status);
    free(cs->body);
    free(cs);
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    http_server *h = cls;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci) conn_guard_opened(h->guard, c, ci->connect_fd);
    } else {
        conn_guard_closed(h->guard, c);
    }
}

/* ------------------------------------------------------------ life cycle */

static void server_free(http_server *h) {
    free(h->host);
    free(h->key_hashes);
    free(h->served_model);
    for (int i = 0; i < h->n_aliases; i++) free(h->aliases[i]);
    free(h->aliases);
    free(h->model_root);
    metrics_destroy(&h->metrics);
    conn_guard_stop(h->guard);
    resp_store_free(h->store);
    pthread_cond_destroy(&h->bg_cv);
    pthread_mutex_destroy(&h->bg_mu);
    free(h);
}

static int copy_aliases(http_server *h, const http_config *cfg) {
    if (cfg->n_aliases <= 0) return 0;
    if (!(h->aliases = calloc((size_t)cfg->n_aliases, sizeof *h->aliases))) return -1;
    for (int i = 0; i < cfg->n_aliases; i++) {
        if (!(h->aliases[i] = strdup(cfg->aliases[i]))) return -1;
        h->n_aliases = i + 1;
    }
    return 0;
}

/* Keeps only SHA-256 digests of the keys (auth_ok compares digests). */
static int hash_keys(http_server *h, const http_config *cfg) {
    if (cfg->n_api_keys <= 0) return 0;
    h->key_hashes = malloc((size_t)cfg->n_api_keys * sizeof *h->key_hashes);
    if (!h->key_hashes) return -1;
    for (int k = 0; k < cfg->n_api_keys; k++) sha256_of(cfg->api_keys[k], strlen(cfg->api_keys[k]), h->key_hashes[k]);
    h->n_keys = cfg->n_api_keys;
    return 0;
}

http_server *http_start(const http_config *cfg, ms_err *err) {
    http_server *h = calloc(1, sizeof *h);
    if (!h) {
        ms_err_set(err, "out of memory");
        return NULL;
    }
    metrics_init(&h->metrics);
    pthread_mutex_init(&h->bg_mu, NULL);
    pthread_cond_init(&h->bg_cv, NULL);
    h->cfg = *cfg;
    h->cfg.api_keys = NULL; /* not kept: only their digests */
    if (h->cfg.idle_timeout_s <= 0) h->cfg.idle_timeout_s = HTTP_DEFAULT_IDLE_TIMEOUT_S;
    h->guard = conn_guard_start(cfg->header_timeout_s);
    h->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    h->served_model = strdup(cfg->served_model ? cfg->served_model : "model");
    h->model_root = strdup(cfg->model_root ? cfg->model_root : "");
    h->created = (long)time(NULL);
    char hex[SHA256_HEX_CHARS];
    sha256_hex_of(h->served_model, strlen(h->served_model), hex);
    snprintf(h->fingerprint, sizeof h->fingerprint, "fp_%.10s", hex);
    int aliases_ok = copy_aliases(h, cfg) == 0;
    if (cfg->responses_store > 0) h->store = resp_store_new(cfg->responses_store, RESP_STORE_DEFAULT_BYTES);
    if (!h->host || !h->served_model || !h->model_root || !h->guard || !aliases_ok || hash_keys(h, cfg) != 0 ||
        (cfg->responses_store > 0 && !h->store)) {
        server_free(h);
        ms_err_set(err, "out of memory");
        return NULL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(h->host, port, &hints, &ai);
    if (gai != 0) {
        ms_err_set(err, "--host %s: %s", h->host, gai_strerror(gai));
        server_free(h);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    h->daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
                                 ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)(cfg->max_connections > 0 ? cfg->max_connections : 256),
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->cfg.idle_timeout_s,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_BYTES,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION,
                                 on_connection, h, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        ms_err_set(err, "cannot listen on %s:%d (address in use or not available?)", h->host, cfg->port);
        server_free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : cfg->port;
    return h;
}

int http_port(const http_server *h) { return h->port; }

void http_set_engine(http_server *h, const http_engine *e) {
    h->vocab = e->vocab;
    h->variant = e->variant;
    h->tok = e->tok;
    h->vocab_size = e->vocab_size;
    h->engine = e->sched;
    atomic_store(&h->ready, 1);
}

int http_drain(http_server *h, int timeout_ms) {
    atomic_store(&h->draining, 1);
    MHD_socket lsock = MHD_quiesce_daemon(h->daemon);
    if (lsock != MHD_INVALID_SOCKET) close(lsock);
    double deadline = now_s() + timeout_ms / 1e3;
    while (atomic_load(&h->inflight) > 0 && now_s() < deadline) usleep(20000);
    int left = atomic_load(&h->inflight);
    if (left > 0) {
        atomic_store(&h->abort_all, 1); /* workers cancel their streams at their next poll slice */
        deadline = now_s() + 5.0;
        while (atomic_load(&h->inflight) > 0 && now_s() < deadline) usleep(20000);
    }
    return left;
}

void http_stop(http_server *h) {
    if (!h) return;
    atomic_store(&h->abort_all, 1);
    if (h->daemon) MHD_stop_daemon(h->daemon);
    pthread_mutex_lock(&h->bg_mu); /* background runners end at their next poll slice (abort_all) */
    while (h->bg_threads > 0) pthread_cond_wait(&h->bg_cv, &h->bg_mu);
    pthread_mutex_unlock(&h->bg_mu);
    server_free(h);
}
