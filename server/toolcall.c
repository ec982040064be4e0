/* server/toolcall.c — DeepSeek tool-call parser (contract in toolcall.h).
 *
 * Input waits in p->in only while it may be the start of a marker. Each state
 * watches a set of markers; the text before the earliest one goes to the
 * state's text handler (content: emitted; section: whitespace dropped, other
 * text emitted with a warning; call: collected in p->call), then the marker
 * moves the state on. A call is parsed when its end marker arrives. */
#include "server/toolcall.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rbuf.h"

#define CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define CALLS_END "<｜tool▁calls▁end｜>"
#define CALL_BEGIN "<｜tool▁call▁begin｜>"
#define CALL_END "<｜tool▁call▁end｜>"
#define SEP "<｜tool▁sep｜>"

typedef enum { M_CALLS_BEGIN, M_CALLS_END, M_CALL_BEGIN, M_CALL_END, M_NONE } marker;

static const char *const MARKER_TEXT[] = {CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END};
#define MARKER_MAX 32 /* bytes; every marker is shorter (the longest, CALLS_BEGIN, has 28) */

typedef enum {
    TC_CONTENT,  /* before a section, or after one */
    TC_AFTER,    /* right after <｜tool▁calls▁end｜>: dropping leading whitespace, then CONTENT */
    TC_SECTION,  /* inside a section, between calls */
    TC_CALL      /* inside a call */
} tc_state;

/* Markers each state reacts to, M_NONE-terminated. CONTENT and AFTER share a set
 * (AFTER turns into CONTENT in the middle of a text run). */
static const marker WATCH_CONTENT[] = {M_CALLS_BEGIN, M_CALL_BEGIN, M_NONE};
static const marker WATCH_SECTION[] = {M_CALL_BEGIN, M_CALLS_END, M_NONE};
static const marker WATCH_CALL[] = {M_CALL_END, M_CALL_BEGIN, M_CALLS_END, M_NONE};

struct toolcall_parser {
    tc_state state;
    rbuf in;            /* undecided input: a possible marker prefix */
    rbuf call;          /* raw text of the open call, from its <｜tool▁call▁begin｜> */
    rbuf gap_ws;        /* section: whitespace after stray text, emitted only if more text follows */
    int gap_dirty;       /* section: stray text seen since the last marker */
    rbuf name, args;    /* NUL-terminated copies for a CALL event */
    int n_calls;
    toolcall_emit_fn emit;
    void *ctx;
    int has_warning;
    char warning[256];
};

/* ---- warnings, events ---- */

static void warn(toolcall_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(toolcall_parser *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->warning, sizeof p->warning, fmt, ap);
    va_end(ap);
    p->has_warning = 1;
}

static int emit_content(toolcall_parser *p, const char *s, size_t n) {
    if (n == 0) return 0;
    toolcall_event ev = {.kind = TOOLCALL_CONTENT, .text = s, .len = n};
    return p->emit(p->ctx, &ev) ? -1 : 0;
}

static int emit_call(toolcall_parser *p, const char *name, size_t name_len, const char *args, size_t args_len) {
    if (rbuf_set(&p->name, name, name_len) || rbuf_set(&p->args, args, args_len)) return -1;
    toolcall_event ev = {.kind = TOOLCALL_CALL, .index = p->n_calls, .name = p->name.p,
                         .arguments = p->args.p, .arguments_len = args_len};
    p->n_calls++;
    return p->emit(p->ctx, &ev) ? -1 : 0;
}

/* ---- parsing one call body (between its begin and end markers) ---- */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}

typedef struct span {
    const char *s;
    size_t n;
} span;

static span trim(span t) {
    while (t.n && is_space(t.s[0])) t.s++, t.n--;
    while (t.n && is_space(t.s[t.n - 1])) t.n--;
    return t;
}

static int span_starts(span t, const char *prefix) {
    size_t k = strlen(prefix);
    return t.n >= k && memcmp(t.s, prefix, k) == 0;
}

static span span_from(span t, size_t k) { return (span){t.s + k, t.n - k}; }

/* Drops an opening "```lang" fence if there is one. */
static span strip_open_fence(span body) {
    if (!span_starts(body, "```")) return body;
    body = span_from(body, 3);
    size_t i = 0;
    while (i < body.n && is_name_char(body.s[i])) i++;
    return trim(span_from(body, i));
}

/* ARGS: one JSON object, then nothing but an optional closing fence. Returns
 * NULL and sets *args, or the reason it is malformed (in why[]). */
static const char *parse_args(span body, span *args, char *why, size_t why_size) {
    body = strip_open_fence(trim(body));
    json_error_t err;
    json_t *j = json_loadb(body.s, body.n, JSON_DISABLE_EOF_CHECK, &err);
    if (!j) {
        snprintf(why, why_size, "arguments are not valid JSON (%s)", err.text);
        return why;
    }
    int is_object = json_is_object(j);
    json_decref(j);
    if (!is_object) return "arguments are not a JSON object";
    size_t used = (size_t)err.position;
    span rest = trim(span_from(body, used));
    if (span_starts(rest, "```")) rest = trim(span_from(rest, 3));
    if (rest.n) return "unexpected text after the arguments";
    *args = trim((span){body.s, used});
    return NULL;
}

static const char *check_name(span name) {
    if (name.n == 0) return "missing function name";
    if (name.n > TOOLCALL_NAME_MAX) return "function name longer than 64 bytes";
    for (size_t i = 0; i < name.n; i++)
        if (!is_name_char(name.s[i])) return "function name has characters outside [A-Za-z0-9_.-]";
    return NULL;
}

/* "function<SEP>NAME ARGS" (V3) or "NAME<SEP>ARGS" (V3.1). Returns NULL when
 * valid (name and args set), else the reason. */
static const char *parse_call(span body, span *name, span *args, char *why, size_t why_size) {
    const char *sep = memmem(body.s, body.n, SEP, strlen(SEP));
    if (!sep) return "no " SEP " in the call";
    span type = trim((span){body.s, (size_t)(sep - body.s)});
    span rest = span_from(body, (size_t)(sep - body.s) + strlen(SEP));
    if (type.n == 8 && memcmp(type.s, "function", 8) == 0) {
        rest = trim(rest);
        size_t i = 0;
        while (i < rest.n && !is_space(rest.s[i]) && rest.s[i] != '`' && rest.s[i] != '{') i++;
        *name = (span){rest.s, i};
        rest = span_from(rest, i);
    } else {
        *name = type;
    }
    const char *bad = check_name(*name);
    return bad ? bad : parse_args(rest, args, why, why_size);
}

/* ---- state handlers ---- */

static int call_start(toolcall_parser *p) {
    p->state = TC_CALL;
    return rbuf_set(&p->call, CALL_BEGIN, strlen(CALL_BEGIN));
}

/* The open call is malformed: its raw text becomes content. */
static int call_abandon(toolcall_parser *p, const char *why) {
    warn(p, "tool call not parsed (%s); its text is returned as content", why);
    p->state = TC_SECTION;
    int rc = emit_content(p, p->call.p, p->call.len);
    p->call.len = 0;
    return rc;
}

/* The open call's end marker arrived: emit it as a CALL, or abandon it. */
static int call_end(toolcall_parser *p) {
    if (rbuf_append(&p->call, CALL_END, strlen(CALL_END))) return -1;
    size_t head = strlen(CALL_BEGIN);
    span body = {p->call.p + head, p->call.len - head - strlen(CALL_END)}, name, args;
    char why[200];
    const char *bad = parse_call(body, &name, &args, why, sizeof why);
    if (bad) return call_abandon(p, bad);
    p->state = TC_SECTION;
    p->call.len = 0;
    return emit_call(p, name.s, name.n, args.s, args.n);
}

static void gap_reset(toolcall_parser *p) {
    p->gap_ws.len = 0;
    p->gap_dirty = 0;
}

/* Section text between markers: whitespace alone is dropped; anything else is
 * stray text, emitted as content without its surrounding whitespace. */
static int on_gap_text(toolcall_parser *p, const char *s, size_t n) {
    size_t first = 0, last = n;
    while (first < n && is_space(s[first])) first++;
    while (last > first && is_space(s[last - 1])) last--;
    if (first == n) return p->gap_dirty ? rbuf_append(&p->gap_ws, s, n) : 0;
    if (!p->gap_dirty) warn(p, "text between tool calls; returned as content");
    size_t from = p->gap_dirty ? 0 : first;
    if (emit_content(p, p->gap_ws.p, p->gap_ws.len) || emit_content(p, s + from, last - from)) return -1;
    p->gap_dirty = 1;
    return rbuf_set(&p->gap_ws, s + last, n - last);
}

static int on_text(toolcall_parser *p, const char *s, size_t n) {
    switch (p->state) {
    case TC_AFTER: {
        size_t i = 0;
        while (i < n && is_space(s[i])) i++;
        if (i == n) return 0;
        p->state = TC_CONTENT;
        return emit_content(p, s + i, n - i);
    }
    case TC_CONTENT: return emit_content(p, s, n);
    case TC_SECTION: return on_gap_text(p, s, n);
    case TC_CALL: return rbuf_append(&p->call, s, n);
    }
    abort();
}

static int on_marker(toolcall_parser *p, marker m) {
    if (p->state == TC_CALL) {
        if (m == M_CALL_END) return call_end(p);
        if (call_abandon(p, m == M_CALL_BEGIN ? "not closed before the next call" : "not closed before the section end"))
            return -1;
    }
    gap_reset(p);
    if (m == M_CALL_BEGIN) return call_start(p);
    p->state = m == M_CALLS_BEGIN ? TC_SECTION : TC_AFTER;
    return 0;
}

/* ---- marker search ---- */

static const marker *watch_of(tc_state s) {
    return s == TC_CALL ? WATCH_CALL : s == TC_SECTION ? WATCH_SECTION : WATCH_CONTENT;
}

/* Offset of the earliest watched marker in s[0..n) (n if none), its kind in *which. */
static size_t marker_find(const char *s, size_t n, const marker *watch, marker *which) {
    size_t best = n;
    *which = M_NONE;
    for (; *watch != M_NONE; watch++) {
        const char *hit = memmem(s, n, MARKER_TEXT[*watch], strlen(MARKER_TEXT[*watch]));
        if (hit && (size_t)(hit - s) < best) best = (size_t)(hit - s), *which = *watch;
    }
    return best;
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of a watched marker. */
static size_t marker_partial(const char *s, size_t n, const marker *watch) {
    for (size_t i = n > MARKER_MAX ? n - MARKER_MAX : 0; i < n; i++) {
        if (s[i] != '<') continue;
        for (const marker *w = watch; *w != M_NONE; w++)
            if (n - i < strlen(MARKER_TEXT[*w]) && memcmp(s + i, MARKER_TEXT[*w], n - i) == 0) return n - i;
    }
    return 0;
}

/* Handles p->in up to what can be decided (everything when final). */
static int process(toolcall_parser *p, int final) {
    size_t pos = 0;
    for (;;) {
        const char *s = p->in.p + pos;
        size_t n = p->in.len - pos;
        const marker *watch = watch_of(p->state);
        marker m;
        size_t k = marker_find(s, n, watch, &m);
        if (m == M_NONE) {
            size_t keep = final ? 0 : marker_partial(s, n, watch);
            if (on_text(p, s, n - keep)) return -1;
            pos += n - keep;
            break;
        }
        if (on_text(p, s, k) || on_marker(p, m)) return -1;
        pos += k + strlen(MARKER_TEXT[m]);
    }
    memmove(p->in.p, p->in.p + pos, p->in.len - pos);
    p->in.len -= pos;
    p->in.p[p->in.len] = '\0';
    return 0;
}

/* ---- public ---- */

toolcall_parser *toolcall_new(toolcall_emit_fn emit, void *ctx) {
    toolcall_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->state = TC_CONTENT;
    p->emit = emit;
    p->ctx = ctx;
    return p;
}

void toolcall_free(toolcall_parser *p) {
    if (!p) return;
    rbuf_free(&p->in);
    rbuf_free(&p->call);
    rbuf_free(&p->gap_ws);
    rbuf_free(&p->name);
    rbuf_free(&p->args);
    free(p);
}

int toolcall_push(toolcall_parser *p, const char *text, size_t len) {
    if (rbuf_append(&p->in, text, len)) return -1;
    return process(p, 0);
}

int toolcall_finish(toolcall_parser *p) {
    if (rbuf_append(&p->in, "", 0) || process(p, 1)) return -1;
    if (p->state == TC_CALL && call_abandon(p, "unterminated at the end of the output")) return -1;
    gap_reset(p);
    return 0;
}

int toolcall_count(const toolcall_parser *p) { return p->n_calls; }

const char *toolcall_warning(const toolcall_parser *p) { return p->has_warning ? p->warning : NULL; }

/* ---- non-streaming ---- */

typedef struct collect {
    rbuf content;
    toolcall_call *calls;
    int n_calls;
} collect;

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n), d[n] = '\0';
    return d;
}

static int collect_event(void *ctx, const toolcall_event *ev) {
    collect *c = ctx;
    if (ev->kind == TOOLCALL_CONTENT) return rbuf_append(&c->content, ev->text, ev->len);
    toolcall_call *calls = realloc(c->calls, (size_t)(c->n_calls + 1) * sizeof *calls);
    if (!calls) return -1;
    c->calls = calls;
    toolcall_call *call = &calls[c->n_calls];
    call->name = dup_n(ev->name, strlen(ev->name));
    call->arguments = dup_n(ev->arguments, ev->arguments_len);
    c->n_calls++; /* counted even when a copy failed, so that it is freed */
    return call->name && call->arguments ? 0 : -1;
}

void toolcall_result_free(toolcall_result *r) {
    for (int i = 0; i < r->n_calls; i++) {
        free(r->calls[i].name);
        free(r->calls[i].arguments);
    }
    free(r->calls);
    free(r->content);
    memset(r, 0, sizeof *r);
}

int toolcall_parse(const char *text, size_t len, toolcall_result *out) {
    collect c = {.n_calls = 0};
    toolcall_parser *p = toolcall_new(collect_event, &c);
    int rc = p && rbuf_append(&c.content, "", 0) == 0 && toolcall_push(p, text, len) == 0 && toolcall_finish(p) == 0
                 ? 0 : -1;
    *out = (toolcall_result){.content = c.content.p, .content_len = c.content.len, .calls = c.calls,
                             .n_calls = c.n_calls};
    if (rc == 0 && toolcall_warning(p)) snprintf(out->warning, sizeof out->warning, "%s", toolcall_warning(p));
    toolcall_free(p);
    if (rc) toolcall_result_free(out);
    return rc;
}
