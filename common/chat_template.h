/* common/chat_template.h — the DeepSeek-V3 chat template, in plain C.
 *
 * Renders OpenAI-style messages to the prompt text exactly as the Jinja
 * `chat_template` of DeepSeek-V3's tokenizer_config.json does (golden SPEC §8;
 * cross-checked on test/golden/tokenizer/chat_template.jsonl). No Jinja engine:
 * this file is that one template, quirks included:
 *
 *   - Every system message, wherever it sits, is gathered (joined by "\n\n") and
 *     placed right after the BOS text "<｜begin▁of▁sentence｜>".
 *   - user:      "<｜User｜>" content.
 *   - assistant with content (a string, even ""): "<｜Assistant｜>" content EOS,
 *     or, right after tool outputs, "<｜tool▁outputs▁end｜>" content EOS. Any
 *     tool_calls of such a message are NOT rendered (the template ignores them).
 *   - assistant with content null/absent: its tool_calls. The first call of the
 *     whole conversation opens with "<｜Assistant｜><｜tool▁calls▁begin｜>"; every
 *     later call (any message) is "\n<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>"
 *     followed by "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>", so a single call is
 *     never closed and three calls close twice (`ns.is_first` is never reset).
 *   - tool: the first tool output of the whole conversation opens with
 *     "<｜tool▁outputs▁begin｜>"; later ones are "\n<｜tool▁output▁begin｜>…"
 *     (`ns.is_output_first` is never reset). A run of tool outputs is closed
 *     by the next assistant content, or by "<｜tool▁outputs▁end｜>" at the end.
 *   - add_generation_prompt appends "<｜Assistant｜>", except when the list ends
 *     with tool outputs (then the render ends with "<｜tool▁outputs▁end｜>").
 *
 * Input: a jansson array of message objects {role, content, tool_calls?}.
 * role is system | user | assistant | tool. content is a string, or (an
 * extension: the Jinja template itself needs strings) an array of
 * {"type":"text","text":…} parts, concatenated without separator. Where the
 * template would fail (Jinja `str + None`), so does this: system/user/tool need
 * content. An assistant message whose content is null renders its tool_calls;
 * absent content is treated the same (OpenAI lets clients omit it next to
 * tool_calls; Jinja would fail on the undefined value), but absent content
 * with absent tool_calls is an error. Otherwise absent or null tool_calls
 * render nothing (the template's loop over an undefined value). Each tool call needs type, function.name and function.arguments as
 * strings (arguments is the JSON text, as in OpenAI's API). Other fields
 * (name, id, tool_call_id) are ignored, as by the template.
 *
 * Reasoning: this template does NOT drop "<think>…</think>" from earlier
 * assistant turns (that is DeepSeek-R1's template). `strip_reasoning` adds the
 * R1 behaviour — assistant content becomes the text after its last "</think>"
 * (`content.split('</think>')[-1]`, no trimming) — and is off by default.
 *
 * Pure function of its inputs; no global state; thread-safe. */
#ifndef MS_CHAT_TEMPLATE_H
#define MS_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

#define CHAT_TEMPLATE_BOS "<｜begin▁of▁sentence｜>"

typedef struct chat_template_opts {
    bool add_generation_prompt; /* append "<｜Assistant｜>" (template default: false) */
    bool strip_reasoning;       /* R1-style </think> stripping; NOT part of this template: keep false */
} chat_template_opts;

/* Renders messages (a JSON array) into *out_text: a malloc'd, NUL-terminated
 * UTF-8 string starting with CHAT_TEMPLATE_BOS; the caller frees it. If
 * out_len is not NULL it receives the length in bytes (content may hold NUL
 * bytes from "\u0000"). opts may be NULL (all false). Returns 0, or -1 with
 * err naming the message index and field at fault (*out_text left NULL). */
int chat_template_render(const json_t *messages, const chat_template_opts *opts,
                         char **out_text, size_t *out_len, ms_err *err);

#endif
