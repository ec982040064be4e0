/* common/chat_template.h — the DeepSeek chat templates (V3, R1, V3.1), in plain C.
 *
 * Renders OpenAI-style messages (and tool definitions) to the prompt text
 * exactly as the Jinja `chat_template` of the model's tokenizer_config.json
 * does under transformers' apply_chat_template. No Jinja engine: each variant
 * is that one template, quirks included. Which one a model uses:
 * chat_template_detect() on its tokenizer_config.json template, or a CLI name
 * (chat_template_variant_from_name). The default (a zeroed opts) is V3.
 *
 * CHAT_TEMPLATE_V3 — DeepSeek-V3's template (golden SPEC §8; cross-checked on
 * test/golden/tokenizer/chat_template.jsonl):
 *   - Every system message, wherever it sits, is gathered (joined by "\n\n") and
 *     placed right after the BOS text "<｜begin▁of▁sentence｜>". (All variants.)
 *   - user:      "<｜User｜>" content.
 *   - assistant with content (a string, even ""): "<｜Assistant｜>" content EOS,
 *     or, right after tool outputs, "<｜tool▁outputs▁end｜>" content EOS. Any
 *     tool_calls of such a message are NOT rendered (the template ignores them).
 *   - assistant with content null/absent: its tool_calls. The first call of the
 *     whole conversation opens with "<｜Assistant｜><｜tool▁calls▁begin｜>"; every
 *     later call (any message) is "\n<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>"
 *     followed by "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>", so a single call is
 *     never closed and three calls close twice (`ns.is_first` is never reset).
 *     A call is "TYPE<｜tool▁sep｜>NAME\n```json\nARGUMENTS\n```".
 *   - tool: the first tool output of the whole conversation opens with
 *     "<｜tool▁outputs▁begin｜>"; later ones are "\n<｜tool▁output▁begin｜>…"
 *     (`ns.is_output_first` is never reset). A run of tool outputs is closed
 *     by the next assistant content, or by "<｜tool▁outputs▁end｜>" at the end.
 *   - add_generation_prompt appends "<｜Assistant｜>", except when the list ends
 *     with tool outputs (then the render ends with "<｜tool▁outputs▁end｜>").
 *   This template keeps "<think>…</think>" in earlier assistant turns;
 *   `strip_reasoning` (off by default, V3 only) applies R1's
 *   `content.split('</think>')[-1]` (no trimming) to every assistant content.
 *
 * CHAT_TEMPLATE_R1 — DeepSeek-R1's template (deepseek-ai/DeepSeek-R1
 * tokenizer_config.json; verbatim copy read in mindspore-ai/golden-stick's
 * DeepSeek-R1 PTQ test runner). As V3, except:
 *   - assistant with a tool_calls key: "<｜Assistant｜>" (then its content, if
 *     not null, unstripped) "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" for the
 *     first call of the conversation, "\n<｜tool▁call▁begin｜>" for later ones,
 *     and "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>" once after each message's
 *     calls. Content of a message whose calls are not the conversation's first
 *     is dropped (is_first is never reset, as in V3).
 *   - assistant without tool_calls: content becomes `content.split('</think>')[-1]`
 *     (the text after the LAST "</think>"), except right after tool outputs
 *     ("<｜tool▁outputs▁end｜>" content EOS, content unstripped).
 *   - later tool outputs have no "\n" before "<｜tool▁output▁begin｜>".
 *   - add_generation_prompt appends "<｜Assistant｜><think>\n" (the generation
 *     prompt opens the reasoning block).
 *   DeepSeek-R1-0528's own template differs again (it appends "<｜Assistant｜>"
 *   after every user turn and no "<think>\n"); it is not reproduced here and
 *   chat_template_detect() maps it to R1.
 *
 * CHAT_TEMPLATE_V31 — DeepSeek-V3.1's template (deepseek-ai/DeepSeek-V3.1
 * tokenizer_config.json; identical copy in ggml-org/llama.cpp
 * models/templates/deepseek-ai-DeepSeek-V3.1.jinja; the model card's examples
 * render byte-identically):
 *   - user:      "<｜User｜>" content (ns.is_last_user = true).
 *   - assistant with tool_calls (non-null): "<｜Assistant｜></think>" if it
 *     follows a user turn, then (content, if not null, unstripped)
 *     "<｜tool▁calls▁begin｜>" before the message's first call, each call as
 *     "<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGUMENTS<｜tool▁call▁end｜>" (no
 *     type, no code fence; ARGUMENTS is the JSON text as sent), then
 *     "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>".
 *   - assistant without tool_calls: "<｜Assistant｜></think>" if it follows a
 *     user turn ("<｜Assistant｜><think>" when the message has a truthy
 *     "prefix" and thinking is on), then content EOS, where content is the text
 *     after the FIRST "</think>" (`split('</think>', 1)[1]`) — unless it follows
 *     tool outputs, then content is kept whole.
 *   - tool: "<｜tool▁output▁begin｜>" content "<｜tool▁output▁end｜>" (no
 *     outputs begin/end wrapper).
 *   - add_generation_prompt appends "<｜Assistant｜></think>" (thinking off, the
 *     default) or "<｜Assistant｜><think>" (thinking on) — only when the last
 *     turn is a user turn; after tool outputs or an assistant turn, nothing.
 *
 * Tools. None of the official templates renders `tools`; the community
 * templates that vLLM ships do, and each variant follows the one whose call
 * syntax matches its own (the text as the Jinja source builds it; the
 * indentation whitespace those pretty-printed files leak into the prompt is
 * not reproduced). The section is appended to the gathered system prompt as
 * SYSTEM + "\n\n" + SECTION — with no system message the prompt after BOS is
 * "\n\n" + SECTION, as the templates do. An empty tools array still renders the
 * section's header and footer (the templates test `tools is not none`).
 *   V3.1 — vLLM examples/tool_chat_template_deepseekv31.jinja, the
 *   tool_description of the DeepSeek-V3.1 model card:
 *     "## Tools\nYou have access to the following tools:\n"
 *     per tool: "\n### NAME\nDescription: DESCRIPTION\n\nParameters: PARAMS\n"
 *     "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
 *     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>"
 *     "tool_call_arguments<｜tool▁call▁end｜>{{additional_tool_calls}}"
 *     "<｜tool▁calls▁end｜>\n\nWhere:\n\n- `tool_call_name` must be an exact match"
 *     " to one of the available tools\n- `tool_call_arguments` must be valid JSON"
 *     " that strictly follows the tool's Parameters Schema\n- For multiple tool"
 *     " calls, chain them directly without separators or spaces\n"
 *   V3 and R1 — vLLM examples/tool_chat_template_deepseekr1.jinja (from
 *   sglang's), whose call format is the V3/R1 one:
 *     "You are a helpful assistant with tool calling capabilities. When a tool"
 *     " call is needed, you MUST use the following format to issue the call:\n"
 *     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>FUNCTION_NAME\n"
 *     "```json\n{\"param1\": \"value1\", \"param2\": \"value2\"}\n```"
 *     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n\nMake sure the JSON is valid."
 *     "## Tools\n\n### Function\n\nYou have the following functions available:\n\n"
 *     per tool: "\n```json\n" TOOL "\n```\n"   (TOOL: the whole tool object)
 * PARAMS and TOOL are Jinja `tojson` as transformers defines it:
 * json.dumps(x, ensure_ascii=False) — keys in the request's order (NOT sorted),
 * ", " and ": " separators, non-ASCII kept, control characters as \n \t … or
 * \u00XX, reals as Python's repr ("1.0", "1e-05", "1e+16").
 * Each tool must be {"function": {"name": string, "description"?: string,
 * "parameters"?: any}}; "type" and other keys are not checked. A missing
 * description renders as "" and missing parameters as null (the V3.1 block
 * would fail on the first, and renders vLLM's None as null for the second).
 *
 * Input: a jansson array of message objects {role, content, tool_calls?}.
 * role is system | user | assistant | tool. content is a string, or (an
 * extension: the Jinja templates need strings) an array of
 * {"type":"text","text":…} parts, concatenated without separator. Where a
 * template would fail (Jinja `str + None`), so does this: system/user/tool need
 * content, and so does an assistant message without tool_calls. Absent content
 * next to tool_calls is treated as null (OpenAI lets clients omit it; Jinja
 * would fail on the undefined value); tool_calls: null is treated as absent
 * (R1's `'tool_calls' in message` would then loop over None). Each rendered
 * tool call needs function.name and function.arguments (and, for V3/R1, type)
 * as strings; arguments is the JSON text, as in OpenAI's API. Other fields
 * (name, id, tool_call_id) are ignored, as by the templates.
 *
 * Continuing the final message (opts->continue_final_message; DeepSeek's
 * "chat prefix completion", vLLM's continue_final_message): the last message
 * must be an assistant turn with content and no tool_calls, and
 * add_generation_prompt must be off. Every earlier message renders as above;
 * the last one renders up to the end of its content — no EOS, no generation
 * prompt — so the model writes on from exactly that text. Its opener is the
 * template's (V3/R1 "<｜Assistant｜>", or "<｜tool▁outputs▁end｜>" after tool
 * outputs; V3.1 "<｜Assistant｜></think>" after a user turn, "<｜Assistant｜><think>"
 * with a truthy "prefix" and thinking on), and its content is kept whole: no
 * "</think>" stripping, the text the client wrote is the text continued.
 *
 * Who calls it: server/openai.c and server/http.c (chat requests),
 * server/cmd_chat_template.c and server/cmd_generate.c (CLI). Pure functions
 * of their inputs; no global state; thread-safe. */
#ifndef MS_CHAT_TEMPLATE_H
#define MS_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

#define CHAT_TEMPLATE_BOS "<｜begin▁of▁sentence｜>"

typedef enum chat_template_variant {
    CHAT_TEMPLATE_V3 = 0, /* DeepSeek-V3 (and V3-0324-style templates); the default */
    CHAT_TEMPLATE_R1,     /* DeepSeek-R1: reasoning stripped from history, prompt opens "<think>\n" */
    CHAT_TEMPLATE_V31,    /* DeepSeek-V3.1: hybrid thinking ("</think>" / "<think>" prompt) */
} chat_template_variant;

typedef struct chat_template_opts {
    bool add_generation_prompt;    /* append the generation prompt (template default: false) */
    bool strip_reasoning;          /* V3 only: R1-style </think> stripping; NOT part of the V3 template: keep false */
    chat_template_variant variant; /* which template (zero: CHAT_TEMPLATE_V3) */
    bool thinking;                 /* V3.1 only: chat_template_kwargs {"thinking": true} */
    const json_t *tools;           /* OpenAI `tools` array; NULL or JSON null: none */
    bool continue_final_message;   /* end inside the final assistant turn (see below) */
} chat_template_opts;

/* Renders messages (a JSON array) into *out_text: a malloc'd, NUL-terminated
 * UTF-8 string starting with CHAT_TEMPLATE_BOS; the caller frees it. If
 * out_len is not NULL it receives the length in bytes (content may hold NUL
 * bytes from "\u0000"). opts may be NULL (all false, V3, no tools). Returns 0,
 * or -1 with err naming the message/tool index and field at fault (*out_text
 * left NULL). */
int chat_template_render(const json_t *messages, const chat_template_opts *opts,
                         char **out_text, size_t *out_len, ms_err *err);

/* Picks the variant of a tokenizer_config.json `chat_template` string by
 * distinctive substrings: V3.1 by "<｜Assistant｜></think>" or its
 * "message['prefix'] … and thinking" test; R1 by a generation prompt opening
 * "<think>\n" or a `split('</think>')[-1]`; anything else (NULL included) V3. */
chat_template_variant chat_template_detect(const char *jinja_source);

/* 1 if the generation prompt render appends ends inside an opened <think>
 * block (R1 whenever add_generation_prompt is set; V3.1 when thinking is on
 * too), else 0: the server then starts its reasoning parser in reasoning mode.
 * Pass the variant opts->variant holds (it is not read from opts). Looks at no
 * messages: when the conversation ends with tool outputs (or, for V3.1, not
 * with a user turn) the templates append no generation prompt at all, so a
 * caller that cares checks the rendered text's end as well. opts may be NULL. */
int chat_template_opens_think(chat_template_variant variant, const chat_template_opts *opts);

/* With opts->continue_final_message: 1 if the final assistant turn, as
 * rendered, ends inside an opened <think> block (its last "<think>" — the V3.1
 * opener included — comes after its last "</think>"), else 0. Without the
 * option: chat_template_opens_think(opts->variant, opts). opts may be NULL. */
int chat_template_render_opens_think(const json_t *messages, const chat_template_opts *opts);

/* "deepseek-v3", "deepseek-r1", "deepseek-v3.1" (the CLI names) to a variant.
 * *ok (if not NULL) is 1 on a known name, else 0 and the result is V3. */
chat_template_variant chat_template_variant_from_name(const char *name, int *ok);

/* The CLI name of a variant ("deepseek-v3", …; "unknown" out of range). */
const char *chat_template_variant_name(chat_template_variant variant);

#endif
