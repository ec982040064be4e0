/* common/chat_template.c — the DeepSeek chat templates (see chat_template.h).
 *
 * Mirrors each Jinja template statement by statement: one pass gathers the
 * system prompt (plus the tools section), a second renders the conversation
 * with the template's namespace flags (is_first, is_tool, is_output_first,
 * is_last_user), then the tail. V3, R1 and V3.1 share the helpers (content,
 * roles, system prompt, tojson) and have one message renderer each.
 * Owns nothing beyond the call; thread-safe. */
#include "common/chat_template.h"

#include <math.h>
#include <stdio.h>
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
#define TOJSON_MAX_DEPTH 512 /* nesting tojson follows before giving up (jansson parses up to 2048) */

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
    bool is_last_user;    /* V3.1: the last rendered message is a user turn */
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

/* ---- tojson: Python's json.dumps(x, ensure_ascii=False), as transformers' `tojson` ---- */

/* float.__repr__: the shortest digits that read back to v, fixed notation for
 * decimal exponents -4..15 (with ".0" when integral), else d[.ddd]e±XX. */
static void py_float_repr(double v, char *out, size_t cap) {
    if (isnan(v)) { snprintf(out, cap, "NaN"); return; }
    if (isinf(v)) { snprintf(out, cap, v < 0 ? "-Infinity" : "Infinity"); return; }
    if (v == 0) { snprintf(out, cap, signbit(v) ? "-0.0" : "0.0"); return; }
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = e + (e[0] == '-');
    for (; *p && *p != 'e' && nd + 1 < sizeof digits; p++)
        if (*p != '.') digits[nd++] = *p;
    digits[nd] = '\0';
    int exp10 = atoi(p + 1);
    const char *sign = v < 0 ? "-" : "";
    if (exp10 < -4 || exp10 >= 16) {
        snprintf(out, cap, "%s%c%s%se%c%02d", sign, digits[0], nd > 1 ? "." : "", digits + 1, exp10 < 0 ? '-' : '+',
                 abs(exp10));
    } else if (exp10 < 0) {
        snprintf(out, cap, "%s0.%.*s%s", sign, -exp10 - 1, "0000", digits);
    } else if ((size_t)exp10 + 1 >= nd) {
        snprintf(out, cap, "%s%s%.*s.0", sign, digits, (int)((size_t)exp10 + 1 - nd), "0000000000000000");
    } else {
        snprintf(out, cap, "%s%.*s.%s", sign, exp10 + 1, digits, digits + exp10 + 1);
    }
}

/* A JSON string as Python writes it: \" \\ \n \r \t \b \f, other controls
 * \u00xx (lowercase hex), everything else (UTF-8 included) as is. */
static void py_string(strbuf *sb, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    sb_puts(sb, "\"");
    size_t run = 0; /* bytes copied verbatim, flushed before each escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (!esc) { run++; continue; }
        sb_append(sb, s + i - run, run);
        run = 0;
        sb_puts(sb, esc);
    }
    sb_append(sb, s + n - run, run);
    sb_puts(sb, "\"");
}

/* Appends tojson(v); keys in the object's (insertion) order. -1 past TOJSON_MAX_DEPTH. */
static int py_dumps(strbuf *sb, const json_t *v, int depth) {
    char num[48];
    if (depth > TOJSON_MAX_DEPTH) return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        bool first = true;
        sb_puts(sb, "{");
        json_object_foreach((json_t *)v, key, val) {
            if (!first) sb_puts(sb, ", ");
            py_string(sb, key, strlen(key));
            sb_puts(sb, ": ");
            if (py_dumps(sb, val, depth + 1)) return -1;
            first = false;
        }
        sb_puts(sb, "}");
        return 0;
    }
    case JSON_ARRAY:
        sb_puts(sb, "[");
        for (size_t k = 0; k < json_array_size(v); k++) {
            if (k) sb_puts(sb, ", ");
            if (py_dumps(sb, json_array_get(v, k), depth + 1)) return -1;
        }
        sb_puts(sb, "]");
        return 0;
    case JSON_STRING: py_string(sb, json_string_value(v), json_string_length(v)); return 0;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_puts(sb, num);
        return 0;
    case JSON_REAL:
        py_float_repr(json_real_value(v), num, sizeof num);
        sb_puts(sb, num);
        return 0;
    case JSON_TRUE: sb_puts(sb, "true"); return 0;
    case JSON_FALSE: sb_puts(sb, "false"); return 0;
    default: sb_puts(sb, "null"); return 0;
    }
}

/* ---- tools: the section appended to the system prompt ---- */

#define V31_TOOLS_HEAD "## Tools\nYou have access to the following tools:\n"
#define V31_TOOLS_TAIL                                                                                              \
    "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n" TOK_CALLS_BEGIN TOK_CALL_BEGIN                 \
    "tool_call_name" TOK_SEP "tool_call_arguments" TOK_CALL_END "{{additional_tool_calls}}" TOK_CALLS_END "\n\n"    \
    "Where:\n\n"                                                                                                    \
    "- `tool_call_name` must be an exact match to one of the available tools\n"                                    \
    "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n"              \
    "- For multiple tool calls, chain them directly without separators or spaces\n"
#define R1_TOOLS_HEAD                                                                                               \
    "You are a helpful assistant with tool calling capabilities. "                                                  \
    "When a tool call is needed, you MUST use the following format to issue the call:\n" TOK_CALLS_BEGIN            \
    TOK_CALL_BEGIN "function" TOK_SEP "FUNCTION_NAME\n"                                                             \
    "```json\n{\"param1\": \"value1\", \"param2\": \"value2\"}\n```" TOK_CALL_END TOK_CALLS_END "\n\n"              \
    "Make sure the JSON is valid."                                                                                  \
    "## Tools\n\n### Function\n\nYou have the following functions available:\n\n"

/* Checks tools[k] is {"function": {"name": string, "description"?: string}};
 * returns its function object or NULL with err. */
static const json_t *tool_function(const json_t *tool, size_t k, ms_err *err) {
    if (!json_is_object(tool)) {
        ms_err_set(err, "tools[%zu]: must be an object {\"type\":\"function\",\"function\":{...}}", k);
        return NULL;
    }
    const json_t *fn = json_object_get(tool, "function");
    if (!json_is_object(fn)) {
        ms_err_set(err, "tools[%zu].function: missing or not an object", k);
        return NULL;
    }
    if (!json_is_string(json_object_get(fn, "name"))) {
        ms_err_set(err, "tools[%zu].function.name: missing or not a string", k);
        return NULL;
    }
    const json_t *desc = json_object_get(fn, "description");
    if (desc && !json_is_null(desc) && !json_is_string(desc)) {
        ms_err_set(err, "tools[%zu].function.description: must be a string", k);
        return NULL;
    }
    return fn;
}

/* V3.1: "\n### NAME\nDescription: DESCRIPTION\n\nParameters: tojson(PARAMS)\n". */
static int render_tool_v31(const json_t *fn, size_t k, strbuf *out, ms_err *err) {
    const json_t *name = json_object_get(fn, "name");
    const json_t *desc = json_object_get(fn, "description");
    const json_t *params = json_object_get(fn, "parameters");
    sb_puts(out, "\n### ");
    sb_append(out, json_string_value(name), json_string_length(name));
    sb_puts(out, "\nDescription: ");
    if (json_is_string(desc)) sb_append(out, json_string_value(desc), json_string_length(desc));
    sb_puts(out, "\n\nParameters: ");
    if (!params) sb_puts(out, "null"); /* vLLM's None; transformers would fail on the undefined value */
    else if (py_dumps(out, params, 0))
        return ms_err_set(err, "tools[%zu].function.parameters: nested deeper than %d", k, TOJSON_MAX_DEPTH);
    sb_puts(out, "\n");
    return 0;
}

/* `{% set ns.system_prompt = ns.system_prompt + '\n\n' + tool_ns.text %}`, right after the system prompt. */
static int render_tools(const json_t *tools, chat_template_variant variant, strbuf *out, ms_err *err) {
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return ms_err_set(err, "tools: must be an array");
    sb_puts(out, "\n\n");
    sb_puts(out, variant == CHAT_TEMPLATE_V31 ? V31_TOOLS_HEAD : R1_TOOLS_HEAD);
    for (size_t k = 0; k < json_array_size(tools); k++) {
        const json_t *tool = json_array_get(tools, k);
        const json_t *fn = tool_function(tool, k, err);
        if (!fn) return -1;
        if (variant == CHAT_TEMPLATE_V31) {
            if (render_tool_v31(fn, k, out, err)) return -1;
            continue;
        }
        sb_puts(out, "\n```json\n"); /* '\n```json\n' + (tool | tojson) + '\n```\n' */
        if (py_dumps(out, tool, 0)) return ms_err_set(err, "tools[%zu]: nested deeper than %d", k, TOJSON_MAX_DEPTH);
        sb_puts(out, "\n```\n");
    }
    if (variant == CHAT_TEMPLATE_V31) sb_puts(out, V31_TOOLS_TAIL);
    return 0;
}

/* ---- tool calls in the history ---- */

typedef struct {
    const json_t *type, *name, *args; /* strings; type is NULL where the template does not use it */
} tool_call;

static int call_field(const json_t *obj, const char *key, size_t i, size_t k, const char *name,
                      const json_t **out, ms_err *err) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return ms_err_set(err, "messages[%zu].tool_calls[%zu].%s: missing or not a string", i, k, name);
    *out = v;
    return 0;
}

/* Reads tool_calls[k] of message i: {type, function: {name, arguments}}. */
static int call_read(const json_t *call, size_t i, size_t k, bool need_type, tool_call *tc, ms_err *err) {
    if (!json_is_object(call)) return ms_err_set(err, "messages[%zu].tool_calls[%zu]: must be an object", i, k);
    const json_t *fn = json_object_get(call, "function");
    if (!json_is_object(fn)) return ms_err_set(err, "messages[%zu].tool_calls[%zu].function: missing or not an object", i, k);
    tc->type = NULL;
    if (need_type && call_field(call, "type", i, k, "type", &tc->type, err)) return -1;
    if (call_field(fn, "name", i, k, "function.name", &tc->name, err)) return -1;
    return call_field(fn, "arguments", i, k, "function.arguments", &tc->args, err);
}

static void sb_json_str(strbuf *sb, const json_t *s) { sb_append(sb, json_string_value(s), json_string_length(s)); }

/* V3/R1: "<type><｜tool▁sep｜><name>\n```json\n<arguments>\n```<｜tool▁call▁end｜>". */
static void render_call_body(const tool_call *tc, strbuf *out) {
    sb_json_str(out, tc->type);
    sb_puts(out, TOK_SEP);
    sb_json_str(out, tc->name);
    sb_puts(out, "\n```json\n");
    sb_json_str(out, tc->args);
    sb_puts(out, "\n```" TOK_CALL_END);
}

/* Message i's tool_calls array into *calls: 1 if present, 0 if absent or null, -1 if not an array. */
static int calls_of(const json_t *msg, size_t i, const json_t **calls, ms_err *err) {
    *calls = json_object_get(msg, "tool_calls");
    if (!*calls || json_is_null(*calls)) return 0;
    if (!json_is_array(*calls)) return ms_err_set(err, "messages[%zu].tool_calls: must be an array", i);
    return 1;
}

/* ---- V3 ---- */

/* One call, with the template's is_first quirk (see the header). */
static int render_call(const json_t *call, size_t i, size_t k, strbuf *out, template_ns *ns, ms_err *err) {
    tool_call tc;
    if (call_read(call, i, k, true, &tc, err)) return -1;
    sb_puts(out, ns->is_first ? "\n" TOK_CALL_BEGIN : TOK_ASSISTANT TOK_CALLS_BEGIN TOK_CALL_BEGIN);
    render_call_body(&tc, out);
    if (ns->is_first) sb_puts(out, TOK_CALLS_END TOK_EOS); /* the template's quirk: not after the first */
    ns->is_first = true;
    return 0;
}

static int render_tool_calls(const json_t *msg, size_t i, strbuf *out, template_ns *ns, ms_err *err) {
    ns->is_tool = false;
    const json_t *calls;
    int has = calls_of(msg, i, &calls, err);
    if (has <= 0) return has;
    for (size_t k = 0; k < json_array_size(calls); k++)
        if (render_call(json_array_get(calls, k), i, k, out, ns, err)) return -1;
    return 0;
}

/* The text after the last (R1: `split('</think>')[-1]`) or first (V3.1:
 * `split('</think>', 1)[1]`) "</think>"; unchanged without one. */
static void strip_reasoning(strbuf *text, bool last) {
    size_t n = strlen(THINK_END);
    if (text->len < n) return;
    for (size_t k = 0; k + n <= text->len; k++) {
        size_t p = last ? text->len - n - k : k; /* start of the candidate */
        if (memcmp(text->data + p, THINK_END, n) == 0) {
            memmove(text->data, text->data + p + n, text->len - p - n);
            text->len -= p + n;
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
    if (opts->strip_reasoning) strip_reasoning(text, true);
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

/* ---- R1 ---- */

/* `message['role'] == 'assistant' and 'tool_calls' in message`. */
static int render_assistant_r1_calls(const json_t *msg, size_t i, const json_t *calls, strbuf *out, strbuf *text,
                                     template_ns *ns, ms_err *err) {
    int has = content_read(msg, i, text, err); /* absent content: as null (Jinja would fail) */
    if (has < 0) return -1;
    ns->is_tool = false;
    for (size_t k = 0; k < json_array_size(calls); k++) {
        tool_call tc;
        if (call_read(json_array_get(calls, k), i, k, true, &tc, err)) return -1;
        if (!ns->is_first) {
            sb_puts(out, TOK_ASSISTANT);
            if (has) sb_append(out, text->data, text->len);
            sb_puts(out, TOK_CALLS_BEGIN TOK_CALL_BEGIN);
            ns->is_first = true;
        } else {
            sb_puts(out, "\n" TOK_CALL_BEGIN);
        }
        render_call_body(&tc, out);
    }
    sb_puts(out, TOK_CALLS_END TOK_EOS);
    return 0;
}

static int render_message_r1(const json_t *messages, size_t i, strbuf *out, strbuf *text, template_ns *ns,
                             ms_err *err) {
    const json_t *msg = json_array_get(messages, i);
    const char *role;
    if (role_of(messages, i, &role, err)) return -1;
    if (!strcmp(role, "user")) {
        if (content_require(msg, i, role, text, err)) return -1;
        ns->is_tool = false;
        sb_puts(out, TOK_USER);
        sb_append(out, text->data, text->len);
    } else if (!strcmp(role, "assistant")) {
        const json_t *calls;
        int has_calls = calls_of(msg, i, &calls, err);
        if (has_calls < 0) return -1;
        if (has_calls) return render_assistant_r1_calls(msg, i, calls, out, text, ns, err);
        int has = content_read(msg, i, text, err);
        if (has < 0) return -1;
        if (!has)
            return ms_err_set(err, "messages[%zu].content: an assistant message needs content or tool_calls", i);
        if (ns->is_tool) {
            sb_puts(out, TOK_OUTPUTS_END);
            ns->is_tool = false;
        } else {
            strip_reasoning(text, true);
            sb_puts(out, TOK_ASSISTANT);
        }
        sb_append(out, text->data, text->len);
        sb_puts(out, TOK_EOS);
    } else if (!strcmp(role, "tool")) {
        if (content_require(msg, i, role, text, err)) return -1;
        ns->is_tool = true;
        sb_puts(out, ns->is_output_first ? TOK_OUTPUTS_BEGIN TOK_OUTPUT_BEGIN : TOK_OUTPUT_BEGIN);
        sb_append(out, text->data, text->len);
        sb_puts(out, TOK_OUTPUT_END);
        ns->is_output_first = false;
    }
    return 0;
}

/* ---- V3.1 ---- */

/* Jinja truthiness of a JSON value (`message['prefix'] and thinking`). */
static bool json_truthy(const json_t *v) {
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT: return json_object_size(v) > 0;
    case JSON_ARRAY: return json_array_size(v) > 0;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0;
    case JSON_TRUE: return true;
    default: return false;
    }
}

static int render_assistant_v31_calls(const json_t *msg, size_t i, const json_t *calls, strbuf *out, strbuf *text,
                                      template_ns *ns, ms_err *err) {
    int has = content_read(msg, i, text, err); /* absent content: as null (Jinja would fail) */
    if (has < 0) return -1;
    if (ns->is_last_user) sb_puts(out, TOK_ASSISTANT THINK_END);
    ns->is_last_user = false;
    ns->is_first = false;
    ns->is_tool = false;
    for (size_t k = 0; k < json_array_size(calls); k++) {
        tool_call tc;
        if (call_read(json_array_get(calls, k), i, k, false, &tc, err)) return -1;
        if (!ns->is_first) {
            if (has) sb_append(out, text->data, text->len);
            sb_puts(out, TOK_CALLS_BEGIN);
            ns->is_first = true;
        }
        sb_puts(out, TOK_CALL_BEGIN);
        sb_json_str(out, tc.name);
        sb_puts(out, TOK_SEP);
        sb_json_str(out, tc.args);
        sb_puts(out, TOK_CALL_END);
    }
    sb_puts(out, TOK_CALLS_END TOK_EOS);
    return 0;
}

static int render_message_v31(const json_t *messages, size_t i, const chat_template_opts *opts, strbuf *out,
                              strbuf *text, template_ns *ns, ms_err *err) {
    const json_t *msg = json_array_get(messages, i);
    const char *role;
    if (role_of(messages, i, &role, err)) return -1;
    if (!strcmp(role, "user")) {
        if (content_require(msg, i, role, text, err)) return -1;
        ns->is_tool = false;
        ns->is_first = false;
        ns->is_last_user = true;
        sb_puts(out, TOK_USER);
        sb_append(out, text->data, text->len);
    } else if (!strcmp(role, "assistant")) {
        const json_t *calls;
        int has_calls = calls_of(msg, i, &calls, err);
        if (has_calls < 0) return -1;
        if (has_calls) return render_assistant_v31_calls(msg, i, calls, out, text, ns, err);
        int has = content_read(msg, i, text, err);
        if (has < 0) return -1;
        if (!has)
            return ms_err_set(err, "messages[%zu].content: an assistant message needs content or tool_calls", i);
        if (ns->is_last_user) {
            bool open = opts->thinking && json_truthy(json_object_get(msg, "prefix"));
            sb_puts(out, open ? TOK_ASSISTANT "<think>" : TOK_ASSISTANT THINK_END);
        }
        ns->is_last_user = false;
        if (ns->is_tool) ns->is_tool = false;
        else strip_reasoning(text, false);
        sb_append(out, text->data, text->len);
        sb_puts(out, TOK_EOS);
    } else if (!strcmp(role, "tool")) {
        if (content_require(msg, i, role, text, err)) return -1;
        ns->is_last_user = false;
        ns->is_tool = true;
        sb_puts(out, TOK_OUTPUT_BEGIN);
        sb_append(out, text->data, text->len);
        sb_puts(out, TOK_OUTPUT_END);
    }
    return 0;
}

/* ---- continuing the final message ---- */

static int check_final(const json_t *messages, const chat_template_opts *opts, ms_err *err) {
    size_t n = json_array_size(messages);
    if (opts->add_generation_prompt)
        return ms_err_set(err, "continue_final_message and add_generation_prompt cannot both be set");
    if (!n) return ms_err_set(err, "continue_final_message: there is no message to continue");
    const json_t *msg = json_array_get(messages, n - 1);
    const json_t *role = json_object_get(msg, "role"), *calls = json_object_get(msg, "tool_calls");
    if (!json_is_string(role) || strcmp(json_string_value(role), "assistant"))
        return ms_err_set(err, "messages[%zu]: the message to continue must be the last one and an assistant message", n - 1);
    if (calls && !json_is_null(calls) && !(json_is_array(calls) && json_array_size(calls) == 0))
        return ms_err_set(err, "messages[%zu].tool_calls: a message to continue cannot have tool_calls", n - 1);
    return 0;
}

/* The final assistant turn up to the end of its content, opened as the
 * template opens it, content whole. */
static int render_final(const json_t *messages, size_t i, const chat_template_opts *opts, strbuf *out, strbuf *text,
                        const template_ns *ns, ms_err *err) {
    const json_t *msg = json_array_get(messages, i);
    int has = content_read(msg, i, text, err);
    if (has < 0) return -1;
    if (!has) return ms_err_set(err, "messages[%zu].content: the message to continue needs content", i);
    if (opts->variant != CHAT_TEMPLATE_V31)
        sb_puts(out, ns->is_tool ? TOK_OUTPUTS_END : TOK_ASSISTANT);
    else if (ns->is_last_user)
        sb_puts(out, opts->thinking && json_truthy(json_object_get(msg, "prefix")) ? TOK_ASSISTANT "<think>"
                                                                                  : TOK_ASSISTANT THINK_END);
    sb_append(out, text->data, text->len);
    return 0;
}

/* ---- the whole template ---- */

static int render_messages(const json_t *messages, size_t n, const chat_template_opts *opts, strbuf *out, strbuf *text,
                           template_ns *ns, ms_err *err) {
    for (size_t i = 0; i < n; i++) {
        int rc = opts->variant == CHAT_TEMPLATE_R1    ? render_message_r1(messages, i, out, text, ns, err)
                 : opts->variant == CHAT_TEMPLATE_V31 ? render_message_v31(messages, i, opts, out, text, ns, err)
                                                      : render_message(messages, i, opts, out, text, ns, err);
        if (rc) return -1;
    }
    return 0;
}

/* What follows the last message: closing tool outputs, the generation prompt. */
static void render_end(const chat_template_opts *opts, strbuf *out, const template_ns *ns) {
    switch (opts->variant) {
    case CHAT_TEMPLATE_V3:
        if (ns->is_tool) sb_puts(out, TOK_OUTPUTS_END);
        if (opts->add_generation_prompt && !ns->is_tool) sb_puts(out, TOK_ASSISTANT);
        break;
    case CHAT_TEMPLATE_R1:
        if (ns->is_tool) sb_puts(out, TOK_OUTPUTS_END);
        if (opts->add_generation_prompt && !ns->is_tool) sb_puts(out, TOK_ASSISTANT "<think>\n");
        break;
    case CHAT_TEMPLATE_V31:
        if (opts->add_generation_prompt && ns->is_last_user && !ns->is_tool)
            sb_puts(out, opts->thinking ? TOK_ASSISTANT "<think>" : TOK_ASSISTANT THINK_END);
        break;
    }
}

/* *final_start (if not NULL): where the continued final turn begins in out. */
static int render(const json_t *messages, const chat_template_opts *opts, strbuf *out, strbuf *text,
                  size_t *final_start, ms_err *err) {
    if (!json_is_array(messages)) return ms_err_set(err, "messages: must be an array");
    if ((unsigned)opts->variant > CHAT_TEMPLATE_V31)
        return ms_err_set(err, "chat template: unknown variant %d", (int)opts->variant);
    if (opts->continue_final_message && check_final(messages, opts, err)) return -1;
    template_ns ns = {.is_first = false, .is_tool = false, .is_output_first = true, .is_last_user = false};
    if (render_system(messages, out, text, err)) return -1;
    if (render_tools(opts->tools, opts->variant, out, err)) return -1;
    size_t n = json_array_size(messages);
    if (!opts->continue_final_message) {
        if (render_messages(messages, n, opts, out, text, &ns, err)) return -1;
        render_end(opts, out, &ns);
        return 0;
    }
    if (render_messages(messages, n - 1, opts, out, text, &ns, err)) return -1;
    if (final_start) *final_start = out->len;
    return render_final(messages, n - 1, opts, out, text, &ns, err);
}

int chat_template_render(const json_t *messages, const chat_template_opts *opts,
                         char **out_text, size_t *out_len, ms_err *err) {
    static const chat_template_opts defaults = {0};
    strbuf out = {.ok = true}, text = {.ok = true};
    *out_text = NULL;
    if (out_len) *out_len = 0;
    int rc = render(messages, opts ? opts : &defaults, &out, &text, NULL, err);
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

/* Offset just past the last occurrence of pat in s[0, len), or 0. */
static size_t last_end(const char *s, size_t len, const char *pat) {
    size_t n = strlen(pat);
    for (size_t k = len >= n ? len - n + 1 : 0; k-- > 0;)
        if (memcmp(s + k, pat, n) == 0) return k + n;
    return 0;
}

int chat_template_render_opens_think(const json_t *messages, const chat_template_opts *opts) {
    if (!opts || !opts->continue_final_message) return chat_template_opens_think(opts ? opts->variant : 0, opts);
    strbuf out = {.ok = true}, text = {.ok = true};
    size_t start = 0;
    int open = 0;
    if (render(messages, opts, &out, &text, &start, NULL) == 0 && out.ok && start <= out.len) {
        const char *turn = out.data + start;
        size_t len = out.len - start;
        open = last_end(turn, len, "<think>") > last_end(turn, len, THINK_END);
    }
    free(out.data);
    free(text.data);
    return open;
}

/* ---- picking a variant ---- */

chat_template_variant chat_template_detect(const char *src) {
    static const char *const v31[] = {
        TOK_ASSISTANT THINK_END, /* tool-call and non-thinking turns open with "<｜Assistant｜></think>" */
        "message['prefix'] is defined and message['prefix'] and thinking",
    };
    static const char *const r1[] = {
        TOK_ASSISTANT "<think>\\n", /* the generation prompt, as the Jinja source spells it */
        TOK_ASSISTANT "<think>\n",
        "split('</think>')[-1]",
    };
    if (!src) return CHAT_TEMPLATE_V3;
    for (size_t k = 0; k < sizeof v31 / sizeof *v31; k++)
        if (strstr(src, v31[k])) return CHAT_TEMPLATE_V31;
    for (size_t k = 0; k < sizeof r1 / sizeof *r1; k++)
        if (strstr(src, r1[k])) return CHAT_TEMPLATE_R1;
    return CHAT_TEMPLATE_V3;
}

int chat_template_opens_think(chat_template_variant variant, const chat_template_opts *opts) {
    if (!opts || !opts->add_generation_prompt) return 0;
    if (variant == CHAT_TEMPLATE_R1) return 1;
    return variant == CHAT_TEMPLATE_V31 && opts->thinking;
}

static const char *const variant_names[] = {
    [CHAT_TEMPLATE_V3] = "deepseek-v3",
    [CHAT_TEMPLATE_R1] = "deepseek-r1",
    [CHAT_TEMPLATE_V31] = "deepseek-v3.1",
};

chat_template_variant chat_template_variant_from_name(const char *name, int *ok) {
    for (size_t k = 0; name && k < sizeof variant_names / sizeof *variant_names; k++) {
        if (strcmp(name, variant_names[k]) == 0) {
            if (ok) *ok = 1;
            return (chat_template_variant)k;
        }
    }
    if (ok) *ok = 0;
    return CHAT_TEMPLATE_V3;
}

const char *chat_template_variant_name(chat_template_variant variant) {
    if ((unsigned)variant >= sizeof variant_names / sizeof *variant_names) return "unknown";
    return variant_names[variant];
}
