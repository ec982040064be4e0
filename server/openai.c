/* server/openai.c — see openai.h. Parsing follows OpenAI's documented types and
 * ranges, with vLLM's extensions (top_k, min_p, repetition_penalty, ignore_eos,
 * token-id prompts); response objects follow OpenAI's field order. */
#include "server/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chat_template.h"
#include "common/utf8.h"

#define BAD "invalid_request_error"

int oai_error_set(oai_error *err, int status, const char *type, const char *param, const char *code,
                  const char *fmt, ...) {
    if (!err) return -1;
    err->status = status;
    err->type = type;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

json_t *oai_json_string_lossy(const char *s, size_t len) {
    if (utf8_validate(s, len) == len) return json_stringn(s, len);
    char *buf = malloc(3 * len + 1);
    if (!buf) return NULL;
    size_t n = utf8_lossy(s, len, buf, 1, NULL);
    json_t *j = json_stringn(buf, n);
    free(buf);
    return j;
}

/* json_string or JSON null for "" */
static json_t *str_or_null(const char *s) { return s && *s ? oai_json_string_lossy(s, strlen(s)) : json_null(); }

json_t *oai_error_json(const oai_error *err) {
    return json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", oai_json_string_lossy(err->message, strlen(err->message)),
                     "type", err->type ? err->type : BAD, "param", str_or_null(err->param), "code",
                     str_or_null(err->code));
}

void oai_request_free(oai_request *r) {
    if (!r) return;
    free(r->model);
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i].ids), free(r->prompts[i].text);
    free(r->prompts);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->bias_ids);
    free(r->bias_values);
    oai_features_free(&r->feat);
    json_decref(r->resp_echo);
    json_decref(r->resp_history);
    json_decref(r->resp_items);
    memset(r, 0, sizeof *r);
}

/* ---- typed field access: null counts as absent ---- */

json_t *oai_field(const json_t *body, const char *name) {
    json_t *v = json_object_get(body, name);
    return json_is_null(v) ? NULL : v;
}

/* A number in [lo, hi] (lo excluded when lo_open). 1 present, 0 absent, -1 bad. */
static int get_number(const json_t *body, const char *name, double lo, double hi, int lo_open, double *out,
                      oai_error *err) {
    json_t *v = oai_field(body, name);
    if (!v) return 0;
    if (!json_is_number(v)) return oai_error_set(err, 400, BAD, name, NULL, "'%s' must be a number", name);
    double d = json_number_value(v);
    if (!isfinite(d) || d > hi || (lo_open ? d <= lo : d < lo))
        return oai_error_set(err, 400, BAD, name, NULL, "'%s' must be in %c%g, %g], got %g", name, lo_open ? '(' : '[',
                             lo, hi, d);
    *out = d;
    return 1;
}

/* An integer (a real with an integral value counts) in [lo, hi]. */
static int get_int(const json_t *body, const char *name, long long lo, long long hi, long long *out, oai_error *err) {
    json_t *v = oai_field(body, name);
    if (!v) return 0;
    double d = json_is_real(v) ? json_real_value(v) : 0;
    if (!json_is_integer(v) && !(json_is_real(v) && d == floor(d) && fabs(d) < 9e15))
        return oai_error_set(err, 400, BAD, name, NULL, "'%s' must be an integer", name);
    long long x = json_is_integer(v) ? (long long)json_integer_value(v) : (long long)d;
    if (x < lo || x > hi)
        return oai_error_set(err, 400, BAD, name, NULL, "'%s' must be in [%lld, %lld], got %lld", name, lo, hi, x);
    *out = x;
    return 1;
}

static int get_bool(const json_t *body, const char *name, int *out, oai_error *err) {
    json_t *v = oai_field(body, name);
    if (!v) return 0;
    if (!json_is_boolean(v)) return oai_error_set(err, 400, BAD, name, NULL, "'%s' must be a boolean", name);
    *out = json_is_true(v);
    return 1;
}

/* ---- parameters shared by both endpoints ---- */

static int parse_sampling(const json_t *b, oai_request *r, oai_error *err) {
    sample_params *sp = &r->sampling;
    double d;
    long long i;
    int rc;
    if ((rc = get_number(b, "temperature", 0, 2, 0, &d, err)) < 0) return -1;
    if (rc) sp->temperature = (float)d;
    if ((rc = get_number(b, "top_p", 0, 1, 1, &d, err)) < 0) return -1;
    if (rc) sp->top_p = (float)d;
    if ((rc = get_int(b, "top_k", -1, 1 << 30, &i, err)) < 0) return -1;
    if (rc) sp->top_k = (int32_t)i;
    if ((rc = get_number(b, "min_p", 0, 1, 0, &d, err)) < 0) return -1;
    if (rc) sp->min_p = (float)d;
    if ((rc = get_number(b, "presence_penalty", -2, 2, 0, &d, err)) < 0) return -1;
    if (rc) sp->presence_penalty = (float)d;
    if ((rc = get_number(b, "frequency_penalty", -2, 2, 0, &d, err)) < 0) return -1;
    if (rc) sp->frequency_penalty = (float)d;
    if ((rc = get_number(b, "repetition_penalty", 0, 100, 1, &d, err)) < 0) return -1;
    if (rc) sp->repetition_penalty = (float)d;
    if ((rc = get_int(b, "seed", INT64_MIN, INT64_MAX, &i, err)) < 0) return -1;
    if (rc) sp->seed = (uint64_t)i, r->seed_given = 1;
    ms_err e = {{0}};
    if (sample_params_validate(sp, &e) != 0) return oai_error_set(err, 400, BAD, NULL, NULL, "%s", e.msg);
    return 0;
}

static int add_stop(oai_request *r, const json_t *s, oai_error *err) {
    if (!json_is_string(s)) return oai_error_set(err, 400, BAD, "stop", NULL, "'stop' must be a string or an array of strings");
    if (json_string_length(s) == 0) return 0; /* an empty stop string matches nothing useful: ignored */
    if (r->n_stop >= SCHED_MAX_STOP)
        return oai_error_set(err, 400, BAD, "stop", NULL, "'stop' may hold at most %d strings", SCHED_MAX_STOP);
    if (memchr(json_string_value(s), 0, json_string_length(s)))
        return oai_error_set(err, 400, BAD, "stop", NULL, "'stop' strings must not contain NUL");
    if (!(r->stop[r->n_stop] = strdup(json_string_value(s))))
        return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    r->n_stop++;
    return 0;
}

/* A canonical decimal token id ("0", "42"; not "042", "+4", "4.0"), else -1. */
static long token_key(const char *k) {
    if (!*k || strlen(k) > 9 || (k[0] == '0' && k[1])) return -1;
    long v = 0;
    for (const char *c = k; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        v = v * 10 + (*c - '0');
    }
    return v;
}

/* logit_bias: {"<token id>": bias in [-100, 100], ...} (OpenAI's form). */
static int parse_logit_bias(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    json_t *lb = oai_field(b, "logit_bias");
    if (!lb) return 0;
    if (!json_is_object(lb))
        return oai_error_set(err, 400, BAD, "logit_bias", NULL, "'logit_bias' must be an object mapping token ids to biases");
    size_t n = json_object_size(lb);
    if (!n) return 0;
    r->bias_ids = malloc(n * sizeof *r->bias_ids);
    r->bias_values = malloc(n * sizeof *r->bias_values);
    if (!r->bias_ids || !r->bias_values) return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(lb, key, v) {
        long id = token_key(key);
        if (id < 0 || id >= ctx->vocab_size)
            return oai_error_set(err, 400, BAD, "logit_bias", NULL,
                                 "'logit_bias' key '%.40s' is not a token id in [0, %d)", key, ctx->vocab_size);
        double d = json_number_value(v);
        if (!json_is_number(v) || !(d >= -SAMPLE_MAX_LOGIT_BIAS && d <= SAMPLE_MAX_LOGIT_BIAS))
            return oai_error_set(err, 400, BAD, "logit_bias", NULL,
                                 "'logit_bias' value for token %ld must be a number in [-100, 100]", id);
        r->bias_ids[r->n_bias] = (int32_t)id;
        r->bias_values[r->n_bias++] = (float)d;
    }
    return 0;
}

/* vLLM's stopping extensions: stop_token_ids, min_tokens,
 * include_stop_str_in_output, skip_special_tokens. */
static int parse_vllm_stopping(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    json_t *ids = oai_field(b, "stop_token_ids");
    if (ids) {
        if (!json_is_array(ids) || json_array_size(ids) > SCHED_MAX_STOP_IDS)
            return oai_error_set(err, 400, BAD, "stop_token_ids", NULL, "'stop_token_ids' must be an array of at most %d token ids",
                                 SCHED_MAX_STOP_IDS);
        size_t i;
        json_t *v;
        json_array_foreach(ids, i, v) {
            json_int_t id = json_integer_value(v);
            if (!json_is_integer(v) || id < 0 || id >= ctx->vocab_size)
                return oai_error_set(err, 400, BAD, "stop_token_ids", NULL,
                                     "'stop_token_ids'[%zu] must be a token id in [0, %d)", i, ctx->vocab_size);
            r->stop_ids[r->n_stop_ids++] = (int32_t)id;
        }
    }
    long long mt;
    int rc = get_int(b, "min_tokens", 0, INT32_MAX, &mt, err);
    if (rc < 0) return -1;
    if (rc) r->min_tokens = (int)mt;
    if (get_bool(b, "include_stop_str_in_output", &r->include_stop, err) < 0) return -1;
    if (get_bool(b, "skip_special_tokens", &r->skip_special, err) < 0) return -1;
    return 0;
}

int oai_model_served(const oai_ctx *ctx, const char *name) {
    if (ctx->served_model && !strcmp(name, ctx->served_model)) return 1;
    for (int i = 0; i < ctx->n_aliases; i++)
        if (!strcmp(name, ctx->aliases[i])) return 1;
    return 0;
}

/* best_of (legacy completions): generate best_of candidates per prompt and
 * return the n with the highest mean token logprob; not streamed. */
static int parse_best_of(const json_t *b, oai_request *r, oai_error *err) {
    long long best;
    r->n_return = r->n;
    int rc = get_int(b, "best_of", 1, OAI_MAX_N, &best, err);
    if (rc <= 0 || best == r->n) return rc < 0 ? -1 : 0;
    if (r->kind == OAI_CHAT && best > 1)
        return oai_error_set(err, 400, BAD, "best_of", NULL, "'best_of' is a /v1/completions parameter");
    if (best < r->n) return oai_error_set(err, 400, BAD, "best_of", NULL, "'best_of' (%lld) must be at least 'n' (%d)", best, r->n);
    if (r->stream) return oai_error_set(err, 400, BAD, "best_of", NULL, "'best_of' cannot be used with 'stream'");
    r->n = (int)best;
    return 0;
}

static int parse_common(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    json_t *m = json_object_get(b, "model");
    if (!json_is_string(m)) return oai_error_set(err, 400, BAD, "model", NULL, "'model' is required and must be a string");
    if (!(r->model = strdup(json_string_value(m)))) return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    if (!oai_model_served(ctx, r->model))
        return oai_error_set(err, 404, BAD, "model", "model_not_found", "The model `%.200s` does not exist.",
                             r->model);
    r->sampling = sample_params_default();
    if (parse_sampling(b, r, err) || parse_logit_bias(b, ctx, r, err) || parse_vllm_stopping(b, ctx, r, err)) return -1;
    long long i;
    int rc;
    r->n = 1;
    if ((rc = get_int(b, "n", 1, OAI_MAX_N, &i, err)) < 0) return -1;
    if (rc) r->n = (int)i;
    if (get_bool(b, "stream", &r->stream, err) < 0) return -1;
    json_t *so = oai_field(b, "stream_options");
    if (so) {
        if (!json_is_object(so)) return oai_error_set(err, 400, BAD, "stream_options", NULL, "'stream_options' must be an object");
        if (!r->stream)
            return oai_error_set(err, 400, BAD, "stream_options", NULL, "'stream_options' is only allowed when 'stream' is true");
        if (get_bool(so, "include_usage", &r->include_usage, err) < 0) {
            snprintf(err->param, sizeof err->param, "stream_options.include_usage");
            return -1;
        }
        if (get_bool(so, "continuous_usage_stats", &r->continuous_usage, err) < 0) {
            snprintf(err->param, sizeof err->param, "stream_options.continuous_usage_stats");
            return -1;
        }
        r->continuous_usage = r->continuous_usage && r->include_usage; /* vLLM: only with include_usage */
    }
    if (get_bool(b, "ignore_eos", &r->ignore_eos, err) < 0) return -1;
    json_t *stop = oai_field(b, "stop");
    if (json_is_array(stop)) {
        size_t k;
        json_t *s;
        json_array_foreach(stop, k, s) if (add_stop(r, s, err)) return -1;
    } else if (stop && add_stop(r, stop, err)) {
        return -1;
    }
    json_t *user = oai_field(b, "user");
    if (user && !json_is_string(user)) return oai_error_set(err, 400, BAD, "user", NULL, "'user' must be a string");
    /* max_completion_tokens wins over the deprecated max_tokens (as vLLM). */
    long long mt = 0;
    if ((rc = get_int(b, "max_completion_tokens", 0, INT32_MAX, &mt, err)) < 0) return -1;
    if (!rc && (rc = get_int(b, "max_tokens", 0, INT32_MAX, &mt, err)) < 0) return -1;
    r->max_tokens_given = rc;
    r->max_tokens = rc ? (int)mt : 0;
    /* The legacy `functions` would change the output's meaning and is not implemented: refuse, don't ignore. */
    json_t *v = oai_field(b, "functions");
    if (v && !(json_is_array(v) && json_array_size(v) == 0) && !(json_is_object(v) && json_object_size(v) == 0))
        return oai_error_set(err, 400, BAD, "functions", NULL, "'functions' is not supported by this server (use 'tools')");
    return parse_best_of(b, r, err);
}

/* ---- prompts ---- */

static int encode_text(const oai_ctx *ctx, const char *text, size_t len, int bos, oai_prompt *p, const char *param,
                       oai_error *err) {
    ms_err e = {{0}};
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(ctx->tok, text, len, &ids, &n, &e) != 0)
        return oai_error_set(err, 400, BAD, param, NULL, "'%s': %s", param, e.msg);
    bos = bos && tokenizer_add_bos(ctx->tok) && tokenizer_bos_id(ctx->tok) >= 0;
    p->ids = malloc((n + (size_t)bos + 1) * sizeof *p->ids);
    if (!p->ids) {
        free(ids);
        return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    }
    if (bos) p->ids[0] = tokenizer_bos_id(ctx->tok);
    if (n) memcpy(p->ids + bos, ids, n * sizeof *ids);
    p->n_ids = (int)n + bos;
    free(ids);
    return 0;
}

/* messages with "developer" roles renamed to "system" (OpenAI's newer name):
 * a new reference, the same array when there is nothing to rename. */
static json_t *normalize_messages(json_t *msgs) {
    size_t i;
    json_t *m;
    int need = 0;
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role");
        if (json_is_string(role) && !strcmp(json_string_value(role), "developer")) need = 1;
    }
    if (!need) return json_incref(msgs);
    json_t *copy = json_deep_copy(msgs);
    json_array_foreach(copy, i, m) {
        json_t *role = json_object_get(m, "role");
        if (json_is_string(role) && !strcmp(json_string_value(role), "developer"))
            json_object_set_new(m, "role", json_string("system"));
    }
    return copy;
}

/* Content parts other than text are refused with the part named. */
static int check_content(const json_t *msgs, oai_error *err) {
    size_t i, k;
    json_t *m, *part;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) return oai_error_set(err, 400, BAD, "messages", NULL, "messages[%zu] must be an object", i);
        json_t *c = json_object_get(m, "content");
        if (!json_is_array(c)) continue;
        json_array_foreach(c, k, part) {
            json_t *type = json_object_get(part, "type");
            if (!json_is_object(part) || !json_is_string(type))
                return oai_error_set(err, 400, BAD, "messages", NULL, "messages[%zu].content[%zu] must be a content part object", i, k);
            if (strcmp(json_string_value(type), "text"))
                return oai_error_set(err, 400, BAD, "messages", NULL,
                                     "messages[%zu].content[%zu]: content type '%.40s' is not supported (text only)", i, k,
                                     json_string_value(type));
            if (!json_is_string(json_object_get(part, "text")))
                return oai_error_set(err, 400, BAD, "messages", NULL, "messages[%zu].content[%zu].text must be a string", i, k);
        }
    }
    return 0;
}

int oai_render_chat(const json_t *b, const oai_ctx *ctx, oai_features *f, char **text, size_t *len, oai_error *err) {
    *text = NULL;
    json_t *msgs = json_object_get(b, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return oai_error_set(err, 400, BAD, "messages", NULL, "'messages' is required and must be a non-empty array");
    if (check_content(msgs, err)) return -1;
    json_t *norm = normalize_messages(msgs);
    if (!norm) return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    chat_template_opts opts = {0};
    if (oai_features_resolve(f, norm, ctx->variant, ctx->reasoning_flag, &opts, err) != 0) {
        json_decref(norm);
        return -1;
    }
    ms_err e = {{0}};
    int rc = chat_template_render(norm, &opts, text, len, &e);
    json_decref(norm);
    return rc ? oai_error_set(err, 400, BAD, "messages", NULL, "%s", e.msg) : 0;
}

static int parse_messages(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    if (oai_field(b, "suffix"))
        return oai_error_set(err, 400, BAD, "suffix", NULL, "'suffix' (fill-in-the-middle) is a /v1/completions parameter");
    char *text = NULL;
    size_t len = 0;
    if (oai_render_chat(b, ctx, &r->feat, &text, &len, err)) return -1;
    r->prompts = calloc(1, sizeof *r->prompts);
    if (!r->prompts) {
        free(text);
        return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    }
    r->n_prompts = 1;
    int rc = encode_text(ctx, text, len, 0, &r->prompts[0], "messages", err);
    free(text);
    return rc;
}

static int is_token_array(const json_t *a) {
    size_t i;
    json_t *v;
    if (!json_is_array(a) || json_array_size(a) == 0) return 0;
    json_array_foreach(a, i, v) if (!json_is_integer(v)) return 0;
    return 1;
}

static int token_prompt(const json_t *a, const oai_ctx *ctx, oai_prompt *p, oai_error *err) {
    size_t i, n = json_array_size(a);
    json_t *v;
    if (!(p->ids = malloc(n * sizeof *p->ids))) return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    json_array_foreach(a, i, v) {
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= ctx->vocab_size)
            return oai_error_set(err, 400, BAD, "prompt", NULL, "token id %lld in 'prompt' is outside the vocabulary [0, %d)",
                                 (long long)id, ctx->vocab_size);
        p->ids[i] = (int32_t)id;
    }
    p->n_ids = (int)n;
    return 0;
}

/* Fill-in-the-middle (completions `suffix`), DeepSeek's PSM layout (V3
 * report §4.1; DeepSeek-Coder): [BOS] <｜fim▁begin｜> prompt <｜fim▁hole｜>
 * suffix <｜fim▁end｜>; the model then writes the middle. */
struct fim;
static int parse_prompts(const json_t *b, const oai_ctx *ctx, oai_request *r, const struct fim *f, oai_error *err);

typedef struct fim {
    int32_t begin, hole, end;
    int32_t *suffix;           /* the suffix's ids (no BOS), malloc'd */
    size_t n_suffix;
} fim;

static int fim_init(const json_t *b, const oai_ctx *ctx, const oai_request *r, fim *f, oai_error *err) {
    json_t *suffix = oai_field(b, "suffix");
    if (!suffix) return 0;
    if (!json_is_string(suffix)) return oai_error_set(err, 400, BAD, "suffix", NULL, "'suffix' must be a string");
    if (r->echo) return oai_error_set(err, 400, BAD, "suffix", NULL, "'echo' cannot be combined with 'suffix'");
    f->begin = tokenizer_token_id(ctx->tok, "<｜fim▁begin｜>");
    f->hole = tokenizer_token_id(ctx->tok, "<｜fim▁hole｜>");
    f->end = tokenizer_token_id(ctx->tok, "<｜fim▁end｜>");
    if (f->begin < 0 || f->hole < 0 || f->end < 0)
        return oai_error_set(err, 400, BAD, "suffix", NULL,
                             "'suffix' (fill-in-the-middle) needs the tokens <｜fim▁begin｜>, <｜fim▁hole｜> and "
                             "<｜fim▁end｜>, which this model's tokenizer lacks");
    ms_err e = {{0}};
    if (tokenizer_encode(ctx->tok, json_string_value(suffix), json_string_length(suffix), &f->suffix, &f->n_suffix,
                         &e) != 0)
        return oai_error_set(err, 400, BAD, "suffix", NULL, "'suffix': %s", e.msg);
    return 1;
}

/* p's ids (after a leading BOS when lead is 1) become the FIM prefix. */
static int fim_wrap(const fim *f, int lead, oai_prompt *p, oai_error *err) {
    size_t n = (size_t)p->n_ids + f->n_suffix + 3;
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids) return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    size_t k = 0;
    if (lead) ids[k++] = p->ids[0];
    ids[k++] = f->begin;
    memcpy(ids + k, p->ids + lead, (size_t)(p->n_ids - lead) * sizeof *ids);
    k += (size_t)(p->n_ids - lead);
    ids[k++] = f->hole;
    if (f->n_suffix) memcpy(ids + k, f->suffix, f->n_suffix * sizeof *ids);
    k += f->n_suffix;
    ids[k++] = f->end;
    free(p->ids);
    p->ids = ids;
    p->n_ids = (int)k;
    return 0;
}

/* prompt: string | [string, ...] | [int, ...] | [[int, ...], ...], each
 * wrapped for fill-in-the-middle when `suffix` is given */
static int parse_prompt(const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    fim f = {0};
    int has_fim = fim_init(b, ctx, r, &f, err);
    if (has_fim < 0) return -1;
    int rc = parse_prompts(b, ctx, r, has_fim ? &f : NULL, err);
    free(f.suffix);
    return rc;
}

static int parse_prompts(const json_t *b, const oai_ctx *ctx, oai_request *r, const fim *f, oai_error *err) {
    json_t *p = json_object_get(b, "prompt");
    const char *shape = "'prompt' must be a string, an array of strings, an array of token ids or an array of those";
    if (!json_is_string(p) && !json_is_array(p)) return oai_error_set(err, 400, BAD, "prompt", NULL, "%s", shape);
    size_t n = json_is_string(p) || is_token_array(p) ? 1 : json_array_size(p);
    if (n == 0) return oai_error_set(err, 400, BAD, "prompt", NULL, "'prompt' must not be empty");
    if (n > OAI_MAX_PROMPTS) return oai_error_set(err, 400, BAD, "prompt", NULL, "'prompt' may hold at most %d prompts", OAI_MAX_PROMPTS);
    if (!(r->prompts = calloc(n, sizeof *r->prompts))) return oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
    r->n_prompts = (int)n;
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_is_string(p) || is_token_array(p) ? p : json_array_get(p, i);
        int rc;
        if (json_is_string(item)) {
            rc = encode_text(ctx, json_string_value(item), json_string_length(item), 1, &r->prompts[i], "prompt", err);
            if (!rc && r->echo && !(r->prompts[i].text = strdup(json_string_value(item))))
                rc = oai_error_set(err, 400, BAD, NULL, NULL, "out of memory");
        }
        else if (is_token_array(item))
            rc = token_prompt(item, ctx, &r->prompts[i], err);
        else
            rc = oai_error_set(err, 400, BAD, "prompt", NULL, "%s", shape);
        if (rc) return -1;
        /* a string prompt starts with the BOS encode_text added, if any */
        int lead = json_is_string(item) && r->prompts[i].n_ids > 0 && tokenizer_add_bos(ctx->tok) &&
                   r->prompts[i].ids[0] == tokenizer_bos_id(ctx->tok);
        if (f && fim_wrap(f, lead, &r->prompts[i], err)) return -1;
        if (r->prompts[i].n_ids == 0) return oai_error_set(err, 400, BAD, "prompt", NULL, "'prompt' encodes to no tokens");
    }
    return 0;
}

static int parse_logprobs(oai_kind kind, const json_t *b, oai_request *r, oai_error *err) {
    long long i;
    int rc;
    if (kind == OAI_CHAT) {
        if (get_bool(b, "logprobs", &r->logprobs, err) < 0) return -1;
        if ((rc = get_int(b, "top_logprobs", 0, SCHED_MAX_TOP_LOGPROBS, &i, err)) < 0) return -1;
        if (rc && !r->logprobs)
            return oai_error_set(err, 400, BAD, "top_logprobs", NULL, "'top_logprobs' needs 'logprobs' set to true");
        r->top_logprobs = rc ? (int)i : 0;
    } else {
        if ((rc = get_int(b, "logprobs", 0, SCHED_MAX_TOP_LOGPROBS, &i, err)) < 0) return -1;
        r->logprobs = rc;
        r->top_logprobs = rc ? (int)i : 0;
        if (get_bool(b, "echo", &r->echo, err) < 0) return -1;
        r->prompt_logprobs = r->echo && r->logprobs;
    }
    /* vLLM's prompt_logprobs: every prompt token's logprob, rank and alternatives */
    if ((rc = get_int(b, "prompt_logprobs", 0, SCHED_MAX_TOP_LOGPROBS, &i, err)) < 0) return -1;
    r->prompt_top = rc ? (int)i : -1;
    if (rc && r->stream)
        return oai_error_set(err, 400, BAD, "prompt_logprobs", NULL, "'prompt_logprobs' is not available with 'stream'");
    /* max_tokens 0 scores the prompt (its logprobs) without generating */
    if (r->max_tokens_given && r->max_tokens == 0 && !r->echo && r->prompt_top < 0) {
        const char *param = oai_field(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
        return oai_error_set(err, 400, BAD, param, NULL,
                             "max_tokens must be at least 1 (0 is allowed only with 'prompt_logprobs', or 'echo' on "
                             "/v1/completions)");
    }
    return 0;
}

/* The context check: every prompt plus max_tokens must fit. */
static int check_context(const oai_ctx *ctx, oai_request *r, oai_error *err) {
    const char *pname = r->kind == OAI_CHAT ? "messages" : "prompt";
    int longest = 0;
    for (int i = 0; i < r->n_prompts; i++)
        if (r->prompts[i].n_ids > longest) longest = r->prompts[i].n_ids;
    if (longest >= ctx->max_model_len)
        return oai_error_set(err, 400, BAD, pname, "context_length_exceeded",
                             "This model's maximum context length is %d tokens. However, your %s has %d tokens, "
                             "leaving no room for a completion. Please reduce the length of the %s.",
                             ctx->max_model_len, pname, longest, pname);
    if (!r->max_tokens_given) {
        r->max_tokens = ctx->max_model_len - longest;
    } else if ((long long)longest + r->max_tokens > ctx->max_model_len) {
        return oai_error_set(err, 400, BAD, "max_tokens", "context_length_exceeded",
                             "This model's maximum context length is %d tokens. However, you requested %lld tokens "
                             "(%d in the %s, %d for the completion). Please reduce the length of the %s or the "
                             "completion.",
                             ctx->max_model_len, (long long)longest + r->max_tokens, longest, pname, r->max_tokens, pname);
    }
    if (r->min_tokens > r->max_tokens)
        return oai_error_set(err, 400, BAD, "min_tokens", NULL, "'min_tokens' (%d) must not exceed max_tokens (%d)",
                             r->min_tokens, r->max_tokens);
    return 0;
}

/* A constrained request needs the token trie, and enough max_tokens for the
 * shortest output the grammar allows (plus the closing EOS). */
static int check_constraint(const oai_ctx *ctx, oai_request *r, oai_error *err) {
    if (!r->feat.grammar) return 0;
    const char *param = r->feat.grammar_param ? r->feat.grammar_param : "tool_choice";
    if (!ctx->vocab) return oai_error_set(err, 400, BAD, param, NULL, "constrained decoding is not available on this server");
    r->vocab = ctx->vocab;
    ms_err e = {{0}};
    cons_state *st = cons_state_create(r->feat.grammar, ctx->vocab, r->feat.starts_in_reasoning, &e);
    if (!st) return oai_error_set(err, 400, BAD, param, NULL, "%s", e.msg);
    int need = cons_min_tokens(st) + 1 + (r->feat.starts_in_reasoning ? 4 : 0); /* "</think>" takes a few tokens */
    cons_state_free(st);
    if (r->max_tokens < need)
        return oai_error_set(err, 400, BAD, "max_tokens", NULL,
                             "max_tokens is %d, but the shortest output this %s allows takes %d tokens", r->max_tokens,
                             param, need);
    return 0;
}

/* The fields each endpoint reads (everything parse_* and oai_features_parse look at). */
static int known_field(const char *k, oai_kind kind) {
    static const char *const common[] = {
        "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n",
        "stream", "stream_options", "presence_penalty", "frequency_penalty", "repetition_penalty", "ignore_eos", "user",
        "logit_bias", "stop_token_ids", "min_tokens", "include_stop_str_in_output", "skip_special_tokens",
        "response_format", "functions", "best_of", "logprobs", "top_logprobs", "suffix", "prompt_logprobs",
        "guided_json", "guided_choice", "guided_regex", "structured_outputs", NULL};
    static const char *const chat[] = {"messages", "tools", "tool_choice", "parallel_tool_calls", "include_reasoning",
                                       "chat_template_kwargs", "continue_final_message", "add_generation_prompt", NULL};
    static const char *const completion[] = {"prompt", "echo", NULL};
    for (const char *const *f = common; *f; f++)
        if (!strcmp(k, *f)) return 1;
    for (const char *const *f = kind == OAI_CHAT ? chat : completion; *f; f++)
        if (!strcmp(k, *f)) return 1;
    return 0;
}

void oai_unread_fields(const json_t *b, int (*known)(const char *name, const void *arg), const void *arg, char *out,
                       size_t cap) {
    const char *key;
    json_t *v;
    size_t len = 0;
    out[0] = 0;
    json_object_foreach((json_t *)b, key, v) {
        if (known(key, arg)) continue;
        int n = snprintf(out + len, cap - len, "%s%.40s", len ? ", " : "", key);
        if (n < 0 || (size_t)n >= cap - len) {
            snprintf(out + cap - 6, 6, ", ..."); /* full: mark the cut */
            return;
        }
        len += (size_t)n;
    }
}

static int known_for_kind(const char *k, const void *kind) { return known_field(k, *(const oai_kind *)kind); }

json_t *oai_parse_body(const char *body, size_t len, oai_error *err) {
    json_error_t je;
    json_t *b = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!b)
        oai_error_set(err, 400, BAD, NULL, "invalid_json", "Invalid JSON body: %s (line %d, column %d)", je.text, je.line,
                      je.column);
    return b;
}

int oai_parse_request(oai_kind kind, const char *body, size_t len, const oai_ctx *ctx, oai_request *r,
                      oai_error *err) {
    json_t *b = oai_parse_body(body, len, err);
    if (!b) {
        memset(r, 0, sizeof *r);
        return -1;
    }
    int rc = oai_parse_request_json(kind, b, ctx, r, err);
    json_decref(b);
    return rc;
}

int oai_parse_request_json(oai_kind kind, const json_t *b, const oai_ctx *ctx, oai_request *r, oai_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->skip_special = 1;
    r->prompt_top = -1;
    int rc = -1;
    if (json_is_object(b)) /* vLLM logs the same warning: a misspelled parameter is not silently lost */
        oai_unread_fields(b, known_for_kind, &kind, r->ignored, sizeof r->ignored);
    if (!json_is_object(b)) {
        oai_error_set(err, 400, BAD, NULL, "invalid_json", "The request body must be a JSON object");
    } else if (parse_common(b, ctx, r, err) == 0 && parse_logprobs(kind, b, r, err) == 0 &&
               oai_features_parse(b, kind == OAI_CHAT, &r->feat, err) == 0 &&
               (kind == OAI_CHAT ? parse_messages(b, ctx, r, err) : parse_prompt(b, ctx, r, err)) == 0 &&
               check_context(ctx, r, err) == 0 && check_constraint(ctx, r, err) == 0) {
        rc = 0;
    }
    if (rc) oai_request_free(r);
    return rc;
}

/* sched_constraint adapter over a cons_state */
static int cons_mask_cb(void *ctx, float *logits, int tokens_left) { return cons_mask(ctx, logits, tokens_left); }
static int cons_accept_cb(void *ctx, int32_t token) { return cons_accept(ctx, token); }
static int cons_complete_cb(void *ctx) { return cons_is_complete(ctx); }
static void cons_free_cb(void *ctx) { cons_state_free(ctx); }

int oai_sched_request(const oai_request *r, int choice, uint64_t base_seed, sched_request *out, ms_err *err) {
    memset(out, 0, sizeof *out);
    const oai_prompt *p = &r->prompts[choice / r->n];
    out->prompt = p->ids;
    out->n_prompt = p->n_ids;
    out->max_tokens = r->max_tokens;
    out->sampling = r->sampling;
    out->sampling.seed = (r->seed_given ? r->sampling.seed : base_seed) + (uint64_t)choice;
    out->bias_ids = r->bias_ids;
    out->bias_values = r->bias_values;
    out->n_bias = r->n_bias;
    out->ignore_eos = r->ignore_eos;
    for (int i = 0; i < r->n_stop; i++) out->stop[i] = r->stop[i];
    out->n_stop = r->n_stop;
    out->include_stop = r->include_stop;
    out->stop_ids = r->stop_ids;
    out->n_stop_ids = r->n_stop_ids;
    out->min_tokens = r->min_tokens;
    out->top_logprobs = r->logprobs ? r->top_logprobs : r->n_return < r->n ? 0 : -1; /* best_of ranks by logprob */
    if (r->prompt_top > out->top_logprobs) out->top_logprobs = r->prompt_top; /* each use trims to its own count */
    out->prompt_logprobs = r->prompt_logprobs || r->prompt_top >= 0;
    out->skip_special = r->skip_special;
    if (!r->feat.grammar) return 0;
    cons_state *st = cons_state_create(r->feat.grammar, r->vocab, r->feat.starts_in_reasoning, err);
    if (!st) return -1;
    out->constraint = (sched_constraint){st, cons_mask_cb, cons_accept_cb, cons_complete_cb, cons_free_cb};
    return 0;
}

/* ---- responses ---- */

const char *oai_finish_string(finish_reason f) {
    switch (f) {
    case FINISH_NONE: return NULL;
    case FINISH_LENGTH: return "length";
    default: return "stop";
    }
}

json_t *oai_token_text(const tokenizer *tok, int32_t id) {
    size_t n = 0;
    const char *b = tokenizer_token_bytes(tok, id, &n);
    return b ? oai_json_string_lossy(b, n) : json_string("");
}

static json_t *token_bytes(const tokenizer *tok, int32_t id) {
    size_t n = 0;
    const unsigned char *b = (const unsigned char *)tokenizer_token_bytes(tok, id, &n);
    json_t *a = json_array();
    for (size_t i = 0; b && i < n; i++) json_array_append_new(a, json_integer(b[i]));
    return a;
}

/* logprob as JSON: -inf is not JSON, OpenAI clients expect a number (vLLM uses -9999). */
static json_t *lp_json(float lp) { return json_real(isfinite(lp) ? lp : -9999.0); }

json_t *oai_event_logprobs(const oai_request *r, const tokenizer *tok, const sched_event *ev, size_t text_offset) {
    if (!r->logprobs || ev->token < 0) return NULL;
    if (isnan(ev->logprob)) /* the first prompt token: nothing before it to condition on */
        return json_pack("{s:[o],s:[n],s:[n],s:[I]}", "tokens", oai_token_text(tok, ev->token), "token_logprobs",
                         "top_logprobs", "text_offset", (json_int_t)text_offset);
    if (r->kind == OAI_CHAT) {
        json_t *tops = json_array();
        for (int i = 0; i < ev->n_top && i < r->top_logprobs; i++)
            json_array_append_new(tops, json_pack("{s:o,s:o,s:o}", "token", oai_token_text(tok, ev->top[i].id), "logprob",
                                                  lp_json(ev->top[i].logprob), "bytes", token_bytes(tok, ev->top[i].id)));
        json_t *entry = json_pack("{s:o,s:o,s:o,s:o}", "token", oai_token_text(tok, ev->token), "logprob",
                                  lp_json(ev->logprob), "bytes", token_bytes(tok, ev->token), "top_logprobs", tops);
        return json_pack("{s:[o]}", "content", entry);
    }
    json_t *tops = json_object();
    for (int i = 0; i < ev->n_top && i < r->top_logprobs; i++) {
        json_t *t = oai_token_text(tok, ev->top[i].id);
        /* two tokens may share a spelling: keep the first (most likely) */
        if (!json_object_get(tops, json_string_value(t))) json_object_set_new(tops, json_string_value(t), lp_json(ev->top[i].logprob));
        json_decref(t);
    }
    return json_pack("{s:[o],s:[o],s:[o],s:[I]}", "tokens", oai_token_text(tok, ev->token), "token_logprobs",
                     lp_json(ev->logprob), "top_logprobs", tops, "text_offset", (json_int_t)text_offset);
}

int oai_choice_init(oai_choice *c, const oai_request *r, const char *echo) {
    memset(c, 0, sizeof *c);
    c->echo = echo;
    c->echo_len = c->text_offset = echo ? strlen(echo) : 0;
    if (r->logprobs)
        c->logprobs = r->kind == OAI_CHAT ? json_pack("{s:[]}", "content")
                                          : json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs",
                                                      "text_offset");
    if (r->prompt_top >= 0 && !(c->prompt_lps = json_array())) return -1;
    if (r->kind != OAI_CHAT || (!r->feat.parse_reasoning && !r->feat.parse_tool_calls && !r->responses)) return 0;
    chat_output_opts o = {r->feat.parse_reasoning, r->feat.starts_in_reasoning, r->feat.include_reasoning,
                          r->feat.parse_tool_calls};
    if (!(c->out = malloc(sizeof *c->out)) || chat_output_init(c->out, &o) != 0) {
        if (c->out) chat_output_free(c->out);
        free(c->out);
        c->out = NULL;
        return -1;
    }
    return 0;
}

void oai_choice_free(oai_choice *c) {
    free(c->text);
    json_decref(c->logprobs);
    json_decref(c->prompt_lps);
    if (c->out) chat_output_free(c->out);
    free(c->out);
    memset(c, 0, sizeof *c);
}

/* Feeds an event's text to the output parser; at the end of the stream, finishes it. */
static void choice_parse(oai_choice *c, const sched_event *ev) {
    if (!c->out) return;
    if (chat_output_push(c->out, ev->text ? ev->text : "", ev->text_len, ev->token >= 0) != 0) c->failed = 1;
    if (ev->finish != FINISH_NONE && chat_output_finish(c->out) != 0) c->failed = 1;
}

int oai_choice_reasoning_tokens(const oai_choice *c) { return c->out ? c->out->reasoning_tokens : 0; }

const char *oai_choice_warning(const oai_choice *c) { return c->out && c->out->warning[0] ? c->out->warning : NULL; }

/* Appends one event's logprobs entry (text_offset `offset`) to c->logprobs. */
static void choice_add_logprobs(oai_choice *c, const oai_request *r, const tokenizer *tok, const sched_event *ev,
                                size_t offset) {
    json_t *lp = c->logprobs ? oai_event_logprobs(r, tok, ev, offset) : NULL;
    if (!lp) return;
    const char *key;
    json_t *arr;
    json_object_foreach(lp, key, arr) json_array_extend(json_object_get(c->logprobs, key), arr);
    json_decref(lp);
}

/* Bytes of the echoed prompt that prompt token id spells at c->prompt_offset. */
static size_t prompt_token_len(const oai_choice *c, const tokenizer *tok, int32_t id) {
    size_t n = 0, at = c->prompt_offset < c->echo_len ? c->prompt_offset : c->echo_len, left = c->echo_len - at;
    const char *b = tokenizer_token_bytes(tok, id, &n);
    if (!b) return 0;
    if (tokenizer_is_special(tok, id) || tokenizer_is_added(tok, id))
        return n <= left && memcmp(c->echo + at, b, n) == 0 ? n : 0;
    return n < left ? n : left;
}

/* {"logprob", "rank", "decoded_token"}: one entry of vLLM's prompt_logprobs. */
static json_t *vllm_logprob(const tokenizer *tok, int32_t id, float lp, int rank) {
    return json_pack("{s:o,s:i,s:o}", "logprob", lp_json(lp), "rank", rank, "decoded_token", oai_token_text(tok, id));
}

/* A prompt token's entry of vLLM's prompt_logprobs: null for the first token
 * (nothing to condition on), else {"<id>": ...} for the token itself, then its
 * r->prompt_top most likely alternatives (ranks 1, 2, ...). */
static json_t *prompt_lp_entry(const oai_request *r, const tokenizer *tok, const sched_event *ev) {
    if (isnan(ev->logprob)) return json_null();
    json_t *o = json_object();
    char key[16];
    snprintf(key, sizeof key, "%d", (int)ev->token);
    json_object_set_new(o, key, vllm_logprob(tok, ev->token, ev->logprob, ev->rank));
    for (int i = 0; i < ev->n_top && i < r->prompt_top; i++) {
        snprintf(key, sizeof key, "%d", (int)ev->top[i].id);
        if (!json_object_get(o, key)) json_object_set_new(o, key, vllm_logprob(tok, ev->top[i].id, ev->top[i].logprob, i + 1));
    }
    return o;
}

static void choice_add_prompt(oai_choice *c, const oai_request *r, const tokenizer *tok, const sched_event *ev) {
    if (c->prompt_lps) json_array_append_new(c->prompt_lps, prompt_lp_entry(r, tok, ev));
    choice_add_logprobs(c, r, tok, ev, c->prompt_offset);
    c->prompt_offset += prompt_token_len(c, tok, ev->token);
}

int oai_choice_add(oai_choice *c, const oai_request *r, const tokenizer *tok, const sched_event *ev) {
    if (ev->prompt) {
        choice_add_prompt(c, r, tok, ev);
        return 0;
    }
    choice_parse(c, ev);
    if (c->out) {
        /* the split output is in c->out */
    } else if (ev->text_len) {
        if (c->text_len + ev->text_len + 1 > c->text_cap) {
            size_t cap = (c->text_len + ev->text_len + 1) * 2;
            char *t = realloc(c->text, cap);
            if (!t) return -1;
            c->text = t, c->text_cap = cap;
        }
        memcpy(c->text + c->text_len, ev->text, ev->text_len);
        c->text_len += ev->text_len;
        c->text[c->text_len] = 0;
    }
    choice_add_logprobs(c, r, tok, ev, c->text_offset);
    if (ev->token >= 0) c->logprob_sum += ev->logprob, c->n_logprob++;
    c->text_offset += ev->text_len;
    if (ev->completion_tokens > c->completion_tokens) c->completion_tokens = ev->completion_tokens;
    if (ev->cached_tokens > c->cached_tokens) c->cached_tokens = ev->cached_tokens;
    if (ev->finish != FINISH_NONE) c->finish = ev->finish;
    return 0;
}

static double mean_logprob(const oai_choice *c) { return c->n_logprob ? c->logprob_sum / c->n_logprob : 0.0; }

int oai_best_choices(const oai_request *r, const oai_choice *choices, int *keep) {
    int k = 0;
    if (r->n_return >= r->n) { /* no best_of: all, in order */
        for (; k < r->n_prompts * r->n; k++) keep[k] = k;
        return k;
    }
    for (int p = 0; p < r->n_prompts; p++) {
        const oai_choice *cand = choices + (size_t)p * (size_t)r->n;
        int *mine = keep + k;
        for (int i = 0; i < r->n; i++) { /* insertion by mean logprob, stable */
            int at = i < r->n_return ? i : r->n_return;
            while (at > 0 && mean_logprob(&cand[i]) > mean_logprob(&cand[mine[at - 1] - p * r->n])) {
                if (at < r->n_return) mine[at] = mine[at - 1];
                at--;
            }
            if (at < r->n_return) mine[at] = p * r->n + i;
        }
        k += r->n_return;
    }
    return k;
}

static json_t *finish_json(finish_reason f) {
    const char *s = oai_finish_string(f);
    return s ? json_string(s) : json_null();
}

static json_t *usage_json(const oai_request *r, const oai_usage *u) {
    json_t *o = json_pack("{s:i,s:i,s:i,s:{s:i},s:i,s:i}", "prompt_tokens", u->prompt_tokens, "completion_tokens",
                          u->completion_tokens, "total_tokens", u->prompt_tokens + u->completion_tokens,
                          "prompt_tokens_details", "cached_tokens", u->cached_tokens, "prompt_cache_hit_tokens",
                          u->cached_tokens, "prompt_cache_miss_tokens", u->prompt_tokens - u->cached_tokens);
    if (o && r->feat.parse_reasoning)
        json_object_set_new(o, "completion_tokens_details", json_pack("{s:i}", "reasoning_tokens", u->reasoning_tokens));
    return o;
}

static const char *choice_finish(const oai_choice *c) {
    return c->out ? chat_output_finish_string(c->out, c->finish) : oai_finish_string(c->finish);
}

static json_t *str_json(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *envelope(const oai_request *r, const char *object, const char *id, long created, const char *fingerprint) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", id, "object", object, "created", (json_int_t)created, "model", r->model,
                     "system_fingerprint", fingerprint);
}

json_t *oai_response_json(const oai_request *r, const char *id, long created, const char *fingerprint,
                          const oai_choice *choices, int n_choices, const char *const *echo_texts,
                          const oai_usage *usage) {
    json_t *o = envelope(r, r->kind == OAI_CHAT ? "chat.completion" : "text_completion", id, created, fingerprint);
    json_t *arr = json_array();
    for (int i = 0; i < n_choices; i++) {
        const oai_choice *c = &choices[i];
        json_t *lp = c->logprobs ? json_incref(c->logprobs) : json_null();
        json_t *text = oai_json_string_lossy(c->text ? c->text : "", c->text_len);
        json_t *ch;
        if (r->kind == OAI_CHAT && c->out) {
            json_decref(text);
            ch = json_pack("{s:i,s:o,s:o,s:o}", "index", i, "message", chat_output_message(c->out), "logprobs", lp,
                           "finish_reason", str_json(choice_finish(c)));
        } else if (r->kind == OAI_CHAT) {
            ch = json_pack("{s:i,s:{s:s,s:o},s:o,s:o}", "index", i, "message", "role", "assistant", "content", text,
                           "logprobs", lp, "finish_reason", finish_json(c->finish));
        } else {
            const char *echo = echo_texts ? echo_texts[i / r->n] : NULL;
            if (echo) {
                size_t el = strlen(echo);
                char *joined = malloc(el + c->text_len + 1);
                if (joined) {
                    memcpy(joined, echo, el);
                    if (c->text_len) memcpy(joined + el, c->text, c->text_len);
                    json_decref(text);
                    text = oai_json_string_lossy(joined, el + c->text_len);
                    free(joined);
                }
            }
            ch = json_pack("{s:i,s:o,s:o,s:o}", "index", i, "text", text, "logprobs", lp, "finish_reason",
                           finish_json(c->finish));
            if (c->prompt_lps) json_object_set(ch, "prompt_logprobs", c->prompt_lps);
        }
        json_array_append_new(arr, ch);
    }
    json_object_set_new(o, "choices", arr);
    json_object_set_new(o, "usage", usage_json(r, usage));
    /* chat: one list for the one prompt, at the top level (vLLM's place) */
    if (r->kind == OAI_CHAT && n_choices && choices[0].prompt_lps) json_object_set(o, "prompt_logprobs", choices[0].prompt_lps);
    return o;
}

json_t *oai_chunk_json(const oai_request *r, const char *id, long created, const char *fingerprint, int index,
                       const char *role, const char *text, size_t len, json_t *logprobs, finish_reason finish) {
    int chat = r->kind == OAI_CHAT;
    json_t *o = envelope(r, chat ? "chat.completion.chunk" : "text_completion", id, created, fingerprint);
    json_t *ch = json_pack("{s:i}", "index", index);
    json_t *content = text ? oai_json_string_lossy(text, len) : NULL;
    if (chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string(role));
        if (content) json_object_set_new(delta, "content", content);
        json_object_set_new(ch, "delta", delta);
    } else {
        json_object_set_new(ch, "text", content ? content : json_string(""));
    }
    json_object_set_new(ch, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(ch, "finish_reason", finish_json(finish));
    json_object_set_new(o, "choices", json_pack("[o]", ch));
    if (r->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

json_t *oai_usage_chunk_json(const oai_request *r, const char *id, long created, const char *fingerprint,
                             const oai_usage *usage) {
    json_t *o = envelope(r, r->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion", id, created, fingerprint);
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage_json(r, usage));
    return o;
}

/* A chat chunk with an explicit delta object (stolen) and finish string. */
static json_t *delta_chunk(const oai_request *r, const char *id, long created, const char *fingerprint, int index,
                           json_t *delta, json_t *logprobs, const char *finish) {
    json_t *o = envelope(r, "chat.completion.chunk", id, created, fingerprint);
    json_t *ch = json_pack("{s:i,s:o,s:o,s:o}", "index", index, "delta", delta, "logprobs", logprobs ? logprobs : json_null(),
                           "finish_reason", str_json(finish));
    json_object_set_new(o, "choices", json_pack("[o]", ch));
    if (r->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* Streaming through the output parser: its new deltas, logprobs on the first. */
static void parsed_chunks(json_t *chunks, const oai_request *r, oai_choice *c, json_t *lp, const char *id, long created,
                          const char *fp, int index) {
    json_t *deltas = chat_output_take_deltas(c->out);
    size_t k;
    json_t *d;
    json_array_foreach(deltas, k, d) {
        json_array_append_new(chunks, delta_chunk(r, id, created, fp, index, json_incref(d), lp, NULL));
        lp = NULL;
    }
    json_decref(deltas);
    if (lp) json_array_append_new(chunks, delta_chunk(r, id, created, fp, index, json_object(), lp, NULL));
}

json_t *oai_stream_echo(const oai_request *r, oai_choice *c, const char *id, long created, const char *fingerprint,
                        int index) {
    if (!c->echo || c->echo_sent) return NULL;
    c->echo_sent = 1;
    json_t *lp = r->prompt_logprobs && c->logprobs ? json_incref(c->logprobs) : NULL;
    return oai_chunk_json(r, id, created, fingerprint, index, NULL, c->echo, c->echo_len, lp, FINISH_NONE);
}

json_t *oai_stream_event(const oai_request *r, oai_choice *c, const tokenizer *tok, const sched_event *ev,
                         const char *id, long created, const char *fingerprint, int index) {
    json_t *chunks = json_array();
    if (ev->prompt) {
        choice_add_prompt(c, r, tok, ev);
        return chunks;
    }
    json_t *echo = oai_stream_echo(r, c, id, created, fingerprint, index);
    if (echo) json_array_append_new(chunks, echo);
    json_t *lp = oai_event_logprobs(r, tok, ev, c->text_offset);
    choice_parse(c, ev);
    if (c->out)
        parsed_chunks(chunks, r, c, lp, id, created, fingerprint, index);
    else if (ev->text_len || lp)
        json_array_append_new(chunks, oai_chunk_json(r, id, created, fingerprint, index, NULL, ev->text ? ev->text : "",
                                                     ev->text_len, lp, FINISH_NONE));
    c->text_offset += ev->text_len;
    if (ev->completion_tokens > c->completion_tokens) c->completion_tokens = ev->completion_tokens;
    if (ev->cached_tokens > c->cached_tokens) c->cached_tokens = ev->cached_tokens;
    if (ev->finish == FINISH_NONE || ev->finish == FINISH_ERROR) return chunks;
    c->finish = ev->finish;
    if (c->out)
        json_array_append_new(chunks, delta_chunk(r, id, created, fingerprint, index, json_object(), NULL, choice_finish(c)));
    else
        json_array_append_new(chunks, oai_chunk_json(r, id, created, fingerprint, index, NULL, NULL, 0, NULL, ev->finish));
    return chunks;
}
