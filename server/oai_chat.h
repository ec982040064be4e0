/* server/oai_chat.h — the agent-facing request parameters of the OpenAI API:
 * `tools`, `tool_choice`, `parallel_tool_calls`, `response_format`,
 * `include_reasoning` and `chat_template_kwargs`, vLLM's `guided_json` /
 * `guided_choice` / `guided_regex` / `structured_outputs`, and the continuation of the last
 * message (`prefix`, `continue_final_message`, `add_generation_prompt`),
 * parsed and validated into an oai_features, plus what they imply: the constraint grammar (structured
 * outputs, forced tool calls; common/constrain.h) and how the output is split
 * (reasoning, tool calls; server/chat_output.h).
 *
 * Rules (documented for users in docs/agents.md):
 *   - tool_choice: "none" | "auto" (default with tools) | "required" |
 *     {"type":"function","function":{"name":N}}; "required" and a named
 *     function force a well-formed call through the tool-call grammar; "auto"
 *     lets the model choose and parses what it writes; "none" renders the
 *     tools but parses nothing.
 *   - response_format: {"type":"text"} | {"type":"json_object"} |
 *     {"type":"json_schema","json_schema":{"name","schema","strict"?}}; an
 *     unsupported schema keyword is a 400 naming it. With a forced tool choice
 *     the tool grammar wins (both cannot hold at once: 400).
 *   - vLLM's spellings, both endpoints: guided_json (a schema, or its JSON
 *     text), guided_choice (an array of strings: the output is exactly one of
 *     them, raw), guided_regex (the whole raw output matches the pattern,
 *     common/regex_dfa.h's syntax), and structured_outputs {"json": ...} /
 *     {"choice": [...]} / {"regex": "..."}. At most one of these and a JSON
 *     response_format (400 naming the second).
 *   - With reasoning on (the template opens <think>), the constraint starts
 *     after "</think>".
 *   - Continuing the last message (DeepSeek's chat prefix completion,
 *     vLLM's continue_final_message): {"prefix": true} on the last message,
 *     which must be an assistant message (on any other: 400), or
 *     "continue_final_message": true. The prompt then ends inside that
 *     message (common/chat_template.h) and the reply holds only what the model
 *     adds. add_generation_prompt (default: true, false when continuing) may
 *     not be true while continuing (400), nor may a JSON response_format or a
 *     forced tool_choice be asked (their constraint would ignore the prefix).
 * Who calls it: server/openai.c. Pure (the grammar is built here and owned by
 * the request). */
#ifndef MS_OAI_CHAT_H
#define MS_OAI_CHAT_H

#include <jansson.h>

#include "common/chat_template.h"
#include "common/constrain.h"

struct oai_error;

typedef enum { TOOL_CHOICE_NONE, TOOL_CHOICE_AUTO, TOOL_CHOICE_REQUIRED, TOOL_CHOICE_NAMED } oai_tool_choice;

typedef struct oai_features {
    json_t *tools;               /* the validated `tools` array (a reference), NULL without tools */
    oai_tool_choice tool_choice;
    char forced_name[72];        /* TOOL_CHOICE_NAMED */
    int parallel_tool_calls;     /* default 1 */
    int include_reasoning;       /* default 1 */
    int thinking;                /* chat_template_kwargs.thinking (V3.1 templates) */
    int continue_final;          /* continue the last (assistant) message */
    int add_generation_prompt;   /* default 1; 0 when continuing */
    const char *grammar_param;   /* the parameter that asked for the grammar (for errors), NULL without one */
    cons_grammar *grammar;       /* owned; NULL: unconstrained */
    /* filled by oai_features_resolve once the template is known */
    int parse_reasoning, starts_in_reasoning, parse_tool_calls;
} oai_features;

/* Parses the parameters above from a request body. chat: 0 for
 * /v1/completions (only response_format is accepted there). 0, or -1 with err. */
int oai_features_parse(const json_t *body, int chat, oai_features *f, struct oai_error *err);

/* Decides reasoning/tool parsing for a template variant and the server's
 * --reasoning-parser setting (reasoning_flag: 1 on, 0 auto = on when the
 * prompt, rendered from messages, ends inside an opened <think>), and compiles
 * the forced-tool grammar. Fills the template options the prompt needs
 * (variant, thinking, tools, generation prompt, continuation). */
int oai_features_resolve(oai_features *f, const json_t *messages, chat_template_variant variant, int reasoning_flag,
                         chat_template_opts *topts, struct oai_error *err);

void oai_features_free(oai_features *f);

#endif
