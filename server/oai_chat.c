/* server/oai_chat.c — see oai_chat.h. */
#include "server/oai_chat.h"

#include <stdio.h>
#include <string.h>

#include "server/openai.h"
#include "server/toolcall.h"

#define BAD "invalid_request_error"

static int valid_function_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > TOOLCALL_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static const char *tool_name(const json_t *tool) {
    return json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
}

/* tools: [{"type":"function","function":{"name","description"?,"parameters"?}}], names unique. */
static int check_tools(const json_t *tools, oai_error *err) {
    if (!json_is_array(tools)) return oai_error_set(err, 400, BAD, "tools", NULL, "'tools' must be an array");
    size_t i, k;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
        if (!json_is_object(t) || !json_is_string(type) || strcmp(json_string_value(type), "function") || !json_is_object(fn))
            return oai_error_set(err, 400, BAD, "tools", NULL, "tools[%zu] must be {\"type\":\"function\",\"function\":{...}}", i);
        const char *name = tool_name(t);
        if (!name || !valid_function_name(name))
            return oai_error_set(err, 400, BAD, "tools", NULL,
                                 "tools[%zu].function.name must be 1-64 characters of a-z, A-Z, 0-9, '_', '-', '.'", i);
        json_t *d = json_object_get(fn, "description"), *p = json_object_get(fn, "parameters");
        if (d && !json_is_string(d) && !json_is_null(d))
            return oai_error_set(err, 400, BAD, "tools", NULL, "tools[%zu].function.description must be a string", i);
        if (p && !json_is_object(p) && !json_is_null(p))
            return oai_error_set(err, 400, BAD, "tools", NULL, "tools[%zu].function.parameters must be a JSON Schema object", i);
        for (k = 0; k < i; k++)
            if (!strcmp(tool_name(json_array_get(tools, k)), name))
                return oai_error_set(err, 400, BAD, "tools", NULL, "tools[%zu]: the function name '%s' is used twice", i, name);
    }
    return 0;
}

static int find_tool(const json_t *tools, const char *name) {
    for (size_t i = 0; i < json_array_size(tools); i++)
        if (!strcmp(tool_name(json_array_get(tools, i)), name)) return (int)i;
    return -1;
}

static int parse_tool_choice(const json_t *b, oai_features *f, oai_error *err) {
    json_t *tc = oai_field(b, "tool_choice");
    f->tool_choice = f->tools ? TOOL_CHOICE_AUTO : TOOL_CHOICE_NONE;
    if (!tc) return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "none")) f->tool_choice = TOOL_CHOICE_NONE;
        else if (!strcmp(s, "auto")) f->tool_choice = TOOL_CHOICE_AUTO;
        else if (!strcmp(s, "required")) f->tool_choice = TOOL_CHOICE_REQUIRED;
        else return oai_error_set(err, 400, BAD, "tool_choice", NULL, "'tool_choice' must be \"none\", \"auto\", \"required\" or a function");
    } else {
        const char *name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        if (!json_is_object(tc) || !name)
            return oai_error_set(err, 400, BAD, "tool_choice", NULL,
                                 "'tool_choice' must be a string or {\"type\":\"function\",\"function\":{\"name\":...}}");
        f->tool_choice = TOOL_CHOICE_NAMED;
        snprintf(f->forced_name, sizeof f->forced_name, "%s", name);
    }
    if (f->tool_choice != TOOL_CHOICE_NONE && !f->tools)
        return oai_error_set(err, 400, BAD, "tool_choice", NULL, "'tool_choice' needs 'tools'");
    if (f->tool_choice == TOOL_CHOICE_NAMED && find_tool(f->tools, f->forced_name) < 0)
        return oai_error_set(err, 400, BAD, "tool_choice", NULL, "'tool_choice' names '%.64s', which is not in 'tools'",
                             f->forced_name);
    return 0;
}

/* param's grammar for f; a second constraint parameter is refused. */
static int set_grammar(oai_features *f, cons_grammar *g, const char *param, const ms_err *e, oai_error *err) {
    if (!g) return oai_error_set(err, 400, BAD, param, NULL, "%s: %s", param, e->msg);
    if (f->grammar) {
        cons_grammar_free(g);
        return oai_error_set(err, 400, BAD, param, NULL, "'%s' cannot be combined with '%s'", param, f->grammar_param);
    }
    f->grammar = g;
    f->grammar_param = param;
    return 0;
}

static int compile_json(const json_t *schema, oai_features *f, const char *param, oai_error *err) {
    ms_err e = {{0}};
    return set_grammar(f, cons_grammar_json(schema, &e), param, &e, err);
}

static int compile_choice(const json_t *arr, oai_features *f, const char *param, oai_error *err) {
    size_t n = json_array_size(arr), i;
    json_t *v;
    if (!json_is_array(arr) || n == 0 || n > 1024)
        return oai_error_set(err, 400, BAD, param, NULL, "'%s' must be an array of 1 to 1024 strings", param);
    const char **choices = calloc(n, sizeof *choices);
    if (!choices) return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            free(choices);
            return oai_error_set(err, 400, BAD, param, NULL, "'%s'[%zu] must be a string without NUL", param, i);
        }
        choices[i] = json_string_value(v);
    }
    ms_err e = {{0}};
    cons_grammar *g = cons_grammar_choice(choices, (int)n, &e);
    free(choices);
    return set_grammar(f, g, param, &e, err);
}

/* guided_json: a schema object, or its JSON text (vLLM takes both). */
static int compile_guided_json(const json_t *v, oai_features *f, const char *param, oai_error *err) {
    if (json_is_object(v)) return compile_json(v, f, param, err);
    json_t *schema = json_is_string(v) ? json_loads(json_string_value(v), 0, NULL) : NULL;
    if (!json_is_object(schema)) {
        json_decref(schema);
        return oai_error_set(err, 400, BAD, param, NULL, "'%s' must be a JSON Schema object (or its JSON text)", param);
    }
    int rc = compile_json(schema, f, param, err);
    json_decref(schema);
    return rc;
}

/* guided_regex: the whole output matches the pattern (raw text). */
static int compile_regex(const json_t *v, oai_features *f, const char *param, oai_error *err) {
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return oai_error_set(err, 400, BAD, param, NULL, "'%s' must be a regular expression (a string without NUL)", param);
    ms_err e = {{0}};
    return set_grammar(f, cons_grammar_regex(json_string_value(v), &e), param, &e, err);
}

/* vLLM's guided_json / guided_choice / guided_regex and their newer structured_outputs form. */
static int parse_vllm_structured(const json_t *b, oai_features *f, oai_error *err) {
    json_t *gj = oai_field(b, "guided_json"), *gc = oai_field(b, "guided_choice"), *so = oai_field(b, "structured_outputs");
    json_t *gr = oai_field(b, "guided_regex");
    if (gj && compile_guided_json(gj, f, "guided_json", err)) return -1;
    if (gc && compile_choice(gc, f, "guided_choice", err)) return -1;
    if (gr && compile_regex(gr, f, "guided_regex", err)) return -1;
    if (!so) return 0;
    if (!json_is_object(so))
        return oai_error_set(err, 400, BAD, "structured_outputs", NULL, "'structured_outputs' must be an object");
    const char *key;
    json_t *v;
    json_object_foreach(so, key, v) {
        if (json_is_null(v)) continue;
        if (!strcmp(key, "json") && compile_guided_json(v, f, "structured_outputs", err)) return -1;
        else if (!strcmp(key, "choice") && compile_choice(v, f, "structured_outputs", err)) return -1;
        else if (!strcmp(key, "regex") && compile_regex(v, f, "structured_outputs", err)) return -1;
        else if (strcmp(key, "json") && strcmp(key, "choice") && strcmp(key, "regex"))
            return oai_error_set(err, 400, BAD, "structured_outputs", NULL,
                                 "structured_outputs.%.40s is not supported (json, choice and regex are)", key);
    }
    return 0;
}

static int parse_response_format(const json_t *b, oai_features *f, oai_error *err) {
    json_t *rf = oai_field(b, "response_format");
    if (!rf) return parse_vllm_structured(b, f, err);
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!json_is_object(rf) || !type)
        return oai_error_set(err, 400, BAD, "response_format", NULL, "'response_format' must be an object with a 'type'");
    if (!strcmp(type, "text")) return parse_vllm_structured(b, f, err);
    if (!strcmp(type, "json_object")) return compile_json(NULL, f, "response_format", err) || parse_vllm_structured(b, f, err);
    if (strcmp(type, "json_schema"))
        return oai_error_set(err, 400, BAD, "response_format", NULL,
                             "response_format.type must be \"text\", \"json_object\" or \"json_schema\", got \"%.40s\"", type);
    json_t *js = json_object_get(rf, "json_schema");
    json_t *schema = json_object_get(js, "schema");
    if (!json_is_object(js) || !json_is_object(schema))
        return oai_error_set(err, 400, BAD, "response_format", NULL,
                             "response_format json_schema needs {\"json_schema\":{\"name\":...,\"schema\":{...}}}");
    return compile_json(schema, f, "response_format", err) || parse_vllm_structured(b, f, err);
}

static int parse_reasoning_opts(const json_t *b, oai_features *f, oai_error *err) {
    json_t *ir = oai_field(b, "include_reasoning"), *kw = oai_field(b, "chat_template_kwargs");
    f->include_reasoning = 1;
    if (ir && !json_is_boolean(ir)) return oai_error_set(err, 400, BAD, "include_reasoning", NULL, "'include_reasoning' must be a boolean");
    if (ir) f->include_reasoning = json_is_true(ir);
    if (kw && !json_is_object(kw))
        return oai_error_set(err, 400, BAD, "chat_template_kwargs", NULL, "'chat_template_kwargs' must be an object");
    json_t *th = json_object_get(kw, "thinking");
    if (!th) th = json_object_get(kw, "enable_thinking");
    if (th && !json_is_boolean(th))
        return oai_error_set(err, 400, BAD, "chat_template_kwargs", NULL, "chat_template_kwargs.thinking must be a boolean");
    f->thinking = th && json_is_true(th);
    return 0;
}

/* Continuing the last assistant message: vLLM's continue_final_message and
 * add_generation_prompt, DeepSeek's {"prefix": true} on that message. */
static int parse_continuation(const json_t *b, oai_features *f, oai_error *err) {
    json_t *cfm = oai_field(b, "continue_final_message"), *agp = oai_field(b, "add_generation_prompt");
    if (cfm && !json_is_boolean(cfm))
        return oai_error_set(err, 400, BAD, "continue_final_message", NULL, "'continue_final_message' must be a boolean");
    if (agp && !json_is_boolean(agp))
        return oai_error_set(err, 400, BAD, "add_generation_prompt", NULL, "'add_generation_prompt' must be a boolean");
    f->continue_final = cfm && json_is_true(cfm);
    json_t *msgs = json_object_get(b, "messages"), *m;
    size_t i, n = json_array_size(msgs);
    json_array_foreach(msgs, i, m) {
        json_t *p = json_object_get(m, "prefix"), *role = json_object_get(m, "role");
        if (!p || json_is_null(p) || json_is_false(p)) continue;
        if (!json_is_true(p))
            return oai_error_set(err, 400, BAD, "messages", NULL, "messages[%zu].prefix must be a boolean", i);
        if (i + 1 != n || !json_is_string(role) || strcmp(json_string_value(role), "assistant"))
            return oai_error_set(err, 400, BAD, "messages", NULL,
                                 "messages[%zu].prefix: only the last message, an assistant message, can be a prefix", i);
        f->continue_final = 1;
    }
    f->add_generation_prompt = agp ? json_is_true(agp) : !f->continue_final;
    if (f->continue_final && f->add_generation_prompt)
        return oai_error_set(err, 400, BAD, "add_generation_prompt", NULL,
                             "'add_generation_prompt' cannot be true when the last message is continued");
    return 0;
}

int oai_features_parse(const json_t *b, int chat, oai_features *f, oai_error *err) {
    memset(f, 0, sizeof *f);
    f->parallel_tool_calls = 1;
    f->include_reasoning = 1;
    if (!chat) {
        static const char *chat_only[] = {"tools", "tool_choice", "parallel_tool_calls", "include_reasoning", "chat_template_kwargs",
                                          "continue_final_message", "add_generation_prompt"};
        for (size_t i = 0; i < sizeof chat_only / sizeof *chat_only; i++)
            if (oai_field(b, chat_only[i]))
                return oai_error_set(err, 400, BAD, chat_only[i], NULL, "'%s' is only supported by /v1/chat/completions",
                                     chat_only[i]);
        return parse_response_format(b, f, err);
    }
    json_t *tools = oai_field(b, "tools"), *ptc = oai_field(b, "parallel_tool_calls");
    if (tools && check_tools(tools, err)) return -1;
    if (tools && json_array_size(tools)) f->tools = json_incref(tools);
    if (ptc && !json_is_boolean(ptc))
        return oai_error_set(err, 400, BAD, "parallel_tool_calls", NULL, "'parallel_tool_calls' must be a boolean");
    if (ptc) f->parallel_tool_calls = json_is_true(ptc);
    if (parse_tool_choice(b, f, err) || parse_reasoning_opts(b, f, err) || parse_continuation(b, f, err) ||
        parse_response_format(b, f, err))
        return -1;
    if (f->grammar && (f->tool_choice == TOOL_CHOICE_REQUIRED || f->tool_choice == TOOL_CHOICE_NAMED))
        return oai_error_set(err, 400, BAD, f->grammar_param, NULL, "'%s' cannot be combined with a forced tool_choice",
                             f->grammar_param);
    /* The constraint would start after the given prefix and so ignore it (the
     * message as a whole would not be the JSON or call asked for). */
    if (f->continue_final && f->grammar)
        return oai_error_set(err, 400, BAD, f->grammar_param, NULL,
                             "'%s' cannot be combined with continuing the last message", f->grammar_param);
    if (f->continue_final && (f->tool_choice == TOOL_CHOICE_REQUIRED || f->tool_choice == TOOL_CHOICE_NAMED))
        return oai_error_set(err, 400, BAD, "tool_choice", NULL,
                             "a forced tool_choice cannot be combined with continuing the last message");
    return 0;
}

/* The forced-call grammar: every tool ("required") or the named one. */
static int compile_tool_grammar(oai_features *f, cons_tool_format format, oai_error *err) {
    size_t n = json_array_size(f->tools);
    const char *names[n ? n : 1];
    const json_t *params[n ? n : 1];
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(f->tools, i);
        if (f->tool_choice == TOOL_CHOICE_NAMED && strcmp(tool_name(t), f->forced_name)) continue;
        json_t *p = json_object_get(json_object_get(t, "function"), "parameters");
        names[k] = tool_name(t);
        params[k++] = json_is_object(p) ? p : NULL;
    }
    ms_err e = {{0}};
    if (!(f->grammar = cons_grammar_tool_calls(names, params, k, f->parallel_tool_calls, format, &e)))
        return oai_error_set(err, 400, BAD, "tools", NULL, "cannot force this tool call: %s", e.msg);
    return 0;
}

int oai_features_resolve(oai_features *f, const json_t *messages, chat_template_variant variant, int reasoning_flag,
                         chat_template_opts *topts, oai_error *err) {
    topts->variant = variant;
    topts->thinking = f->thinking;
    topts->tools = f->tools;
    topts->add_generation_prompt = f->add_generation_prompt;
    topts->continue_final_message = f->continue_final;
    f->starts_in_reasoning = chat_template_render_opens_think(messages, topts);
    f->parse_reasoning = reasoning_flag > 0 || (reasoning_flag == 0 && f->starts_in_reasoning);
    if (!f->parse_reasoning) f->starts_in_reasoning = 0;
    f->parse_tool_calls = f->tools && f->tool_choice != TOOL_CHOICE_NONE;
    if (f->tool_choice != TOOL_CHOICE_REQUIRED && f->tool_choice != TOOL_CHOICE_NAMED) return 0;
    return compile_tool_grammar(f, variant == CHAT_TEMPLATE_V31 ? CONS_TOOLS_V31 : CONS_TOOLS_V3, err);
}

void oai_features_free(oai_features *f) {
    json_decref(f->tools);
    cons_grammar_free(f->grammar);
    memset(f, 0, sizeof *f);
}
