/* server/oai_responses.c — see oai_responses.h. */
#include "server/oai_responses.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD "invalid_request_error"

/* ------------------------------------------------------------ request */

/* Chat parameters a Responses body may carry unchanged (sampling and vLLM extensions). */
static const char *const pass_through[] = {
    "model", "temperature", "top_p", "parallel_tool_calls", "user", "stream", "top_k", "min_p", "seed", "stop",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "ignore_eos", "min_tokens",
    "stop_token_ids", "include_stop_str_in_output", "skip_special_tokens", "chat_template_kwargs", "include_reasoning",
    "guided_json", "guided_choice", "guided_regex", "structured_outputs", NULL};

/* Responses fields this server reads (translated, echoed or accepted). */
static const char *const responses_fields[] = {
    "input", "instructions", "max_output_tokens", "tools", "tool_choice", "text", "metadata", "reasoning", "store",
    "include", "truncation", "stream_options", "service_tier", "prompt_cache_key", "safety_identifier",
    "previous_response_id", "top_logprobs", "background", NULL};

/* Fields whose meaning this server cannot give: refused, never ignored. */
static const char *const refused[][2] = {
    {"conversation", "conversations are not stored by this server: send the whole conversation in 'input'"},
    {"prompt", "prompt templates are not supported: send 'input' (and 'instructions')"},
    {"max_tool_calls", "'max_tool_calls' is not supported"},
};

static int in_list(const char *k, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(k, *list)) return 1;
    return 0;
}

/* Text of a content value: a string, or text parts (input_text / output_text /
 * text / refusal) joined. New string, or NULL with err naming `where`. */
static json_t *content_text(const json_t *c, const char *where, oai_error *err) {
    if (json_is_string(c)) return json_incref((json_t *)c);
    if (!json_is_array(c)) {
        oai_error_set(err, 400, BAD, "input", NULL, "%s.content must be a string or an array of content parts", where);
        return NULL;
    }
    rbuf text = {0};
    rbuf_append(&text, "", 0);
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const char *key = type && !strcmp(type, "refusal") ? "refusal" : "text";
        json_t *t = json_object_get(part, key);
        if (!type || (strcmp(type, "input_text") && strcmp(type, "output_text") && strcmp(type, "text") &&
                      strcmp(type, "refusal"))) {
            oai_error_set(err, 400, BAD, "input", NULL, "%s.content[%zu]: content type '%.40s' is not supported (text only)",
                          where, i, type ? type : "(none)");
            rbuf_free(&text);
            return NULL;
        }
        if (!json_is_string(t)) {
            oai_error_set(err, 400, BAD, "input", NULL, "%s.content[%zu].%s must be a string", where, i, key);
            rbuf_free(&text);
            return NULL;
        }
        rbuf_append(&text, json_string_value(t), json_string_length(t));
    }
    json_t *s = json_stringn_nocheck(text.p, text.len);
    rbuf_free(&text);
    return s;
}

static int add_message(json_t *msgs, const json_t *item, const char *where, oai_error *err) {
    const char *role = json_string_value(json_object_get(item, "role"));
    if (!role || (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system") && strcmp(role, "developer")))
        return oai_error_set(err, 400, BAD, "input", NULL, "%s.role must be \"user\", \"assistant\", \"system\" or \"developer\"",
                             where);
    json_t *text = content_text(json_object_get(item, "content"), where, err);
    if (!text) return -1;
    return json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", role, "content", text)) ? -1 : 0;
}

/* A function_call item joins the assistant message before it (its text and
 * earlier calls), or starts one. */
static int add_function_call(json_t *msgs, const json_t *item, const char *where, oai_error *err) {
    const char *call_id = json_string_value(json_object_get(item, "call_id"));
    const char *name = json_string_value(json_object_get(item, "name"));
    const char *args = json_string_value(json_object_get(item, "arguments"));
    if (!call_id || !name || !args)
        return oai_error_set(err, 400, BAD, "input", NULL, "%s: a function_call item needs string 'call_id', 'name' and 'arguments'",
                             where);
    json_t *call = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", call_id, "type", "function", "function", "name", name,
                             "arguments", args);
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *last_role = json_string_value(json_object_get(last, "role"));
    if (!last || !last_role || strcmp(last_role, "assistant")) {
        last = json_pack("{s:s,s:n}", "role", "assistant", "content");
        json_array_append_new(msgs, last);
    }
    json_t *calls = json_object_get(last, "tool_calls");
    if (!calls) json_object_set_new(last, "tool_calls", calls = json_array());
    return json_array_append_new(calls, call) ? -1 : 0;
}

static int add_function_output(json_t *msgs, const json_t *item, const char *where, oai_error *err) {
    const char *call_id = json_string_value(json_object_get(item, "call_id"));
    if (!call_id)
        return oai_error_set(err, 400, BAD, "input", NULL, "%s: a function_call_output item needs a string 'call_id'", where);
    json_t *out = content_text(json_object_get(item, "output"), where, err);
    if (!out) {
        snprintf(err->message, sizeof err->message, "%s.output must be a string or an array of input_text parts", where);
        return -1;
    }
    return json_array_append_new(msgs, json_pack("{s:s,s:s,s:o}", "role", "tool", "tool_call_id", call_id, "content", out))
               ? -1
               : 0;
}

static int add_item(json_t *msgs, const json_t *item, size_t i, oai_error *err) {
    char where[32];
    snprintf(where, sizeof where, "input[%zu]", i);
    if (!json_is_object(item)) return oai_error_set(err, 400, BAD, "input", NULL, "%s must be an object", where);
    const char *type = json_string_value(json_object_get(item, "type"));
    if (!type || !strcmp(type, "message")) return add_message(msgs, item, where, err);
    if (!strcmp(type, "function_call")) return add_function_call(msgs, item, where, err);
    if (!strcmp(type, "function_call_output")) return add_function_output(msgs, item, where, err);
    if (!strcmp(type, "reasoning")) return 0; /* earlier turns' reasoning: the templates drop it too */
    return oai_error_set(err, 400, BAD, "input", NULL, "%s: item type '%.40s' is not supported", where, type);
}

/* The chat messages: instructions, the earlier conversation (history), then input. */
static json_t *translate_input(const json_t *b, const json_t *history, oai_error *err) {
    json_t *input = oai_field(b, "input"), *ins = oai_field(b, "instructions");
    json_t *msgs = json_array();
    if (ins && !json_is_string(ins)) {
        oai_error_set(err, 400, BAD, "instructions", NULL, "'instructions' must be a string");
        goto fail;
    }
    if (ins) json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", ins));
    if (history) json_array_extend(msgs, (json_t *)history);
    size_t before = json_array_size(msgs);
    if (json_is_string(input)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", input));
    } else if (json_is_array(input) && json_array_size(input) > 0) {
        size_t i;
        json_t *item;
        json_array_foreach(input, i, item) if (add_item(msgs, item, i, err)) goto fail;
    } else {
        oai_error_set(err, 400, BAD, "input", NULL, "'input' is required: a string or a non-empty array of items");
        goto fail;
    }
    if (json_array_size(msgs) == before) {
        oai_error_set(err, 400, BAD, "input", NULL, "'input' holds no message");
        goto fail;
    }
    return msgs;
fail:
    json_decref(msgs);
    return NULL;
}

/* [{"type":"function","name",...}] -> [{"type":"function","function":{...}}] */
static json_t *translate_tools(const json_t *tools, oai_error *err) {
    if (!json_is_array(tools)) {
        oai_error_set(err, 400, BAD, "tools", NULL, "'tools' must be an array");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!json_is_object(t) || !type || strcmp(type, "function")) {
            oai_error_set(err, 400, BAD, "tools", NULL, "tools[%zu]: tool type '%.40s' is not supported (function tools only)",
                          i, type ? type : "(none)");
            json_decref(out);
            return NULL;
        }
        json_t *fn = json_object();
        static const char *const keys[] = {"name", "description", "parameters", "strict", NULL};
        for (const char *const *k = keys; *k; k++)
            if (oai_field(t, *k)) json_object_set(fn, *k, json_object_get(t, *k));
        json_array_append_new(out, json_pack("{s:s,s:o}", "type", "function", "function", fn));
    }
    return out;
}

static json_t *translate_tool_choice(const json_t *tc, oai_error *err) {
    if (json_is_string(tc)) return json_incref((json_t *)tc);
    const char *type = json_string_value(json_object_get(tc, "type"));
    const char *name = json_string_value(json_object_get(tc, "name"));
    if (!json_is_object(tc) || !type || strcmp(type, "function") || !name) {
        oai_error_set(err, 400, BAD, "tool_choice", NULL,
                      "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"name\":...}");
        return NULL;
    }
    return json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name", name);
}

/* text.format -> response_format; NULL with err->status 0 when there is none. */
static json_t *translate_format(const json_t *text, oai_error *err) {
    err->status = 0;
    if (!json_is_object(text)) {
        oai_error_set(err, 400, BAD, "text", NULL, "'text' must be an object");
        return NULL;
    }
    json_t *f = oai_field(text, "format");
    if (!f) return NULL;
    const char *type = json_string_value(json_object_get(f, "type"));
    if (!json_is_object(f) || !type) {
        oai_error_set(err, 400, BAD, "text.format", NULL, "'text.format' must be an object with a 'type'");
        return NULL;
    }
    if (!strcmp(type, "text") || !strcmp(type, "json_object")) return json_pack("{s:s}", "type", type);
    if (strcmp(type, "json_schema")) {
        oai_error_set(err, 400, BAD, "text.format.type", NULL,
                      "'text.format.type' must be \"text\", \"json_object\" or \"json_schema\"");
        return NULL;
    }
    if (!json_is_object(json_object_get(f, "schema"))) {
        oai_error_set(err, 400, BAD, "text.format.schema", NULL, "'text.format.schema' must be a JSON Schema object");
        return NULL;
    }
    json_t *js = json_object();
    static const char *const keys[] = {"name", "schema", "strict", "description", NULL};
    for (const char *const *k = keys; *k; k++)
        if (oai_field(f, *k)) json_object_set(js, *k, json_object_get(f, *k));
    return json_pack("{s:s,s:o}", "type", "json_schema", "json_schema", js);
}

/* Accepted fields whose values must still make sense. */
static int check_accepted(const json_t *b, oai_error *err) {
    json_t *v = oai_field(b, "include");
    if (v && !json_is_array(v)) return oai_error_set(err, 400, BAD, "include", NULL, "'include' must be an array");
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        const char *inc = json_string_value(s);
        if (!inc || (strcmp(inc, "reasoning.encrypted_content") && strcmp(inc, "message.output_text.logprobs")))
            return oai_error_set(err, 400, BAD, "include", NULL,
                                 "include[%zu]: '%.60s' is not supported (reasoning.encrypted_content and "
                                 "message.output_text.logprobs are)", i, inc ? inc : "(not a string)");
    }
    v = oai_field(b, "truncation");
    if (v && !(json_is_string(v) && !strcmp(json_string_value(v), "disabled")))
        return oai_error_set(err, 400, BAD, "truncation", NULL,
                             "'truncation' must be \"disabled\": this server never drops input (a prompt too long is a 400)");
    v = oai_field(b, "metadata");
    if (v && !json_is_object(v)) return oai_error_set(err, 400, BAD, "metadata", NULL, "'metadata' must be an object");
    v = oai_field(b, "reasoning");
    if (v && !json_is_object(v)) return oai_error_set(err, 400, BAD, "reasoning", NULL, "'reasoning' must be an object");
    v = oai_field(b, "store");
    if (v && !json_is_boolean(v)) return oai_error_set(err, 400, BAD, "store", NULL, "'store' must be a boolean");
    v = oai_field(b, "stream_options");
    if (v && !json_is_object(v)) return oai_error_set(err, 400, BAD, "stream_options", NULL, "'stream_options' must be an object");
    return 0;
}

/* Logprobs come with the message's text when include names them or top_logprobs is given. */
static int wants_logprobs(const json_t *b) {
    size_t i;
    json_t *s;
    json_array_foreach(oai_field(b, "include"), i, s) if (!strcmp(json_string_value(s), "message.output_text.logprobs")) return 1;
    return oai_field(b, "top_logprobs") != NULL;
}

json_t *oai_responses_to_chat(const json_t *b, const json_t *history, oai_error *err) {
    if (!json_is_object(b)) {
        oai_error_set(err, 400, BAD, NULL, "invalid_json", "The request body must be a JSON object");
        return NULL;
    }
    json_t *prev = oai_field(b, "previous_response_id");
    if (prev && !json_is_string(prev)) {
        oai_error_set(err, 400, BAD, "previous_response_id", NULL, "'previous_response_id' must be a string");
        return NULL;
    }
    if (prev && !history) {
        oai_error_set(err, 400, BAD, "previous_response_id", "unsupported_parameter",
                      "'previous_response_id': this server stores no responses (--responses-store 0): send the whole "
                      "conversation in 'input'");
        return NULL;
    }
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (oai_field(b, refused[i][0])) {
            oai_error_set(err, 400, BAD, refused[i][0], "unsupported_parameter", "'%s': %s", refused[i][0], refused[i][1]);
            return NULL;
        }
    if (check_accepted(b, err)) return NULL;
    json_t *chat = json_object(), *v;
    const char *key;
    json_object_foreach((json_t *)b, key, v) if (in_list(key, pass_through)) json_object_set(chat, key, v);
    json_t *msgs = translate_input(b, history, err);
    if (!msgs) goto fail;
    json_object_set_new(chat, "messages", msgs);
    if ((v = oai_field(b, "max_output_tokens"))) json_object_set(chat, "max_completion_tokens", v);
    if (wants_logprobs(b)) {
        json_object_set_new(chat, "logprobs", json_true());
        if ((v = oai_field(b, "top_logprobs"))) json_object_set(chat, "top_logprobs", v);
    }
    if ((v = oai_field(b, "tools"))) {
        json_t *t = translate_tools(v, err);
        if (!t) goto fail;
        json_object_set_new(chat, "tools", t);
    }
    if ((v = oai_field(b, "tool_choice"))) {
        json_t *t = translate_tool_choice(v, err);
        if (!t) goto fail;
        json_object_set_new(chat, "tool_choice", t);
    }
    if ((v = oai_field(b, "text"))) {
        json_t *rf = translate_format(v, err);
        if (!rf && err->status) goto fail;
        if (rf) json_object_set_new(chat, "response_format", rf);
    }
    return chat;
fail:
    json_decref(chat);
    return NULL;
}

/* The chat parser names chat parameters; say them as the Responses API does. */
static void rename_param(oai_error *err) {
    static const char *const map[][2] = {{"max_completion_tokens", "max_output_tokens"},
                                         {"top_logprobs", "top_logprobs"},
                                         {"max_tokens", "max_output_tokens"},
                                         {"messages", "input"},
                                         {"response_format", "text.format"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i][0]);
        if (strncmp(err->param, map[i][0], n)) continue;
        char rest[sizeof err->param];
        snprintf(rest, sizeof rest, "%s", err->param + n);
        snprintf(err->param, sizeof err->param, "%s%s", map[i][1], rest);
        return;
    }
}

/* What the Response object repeats of the request. */
static json_t *echo_fields(const json_t *b, int stored) {
    json_t *v, *e = json_object();
    json_object_set(e, "instructions", (v = oai_field(b, "instructions")) ? v : json_null());
    json_object_set(e, "max_output_tokens", (v = oai_field(b, "max_output_tokens")) ? v : json_null());
    json_object_set_new(e, "metadata", (v = oai_field(b, "metadata")) ? json_incref(v) : json_object());
    json_object_set(e, "parallel_tool_calls", (v = oai_field(b, "parallel_tool_calls")) ? v : json_true());
    json_object_set(e, "previous_response_id", (v = oai_field(b, "previous_response_id")) ? v : json_null());
    json_t *rs = (v = oai_field(b, "reasoning")) ? json_deep_copy(v) : json_object();
    if (!json_object_get(rs, "effort")) json_object_set_new(rs, "effort", json_null());
    if (!json_object_get(rs, "summary")) json_object_set_new(rs, "summary", json_null());
    json_object_set_new(e, "reasoning", rs);
    json_object_set_new(e, "store", json_boolean(stored));
    json_object_set(e, "temperature", (v = oai_field(b, "temperature")) ? v : json_null());
    json_t *text = (v = oai_field(b, "text")) ? json_deep_copy(v) : json_object();
    if (!oai_field(text, "format")) json_object_set_new(text, "format", json_pack("{s:s}", "type", "text"));
    json_object_set_new(e, "text", text);
    json_t *tools = oai_field(b, "tools");
    json_object_set_new(e, "tool_choice", (v = oai_field(b, "tool_choice")) ? json_incref(v) : json_string(tools ? "auto" : "none"));
    json_object_set_new(e, "tools", tools ? json_incref(tools) : json_array());
    json_object_set(e, "top_logprobs", (v = oai_field(b, "top_logprobs")) ? v : json_null());
    json_object_set(e, "top_p", (v = oai_field(b, "top_p")) ? v : json_null());
    json_object_set_new(e, "truncation", json_string("disabled"));
    json_object_set(e, "user", (v = oai_field(b, "user")) ? v : json_null());
    return e;
}

/* Fields translated, accepted or passed through (the others go to r->ignored). */
static int responses_known(const char *k, const void *unused) {
    (void)unused;
    return in_list(k, pass_through) || in_list(k, responses_fields);
}

/* The stored conversation previous_response_id names: 0 with *history (NULL
 * when the body names none), or -1 with err. */
static int previous_history(const json_t *b, const oai_ctx *ctx, json_t **history, oai_error *err) {
    *history = NULL;
    const char *id = json_string_value(oai_field(b, "previous_response_id"));
    if (!id || !ctx->resp_history) return 0; /* oai_responses_to_chat says what is wrong */
    if (!(*history = ctx->resp_history(ctx->resp_cls, id)))
        return oai_error_set(err, 404, BAD, "previous_response_id", "previous_response_not_found",
                             "Previous response with id '%.80s' not found (stored responses live in one server "
                             "process, the oldest evicted first)", id);
    if (!json_is_array(*history)) { /* a background response still running, or one that failed or was cancelled */
        json_decref(*history);
        *history = NULL;
        return oai_error_set(err, 400, BAD, "previous_response_id", "previous_response_not_completed",
                             "Previous response '%.80s' has no answer to continue from (a background response that "
                             "is still queued or in progress, or one that failed or was cancelled)", id);
    }
    return 0;
}

/* background: true answers "queued" at once and generates afterwards; the
 * client polls GET /v1/responses/{id} (or cancels), so the response must be
 * stored, and it is not streamed. 0, or -1 with err. */
static int background_of(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    json_t *v = oai_field(b, "background");
    if (v && !json_is_boolean(v)) return oai_error_set(err, 400, BAD, "background", NULL, "'background' must be a boolean");
    if (!json_is_true(v)) return 0;
    if (!ctx->resp_history)
        return oai_error_set(err, 400, BAD, "background", "unsupported_parameter",
                             "'background': this server stores no responses (--responses-store 0), so a background "
                             "response could never be read back");
    if (!r->resp_store)
        return oai_error_set(err, 400, BAD, "store", NULL,
                             "'background' needs 'store': true (the response is read back with GET /v1/responses/{id})");
    if (r->stream)
        return oai_error_set(err, 400, BAD, "background", "unsupported_parameter",
                             "'background' with 'stream': not supported by this server; poll GET /v1/responses/{id} "
                             "instead, or stream without 'background'");
    r->resp_background = 1;
    return 0;
}

/* The request's input items as the store lists them: a string input as one user message. */
static json_t *input_items(const json_t *b) {
    json_t *input = oai_field(b, "input");
    if (json_is_string(input))
        return json_pack("[{s:s,s:s,s:[{s:s,s:O}]}]", "type", "message", "role", "user", "content", "type", "input_text",
                         "text", input);
    return json_deep_copy(input);
}

/* The chat messages a follow-up continues from: all but the instructions' system message. */
static json_t *conversation(const json_t *b, const json_t *chat) {
    json_t *msgs = json_object_get(chat, "messages");
    size_t skip = oai_field(b, "instructions") ? 1 : 0, n = json_array_size(msgs);
    json_t *out = json_array();
    for (size_t i = skip; i < n; i++) json_array_append(out, json_array_get(msgs, i));
    return out;
}

int oai_responses_parse(const char *body, size_t len, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    memset(r, 0, sizeof *r);
    json_t *b = oai_parse_body(body, len, err);
    if (!b) return -1;
    int rc = oai_responses_parse_json(b, ctx, r, err);
    json_decref(b);
    return rc;
}

int oai_responses_parse_json(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    memset(r, 0, sizeof *r);
    json_t *history = NULL;
    if (json_is_object(b) && previous_history(b, ctx, &history, err)) return -1;
    json_t *chat = oai_responses_to_chat(b, history, err);
    json_decref(history);
    int rc = -1;
    if (chat && oai_parse_request_json(OAI_CHAT, chat, ctx, r, err) != 0) {
        rename_param(err);
    } else if (chat) {
        json_t *store = oai_field(b, "store");
        r->responses = 1;
        r->resp_store = ctx->resp_history && (!store || json_is_true(store)); /* OpenAI's default: stored */
        r->resp_echo = echo_fields(b, r->resp_store);
        if (r->resp_store) r->resp_history = conversation(b, chat), r->resp_items = input_items(b);
        oai_unread_fields(b, responses_known, NULL, r->ignored, sizeof r->ignored);
        rc = background_of(b, ctx, r, err);
        if (rc == 0 && r->resp_background) json_object_set_new(r->resp_echo, "background", json_true());
        if (rc != 0) oai_request_free(r);
    }
    json_decref(chat);
    return rc;
}

/* ------------------------------------------------------------ response object */

/* "<prefix>_<the response id's hex>_<index>": stable across the stream and the final object. */
static json_t *item_id(const char *resp_id, const char *prefix, int index) {
    const char *hex = strchr(resp_id, '_');
    char id[96];
    snprintf(id, sizeof id, "%s_%s_%d", prefix, hex ? hex + 1 : resp_id, index);
    return json_string(id);
}

static json_t *text_json(const char *p, size_t n) { return oai_json_string_lossy(p ? p : "", n); }

static json_t *reasoning_item(const char *resp_id, int index, json_t *text, const char *status) {
    return json_pack("{s:o,s:s,s:[],s:[{s:s,s:o}],s:n,s:s}", "id", item_id(resp_id, "rs", index), "type", "reasoning",
                     "summary", "content", "type", "reasoning_text", "text", text, "encrypted_content", "status", status);
}

/* logprobs: the text's token entries (stolen), NULL for none. */
static json_t *output_text_part(json_t *text, json_t *logprobs) {
    return json_pack("{s:s,s:o,s:[],s:o}", "type", "output_text", "text", text, "annotations", "logprobs",
                     logprobs ? logprobs : json_array());
}

static json_t *message_item(const char *resp_id, int index, json_t *text, json_t *logprobs, const char *status) {
    json_t *content = text ? json_pack("[o]", output_text_part(text, logprobs)) : json_array();
    return json_pack("{s:o,s:s,s:s,s:s,s:o}", "id", item_id(resp_id, "msg", index), "type", "message", "status", status,
                     "role", "assistant", "content", content);
}

static json_t *call_item(const char *resp_id, int index, const chat_tool_call *c, const char *args, const char *status) {
    return json_pack("{s:o,s:s,s:s,s:s,s:s,s:s}", "id", item_id(resp_id, "fc", index), "type", "function_call", "status",
                     status, "call_id", c->id, "name", c->name, "arguments", args);
}

static json_t *usage_json(const oai_request *r, const oai_choice *c) {
    int in = r->prompts[0].n_ids, out = c->completion_tokens;
    return json_pack("{s:i,s:{s:i},s:i,s:{s:i},s:i}", "input_tokens", in, "input_tokens_details", "cached_tokens",
                     c->cached_tokens, "output_tokens", out, "output_tokens_details", "reasoning_tokens",
                     oai_choice_reasoning_tokens(c), "total_tokens", in + out);
}

/* "completed", "incomplete" (the token limit), "cancelled" (the server is
 * shutting down) or "failed". */
static const char *status_of(finish_reason f, const char *error) {
    if (error || f == FINISH_ERROR) return "failed";
    if (f == FINISH_CANCELLED) return "cancelled";
    return f == FINISH_LENGTH ? "incomplete" : "completed";
}

/* The Response envelope: status, the echoed request fields, output (stolen) and usage (stolen, NULL: null). */
static json_t *response_object(const oai_request *r, const char *id, long created, const char *status, const char *error,
                               json_t *output, json_t *usage) {
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:b}", "id", id, "object", "response", "created_at", (json_int_t)created,
                          "status", status, "background", 0);
    json_object_set_new(o, "error", error ? json_pack("{s:s,s:o}", "code", "server_error", "message",
                                                      oai_json_string_lossy(error, strlen(error)))
                                          : json_null());
    json_object_set_new(o, "incomplete_details",
                        !strcmp(status, "incomplete") ? json_pack("{s:s}", "reason", "max_output_tokens") : json_null());
    json_object_set_new(o, "model", json_string(r->model));
    if (r->resp_echo) json_object_update(o, r->resp_echo);
    json_object_set_new(o, "output", output);
    json_object_set_new(o, "usage", usage ? usage : json_null());
    return o;
}

json_t *oai_responses_history(const oai_request *r, const oai_choice *c) {
    json_t *h = r->resp_history ? json_copy(r->resp_history) : json_array();
    json_t *m = c->out ? chat_output_message(c->out) : NULL;
    if (!h || !m) {
        json_decref(h), json_decref(m);
        return NULL;
    }
    json_object_del(m, "reasoning_content"); /* the templates drop earlier turns' reasoning */
    json_array_append_new(h, m);
    return h;
}

json_t *oai_responses_items(const oai_request *r, const char *id) {
    json_t *items = r->resp_items ? json_deep_copy(r->resp_items) : json_array();
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        if (!json_is_object(it) || json_is_string(json_object_get(it, "id"))) continue;
        json_object_set_new(it, "id", item_id(id, "in", (int)i));
    }
    return items;
}

/* ------------------------------------------------------------ the event machine */

int oai_resp_stream_init(oai_resp_stream *s, const char *id, long created) {
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", id);
    s->created = created;
    s->output = json_array();
    s->lp_pending = json_array();
    s->lp_message = json_array();
    return s->output && s->lp_pending && s->lp_message ? 0 : -1;
}

void oai_resp_stream_free(oai_resp_stream *s) {
    rbuf_free(&s->text);
    json_decref(s->output);
    json_decref(s->lp_pending);
    json_decref(s->lp_message);
    json_decref(s->final);
    memset(s, 0, sizeof *s);
}

json_t *oai_resp_stream_final(const oai_resp_stream *s) { return s->final ? json_incref(s->final) : NULL; }

json_t *oai_resp_stream_pending(const oai_resp_stream *s, const oai_request *r, const char *status) {
    return response_object(r, s->id, s->created, status, NULL, json_array(), NULL);
}

/* Appends {"type", "sequence_number", ...fields (stolen object)} to events. */
static void emit(oai_resp_stream *s, json_t *events, const char *type, json_t *fields) {
    json_t *e = json_pack("{s:s,s:i}", "type", type, "sequence_number", s->seq++);
    if (fields) json_object_update(e, fields);
    json_decref(fields);
    json_array_append_new(events, e);
}

json_t *oai_resp_stream_begin(oai_resp_stream *s, const oai_request *r) {
    json_t *events = json_array();
    emit(s, events, "response.created", json_pack("{s:o}", "response", oai_resp_stream_pending(s, r, "in_progress")));
    emit(s, events, "response.in_progress", json_pack("{s:o}", "response", oai_resp_stream_pending(s, r, "in_progress")));
    return events;
}

/* {"item_id", "output_index", "content_index": 0} plus more (stolen). */
static json_t *at_part(const oai_resp_stream *s, json_t *more) {
    json_t *o = json_pack("{s:o,s:i,s:i}", "item_id",
                          item_id(s->id, s->open == RESP_ITEM_REASONING ? "rs" : "msg", s->n_items - 1), "output_index",
                          s->n_items - 1, "content_index", 0);
    json_object_update(o, more);
    json_decref(more);
    return o;
}

/* Ends the open reasoning or message item: its .done events, then output_item.done. */
static void close_item(oai_resp_stream *s, json_t *events, const char *status) {
    if (s->open == RESP_ITEM_NONE) return;
    int index = s->n_items - 1;
    json_t *text = text_json(s->text.p, s->text.len);
    json_t *item;
    if (s->open == RESP_ITEM_REASONING) {
        emit(s, events, "response.reasoning_text.done", at_part(s, json_pack("{s:O}", "text", text)));
        emit(s, events, "response.content_part.done",
             at_part(s, json_pack("{s:{s:s,s:O}}", "part", "type", "reasoning_text", "text", text)));
        item = reasoning_item(s->id, index, text, status);
    } else {
        json_t *lp = s->lp_message;
        emit(s, events, "response.output_text.done", at_part(s, json_pack("{s:O,s:o}", "text", text, "logprobs", json_copy(lp))));
        emit(s, events, "response.content_part.done",
             at_part(s, json_pack("{s:o}", "part", output_text_part(json_incref(text), json_copy(lp)))));
        item = message_item(s->id, index, text, json_copy(lp), status);
        json_array_clear(lp);
    }
    emit(s, events, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", index, "item", item));
    json_array_append_new(s->output, item);
    s->open = RESP_ITEM_NONE;
    rbuf_clear(&s->text);
}

/* Starts a reasoning or message item (closing another): output_item.added, content_part.added. */
static void open_item(oai_resp_stream *s, json_t *events, oai_resp_item kind) {
    if (s->open == kind) return;
    close_item(s, events, "completed");
    int index = s->n_items++;
    s->open = kind;
    rbuf_set(&s->text, "", 0);
    json_t *item, *part;
    if (kind == RESP_ITEM_REASONING) {
        item = reasoning_item(s->id, index, json_string(""), "in_progress");
        json_array_clear(json_object_get(item, "content"));
        part = json_pack("{s:s,s:s}", "type", "reasoning_text", "text", "");
    } else {
        item = message_item(s->id, index, NULL, NULL, "in_progress");
        part = output_text_part(json_string(""), NULL);
    }
    emit(s, events, "response.output_item.added", json_pack("{s:i,s:o}", "output_index", index, "item", item));
    emit(s, events, "response.content_part.added", at_part(s, json_pack("{s:o}", "part", part)));
}

/* Pending entries whose text the parser dropped (the whitespace after
 * "</think>", say) lead the list: drop leading entries while the rest still
 * holds the n bytes the text grew by. */
static void drop_unspoken(json_t *lp, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < json_array_size(lp); i++) total += json_array_size(json_object_get(json_array_get(lp, i), "bytes"));
    while (json_array_size(lp) > 1) {
        size_t first = json_array_size(json_object_get(json_array_get(lp, 0), "bytes"));
        if (total - first < n) break;
        total -= first;
        json_array_remove(lp, 0);
    }
}

/* The text new in total since *sent as a delta of a `kind` item; a message's
 * delta carries the logprobs of the tokens waiting to be placed. */
static void text_delta(oai_resp_stream *s, json_t *events, oai_resp_item kind, const rbuf *total, size_t *sent) {
    if (total->len <= *sent) return;
    open_item(s, events, kind);
    const char *p = total->p + *sent;
    size_t n = total->len - *sent;
    rbuf_append(&s->text, p, n);
    *sent = total->len;
    if (kind == RESP_ITEM_REASONING) {
        emit(s, events, "response.reasoning_text.delta", at_part(s, json_pack("{s:o}", "delta", text_json(p, n))));
        return;
    }
    json_t *lp = s->lp_pending;
    s->lp_pending = json_array();
    drop_unspoken(lp, n);
    json_array_extend(s->lp_message, lp);
    emit(s, events, "response.output_text.delta", at_part(s, json_pack("{s:o,s:o}", "delta", text_json(p, n), "logprobs", lp)));
}

/* A tool call arrives whole: its item from added to done at once. */
static void call_events(oai_resp_stream *s, json_t *events, const chat_tool_call *c) {
    close_item(s, events, "completed");
    int index = s->n_items++;
    json_t *id = item_id(s->id, "fc", index);
    emit(s, events, "response.output_item.added",
         json_pack("{s:i,s:o}", "output_index", index, "item", call_item(s->id, index, c, "", "in_progress")));
    emit(s, events, "response.function_call_arguments.delta",
         json_pack("{s:O,s:i,s:s}", "item_id", id, "output_index", index, "delta", c->arguments));
    emit(s, events, "response.function_call_arguments.done",
         json_pack("{s:O,s:i,s:s,s:s}", "item_id", id, "output_index", index, "name", c->name, "arguments", c->arguments));
    json_t *item = call_item(s->id, index, c, c->arguments, "completed");
    emit(s, events, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", index, "item", item));
    json_array_append_new(s->output, item);
    json_decref(id);
}

static void finish_events(oai_resp_stream *s, json_t *events, const oai_request *r, const oai_choice *c,
                          const char *error) {
    const char *status = status_of(c->finish, error);
    const char *item_status = !strcmp(status, "completed") ? "completed" : "incomplete";
    if (s->n_items == 0) open_item(s, events, RESP_ITEM_MESSAGE); /* an empty answer is an empty message */
    close_item(s, events, item_status);
    json_t *resp = response_object(r, s->id, s->created, status, error, json_incref(s->output), usage_json(r, c));
    const char *type = !strcmp(status, "completed") ? "response.completed"
                       : !strcmp(status, "failed")  ? "response.failed"
                                                    : "response.incomplete"; /* incomplete, cancelled */
    json_decref(s->final);
    s->final = json_incref(resp);
    emit(s, events, type, json_pack("{s:o}", "response", resp));
}

/* The event's logprobs entry ({token, logprob, bytes, top_logprobs}: chat's
 * shape is the Responses shape), NULL when not asked or no token. */
static json_t *logprob_entry(const oai_request *r, const tokenizer *tok, const sched_event *ev) {
    json_t *lp = r->logprobs ? oai_event_logprobs(r, tok, ev, 0) : NULL;
    json_t *e = json_array_get(json_object_get(lp, "content"), 0);
    if (e) json_incref(e);
    json_decref(lp);
    return e;
}

json_t *oai_resp_stream_event(oai_resp_stream *s, const oai_request *r, oai_choice *c, const tokenizer *tok,
                              const sched_event *ev) {
    json_t *events = json_array();
    if (!events) return NULL;
    if (ev->prompt) return events;
    json_t *entry = logprob_entry(r, tok, ev);
    chat_output *o = c->out;
    int was_reasoning = o && o->opts.parse_reasoning && reasoning_in_progress(&o->rp);
    oai_choice_add(c, r, tok, ev);
    if (entry) json_array_append_new(s->lp_pending, entry);
    if (o) {
        /* a token's logprob belongs to the text it released: the message's
         * when its text grew, none when only reasoning grew, the reasoning
         * closed ("</think>") or a tool call came; held-back text keeps it waiting */
        int content = o->content.len > s->content_sent;
        int closed = was_reasoning && !reasoning_in_progress(&o->rp);
        if (!content && (o->reasoning.len > s->reasoning_seen || o->n_calls > s->calls_sent || closed))
            json_array_clear(s->lp_pending);
        s->reasoning_seen = o->reasoning.len;
        if (o->opts.include_reasoning) text_delta(s, events, RESP_ITEM_REASONING, &o->reasoning, &s->reasoning_sent);
        text_delta(s, events, RESP_ITEM_MESSAGE, &o->content, &s->content_sent);
        for (; s->calls_sent < o->n_calls; s->calls_sent++) call_events(s, events, &o->calls[s->calls_sent]);
    }
    if (ev->finish != FINISH_NONE)
        finish_events(s, events, r, c, ev->finish == FINISH_ERROR ? (ev->error[0] ? ev->error : "engine error") : NULL);
    return events;
}
