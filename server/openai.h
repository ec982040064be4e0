/* server/openai.h — the OpenAI API surface: request parsing/validation and
 * response formatting, with no HTTP and no engine calls in it.
 *
 * oai_parse_*() turn a request body (bytes as received) into an oai_request:
 * every parameter type- and range-checked, the prompt rendered (chat template)
 * and tokenized, max_tokens resolved against the context. Failures fill an
 * oai_error: the HTTP status, the OpenAI error type, the offending `param`
 * and a message — never a 500 for anything a client can send.
 * The oai_*_json() helpers build the response objects (final JSON, SSE chunks,
 * error objects) from what the engine streamed.
 *
 * Who calls it: server/http.c (one HTTP worker thread per request) and
 * test/unit/test_openai.c. Everything here is a pure function of its
 * arguments (the tokenizer is only read): thread-safe. Ownership: an
 * oai_request owns its strings and prompt arrays (oai_request_free). */
#ifndef MS_OPENAI_H
#define MS_OPENAI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/chat_template.h"
#include "common/constrain.h"
#include "common/tokenizer.h"
#include "engine/sched.h"
#include "server/chat_output.h"
#include "server/oai_chat.h"

#define OAI_MAX_N 64          /* choices per prompt at most */
#define OAI_MAX_PROMPTS 64    /* prompts in one completions request at most */

typedef enum { OAI_CHAT, OAI_COMPLETION } oai_kind;

typedef struct oai_error {
    int status;               /* HTTP status: 400, 401, 404, 405, 413, 429, 503 */
    const char *type;         /* "invalid_request_error", "authentication_error", ... */
    char param[64];           /* offending parameter, "" for none (JSON null) */
    char code[48];            /* "" for none (JSON null) */
    char message[1024];
} oai_error;

/* What the parser needs to know about the server. */
typedef struct oai_ctx {
    const tokenizer *tok;
    const char *served_model;  /* the `model` value accepted (the first --served-model-name) */
    const char *const *aliases; /* more accepted names (--served-model-name repeated); the reply names the one sent */
    int n_aliases;
    int max_model_len;         /* prompt + completion tokens at most */
    int vocab_size;            /* token ids in prompts must be below this */
    chat_template_variant variant; /* the model's chat template */
    int reasoning_flag;        /* --reasoning-parser: 1 deepseek-r1, 0 auto (when the template opens <think>), -1 none */
    const cons_vocab *vocab;   /* token trie for constrained decoding (NULL: response_format/forced tools refused) */
    /* /v1/responses with stored responses (server/resp_store.h): the
     * conversation a stored response ended (new reference), NULL when id is
     * not stored. NULL function: nothing is stored (previous_response_id refused). */
    json_t *(*resp_history)(void *cls, const char *id);
    void *resp_cls;
} oai_ctx;

/* The prompt text of a chat body (its "messages", with f from
 * oai_features_parse: tools, chat_template_kwargs, continuation) as
 * /v1/chat/completions renders it; also resolves f for ctx's template. 0 with
 * *text malloc'd (the caller frees it), or -1 with err. */
int oai_render_chat(const json_t *body, const oai_ctx *ctx, oai_features *f, char **text, size_t *len, oai_error *err);

/* 1 if name is the served model or one of its aliases. */
int oai_model_served(const oai_ctx *ctx, const char *name);

typedef struct oai_prompt {
    int32_t *ids;              /* malloc'd */
    int n_ids;
    char *text;                /* completions: the prompt string as sent (for echo); NULL for token prompts and chat */
} oai_prompt;

typedef struct oai_request {
    oai_kind kind;
    char *model;               /* as sent (a served name after validation) */
    char ignored[160];         /* body fields this server does not read, ", "-joined (logged as a warning); "" if none */
    oai_prompt *prompts;       /* chat: 1; completions: one per prompt */
    int n_prompts;
    int n;                     /* choices generated per prompt (best_of when given) */
    int n_return;              /* choices returned per prompt: the request's n (< n only with best_of) */
    int max_tokens;            /* resolved: sent value, else the rest of the context (of the longest prompt);
                                * 0 only with completions echo (the prompt scored, nothing generated) */
    int max_tokens_given;
    sample_params sampling;    /* seed: the request's, else chosen by the caller (seed_given 0) */
    int seed_given;
    int32_t *bias_ids;         /* logit_bias: n_bias (token id, bias) pairs, malloc'd */
    float *bias_values;
    int n_bias;
    char *stop[SCHED_MAX_STOP];
    int n_stop;
    int include_stop;          /* vLLM include_stop_str_in_output */
    int32_t stop_ids[SCHED_MAX_STOP_IDS]; /* vLLM stop_token_ids */
    int n_stop_ids;
    int min_tokens;            /* vLLM min_tokens */
    int stream, include_usage;
    int continuous_usage;      /* vLLM stream_options.continuous_usage_stats (with include_usage): usage in every chunk */
    int logprobs;              /* chat: logprobs true; completions: logprobs not null */
    int top_logprobs;          /* alternatives per token (chat top_logprobs / completions logprobs) */
    int ignore_eos;
    int echo;                  /* completions: prepend the prompt text */
    int prompt_logprobs;       /* completions echo + logprobs: the prompt tokens' logprobs lead the choice's */
    int prompt_top;            /* vLLM prompt_logprobs: alternatives per prompt token (0..20), -1 when not asked */
    int skip_special;
    oai_features feat;         /* tools, tool_choice, response_format, reasoning (server/oai_chat.h) */
    const cons_vocab *vocab;   /* from the ctx, for the per-choice constraint */
    int responses;             /* a /v1/responses request (server/oai_responses.h): output always split */
    int resp_store;            /* responses: to be stored (store asked, and the server stores) */
    int resp_background;       /* responses: background: true (answered "queued", run after the answer) */
    json_t *resp_echo;         /* responses: the fields the Response object echoes (owned), else NULL */
    json_t *resp_history;      /* responses: the conversation's chat messages, instructions left out (owned) */
    json_t *resp_items;        /* responses: the request's input items, as sent (owned) */
} oai_request;

void oai_request_free(oai_request *r);

/* Parses a POST /v1/chat/completions or /v1/completions body. Returns 0, or -1
 * with err filled (r then holds nothing to free). */
int oai_parse_request(oai_kind kind, const char *body, size_t len, const oai_ctx *ctx, oai_request *r,
                      oai_error *err);
/* The same for a body already parsed (not retained). */
int oai_parse_request_json(oai_kind kind, const json_t *body, const oai_ctx *ctx, oai_request *r, oai_error *err);

/* The sched_request for choice `choice` (0 .. n_prompts*n-1: prompt choice/n)
 * of r. Seeds: request seed (or base_seed when none was sent) + choice. The
 * result points into r; its constraint (structured output / forced tool call)
 * is new and owned by whoever submits it (sched_submit). 0, or -1 with err
 * when the constraint cannot be created. */
int oai_sched_request(const oai_request *r, int choice, uint64_t base_seed, sched_request *out, ms_err *err);

/* The request body parsed (duplicate keys refused), or NULL with a 400
 * invalid_json naming the line and column. Any JSON value: the parsers check
 * for an object. */
json_t *oai_parse_body(const char *body, size_t len, oai_error *err);

/* body's member `name`, or NULL when it is absent or JSON null (OpenAI clients
 * send null for "not set"). */
json_t *oai_field(const json_t *body, const char *name);

/* out (cap bytes): the names of body's members for which known(name, arg) is
 * 0, ", "-joined, each cut at 40 bytes, ", ..." when they do not all fit; ""
 * if none — the fields a request names that no parser reads, for the log. */
void oai_unread_fields(const json_t *body, int (*known)(const char *name, const void *arg), const void *arg, char *out,
                       size_t cap);

/* Fills err (returns -1 for `return oai_error_set(...)`). param/code may be NULL. */
int oai_error_set(oai_error *err, int status, const char *type, const char *param, const char *code,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* {"error":{"message","type","param","code"}} (new reference). */
json_t *oai_error_json(const oai_error *err);

/* ---- responses ---- */

/* One choice as the engine produced it. */
typedef struct oai_choice {
    char *text;                /* generated text (echo excluded), malloc'd */
    size_t text_len, text_cap;
    finish_reason finish;
    int completion_tokens;
    int cached_tokens;         /* prompt tokens served from the prefix cache */
    json_t *logprobs;          /* chat: array of content entries; completions: object of arrays; NULL if not asked */
    json_t *prompt_lps;        /* vLLM prompt_logprobs: [null, {"<id>": {logprob, rank, decoded_token}}, ...]; NULL if not asked */
    size_t text_offset;        /* completions logprobs: offset of the next token's text */
    const char *echo;          /* completions echo: the prompt text (borrowed), else NULL */
    size_t echo_len;
    size_t prompt_offset;      /* prompt logprobs: offset of the next prompt token's text within echo */
    int echo_sent;             /* streaming: the echo chunk went out (oai_stream_echo) */
    chat_output *out;          /* chat with reasoning or tool parsing: the split output; else NULL */
    int failed;                /* out of memory while parsing the output */
    double logprob_sum;        /* of the generated tokens whose logprob the engine sent (best_of ranking) */
    int n_logprob;
} oai_choice;

/* echo: the prompt text a completions choice starts with (borrowed: it must
 * outlive c), or NULL. 0, or -1 when out of memory. */
int oai_choice_init(oai_choice *c, const oai_request *r, const char *echo);
void oai_choice_free(oai_choice *c);
/* best_of (completions): per prompt, the r->n_return of its r->n candidates
 * with the highest mean token logprob, best first (ties: the earlier), as
 * indices into choices[0, n_prompts * r->n); returns how many (n_prompts *
 * r->n_return). Without best_of every choice in order. */
int oai_best_choices(const oai_request *r, const oai_choice *choices, int *keep);
/* Appends an event's text and logprobs (if asked) to c; a prompt token's event
 * (ev->prompt) adds only its logprobs, with text_offset inside the echoed
 * prompt (a special token the prompt text does not spell, like the BOS added
 * to a text prompt, takes no room). 0, or -1 out of memory. */
int oai_choice_add(oai_choice *c, const oai_request *r, const tokenizer *tok, const sched_event *ev);

/* "stop" / "length" (cancelled and error map to "stop"; NONE to JSON null). */
const char *oai_finish_string(finish_reason f);

/* The logprobs of one token event, as a streaming chunk carries them: chat
 * {"content":[{"token","logprob","bytes","top_logprobs"}]}; completions
 * {"tokens","token_logprobs","top_logprobs","text_offset"} with one entry each.
 * NULL when the event has no token or logprobs were not asked. */
json_t *oai_event_logprobs(const oai_request *r, const tokenizer *tok, const sched_event *ev, size_t text_offset);
/* The token's text for logprobs (lossy UTF-8 of its bytes), new reference. */
json_t *oai_token_text(const tokenizer *tok, int32_t id);

typedef struct oai_usage {
    int prompt_tokens, completion_tokens;
    int reasoning_tokens;      /* completion_tokens_details.reasoning_tokens (reported when reasoning is parsed) */
    int cached_tokens;         /* usage.prompt_tokens_details.cached_tokens and DeepSeek's prompt_cache_hit_tokens */
} oai_usage;

/* Final non-streaming response. echo_texts[prompt] (completions echo) may be NULL. */
json_t *oai_response_json(const oai_request *r, const char *id, long created, const char *fingerprint,
                          const oai_choice *choices, int n_choices, const char *const *echo_texts,
                          const oai_usage *usage);

/* One streaming chunk for choice `index`:
 *   role      non-NULL: chat delta carries {"role": role} (first chunk)
 *   text      delta content / completion text (len bytes; may be NULL for none)
 *   logprobs  this chunk's logprobs (stolen reference) or NULL
 *   finish    FINISH_NONE for null
 * With r->include_usage every chunk carries "usage": null. */
json_t *oai_chunk_json(const oai_request *r, const char *id, long created, const char *fingerprint, int index,
                       const char *role, const char *text, size_t len, json_t *logprobs, finish_reason finish);
/* Completions echo, streaming: the chunk carrying the prompt text (with the
 * prompt's logprobs when asked), once; NULL when c has no echo or it was sent.
 * Without prompt logprobs it goes out first; with them, before the first
 * non-prompt event (oai_stream_event). New reference. */
json_t *oai_stream_echo(const oai_request *r, oai_choice *c, const char *id, long created, const char *fingerprint,
                        int index);
/* Everything one engine event of choice `index` sends when streaming, as an
 * array of chunks (maybe empty): the echo chunk if due, text/logprobs chunks
 * (chat with reasoning or tools: reasoning_content / content / tool_calls
 * deltas), then the finish chunk; a prompt token's event sends nothing (its
 * logprobs go with the echo chunk). Updates c (counters, text offset, output
 * parsing). New reference. */
json_t *oai_stream_event(const oai_request *r, oai_choice *c, const tokenizer *tok, const sched_event *ev,
                         const char *id, long created, const char *fingerprint, int index);

/* Reasoning tokens of a choice (0 unless reasoning is parsed). */
int oai_choice_reasoning_tokens(const oai_choice *c);
/* The output parser's last warning for the log (a malformed tool call fell back to content), or NULL. */
const char *oai_choice_warning(const oai_choice *c);

/* The closing usage chunk (choices: []). */
json_t *oai_usage_chunk_json(const oai_request *r, const char *id, long created, const char *fingerprint,
                             const oai_usage *usage);

/* JSON string from possibly invalid UTF-8 bytes (lossy), new reference. */
json_t *oai_json_string_lossy(const char *s, size_t len);

#endif
