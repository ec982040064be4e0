/* server/toolcall.h — DeepSeek tool-call parser: turns generated text into
 * content and function calls, streaming or in one go. Pure text: no HTTP, no
 * engine.
 *
 * DeepSeek-V3 writes (the markers are single added tokens; they arrive here as
 * their literal text):
 *   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{ARGS}\n```<｜tool▁call▁end｜>
 *   \n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜><｜tool▁calls▁end｜>
 * and DeepSeek-V3.1 writes a call as
 *   <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{ARGS}<｜tool▁call▁end｜>
 *
 * What is accepted (leniently):
 *   - A call body "TYPE<｜tool▁sep｜>NAME ARGS" when TYPE is "function" (V3),
 *     else "NAME<｜tool▁sep｜>ARGS" (V3.1). Consequence: a V3.1 tool named
 *     "function" cannot be called (its call reads as a V3 call with no name).
 *   - ARGS: one JSON object, optionally fenced: "```json" or "```" (any
 *     language word), closing fence optional, any whitespace around them.
 *   - A section opened by <｜tool▁calls▁begin｜>, or by a bare
 *     <｜tool▁call▁begin｜> in content; a missing <｜tool▁calls▁end｜> at the
 *     end of the stream; whitespace between calls (dropped).
 * A call is valid when its name is 1..64 bytes of [A-Za-z0-9_.-] and its
 * arguments are a JSON object (validated with jansson). The arguments go out
 * verbatim (the model's text, trimmed of surrounding whitespace), not
 * re-serialised.
 *
 * Content: text before the section is content, streamed as it comes (only a
 * possible marker prefix at the end of a piece is held back). Text after
 * <｜tool▁calls▁end｜> is content too (as in vLLM), with its leading
 * whitespace dropped; a later <｜tool▁calls▁begin｜> opens another section.
 *
 * Malformed output is never an error and never lost: the raw text of a
 * malformed call (from its <｜tool▁call▁begin｜> to its <｜tool▁call▁end｜>
 * inclusive) is emitted as CONTENT at the point it turns out malformed —
 * when its end marker arrives and it does not parse, when another call or the
 * section's end starts before it ended, or at toolcall_finish — and a warning
 * is recorded (toolcall_warning). Non-whitespace text between calls inside a
 * section is emitted as CONTENT (trimmed) with a warning. Calls before or
 * after a malformed one are still CALL events. The section markers
 * <｜tool▁calls▁begin｜>/<｜tool▁calls▁end｜> themselves are never emitted.
 *
 * Markers are special tokens, so their literal text is taken as the marker
 * wherever it appears, even inside a JSON string of the arguments (such a
 * call then fails to parse and falls back to content).
 *
 * Who calls it: the HTTP layer (one parser per choice) and
 * test/unit/test_toolcall.c. No global state: thread-safe, one parser per
 * thread. Every int function returns 0, or -1 when out of memory or when the
 * emit callback failed. */
#ifndef MS_TOOLCALL_H
#define MS_TOOLCALL_H

#include <stddef.h>

#define TOOLCALL_NAME_MAX 64 /* bytes of a function name at most */

typedef enum { TOOLCALL_CONTENT, TOOLCALL_CALL } toolcall_event_kind;

/* One event. Pointers are valid only during the emit callback; strings are
 * NUL-terminated. */
typedef struct toolcall_event {
    toolcall_event_kind kind;
    const char *text;          /* CONTENT: the delta (len bytes, never 0) */
    size_t len;
    int index;                 /* CALL: 0, 1, ... in the order emitted */
    const char *name;          /* CALL */
    const char *arguments;     /* CALL: JSON object text as the model wrote it, trimmed */
    size_t arguments_len;
} toolcall_event;

/* Returns 0, or nonzero to make the push fail (-1). */
typedef int (*toolcall_emit_fn)(void *ctx, const toolcall_event *ev);

typedef struct toolcall_parser toolcall_parser;

/* NULL when out of memory. emit is called, in text order, from push/finish. */
toolcall_parser *toolcall_new(toolcall_emit_fn emit, void *ctx);
void toolcall_free(toolcall_parser *p);

/* Feeds the next piece of generated text; emits the events it decides. */
int toolcall_push(toolcall_parser *p, const char *text, size_t len);
/* End of stream (call once): releases held text; an unfinished call goes out
 * as content with a warning. */
int toolcall_finish(toolcall_parser *p);

/* CALL events emitted so far (finish_reason "tool_calls" when > 0). */
int toolcall_count(const toolcall_parser *p);
/* The last warning (for the log), or NULL when there was none. */
const char *toolcall_warning(const toolcall_parser *p);

/* ---- non-streaming ---- */

typedef struct toolcall_call {
    char *name;
    char *arguments;
} toolcall_call;

typedef struct toolcall_result {
    char *content;             /* all CONTENT concatenated, NUL-terminated ("" for none) */
    size_t content_len;
    toolcall_call *calls;
    int n_calls;
    char warning[256];         /* the last warning, "" for none */
} toolcall_result;

/* Parses a whole output. 0, or -1 out of memory (out then holds nothing). */
int toolcall_parse(const char *text, size_t len, toolcall_result *out);
void toolcall_result_free(toolcall_result *r);

#endif
