/* server/chat_output.h — what one chat choice's generated text becomes in the
 * OpenAI response: `reasoning_content`, `content` and `tool_calls`.
 *
 * The text the engine streams goes through the R1 reasoning parser
 * (server/reasoning.h) when reasoning is parsed, and what is not reasoning
 * through the DeepSeek tool-call parser (server/toolcall.h) when tools were
 * offered. The output keeps the totals; a streaming caller takes what is new
 * after each push as OpenAI chat deltas (chat_output_take_deltas), a
 * non-streaming one builds the final message (chat_output_message).
 *
 * Who calls it: server/openai.c (one per chat choice, on that request's HTTP
 * worker thread). Not shared between threads. Functions returning int give 0,
 * or -1 when out of memory. */
#ifndef MS_CHAT_OUTPUT_H
#define MS_CHAT_OUTPUT_H

#include <jansson.h>
#include <stddef.h>

#include "engine/sched.h"
#include "server/reasoning.h"
#include "server/toolcall.h"

typedef struct chat_output_opts {
    int parse_reasoning;     /* split off <think>…</think> reasoning */
    int starts_in_reasoning; /* the prompt already opened <think> */
    int include_reasoning;   /* 0: reasoning is parsed out but not returned */
    int parse_tool_calls;    /* tools were offered and tool_choice is not "none" */
} chat_output_opts;

typedef struct chat_tool_call {
    char id[32];             /* "call_" + 24 hex digits */
    char *name, *arguments;
} chat_tool_call;

typedef struct chat_output {
    chat_output_opts opts;
    reasoning_parser rp;
    toolcall_parser *tp;
    rbuf reasoning, content; /* totals */
    rbuf scratch_r, scratch_c; /* one push's reasoning parser output */
    chat_tool_call *calls;
    int n_calls, cap_calls;
    size_t reasoning_taken, content_taken;
    int calls_taken;
    int reasoning_tokens;
    int failed;              /* out of memory inside the tool-call callback */
    char warning[256];       /* the tool-call parser's last warning, "" for none */
} chat_output;

int chat_output_init(chat_output *o, const chat_output_opts *opts);
void chat_output_free(chat_output *o);

/* The text of one engine event. is_token: the event carried a generated token
 * (it counts as a reasoning token when reasoning was in progress). */
int chat_output_push(chat_output *o, const char *text, size_t len, int is_token);
/* End of the stream: releases held-back text (a tool call left unfinished
 * becomes content, with a warning). */
int chat_output_finish(chat_output *o);

/* {"role":"assistant","content":…, "reasoning_content":…?, "tool_calls":[…]?}:
 * content is null when there are tool calls and no text; reasoning_content is
 * there when reasoning is parsed and returned (null when there was none);
 * tool_calls only when there are calls. New reference. */
json_t *chat_output_message(const chat_output *o);

/* What is new since the last take, as an array of OpenAI delta objects to send
 * as one chunk each, in order: {"reasoning_content"}, {"content"}, then per new
 * tool call {"tool_calls":[{"index","id","type","function":{"name","arguments":""}}]}
 * and {"tool_calls":[{"index","function":{"arguments"}}]}. Empty array when
 * nothing is new. New reference (NULL only when out of memory). */
json_t *chat_output_take_deltas(chat_output *o);

/* "tool_calls" when the choice ended normally with calls, else the engine's reason. */
const char *chat_output_finish_string(const chat_output *o, finish_reason f);

#endif
