/* server/oai_responses.h — OpenAI's Responses API (POST /v1/responses) on top
 * of the chat machinery: a Responses body is translated into the chat request
 * it means and parsed as one (server/openai.h), and the generated output —
 * split by the chat output parser into reasoning, text and tool calls — is
 * shaped as a Response object with output items, or as the Responses
 * streaming events.
 *
 * Translation (documented for users in docs/agents.md):
 *   input                string -> one user message; or an array of items:
 *                        messages ({"role","content"}, with or without
 *                        "type":"message"; content a string or input_text /
 *                        output_text / refusal parts; "developer" = system),
 *                        function_call items (-> the assistant message's
 *                        tool_calls), function_call_output items (-> tool
 *                        messages), reasoning items (dropped: the templates
 *                        drop earlier reasoning too). Images, files, audio and
 *                        other item types: 400 naming the item.
 *   instructions         -> a leading system message
 *   max_output_tokens    -> max_completion_tokens
 *   tools                [{"type":"function","name","description"?,
 *                        "parameters"?,"strict"?}] -> chat tools; other tool
 *                        types (web_search, file_search, ...): 400
 *   tool_choice          "none"|"auto"|"required"|{"type":"function","name"}
 *   text.format          {"type":"text"|"json_object"} or {"type":"json_schema",
 *                        "name","schema","strict"?} -> response_format
 *   temperature, top_p, parallel_tool_calls, user, stream: as chat; and the
 *   chat extensions top_k, min_p, seed, stop, presence/frequency/repetition
 *   penalties, logit_bias, ignore_eos, min_tokens, stop_token_ids,
 *   include_stop_str_in_output, skip_special_tokens, chat_template_kwargs,
 *   include_reasoning pass through unchanged.
 *   previous_response_id  the stored conversation it ended (ctx->resp_history,
 *                        server/resp_store.h) goes between the instructions
 *                        (which are not carried over, as OpenAI) and input;
 *                        404 when it is not stored, 400 when it has no
 *                        answer (a background one running, failed, cancelled)
 *   store                (default true) keep this one for previous_response_id
 *                        and GET /v1/responses/{id}, when the server stores
 *   metadata, reasoning, include ["reasoning.encrypted_content"],
 *   truncation "disabled", stream_options, service_tier, prompt_cache_key,
 *   safety_identifier, text.verbosity: accepted (echoed where the Response
 *   has the field).
 *   include ["message.output_text.logprobs"] or top_logprobs (0..20): the
 *                        message's tokens' logprobs (chat's logprobs underneath)
 *   background           true: r->resp_background (server/http.c answers the
 *                        Response "queued" at once and generates afterwards);
 *                        needs the response stored; not with stream (400)
 *   conversation, prompt, other include values,
 *   truncation "auto": 400 (not supported).
 * Output items, in order: a reasoning item (when reasoning is parsed and
 * returned and there was some), a message with one output_text part (when
 * there is text, or nothing else), one function_call item per call; each
 * item followed by another is "completed", the last one takes the response's
 * state.
 * status "completed", or "incomplete" with incomplete_details.reason
 * "max_output_tokens" when the token limit ended it.
 *
 * Who calls it: server/http.c (the request's HTTP worker thread) and
 * test/unit/test_responses.c. Pure; an oai_resp_stream is one request's. */
#ifndef MS_OAI_RESPONSES_H
#define MS_OAI_RESPONSES_H

#include <jansson.h>

#include "common/rbuf.h"
#include "server/openai.h"

/* Translates a /v1/responses body into its chat body (new reference), or
 * NULL with err (the parameter named as the Responses API names it); history:
 * the chat messages previous_response_id stands for (NULL: none, and the
 * parameter is refused). Exposed for the unit tests; oai_responses_parse does
 * this and the rest. */
json_t *oai_responses_to_chat(const json_t *body, const json_t *history, oai_error *err);

/* Parses a POST /v1/responses body into r (kind OAI_CHAT, r->responses set,
 * r->resp_echo the fields the Response object echoes; when it is to be stored,
 * r->resp_store with r->resp_history and r->resp_items). 0, or -1 with err. */
int oai_responses_parse(const char *body, size_t len, const oai_ctx *ctx, oai_request *r, oai_error *err);
/* The same for a body already parsed (b is only read). */
int oai_responses_parse_json(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err);

/* What a stored response keeps (r->resp_store): the conversation it ended
 * (r->resp_history plus the assistant's answer in c as a chat message), and
 * its input items with ids ("in_<hex>_<k>" where the client sent none). New
 * references, NULL when out of memory. */
json_t *oai_responses_history(const oai_request *r, const oai_choice *c);
json_t *oai_responses_items(const oai_request *r, const char *id);

/* ---- the event machine (streaming and not) ----
 * Every engine event of the one choice goes through oai_resp_stream_event;
 * a streaming caller sends the events it returns, a non-streaming one drops
 * them and answers oai_resp_stream_final once the choice ended — so both
 * give the same Response. */

typedef enum { RESP_ITEM_NONE, RESP_ITEM_REASONING, RESP_ITEM_MESSAGE } oai_resp_item;

typedef struct oai_resp_stream {
    char id[64];             /* the response id ("resp_...") */
    long created;
    int seq;                 /* sequence_number of the next event */
    oai_resp_item open;      /* the item whose text is streaming */
    int n_items;             /* output items started (output_index of the next) */
    size_t reasoning_sent, content_sent; /* bytes of the choice's totals turned into deltas */
    size_t reasoning_seen;   /* reasoning bytes seen (also when not returned) */
    int calls_sent;
    rbuf text;               /* the open item's text so far */
    json_t *output;          /* finished items, in order */
    json_t *lp_pending;      /* logprobs entries of tokens whose text the parser holds back */
    json_t *lp_message;      /* the open message's logprobs entries */
    json_t *final;           /* the Response of the terminal event, once sent */
} oai_resp_stream;

int oai_resp_stream_init(oai_resp_stream *s, const char *id, long created);
void oai_resp_stream_free(oai_resp_stream *s);
/* The whole Response after the terminal event (new reference), else NULL. */
json_t *oai_resp_stream_final(const oai_resp_stream *s);
/* The Response before it ends: status ("queued" or "in_progress"), no output
 * yet, usage null (what a background response reads as while it runs). */
json_t *oai_resp_stream_pending(const oai_resp_stream *s, const oai_request *r, const char *status);

/* The opening events: response.created and response.in_progress. New array. */
json_t *oai_resp_stream_begin(oai_resp_stream *s, const oai_request *r);

/* Adds one engine event to c (oai_choice_add) and returns the events it
 * sends, in order (maybe none): output_item.added / content_part.added when
 * an item starts, reasoning_text / output_text / function_call_arguments
 * deltas, the .done events when an item ends; after the last engine event,
 * response.completed, response.incomplete or response.failed carrying the
 * whole Response. Every event has "type" and "sequence_number". With
 * logprobs asked, an output_text delta carries the entries of the tokens whose
 * text it holds (tokens of reasoning or tool calls have none), and the
 * message's output_text part all of them. New array (NULL only when out of
 * memory). */
json_t *oai_resp_stream_event(oai_resp_stream *s, const oai_request *r, oai_choice *c, const tokenizer *tok,
                              const sched_event *ev);

#endif
