/* server/reasoning.c — DeepSeek-R1 reasoning parser (contract in reasoning.h).
 *
 * All input goes through p->held; each state's step consumes from its front
 * what it can decide now and leaves the rest (a possible tag prefix) for the
 * next push. */
#include "server/reasoning.h"

#include <stdlib.h>
#include <string.h>

#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"

void reasoning_init(reasoning_parser *p, int starts_in_reasoning) {
    *p = (reasoning_parser){.state = starts_in_reasoning ? REASONING_IN : REASONING_START};
}

void reasoning_free(reasoning_parser *p) { rbuf_free(&p->held); }

int reasoning_in_progress(const reasoning_parser *p) { return p->state == REASONING_IN; }

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static size_t skip_space(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && is_space(s[i])) i++;
    return i;
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of tag. */
static size_t tag_partial(const char *s, size_t n, const char *tag) {
    size_t k = strlen(tag) - 1;
    if (k > n) k = n;
    for (; k > 0; k--)
        if (memcmp(s + n - k, tag, k) == 0) return k;
    return 0;
}

/* START: "<think>" after optional whitespace opens reasoning; anything else
 * makes the whole output content (consumed by the CONTENT step). */
static size_t step_start(reasoning_parser *p, const char *s, size_t n, int final) {
    size_t ws = skip_space(s, n), m = n - ws, t = strlen(THINK_OPEN);
    if (m >= t && memcmp(s + ws, THINK_OPEN, t) == 0) {
        p->state = REASONING_IN;
        return ws + t;
    }
    if (m < t && memcmp(s + ws, THINK_OPEN, m) == 0 && !final) return 0; /* undecided: wait */
    p->state = REASONING_CONTENT;
    return 0;
}

/* IN: reasoning up to "</think>"; a possible prefix of it at the end waits. */
static int step_in(reasoning_parser *p, const char *s, size_t n, int final, rbuf *r, size_t *used) {
    const char *end = memmem(s, n, THINK_CLOSE, strlen(THINK_CLOSE));
    if (end) {
        p->state = REASONING_STRIP;
        *used = (size_t)(end - s) + strlen(THINK_CLOSE);
        return rbuf_append(r, s, (size_t)(end - s));
    }
    size_t keep = final ? 0 : tag_partial(s, n, THINK_CLOSE);
    *used = n - keep;
    return rbuf_append(r, s, n - keep);
}

static size_t step_strip(reasoning_parser *p, const char *s, size_t n) {
    size_t ws = skip_space(s, n);
    if (ws < n) p->state = REASONING_CONTENT;
    return ws;
}

static int step(reasoning_parser *p, const char *s, size_t n, int final, rbuf *r, rbuf *c, size_t *used) {
    *used = 0;
    switch (p->state) {
    case REASONING_START: *used = step_start(p, s, n, final); return 0;
    case REASONING_IN: return step_in(p, s, n, final, r, used);
    case REASONING_STRIP: *used = step_strip(p, s, n); return 0;
    case REASONING_CONTENT: *used = n; return rbuf_append(c, s, n);
    }
    abort();
}

/* Runs the steps over p->held until none makes progress, then drops what they consumed. */
static int process(reasoning_parser *p, int final, rbuf *r, rbuf *c) {
    size_t pos = 0;
    for (;;) {
        const char *s = p->held.p ? p->held.p : "";
        reasoning_state before = p->state;
        size_t used;
        if (step(p, s + pos, p->held.len - pos, final, r, c, &used)) return -1;
        pos += used;
        if (p->state == before && (used == 0 || pos == p->held.len)) break;
    }
    if (pos) {
        memmove(p->held.p, p->held.p + pos, p->held.len - pos);
        p->held.len -= pos;
        p->held.p[p->held.len] = '\0';
    }
    return 0;
}

int reasoning_push(reasoning_parser *p, const char *text, size_t len, rbuf *reasoning, rbuf *content) {
    if (rbuf_append(&p->held, text, len)) return -1;
    return process(p, 0, reasoning, content);
}

int reasoning_flush(reasoning_parser *p, rbuf *reasoning, rbuf *content) {
    if (process(p, 1, reasoning, content)) return -1;
    rbuf_clear(&p->held);
    return 0;
}

int reasoning_split(const char *text, size_t len, int starts_in_reasoning, rbuf *reasoning, rbuf *content) {
    reasoning_parser p;
    reasoning_init(&p, starts_in_reasoning);
    int rc = reasoning_push(&p, text, len, reasoning, content);
    if (rc == 0) rc = reasoning_flush(&p, reasoning, content);
    reasoning_free(&p);
    return rc;
}
