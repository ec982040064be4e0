/* common/chat_template.c — the DeepSeek-V3 chat template (see chat_template.h).
 *
 * Mirrors the Jinja template statement by statement: one pass gathers the
 * system prompt, a second renders the conversation with the template's
 * namespace flags (is_first, is_tool, is_output_first), then the tail.
 * Owns nothing beyond the call; thread-safe. */
#include "common/chat_template.h"

#include <stdlib.h>
#include <string.h>

#define TOK_USER "<｜User｜>"
#define TOK_ASSISTANT "<｜Assistant｜>"
#define TOK_EOS "<｜end▁of▁sentence｜>"
#define TOK_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define TOK_CALLS_END "<｜tool▁calls▁end｜>"
#define TOK_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define TOK_CALL_END "<｜tool▁call▁end｜>"
#define TOK_SEP "<｜tool▁sep｜>"
#define TOK_OUTPUTS_BEGIN "<｜tool▁outputs▁begin｜>"
#define TOK_OUTPUTS_END "<｜tool▁outputs▁end｜>"
#define TOK_OUTPUT_BEGIN "<｜tool▁output▁begin｜>"
#define TOK_OUTPUT_END "<｜tool▁output▁end｜>"
#define THINK_END "</think>"

/* A growable byte string. ok drops to false on the first failed allocation;
 * appends after that are no-ops and the caller reports out of memory once. */
typedef struct {
    char *data;
    size_t len, cap;
    bool ok;
} strbuf;

static void sb_append(strbuf *sb, const char *s, size_t n) {
    if (!sb->ok) return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1) cap *= 2;
        char *p = realloc(sb->data, cap);
        if (!p) { sb->ok = false; return; }
        sb->data = p;
        sb->cap = cap;
    }
    if (n) memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

static void sb_puts(strbuf *sb, const char *s) { sb_append(sb, s, strlen(s)); }

/* The template's namespace `ns`. */
typedef struct {
    bool is_first;        /* a tool call has been rendered (never reset) */
    bool is_tool;         /* inside a run of tool outputs */
    bool is_output_first; /* no tool output rendered yet (never reset) */
} template_ns;

/* Reads message i's content into *text (cleared first) as the template sees
 * it: a string, or the concatenation of text parts. Returns 1 if present,
 * 0 if null or absent, -1 on a wrong type. */
static int content_read(const json_t *msg, size_t i, strbuf *text, ms_err *err) {
    text->len = 0;
    sb_append(text, "", 0);
    const json_t *c = json_object_get(msg, "content");
    if (!c || json_is_null(c)) return 0;
    if (json_is_string(c)) {
        sb_append(text, json_string_value(c), json_string_length(c));
        return 1;
    }
    if (!json_is_array(c))
        return ms_err_set(err, "messages[%zu].content: must be a string, an array of text parts, or null", i);
    for (size_t k = 0; k < json_array_size(c); k++) {
        const json_t *part = json_array_get(c, k);
        const json_t *type = json_object_get(part, "type");
        const json_t *t = json_object_get(part, "text");
        if (!json_is_object(part))
            return ms_err_set(err, "messages[%zu].content[%zu]: must be an object {\"type\":\"text\",\"text\":...}", i, k);
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return ms_err_set(err, "messages[%zu].content[%zu].type: only \"text\" parts are supported", i, k);
        if (!json_is_string(t))
            return ms_err_set(err, "messages[%zu].content[%zu].text: missing or not a string", i, k);
        sb_append(text, json_string_value(t), json_string_length(t));
    }
    return 1;
}

/* content_read for roles where the template needs a value (`'…' + content`). */
static int content_require(const json_t *msg, size_t i, const char *role, strbuf *text, ms_err *err) {
    int r = content_read(msg, i, text, err);
    if (r == 0) return ms_err_set(err, "messages[%zu].content: a %s message needs content (string or text parts)", i, role);
    return r < 0 ? -1 : 0;
}

static int role_of(const json_t *messages, size_t i, const char **role, ms_err *err) {
    const json_t *msg = json_array_get(messages, i);
    if (!json_is_object(msg)) return ms_err_set(err, "messages[%zu]: must be an object", i);
    const json_t *r = json_object_get(msg, "role");
    if (!json_is_string(r)) return ms_err_set(err, "messages[%zu].role: missing or not a string", i);
    const char *s = json_string_value(r);
    if (strcmp(s, "system") && strcmp(s, "user") && strcmp(s, "assistant") && strcmp(s, "tool"))
        return ms_err_set(err, "messages[%zu].role: unknown role '%s' (expected system, user, assistant or tool)", i, s);
    *role = s;
    return 0;
}

/* {{bos_token}}{{ns.system_prompt}}: every system message, joined by "\n\n". */
static int render_system(const json_t *messages, strbuf *out, strbuf *text, ms_err *err) {
    bool first = true;
    sb_puts(out, CHAT_TEMPLATE_BOS);
    for (size_t i = 0; i < json_array_size(messages); i++) {
        const char *role;
        if (role_of(messages, i, &role, err)) return -1;
        if (strcmp(role, "system")) continue;
        if (content_require(json_array_get(messages, i), i, role, text, err)) return -1;
        if (!first) sb_puts(out, "\n\n");
        sb_append(out, text->data, text->len);
        first = false;
    }
    return 0;
}

static const char *call_field(const json_t *obj, const char *key, size_t i, size_t k, const char *name, ms_err *err) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        ms_err_set(err, "messages[%zu].tool_calls[%zu].%s: missing or not a string", i, k, name);
        return NULL;
    }
    return json_string_value(v);
}

/* One tool call: "<type><｜tool▁sep｜><name>\n```json\n<arguments>\n```". */
static int render_call(const json_t *call, size_t i, size_t k, strbuf *out, template_ns *ns, ms_err *err) {
    if (!json_is_object(call)) return ms_err_set(err, "messages[%zu].tool_calls[%zu]: must be an object", i, k);
    const json_t *fn = json_object_get(call, "function");
    if (!json_is_object(fn)) return ms_err_set(err, "messages[%zu].tool_calls[%zu].function: missing or not an object", i, k);
    const char *type = call_field(call, "type", i, k, "type", err);
    const char *name = type ? call_field(fn, "name", i, k, "function.name", err) : NULL;
    const char *args = name ? call_field(fn, "arguments", i, k, "function.arguments", err) : NULL;
    if (!args) return -1;
    const json_t *args_json = json_object_get(fn, "arguments");
    if (!ns->is_first) {
        sb_puts(out, TOK_ASSISTANT TOK_CALLS_BEGIN TOK_CALL_BEGIN);
    } else {
        sb_puts(out, "\n" TOK_CALL_BEGIN);
    }
    sb_puts(out, type);
    sb_puts(out, TOK_SEP);
    sb_puts(out, name);
    sb_puts(out, "\n```json\n");
    sb_append(out, args, json_string_length(args_json));
    sb_puts(out, "\n```" TOK_CALL_END);
    if (ns->is_first) sb_puts(out, TOK_CALLS_END TOK_EOS); /* the template's quirk: not after the first */
    ns->is_first = true;
    return 0;
}

static int render_tool_calls(const json_t *msg, size_t i, strbuf *out, template_ns *ns, ms_err *err) {
    ns->is_tool = false;
    const json_t *calls = json_object_get(msg, "tool_calls");
    if (!calls || json_is_null(calls)) return 0;
    if (!json_is_array(calls)) return ms_err_set(err, "messages[%zu].tool_calls: must be an array", i);
    for (size_t k = 0; k < json_array_size(calls); k++)
        if (render_call(json_array_get(calls, k), i, k, out, ns, err)) return -1;
    return 0;
}

/* R1's `content.split('</think>')[-1]`: the text after the last "</think>". */
static void strip_reasoning(strbuf *text) {
    size_t n = strlen(THINK_END);
    for (size_t p = text->len; p >= n; p--) {
        if (memcmp(text->data + p - n, THINK_END, n) == 0) {
            memmove(text->data, text->data + p, text->len - p);
            text->len -= p;
            text->data[text->len] = '\0';
            return;
        }
    }
}

static int render_assistant(const json_t *msg, size_t i, const chat_template_opts *opts, strbuf *out,
                            strbuf *text, template_ns *ns, ms_err *err) {
    int has = content_read(msg, i, text, err);
    if (has < 0) return -1;
    if (!json_object_get(msg, "content") && !json_object_get(msg, "tool_calls"))
        return ms_err_set(err, "messages[%zu].content: an assistant message needs content or tool_calls", i);
    if (!has) return render_tool_calls(msg, i, out, ns, err);
    if (opts->strip_reasoning) strip_reasoning(text);
    sb_puts(out, ns->is_tool ? TOK_OUTPUTS_END : TOK_ASSISTANT);
    sb_append(out, text->data, text->len);
    sb_puts(out, TOK_EOS);
    ns->is_tool = false;
    return 0;
}

static int render_message(const json_t *messages, size_t i, const chat_template_opts *opts, strbuf *out,
                          strbuf *text, template_ns *ns, ms_err *err) {
    const json_t *msg = json_array_get(messages, i);
    const char *role;
    if (role_of(messages, i, &role, err)) return -1;
    if (!strcmp(role, "user")) {
        if (content_require(msg, i, role, text, err)) return -1;
        ns->is_tool = false;
        sb_puts(out, TOK_USER);
        sb_append(out, text->data, text->len);
    } else if (!strcmp(role, "assistant")) {
        return render_assistant(msg, i, opts, out, text, ns, err);
    } else if (!strcmp(role, "tool")) {
        if (content_require(msg, i, role, text, err)) return -1;
        ns->is_tool = true;
        sb_puts(out, ns->is_output_first ? TOK_OUTPUTS_BEGIN TOK_OUTPUT_BEGIN : "\n" TOK_OUTPUT_BEGIN);
        sb_append(out, text->data, text->len);
        sb_puts(out, TOK_OUTPUT_END);
        ns->is_output_first = false;
    }
    return 0; /* system: already rendered after BOS */
}

static int render(const json_t *messages, const chat_template_opts *opts, strbuf *out, strbuf *text, ms_err *err) {
    if (!json_is_array(messages)) return ms_err_set(err, "messages: must be an array");
    template_ns ns = {.is_first = false, .is_tool = false, .is_output_first = true};
    if (render_system(messages, out, text, err)) return -1;
    for (size_t i = 0; i < json_array_size(messages); i++)
        if (render_message(messages, i, opts, out, text, &ns, err)) return -1;
    if (ns.is_tool) sb_puts(out, TOK_OUTPUTS_END);
    if (opts->add_generation_prompt && !ns.is_tool) sb_puts(out, TOK_ASSISTANT);
    return 0;
}

int chat_template_render(const json_t *messages, const chat_template_opts *opts,
                         char **out_text, size_t *out_len, ms_err *err) {
    static const chat_template_opts defaults = {0};
    strbuf out = {.ok = true}, text = {.ok = true};
    *out_text = NULL;
    if (out_len) *out_len = 0;
    int rc = render(messages, opts ? opts : &defaults, &out, &text, err);
    if (rc == 0 && (!out.ok || !text.ok)) rc = ms_err_set(err, "chat template: out of memory");
    free(text.data);
    if (rc) {
        free(out.data);
        return -1;
    }
    *out_text = out.data;
    if (out_len) *out_len = out.len;
    return 0;
}
