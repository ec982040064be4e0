/* server/cors.c — see cors.h. */
#include "server/cors.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* The parsed policy being built: entries joined by ','. */
typedef struct strbuf_t {
    char *data;
    size_t len;
} strbuf_t;

static int append(strbuf_t *b, const char *s, size_t n) {
    char *d = realloc(b->data, b->len + n + 2);
    if (!d) return -1;
    if (b->len) d[b->len++] = ',';
    memcpy(d + b->len, s, n);
    b->len += n;
    d[b->len] = 0;
    b->data = d;
    return 0;
}

/* The entry [s, s+n) of a comma-separated policy, spaces trimmed. */
static void trim(const char **s, size_t *n) {
    while (*n && (**s == ' ' || **s == '\t')) (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

static int entry_ok(const char *s, size_t n) {
    if (n == 1 && *s == '*') return 1;
    const char *sep = memmem(s, n, "://", 3);
    if (!sep || sep == s || (size_t)(sep - s) + 3 >= n || s[n - 1] == '/') return 0;
    for (const char *p = s; p < sep; p++) /* scheme: a letter, then letters, digits, + - . */
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (p > s && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'))))
            return 0;
    for (const char *p = sep + 3; p < s + n; p++)
        if (*p == '/' || *p == ',' || (unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) return 0;
    return 1;
}

static int entry_check(const char *e, size_t n, ms_err *err) {
    if (entry_ok(e, n)) return 0;
    return ms_err_set(err, "--allowed-origins: '%.*s' is not an origin like https://app.example.com (or *)",
                      (int)(n > 200 ? 200 : n), e);
}

/* A comma-separated list: every entry checked, copied with spaces trimmed. */
static int parse_list(const char *arg, strbuf_t *out, ms_err *err) {
    for (const char *s = arg;;) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        const char *e = s;
        trim(&e, &n);
        if (entry_check(e, n, err)) return -1;
        if (append(out, e, n)) return ms_err_set(err, "out of memory");
        if (!comma) return 0;
        s = comma + 1;
    }
}

/* vLLM's JSON array of strings. */
static int parse_json(const char *arg, strbuf_t *out, ms_err *err) {
    json_error_t je;
    json_t *a = json_loads(arg, 0, &je);
    size_t i;
    json_t *v;
    int rc = json_is_array(a) ? 0 : ms_err_set(err, "--allowed-origins: not a JSON array of strings: %s", arg);
    json_array_foreach(a, i, v) {
        if (rc) break;
        if (!json_is_string(v)) rc = ms_err_set(err, "--allowed-origins: entry %zu is not a string", i);
        else if (!(rc = entry_check(json_string_value(v), json_string_length(v), err)) &&
                 append(out, json_string_value(v), json_string_length(v)))
            rc = ms_err_set(err, "out of memory");
    }
    json_decref(a);
    return rc ? -1 : 0;
}

int cors_policy_parse(const char *arg, char **policy, ms_err *err) {
    strbuf_t out = {0};
    *policy = NULL;
    int rc = !arg || !*arg ? 0 : arg[0] == '[' ? parse_json(arg, &out, err) : parse_list(arg, &out, err);
    if (!rc && !out.data && !(out.data = calloc(1, 1))) rc = ms_err_set(err, "out of memory");
    if (rc) {
        free(out.data);
        return -1;
    }
    *policy = out.data;
    return 0;
}

const char *cors_allow_origin(const char *policy, const char *origin) {
    if (!policy || !origin || !*origin || strlen(origin) > CORS_MAX_ORIGIN) return NULL;
    size_t len = strlen(origin);
    for (const char *s = policy; *s;) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        const char *e = s;
        trim(&e, &n);
        if (n == 1 && *e == '*') return "*";
        if (n == len && !memcmp(e, origin, n)) return origin;
        if (!comma) break;
        s = comma + 1;
    }
    return NULL;
}

/* RFC 7230 token characters. */
static int tchar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

const char *cors_allow_headers(const char *requested) {
    if (!requested || !*requested || strlen(requested) > 512) return CORS_DEFAULT_HEADERS;
    for (const char *p = requested; *p; p++)
        if (!tchar(*p) && *p != ',' && *p != ' ') return CORS_DEFAULT_HEADERS;
    return requested;
}
