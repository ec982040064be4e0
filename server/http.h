/* server/http.h — the HTTP front end of `mlaserve serve` (libmicrohttpd).
 *
 * Owns: the MHD daemon (one thread per connection), per-connection request
 * state, the HTTP-level metrics (request counters, TTFT and latency
 * summaries) and the route table:
 *   POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/{id}],
 *   GET /health, GET /health/generate, GET /ready, GET /metrics, POST /tokenize,
 *   POST /detokenize.
 * Every request gets an id (X-Request-Id as sent, or a random one) returned in
 * the X-Request-Id response header and carried by its log lines.
 * Every error is an OpenAI error object (server/openai.h) with its status.
 *
 * Life cycle (called by server/cmd_serve.c, one thread):
 *   http_start()       binds and serves; generation routes answer 503 and
 *                      /ready 503 until the engine is attached
 *   http_set_engine()  attaches the scheduler + tokenizer: ready
 *   http_drain()       stops accepting, /ready 503, waits for in-flight
 *                      generations up to a bound, then cancels what is left
 *   http_stop()        stops the daemon (joins connection threads), frees
 * HTTP worker threads never run the model: they submit to the scheduler and
 * read its event streams (engine/sched.h). A client that disconnects has its
 * requests cancelled. All functions are safe to call while workers run. */
#ifndef MS_HTTP_H
#define MS_HTTP_H

#include <stddef.h>

#include "common/chat_template.h"
#include "common/constrain.h"
#include "common/err.h"
#include "common/tokenizer.h"
#include "engine/sched.h"

typedef struct http_config {
    const char *host;          /* numeric address or name; "127.0.0.1" */
    int port;                  /* 0: any free port (see http_port) */
    const char *const *api_keys; /* accepted Bearer tokens (copied as digests); none: no authentication */
    int n_api_keys;
    const char *served_model;  /* the model id clients send (first of /v1/models) */
    const char *const *aliases; /* more ids they may send for it (copied); n_aliases of them */
    int n_aliases;
    const char *model_root;    /* shown as "root" in /v1/models */
    size_t max_body_bytes;     /* larger request bodies get 413 */
    int max_connections;       /* concurrent connections at most */
    int log_json;              /* request log lines as JSON instead of text */
    int idle_timeout_s;        /* a keep-alive connection idle this long is closed (0: HTTP_DEFAULT_IDLE_TIMEOUT_S) */
    int header_timeout_s;      /* a request head must arrive within this (0: no limit); see conn_guard.h */
    int reasoning_flag;        /* --reasoning-parser: 1 deepseek-r1, 0 auto, -1 none */
    const char *allowed_origins; /* --allowed-origins, server/cors.h (NULL: any origin); must outlive the server */
    int responses_store;       /* --responses-store: stored Responses at most (server/resp_store.h); 0: none */
} http_config;

#define HTTP_DEFAULT_IDLE_TIMEOUT_S 60
#define HTTP_DEFAULT_HEADER_TIMEOUT_S 30

typedef struct http_server http_server;

http_server *http_start(const http_config *cfg, ms_err *err);
/* The port actually bound. */
int http_port(const http_server *h);
/* What http_set_engine attaches: none of it owned; all must outlive http_stop. */
typedef struct http_engine {
    sched *sched;
    const tokenizer *tok;
    int vocab_size;                /* the model's (logits) */
    const cons_vocab *vocab;       /* constrained decoding; NULL: response_format / forced tools refused */
    chat_template_variant variant; /* the model's chat template */
} http_engine;

/* Attaches the engine and turns ready. */
void http_set_engine(http_server *h, const http_engine *e);
/* Graceful stop, part 1: see above. Returns the number of generations that
 * had to be cancelled after timeout_ms. */
int http_drain(http_server *h, int timeout_ms);
void http_stop(http_server *h);

/* One log line to stderr, text or JSON ({"ts","level","msg"}). Thread-safe. */
void serve_log(int json, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same for a line about one request: text "[request_id]" prefix, JSON "request_id" field. */
void serve_log_request(int json, const char *level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
