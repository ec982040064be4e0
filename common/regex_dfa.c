/* common/regex_dfa.c — see regex_dfa.h.
 *
 * Pattern -> syntax tree (code point sets, concatenation, alternation,
 * repetition) -> Thompson NFA over bytes (each code point range becomes the
 * UTF-8 byte-range sequences that encode it) -> DFA by subset construction
 * (the alphabet split, per state, at the boundaries of the byte ranges leaving
 * it) -> dead states cut, costs by a reverse breadth-first search, the live
 * states renumbered from the start. */
#include "common/regex_dfa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NFA 40000
#define MAX_REPEAT 1000
#define MAX_GROUP_DEPTH 64
#define NO_REM 0xffffffffu
#define CP_MAX 0x10FFFFu

/* ------------------------------------------------------------ syntax tree */

typedef struct cprange {
    uint32_t lo, hi;
} cprange;

enum { A_SET, A_CAT, A_ALT, A_REP, A_EMPTY };

typedef struct ast {
    int kind;
    cprange *r;          /* A_SET: code point ranges (normalized: sorted, disjoint) */
    int nr, cap_r;
    struct ast **kids;   /* A_CAT, A_ALT */
    int nk, cap_k;
    struct ast *sub;     /* A_REP */
    int min, max;        /* A_REP: max -1 = unbounded */
} ast;

typedef struct parser {
    const unsigned char *p, *end;
    ms_err *err;
    int flags, depth, failed;
    ast **all;           /* every node, for freeing */
    int n_all, cap_all;
} parser;

static int fail(parser *ps, const char *fmt, const char *what) {
    if (!ps->failed) ms_err_set(ps->err, fmt, what);
    ps->failed = 1;
    return -1;
}

static void *grow(void *p, int *cap, int need, size_t elem) {
    if (need <= *cap && p) return p;
    int nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *q = realloc(p, (size_t)nc * elem);
    if (q) *cap = nc;
    return q;
}

static ast *new_ast(parser *ps, int kind) {
    ast **all = grow(ps->all, &ps->cap_all, ps->n_all + 1, sizeof *all);
    ast *a = all ? calloc(1, sizeof *a) : NULL;
    if (all) ps->all = all;
    if (!a) {
        fail(ps, "regex: out of memory%s", "");
        return NULL;
    }
    a->kind = kind;
    ps->all[ps->n_all++] = a;
    return a;
}

static void free_asts(parser *ps) {
    for (int i = 0; i < ps->n_all; i++) free(ps->all[i]->r), free(ps->all[i]->kids), free(ps->all[i]);
    free(ps->all);
}

static int add_kid(parser *ps, ast *a, ast *kid) {
    if (!kid) return -1;
    ast **k = grow(a->kids, &a->cap_k, a->nk + 1, sizeof *k);
    if (!k) return fail(ps, "regex: out of memory%s", "");
    a->kids = k;
    a->kids[a->nk++] = kid;
    return 0;
}

static int set_add(parser *ps, ast *s, uint32_t lo, uint32_t hi) {
    cprange *r = grow(s->r, &s->cap_r, s->nr + 1, sizeof *r);
    if (!r) return fail(ps, "regex: out of memory%s", "");
    s->r = r;
    s->r[s->nr++] = (cprange){lo, hi};
    return 0;
}

static int cp_cmp(const void *a, const void *b) {
    const cprange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void set_normalize(ast *s) {
    if (!s->nr) return;
    qsort(s->r, (size_t)s->nr, sizeof *s->r, cp_cmp);
    int m = 0;
    for (int i = 1; i < s->nr; i++) {
        if (s->r[i].lo <= s->r[m].hi + 1) {
            if (s->r[i].hi > s->r[m].hi) s->r[m].hi = s->r[i].hi;
        } else {
            s->r[++m] = s->r[i];
        }
    }
    s->nr = m + 1;
}

/* The complement of a normalized set within 0..CP_MAX. */
static int set_negate(parser *ps, ast *s) {
    set_normalize(s);
    cprange *old = s->r;
    int n = s->nr;
    s->r = NULL, s->nr = s->cap_r = 0;
    uint32_t next = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (old[i].lo > next) rc = set_add(ps, s, next, old[i].lo - 1);
        next = old[i].hi + 1;
    }
    if (!rc && next <= CP_MAX) rc = set_add(ps, s, next, CP_MAX);
    free(old);
    return rc;
}

/* \d \w \s and their negations into s (negated ones as their complement ranges). */
static int add_class_escape(parser *ps, ast *s, int c) {
    static const cprange digit[] = {{'0', '9'}};
    static const cprange word[] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    static const cprange space[] = {{'\t', '\r'}, {' ', ' '}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                                    {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                                    {0xFEFF, 0xFEFF}};
    const cprange *r = c == 'd' || c == 'D' ? digit : c == 'w' || c == 'W' ? word : space;
    int n = c == 'd' || c == 'D' ? 1 : c == 'w' || c == 'W' ? 4 : 10;
    if (c >= 'a') {
        for (int i = 0; i < n; i++)
            if (set_add(ps, s, r[i].lo, r[i].hi)) return -1;
        return 0;
    }
    uint32_t next = 0; /* complement of the sorted table */
    for (int i = 0; i < n; i++) {
        if (r[i].lo > next && set_add(ps, s, next, r[i].lo - 1)) return -1;
        next = r[i].hi + 1;
    }
    return set_add(ps, s, next, CP_MAX);
}

/* One UTF-8 code point from the pattern; -1 at the end or on invalid UTF-8. */
static int32_t next_cp(parser *ps) {
    if (ps->p >= ps->end) return -1;
    unsigned c = *ps->p;
    int n = c < 0x80 ? 0 : c >= 0xF8 ? -1 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
    if (n < 0 || ps->end - ps->p < n + 1) return fail(ps, "regex: the pattern is not valid UTF-8%s", ""), -1;
    uint32_t cp = n == 0 ? c : c & (0x3Fu >> n);
    for (int i = 1; i <= n; i++) {
        if ((ps->p[i] & 0xC0) != 0x80) return fail(ps, "regex: the pattern is not valid UTF-8%s", ""), -1;
        cp = cp << 6 | (ps->p[i] & 0x3Fu);
    }
    ps->p += n + 1;
    return (int32_t)cp;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* n hex digits; -1 if they are not there. */
static int32_t hex_digits(parser *ps, int n) {
    int32_t v = 0;
    for (int i = 0; i < n; i++) {
        if (ps->p >= ps->end || hexval(*ps->p) < 0) return -1;
        v = v * 16 + hexval(*ps->p++);
    }
    return v;
}

/* \u forms after the 'u': HHHH (a surrogate pair as one), or {H...}. */
static int32_t unicode_escape(parser *ps) {
    if (ps->p < ps->end && *ps->p == '{') {
        ps->p++;
        int32_t v = 0;
        int n = 0;
        while (ps->p < ps->end && hexval(*ps->p) >= 0 && n < 7) v = v * 16 + hexval(*ps->p++), n++;
        if (!n || ps->p >= ps->end || *ps->p != '}' || v > (int32_t)CP_MAX) return -1;
        ps->p++;
        return v;
    }
    int32_t v = hex_digits(ps, 4);
    if (v >= 0xD800 && v <= 0xDBFF && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
        const unsigned char *save = ps->p;
        ps->p += 2;
        int32_t lo = hex_digits(ps, 4);
        if (lo >= 0xDC00 && lo <= 0xDFFF) return 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
        ps->p = save;
    }
    return v;
}

/* The escape after '\' (ps->p at the letter). in_class: \b is backspace there.
 * Adds to set (class escapes) and returns -2, or returns the code point. */
static int32_t parse_escape(parser *ps, ast *set, int in_class) {
    if (ps->p >= ps->end) return fail(ps, "regex: the pattern ends with '\\'%s", ""), -1;
    int c = *ps->p++;
    switch (c) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        return add_class_escape(ps, set, c) ? -1 : -2;
    case 't': return '\t';
    case 'n': return '\n';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    case '0':
        if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            return fail(ps, "regex: octal escapes are not supported%s", ""), -1;
        return 0;
    case 'x': {
        int32_t v = hex_digits(ps, 2);
        return v < 0 ? (fail(ps, "regex: \\x needs two hex digits%s", ""), -1) : v;
    }
    case 'u': {
        int32_t v = unicode_escape(ps);
        return v < 0 ? (fail(ps, "regex: bad \\u escape%s", ""), -1) : v;
    }
    case 'b':
        if (in_class) return '\b';
        return fail(ps, "regex: %s is not supported", "word boundaries (\\b)"), -1;
    default: break;
    }
    if (c >= '1' && c <= '9') return fail(ps, "regex: %s are not supported", "backreferences"), -1;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        char what[8] = {'\\', (char)c, 0};
        return fail(ps, "regex: the escape %s is not supported", what), -1;
    }
    ps->p--;
    return next_cp(ps); /* escaped punctuation (or any non-letter) stands for itself */
}

static ast *parse_alt(parser *ps, int top);

/* [...] after the '['. */
static ast *parse_class(parser *ps) {
    ast *s = new_ast(ps, A_SET);
    if (!s) return NULL;
    int negate = ps->p < ps->end && *ps->p == '^';
    if (negate) ps->p++;
    int first = 1;
    for (;;) {
        if (ps->p >= ps->end) return fail(ps, "regex: '[' without ']'%s", ""), NULL;
        if (*ps->p == ']' && !first) break;
        first = 0;
        int32_t lo;
        if (*ps->p == '\\') {
            ps->p++;
            if ((lo = parse_escape(ps, s, 1)) == -2) continue;
        } else {
            lo = next_cp(ps);
        }
        if (lo < 0) return NULL;
        int32_t hi = lo;
        if (ps->end - ps->p >= 2 && ps->p[0] == '-' && ps->p[1] != ']') {
            ps->p++;
            if (*ps->p == '\\') {
                ps->p++;
                hi = parse_escape(ps, s, 1);
                if (hi == -2) return fail(ps, "regex: a class escape cannot end a range%s", ""), NULL;
            } else {
                hi = next_cp(ps);
            }
            if (hi < 0) return NULL;
            if (hi < lo) return fail(ps, "regex: a range in [...] runs backwards%s", ""), NULL;
        }
        if (set_add(ps, s, (uint32_t)lo, (uint32_t)hi)) return NULL;
    }
    ps->p++; /* ']' */
    if (negate && set_negate(ps, s)) return NULL;
    return s;
}

static ast *single(parser *ps, uint32_t cp) {
    ast *s = new_ast(ps, A_SET);
    return s && set_add(ps, s, cp, cp) == 0 ? s : NULL;
}

static ast *parse_atom(parser *ps) {
    int c = *ps->p;
    if (c == '(') {
        ps->p++;
        if (ps->p < ps->end && *ps->p == '?') {
            if (ps->end - ps->p < 2 || ps->p[1] != ':')
                return fail(ps, "regex: %s are not supported", "(?...) groups other than (?:...)"), NULL;
            ps->p += 2;
        }
        if (++ps->depth > MAX_GROUP_DEPTH) return fail(ps, "regex: groups nested too deeply%s", ""), NULL;
        ast *a = parse_alt(ps, 0);
        ps->depth--;
        if (!a) return NULL;
        if (ps->p >= ps->end || *ps->p != ')') return fail(ps, "regex: '(' without ')'%s", ""), NULL;
        ps->p++;
        return a;
    }
    if (c == '[') {
        ps->p++;
        return parse_class(ps);
    }
    if (c == '.') {
        ps->p++;
        ast *s = new_ast(ps, A_SET);
        if (!s || set_add(ps, s, '\n', '\n') || set_add(ps, s, '\r', '\r') || set_add(ps, s, 0x2028, 0x2029) ||
            set_negate(ps, s))
            return NULL;
        return s;
    }
    if (c == '\\') {
        ps->p++;
        ast *s = new_ast(ps, A_SET);
        if (!s) return NULL;
        int32_t cp = parse_escape(ps, s, 0);
        if (cp == -2) return s;
        return cp < 0 || set_add(ps, s, (uint32_t)cp, (uint32_t)cp) ? NULL : s;
    }
    if (c == '*' || c == '+' || c == '?') return fail(ps, "regex: nothing to repeat before '%s'", (char[]){(char)c, 0}), NULL;
    if (c == ')') return fail(ps, "regex: ')' without '('%s", ""), NULL;
    int32_t cp = next_cp(ps);
    return cp < 0 ? NULL : single(ps, (uint32_t)cp);
}

/* {n}, {n,}, {n,m} at ps->p ('{'): 1 with the counts set, 0 if it is not one (a literal '{'), -1 error. */
static int brace_quant(parser *ps, int *lo, int *hi) {
    const unsigned char *q = ps->p + 1;
    long a = 0, b;
    int digits = 0;
    while (q < ps->end && *q >= '0' && *q <= '9' && a <= MAX_REPEAT) a = a * 10 + (*q++ - '0'), digits++;
    if (!digits) return 0;
    b = a;
    if (q < ps->end && *q == ',') {
        q++;
        b = -1;
        if (q < ps->end && *q >= '0' && *q <= '9')
            for (b = 0; q < ps->end && *q >= '0' && *q <= '9' && b <= MAX_REPEAT;) b = b * 10 + (*q++ - '0');
    }
    if (q >= ps->end || *q != '}') return 0;
    if (a > MAX_REPEAT || b > MAX_REPEAT) return fail(ps, "regex: repetition counts above 1000 are not supported%s", "");
    if (b >= 0 && b < a) return fail(ps, "regex: {n,m} with m < n%s", "");
    *lo = (int)a, *hi = (int)b;
    ps->p = q + 1;
    return 1;
}

static ast *parse_repeat(parser *ps) {
    ast *a = parse_atom(ps);
    if (!a || ps->p >= ps->end) return a;
    int lo = 0, hi = 0, c = *ps->p, q = 0;
    if (c == '*') lo = 0, hi = -1, q = 1, ps->p++;
    else if (c == '+') lo = 1, hi = -1, q = 1, ps->p++;
    else if (c == '?') lo = 0, hi = 1, q = 1, ps->p++;
    else if (c == '{' && (q = brace_quant(ps, &lo, &hi)) < 0) return NULL;
    if (!q) return a;
    if (ps->p < ps->end && *ps->p == '?') ps->p++; /* lazy: the same language */
    if (ps->p < ps->end && (*ps->p == '*' || *ps->p == '+' || *ps->p == '?'))
        return fail(ps, "regex: nothing to repeat before '%s'", (char[]){(char)*ps->p, 0}), NULL;
    ast *r = new_ast(ps, A_REP);
    if (!r) return NULL;
    r->sub = a, r->min = lo, r->max = hi;
    return r;
}

/* A concatenation; top-level alternatives may open with '^' and close with '$'. */
static ast *parse_cat(parser *ps, int top, int *anchored_start, int *anchored_end) {
    ast *cat = new_ast(ps, A_CAT);
    if (!cat) return NULL;
    *anchored_start = *anchored_end = 0;
    while (ps->p < ps->end && *ps->p != '|' && *ps->p != ')') {
        if (*ps->p == '^') {
            if (!top || cat->nk || *anchored_start)
                return fail(ps, "regex: '^' is only supported at the start of the pattern (or of a top-level "
                                "alternative)%s", ""), NULL;
            *anchored_start = 1;
            ps->p++;
            continue;
        }
        if (*ps->p == '$') {
            ps->p++;
            if (!top || (ps->p < ps->end && *ps->p != '|'))
                return fail(ps, "regex: '$' is only supported at the end of the pattern (or of a top-level "
                                "alternative)%s", ""), NULL;
            *anchored_end = 1;
            break;
        }
        if (add_kid(ps, cat, parse_repeat(ps))) return NULL;
    }
    return cat;
}

/* Any text (under RDFA_SEARCH, around an unanchored alternative). */
static ast *any_text(parser *ps) {
    ast *s = new_ast(ps, A_SET), *r = new_ast(ps, A_REP);
    if (!s || !r || set_add(ps, s, 0, CP_MAX)) return NULL;
    r->sub = s, r->min = 0, r->max = -1;
    return r;
}

static ast *parse_alt(parser *ps, int top) {
    ast *alt = new_ast(ps, A_ALT);
    if (!alt) return NULL;
    for (;;) {
        int as, ae;
        ast *cat = parse_cat(ps, top, &as, &ae);
        if (!cat) return NULL;
        if (top && (ps->flags & RDFA_SEARCH)) {
            ast *wrapped = new_ast(ps, A_CAT);
            if (!wrapped || (!as && add_kid(ps, wrapped, any_text(ps))) || add_kid(ps, wrapped, cat) ||
                (!ae && add_kid(ps, wrapped, any_text(ps))))
                return NULL;
            cat = wrapped;
        }
        if (add_kid(ps, alt, cat)) return NULL;
        if (ps->p >= ps->end || *ps->p != '|') break;
        ps->p++;
    }
    return alt;
}

/* ------------------------------------------------------------ NFA */

typedef struct nst {
    int32_t e1, e2;      /* epsilon edges (-1: none); a range state's target is e1 */
    uint8_t lo, hi;      /* range state: bytes lo..hi */
    uint8_t range;
} nst;

typedef struct nfa {
    nst *s;
    int n, cap;
    ms_err *err;
    int failed;
    int flags;
} nfa;

typedef struct frag {
    int32_t start, end; /* end: an epsilon state with no edges yet */
} frag;

static int32_t nfa_new(nfa *a) {
    if (a->n >= MAX_NFA) {
        if (!a->failed) ms_err_set(a->err, "regex: the pattern is too large (over %d automaton states)", MAX_NFA);
        a->failed = 1;
        return -1;
    }
    nst *s = grow(a->s, &a->cap, a->n + 1, sizeof *s);
    if (!s) {
        a->failed = 1;
        ms_err_set(a->err, "regex: out of memory");
        return -1;
    }
    a->s = s;
    a->s[a->n] = (nst){-1, -1, 0, 0, 0};
    return a->n++;
}

/* Adds an epsilon edge from state `from` to `to`. */
static void eps(nfa *a, int32_t from, int32_t to) {
    if (a->s[from].e1 < 0) a->s[from].e1 = to;
    else a->s[from].e2 = to;
}

/* One more epsilon edge out of *fan, a node whose e2 chains to the next fan
 * node once e1 is taken (so any number of branches leave one point). */
static int add_branch(nfa *a, int32_t *fan, int32_t target) {
    if (a->s[*fan].e1 < 0) {
        a->s[*fan].e1 = target;
        return 0;
    }
    int32_t next = nfa_new(a);
    if (next < 0) return -1;
    a->s[*fan].e2 = next;
    a->s[next].e1 = target;
    *fan = next;
    return 0;
}

/* A chain of byte ranges from the fan point *fan ending in `to`. */
static int chain(nfa *a, int32_t *fan, int32_t to, const uint8_t *lo, const uint8_t *hi, int n) {
    int32_t cur = nfa_new(a);
    if (cur < 0 || add_branch(a, fan, cur)) return -1;
    for (int i = 0; i < n; i++) {
        int32_t nx = i + 1 < n ? nfa_new(a) : to;
        if (nx < 0) return -1;
        a->s[cur] = (nst){nx, -1, lo[i], hi[i], 1};
        cur = nx;
    }
    return 0;
}

static int utf8_encode(uint32_t cp, uint8_t *b) {
    if (cp < 0x80) return b[0] = (uint8_t)cp, 1;
    if (cp < 0x800) return b[0] = (uint8_t)(0xC0 | cp >> 6), b[1] = (uint8_t)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return b[0] = (uint8_t)(0xE0 | cp >> 12), b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)),
               b[2] = (uint8_t)(0x80 | (cp & 0x3F)), 3;
    b[0] = (uint8_t)(0xF0 | cp >> 18), b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Edges for the code points lo..hi (same encoded length, no surrogates): split
 * until each piece is a product of byte ranges (the utf8-ranges construction). */
static int emit_cp_range(nfa *a, int32_t *from, int32_t to, uint32_t lo, uint32_t hi) {
    static const uint32_t limits[] = {0x7F, 0x7FF, 0xFFFF};
    for (int i = 0; i < 3; i++)
        if (lo <= limits[i] && hi > limits[i])
            return emit_cp_range(a, from, to, lo, limits[i]) || emit_cp_range(a, from, to, limits[i] + 1, hi) ? -1 : 0;
    uint8_t bl[4], bh[4];
    int n = utf8_encode(lo, bl);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) == (hi & ~m)) continue;
        if (lo & m) return emit_cp_range(a, from, to, lo, lo | m) || emit_cp_range(a, from, to, (lo | m) + 1, hi) ? -1 : 0;
        if ((hi & m) != m) return emit_cp_range(a, from, to, lo, (hi & ~m) - 1) || emit_cp_range(a, from, to, hi & ~m, hi) ? -1 : 0;
    }
    utf8_encode(hi, bh);
    return chain(a, from, to, bl, bh, n);
}

/* The code points of s, minus surrogates (and JSON's escaped bytes under RDFA_JSON_TEXT). */
static int emit_set(nfa *a, const ast *s, frag *f) {
    static const cprange cuts_json[] = {{0x00, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0xD800, 0xDFFF}};
    static const cprange cuts_plain[] = {{0xD800, 0xDFFF}};
    const cprange *cuts = (a->flags & RDFA_JSON_TEXT) ? cuts_json : cuts_plain;
    int n_cuts = (a->flags & RDFA_JSON_TEXT) ? 4 : 1;
    if ((f->start = nfa_new(a)) < 0 || (f->end = nfa_new(a)) < 0) return -1;
    int32_t fan = f->start;
    for (int i = 0; i < s->nr; i++) {
        uint32_t at = s->r[i].lo, hi = s->r[i].hi;
        int done = 0;
        for (int k = 0; k < n_cuts && !done; k++) { /* cuts are sorted */
            if (cuts[k].hi < at) continue;
            if (cuts[k].lo > hi) break;
            if (cuts[k].lo > at && emit_cp_range(a, &fan, f->end, at, cuts[k].lo - 1)) return -1;
            if (cuts[k].hi >= hi) done = 1;
            else at = cuts[k].hi + 1;
        }
        if (!done && emit_cp_range(a, &fan, f->end, at, hi)) return -1;
    }
    return 0;
}

static int emit(nfa *a, const ast *t, frag *f);

static int emit_cat(nfa *a, const ast *t, frag *f) {
    if (t->nk == 0) {
        if ((f->start = f->end = nfa_new(a)) < 0) return -1;
        return 0;
    }
    if (emit(a, t->kids[0], f)) return -1;
    for (int i = 1; i < t->nk; i++) {
        frag g;
        if (emit(a, t->kids[i], &g)) return -1;
        eps(a, f->end, g.start);
        f->end = g.end;
    }
    return 0;
}

static int emit_alt(nfa *a, const ast *t, frag *f) {
    if (t->nk == 1) return emit(a, t->kids[0], f);
    if ((f->start = nfa_new(a)) < 0 || (f->end = nfa_new(a)) < 0) return -1;
    int32_t fan = f->start;
    for (int i = 0; i < t->nk; i++) {
        frag g;
        if (emit(a, t->kids[i], &g)) return -1;
        int32_t next = i + 2 < t->nk ? nfa_new(a) : -1;
        if (i + 2 < t->nk && next < 0) return -1;
        eps(a, fan, g.start);
        if (i + 1 < t->nk) {
            if (next >= 0) eps(a, fan, next), fan = next;
        }
        eps(a, g.end, f->end);
    }
    return 0;
}

/* x{min,max}: min copies, then a loop (max -1) or max-min optional copies. */
static int emit_rep(nfa *a, const ast *t, frag *f) {
    if ((f->start = f->end = nfa_new(a)) < 0) return -1;
    for (int i = 0; i < t->min; i++) {
        frag g;
        if (emit(a, t->sub, &g)) return -1;
        eps(a, f->end, g.start);
        f->end = g.end;
    }
    int extra = t->max < 0 ? 1 : t->max - t->min;
    for (int i = 0; i < extra; i++) {
        frag g;
        int32_t out = nfa_new(a);
        if (out < 0 || emit(a, t->sub, &g)) return -1;
        eps(a, f->end, g.start);
        eps(a, f->end, out);
        if (t->max < 0) eps(a, g.end, f->end); /* loop back */
        else eps(a, g.end, out);
        f->end = out;
    }
    return 0;
}

static int emit(nfa *a, const ast *t, frag *f) {
    switch (t->kind) {
    case A_SET: return emit_set(a, t, f);
    case A_CAT: return emit_cat(a, t, f);
    case A_ALT: return emit_alt(a, t, f);
    case A_REP: return emit_rep(a, t, f);
    default: return (f->start = f->end = nfa_new(a)) < 0 ? -1 : 0;
    }
}

/* ------------------------------------------------------------ subset construction */

typedef struct dstate_set {
    int32_t off, len; /* into the members buffer */
} dstate_set;

typedef struct builder {
    const nfa *a;
    int32_t accept;
    ms_err *err;
    int32_t *members;          /* sorted NFA states (range states and the accept state) per DFA state */
    int n_members, cap_members;
    dstate_set *sets;
    int n, cap;
    int32_t *next;             /* [cap * 256] */
    int32_t *table;            /* hash -> DFA state + 1 (0: empty) */
    int table_size;
    uint32_t *mark;            /* per NFA state: the generation that saw it */
    uint32_t gen;
    int32_t *stack, *scratch;
} builder;

static uint64_t hash_ints(const int32_t *v, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) h = (h ^ (uint32_t)v[i]) * 1099511628211ull;
    return h;
}

static int int_cmp(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* The epsilon closure of seeds[0..n) as a sorted member list in b->scratch; returns its size. */
static int closure(builder *b, const int32_t *seeds, int n) {
    b->gen++;
    int sp = 0, m = 0;
    for (int i = 0; i < n; i++)
        if (b->mark[seeds[i]] != b->gen) b->mark[seeds[i]] = b->gen, b->stack[sp++] = seeds[i];
    while (sp) {
        int32_t s = b->stack[--sp];
        const nst *st = &b->a->s[s];
        if (st->range || s == b->accept) b->scratch[m++] = s;
        if (st->range) continue;
        if (st->e1 >= 0 && b->mark[st->e1] != b->gen) b->mark[st->e1] = b->gen, b->stack[sp++] = st->e1;
        if (st->e2 >= 0 && b->mark[st->e2] != b->gen) b->mark[st->e2] = b->gen, b->stack[sp++] = st->e2;
    }
    qsort(b->scratch, (size_t)m, sizeof *b->scratch, int_cmp);
    return m;
}

/* The DFA state of the member list in b->scratch[0..m): found or added. -1 when full. */
static int32_t intern(builder *b, int m) {
    uint64_t h = hash_ints(b->scratch, m);
    int mask = b->table_size - 1;
    for (int i = (int)(h & (uint64_t)mask);; i = (i + 1) & mask) {
        int32_t d = b->table[i] - 1;
        if (d < 0) {
            if (b->n >= RDFA_MAX_STATES) {
                ms_err_set(b->err, "regex: the pattern is too complex (over %d automaton states)", RDFA_MAX_STATES);
                return -1;
            }
            int32_t *mem = grow(b->members, &b->cap_members, b->n_members + m, sizeof *mem);
            if (!mem) return ms_err_set(b->err, "regex: out of memory");
            b->members = mem;
            memcpy(b->members + b->n_members, b->scratch, (size_t)m * sizeof *mem);
            b->sets[b->n] = (dstate_set){b->n_members, m};
            b->n_members += m;
            for (int k = 0; k < 256; k++) b->next[(size_t)b->n * 256 + (size_t)k] = -1;
            b->table[i] = b->n + 1;
            return b->n++;
        }
        if (b->sets[d].len == m && !memcmp(b->members + b->sets[d].off, b->scratch, (size_t)m * sizeof(int32_t))) return d;
    }
}

/* Fills state d's row: the bytes split where the ranges leaving it start or end. */
static int expand(builder *b, int32_t d) {
    uint8_t cut[257] = {0};
    dstate_set set = b->sets[d];
    for (int i = 0; i < set.len; i++) {
        const nst *st = &b->a->s[b->members[set.off + i]];
        if (!st->range) continue;
        cut[st->lo] = 1;
        cut[st->hi + 1] = 1;
    }
    int32_t *seeds = b->stack + b->a->n; /* the second half of the stack buffer */
    for (int lo = 0; lo < 256;) {
        int hi = lo + 1;
        while (hi < 256 && !cut[hi]) hi++;
        int n = 0;
        for (int i = 0; i < b->sets[d].len; i++) {
            const nst *st = &b->a->s[b->members[b->sets[d].off + i]];
            if (st->range && st->lo <= lo && lo <= st->hi) seeds[n++] = st->e1;
        }
        if (n) {
            int m = closure(b, seeds, n);
            int32_t t = intern(b, m);
            if (t < 0) return -1;
            for (int c = lo; c < hi; c++) b->next[(size_t)d * 256 + (size_t)c] = t;
        }
        lo = hi;
    }
    return 0;
}

static int subset_construction(const nfa *a, int32_t start, int32_t accept, rdfa *out, uint8_t **accepting,
                               ms_err *err) {
    builder b = {.a = a, .accept = accept, .err = err, .table_size = 2 * RDFA_MAX_STATES};
    b.sets = malloc(RDFA_MAX_STATES * sizeof *b.sets);
    b.next = malloc((size_t)RDFA_MAX_STATES * 256 * sizeof *b.next);
    b.table = calloc((size_t)b.table_size, sizeof *b.table);
    b.mark = calloc((size_t)a->n, sizeof *b.mark);
    b.stack = malloc((size_t)a->n * 2 * sizeof *b.stack);
    b.scratch = malloc((size_t)a->n * sizeof *b.scratch);
    int rc = -1;
    if (!b.sets || !b.next || !b.table || !b.mark || !b.stack || !b.scratch) {
        ms_err_set(err, "regex: out of memory");
        goto out;
    }
    int m = closure(&b, &start, 1);
    if (intern(&b, m) < 0) goto out;
    for (int32_t d = 0; d < b.n; d++)
        if (expand(&b, d) < 0) goto out;
    *accepting = malloc((size_t)(b.n > 0 ? b.n : 1));
    if (!*accepting) {
        ms_err_set(err, "regex: out of memory");
        goto out;
    }
    for (int32_t d = 0; d < b.n; d++) {
        const int32_t *mem = b.members + b.sets[d].off;
        (*accepting)[d] = bsearch(&accept, mem, (size_t)b.sets[d].len, sizeof *mem, int_cmp) != NULL;
    }
    out->n = b.n;
    out->next = b.next;
    b.next = NULL;
    rc = 0;
out:
    free(b.sets), free(b.next), free(b.table), free(b.mark), free(b.stack), free(b.scratch), free(b.members);
    return rc;
}

/* ------------------------------------------------------------ costs, dead states */

/* From the transitions and the accepting flags: rem by reverse BFS; transitions
 * into states that cannot accept cut; only states reachable from 0 kept,
 * renumbered in BFS order. Takes over d->next; 0, or -1 with err. */
static int finish(rdfa *d, const uint8_t *accepting, ms_err *err) {
    int n = d->n > 0 ? d->n : 1;
    uint32_t *rem = malloc((size_t)n * sizeof *rem);
    int32_t *rstart = calloc((size_t)n + 1, sizeof *rstart), *redges = NULL, *queue = malloc((size_t)n * sizeof *queue);
    int32_t *newid = malloc((size_t)n * sizeof *newid);
    int rc = -1;
    if (!rem || !rstart || !queue || !newid) goto oom;
    /* reverse adjacency (CSR), one entry per (source, target) pair per byte class is enough: per byte here */
    size_t n_edges = 0;
    for (size_t k = 0; k < (size_t)n * 256; k++)
        if (d->next[k] >= 0) rstart[d->next[k] + 1]++, n_edges++;
    for (int i = 0; i < n; i++) rstart[i + 1] += rstart[i];
    redges = malloc((n_edges ? n_edges : 1) * sizeof *redges);
    if (!redges) goto oom;
    {
        int32_t *fill = newid; /* reuse as a cursor */
        for (int i = 0; i < n; i++) fill[i] = rstart[i];
        for (size_t k = 0; k < (size_t)n * 256; k++)
            if (d->next[k] >= 0) redges[fill[d->next[k]]++] = (int32_t)(k / 256);
    }
    int qh = 0, qt = 0;
    for (int i = 0; i < n; i++) {
        rem[i] = accepting[i] ? 0 : NO_REM;
        if (accepting[i]) queue[qt++] = i;
    }
    while (qh < qt) {
        int32_t t = queue[qh++];
        for (int32_t e = rstart[t]; e < rstart[t + 1]; e++) {
            int32_t s = redges[e];
            if (rem[s] == NO_REM) rem[s] = rem[t] + 1, queue[qt++] = s;
        }
    }
    if (rem[0] == NO_REM) {
        ms_err_set(err, "regex: nothing can match (the pattern needs characters that cannot be written here)");
        goto out;
    }
    /* keep the live states reachable from 0 */
    for (int i = 0; i < n; i++) newid[i] = -1;
    qh = qt = 0;
    newid[0] = 0, queue[qt++] = 0;
    while (qh < qt) {
        int32_t s = queue[qh++];
        for (int c = 0; c < 256; c++) {
            int32_t t = d->next[(size_t)s * 256 + (size_t)c];
            if (t >= 0 && rem[t] != NO_REM && newid[t] < 0) newid[t] = qt, queue[qt++] = t;
        }
    }
    int32_t *next = malloc((size_t)qt * 256 * sizeof *next);
    uint32_t *nrem = malloc((size_t)qt * sizeof *nrem);
    if (!next || !nrem) {
        free(next), free(nrem);
        goto oom;
    }
    for (int i = 0; i < qt; i++) {
        int32_t s = queue[i];
        nrem[i] = rem[s];
        for (int c = 0; c < 256; c++) {
            int32_t t = d->next[(size_t)s * 256 + (size_t)c];
            next[(size_t)i * 256 + (size_t)c] = t >= 0 && rem[t] != NO_REM ? newid[t] : -1;
        }
    }
    free(d->next);
    d->next = next, d->rem = nrem, d->n = qt;
    rc = 0;
    goto out;
oom:
    ms_err_set(err, "regex: out of memory");
out:
    if (rc) free(d->next), d->next = NULL, d->n = 0;
    free(rem), free(rstart), free(redges), free(queue), free(newid);
    return rc;
}

/* ------------------------------------------------------------ public */

static int compile_pattern(const char *pattern, size_t len, int flags, rdfa *out, ms_err *err) {
    memset(out, 0, sizeof *out);
    parser ps = {.p = (const unsigned char *)pattern, .end = (const unsigned char *)pattern + len, .err = err, .flags = flags};
    ast *root = parse_alt(&ps, 1);
    if (root && ps.p < ps.end) root = NULL, fail(&ps, "regex: ')' without '('%s", "");
    nfa a = {.err = err, .flags = flags};
    frag f = {-1, -1};
    int rc = -1;
    uint8_t *accepting = NULL;
    if (root && emit(&a, root, &f) == 0 && !a.failed &&
        subset_construction(&a, f.start, f.end, out, &accepting, err) == 0)
        rc = finish(out, accepting, err);
    free(accepting);
    free(a.s);
    free_asts(&ps);
    if (rc) rdfa_free(out);
    return rc;
}

int rdfa_compile(const char *pattern, int flags, rdfa *out, ms_err *err) {
    memset(out, 0, sizeof *out);
    size_t len = strlen(pattern);
    if (len > RDFA_MAX_PATTERN) return ms_err_set(err, "regex: the pattern is longer than %d bytes", RDFA_MAX_PATTERN);
    return compile_pattern(pattern, len, flags, out, err);
}

/* ---- integer and number ranges, as patterns ---- */

#define MAX_MAG 999999999999999999LL /* 18 digits: the grammar's integer digits */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

/* a..b (same number of digits) as digits and [x-y] classes. */
static void range_piece(sbuf *b, long long a, long long z) {
    char sa[24], sz[24], part[8];
    snprintf(sa, sizeof sa, "%lld", a);
    snprintf(sz, sizeof sz, "%lld", z);
    for (size_t i = 0; sa[i]; i++) {
        if (sa[i] == sz[i]) snprintf(part, sizeof part, "%c", sa[i]);
        else snprintf(part, sizeof part, "[%c-%c]", sa[i], sz[i]);
        sb_add(b, part);
    }
}

static long long pow10ll(int k) {
    long long p = 1;
    while (k-- > 0) p *= 10;
    return p;
}

static int ll_cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* The non-negative integers lo..hi as an alternation of digit boxes: split
 * where lo's last k digits turn to 9s and where hi+1's last k digits turn to
 * 0s, so that every piece has one length and varies its digits independently. */
static void nonneg_range(sbuf *b, long long lo, long long hi) {
    long long stops[40];
    int ns = 0;
    stops[ns++] = hi;
    for (int k = 1; k <= 18; k++) { /* lo with its last k digits 9 */
        long long p = pow10ll(k), stop = lo - lo % p + p - 1;
        if (stop < lo || stop >= hi) break;
        stops[ns++] = stop;
    }
    for (int k = 1; k <= 18; k++) { /* just below hi+1 with its last k digits 0 */
        long long p = pow10ll(k), stop = (hi + 1) - (hi + 1) % p - 1;
        if (stop <= lo || stop > hi) break;
        stops[ns++] = stop;
    }
    qsort(stops, (size_t)ns, sizeof *stops, ll_cmp);
    long long start = lo;
    for (int i = 0; i < ns; i++) {
        if (i && stops[i] == stops[i - 1]) continue;
        if (start != lo) sb_add(b, "|");
        range_piece(b, start, stops[i]);
        start = stops[i] + 1;
    }
}

/* Integers lo..hi (any signs) as "(-(...)|(...))". Empty range: nothing added, 0 returned. */
static int int_alternation(sbuf *b, long long lo, long long hi) {
    if (lo < -MAX_MAG) lo = -MAX_MAG;
    if (hi > MAX_MAG) hi = MAX_MAG;
    if (lo > hi) return 0;
    sb_add(b, "(");
    int any = 0;
    if (lo < 0) {
        long long nhi = hi < -1 ? hi : -1; /* the negatives: magnitudes -nhi .. -lo */
        sb_add(b, "-(");
        nonneg_range(b, -nhi, -lo);
        sb_add(b, ")");
        any = 1;
    }
    if (hi >= 0) {
        if (any) sb_add(b, "|");
        sb_add(b, "(");
        nonneg_range(b, lo > 0 ? lo : 0, hi);
        sb_add(b, ")");
    }
    sb_add(b, ")");
    return 1;
}

static int compile_sb(sbuf *b, rdfa *out, ms_err *err) {
    if (b->failed) {
        free(b->p);
        return ms_err_set(err, "regex: out of memory");
    }
    int rc = compile_pattern(b->p, b->len, 0, out, err); /* generated: no length limit */
    free(b->p);
    return rc;
}

int rdfa_int_range(int64_t lo, int64_t hi, rdfa *out, ms_err *err) {
    memset(out, 0, sizeof *out);
    sbuf b = {0};
    if (!int_alternation(&b, lo, hi)) {
        free(b.p);
        return ms_err_set(err, "no integer with at most 18 digits lies in [%lld, %lld]", (long long)lo, (long long)hi);
    }
    return compile_sb(&b, out, err);
}

/* A magnitude v >= 0 as the shortest decimal that reads back as v: its integer
 * part *ip and its fraction digits frac (no trailing zeros; "" for integers).
 * Values of 10^18 and above become 10^18 (beyond every number written here);
 * positive values below 10^-18 (beneath every nonzero number written here)
 * become 10^-18 when lower (a lower bound), 0 otherwise. */
static void decimal_parts(double v, int lower, long long *ip, char *frac, size_t cap) {
    frac[0] = 0;
    if (v >= 1e18) {
        *ip = MAX_MAG + 1;
        return;
    }
    if (v > 0 && v < 1e-18) {
        *ip = 0;
        if (lower) snprintf(frac, cap, "%017d1", 0);
        return;
    }
    char buf[40];
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v) break;
    }
    snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
    char digits[24];
    int nd = 0, exp10 = atoi(strchr(buf, 'e') + 1);
    for (const char *q = buf; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    /* v = 0.digits x 10^(exp10 + 1) */
    int point = exp10 + 1;
    long long ipart = 0;
    for (int i = 0; i < point && i < nd; i++) ipart = ipart * 10 + (digits[i] - '0');
    for (int i = nd; i < point; i++) ipart *= 10;
    *ip = ipart;
    size_t n = 0;
    for (int i = point; i < 0 && n + 1 < cap; i++) frac[n++] = '0';
    for (int i = point > 0 ? point : 0; i < nd && n + 1 < cap; i++) frac[n++] = digits[i];
    while (n > 0 && frac[n - 1] == '0') n--;
    frac[n] = 0;
}

/* Magnitudes (digits, optional ".digits") >= ip.frac (ge) or <= ip.frac. */
static void magnitude_cmp(sbuf *b, long long ip, const char *frac, int ge) {
    char num[24], part[64];
    size_t k = strlen(frac);
    int alts = 0;
    snprintf(num, sizeof num, "%lld", ip);
    sb_add(b, "(");
    if (ge ? ip < MAX_MAG : ip > 0) { /* a larger / smaller integer part, any fraction */
        sb_add(b, "(");
        ge ? nonneg_range(b, ip + 1, MAX_MAG) : nonneg_range(b, 0, ip - 1);
        sb_add(b, ")(\\.[0-9]+)?");
        alts++;
    }
    sb_add(b, alts ? "|" : "");
    sb_add(b, num);
    sb_add(b, "(");
    if (!k) {
        sb_add(b, ge ? "(\\.[0-9]+)?" : "(\\.0+)?");
    } else {
        for (size_t i = 0; i < k; i++) { /* the first fraction digit that differs */
            if (ge ? frac[i] == '9' : frac[i] == '0') continue;
            snprintf(part, sizeof part, ge ? "[%c-9]" : "[0-%c]", ge ? frac[i] + 1 : frac[i] - 1);
            sb_add(b, "\\.");
            for (size_t j = 0; j < i; j++) sb_add(b, (char[]){frac[j], 0});
            sb_add(b, part);
            sb_add(b, "[0-9]*|");
        }
        for (size_t j = ge ? k : 0; j <= k; j++) { /* ge: frac and more; le: a prefix of frac, then zeros */
            sb_add(b, "\\.");
            for (size_t i = 0; i < j; i++) sb_add(b, (char[]){frac[i], 0});
            sb_add(b, ge ? "[0-9]*" : "0*");
            if (j < k) sb_add(b, "|");
        }
    }
    sb_add(b, ge || !k ? "))" : ")?)"); /* le: no fraction at all is below a fraction */
}

/* Numbers >= lo (lower) or <= hi, as a pattern over sign and magnitude. */
static void bound_pattern(sbuf *b, double v, int lower) {
    long long ip;
    char frac[64];
    decimal_parts(fabs(v), lower == (v >= 0), &ip, frac, sizeof frac);
    const char *any = "(0|[1-9][0-9]*)(\\.[0-9]+)?";
    if (lower && v > 0) {
        magnitude_cmp(b, ip, frac, 1);
    } else if (lower) { /* any non-negative, or a negative no larger in magnitude */
        sb_add(b, "(");
        sb_add(b, any);
        sb_add(b, "|-");
        magnitude_cmp(b, ip, frac, 0);
        sb_add(b, ")");
    } else if (v >= 0) {
        sb_add(b, "(-");
        sb_add(b, any);
        sb_add(b, "|");
        magnitude_cmp(b, ip, frac, 0);
        sb_add(b, ")");
    } else {
        sb_add(b, "-");
        magnitude_cmp(b, ip, frac, 1);
    }
}

static int intersect_pattern(rdfa *d, sbuf *b, ms_err *err) {
    rdfa e;
    if (compile_sb(b, &e, err) < 0) return -1;
    int rc = rdfa_intersect(d, &e, err);
    rdfa_free(&e);
    return rc;
}

int rdfa_number_range(int has_lo, double lo, int lo_excl, int has_hi, double hi, int hi_excl, rdfa *out, ms_err *err) {
    memset(out, 0, sizeof *out);
    if ((has_lo && isnan(lo)) || (has_hi && isnan(hi))) return ms_err_set(err, "a number bound is not a number");
    /* exclusive bounds become inclusive at the next double, so that a number
     * written here also satisfies the bound once a client reads it as a double */
    if (has_lo && lo_excl) lo = nextafter(lo, INFINITY);
    if (has_hi && hi_excl) hi = nextafter(hi, -INFINITY);
    ms_err e = {{0}};
    if (rdfa_compile("-?(0|[1-9][0-9]{0,17})(\\.[0-9]{1,18})?", 0, out, &e) < 0)
        return ms_err_set(err, "%s", e.msg);
    for (int side = 0; side < 2; side++) {
        if (!(side ? has_hi : has_lo)) continue;
        sbuf b = {0};
        bound_pattern(&b, side ? hi : lo, !side);
        if (intersect_pattern(out, &b, &e) < 0) {
            rdfa_free(out);
            return ms_err_set(err, "no number this server can write (up to 18 digits before and after the point, no "
                                   "exponent) satisfies the bounds");
        }
    }
    return 0;
}

/* ---- multiples ---- */

/* Builds the automaton of JSON numbers k * m * 10^-p (see the header) directly:
 * its states are a parse position and the digits' value mod m. */
enum { MS_START, MS_NEG, MS_ZERO, MS_COUNT0 };

int rdfa_multiple_of(uint32_t m, int p, int fraction, rdfa *out, ms_err *err) {
    memset(out, 0, sizeof *out);
    if (m < 1 || p < 0 || p > 9 || (uint64_t)m * (uint64_t)(p + 2) + MS_COUNT0 > RDFA_MAX_STATES)
        return ms_err_set(err, "multiples of %u * 10^-%d need more than %d automaton states", m, p, RDFA_MAX_STATES);
    /* states: the 4 above, then I(r) = 4 + r (integer digits), D(r) = 4 + m + r (after '.'),
     * F(r, f) = 4 + 2m + (f - 1) m + r (f fraction digits, 1 <= f <= p) */
    const int32_t I0 = MS_COUNT0, D0 = I0 + (int32_t)m, F0 = D0 + (int32_t)m;
    int n = F0 + (int)m * p;
    out->n = n;
    out->next = malloc((size_t)n * 256 * sizeof *out->next);
    uint8_t *accepting = calloc((size_t)n, 1);
    uint64_t *scale = malloc((size_t)(p + 1) * sizeof *scale); /* 10^k mod m */
    if (!out->next || !accepting || !scale) {
        free(accepting), free(scale), rdfa_free(out);
        return ms_err_set(err, "regex: out of memory");
    }
    for (size_t k = 0; k < (size_t)n * 256; k++) out->next[k] = -1;
    scale[0] = 1 % m;
    for (int k = 1; k <= p; k++) scale[k] = scale[k - 1] * 10 % m;
    int32_t *nx = out->next;
    nx[MS_START * 256 + '-'] = MS_NEG;
    for (int s = MS_START; s <= MS_NEG; s++) {
        nx[s * 256 + '0'] = MS_ZERO;
        for (int d = 1; d <= 9; d++) nx[s * 256 + '0' + d] = I0 + (int32_t)((uint32_t)d % m);
    }
    accepting[MS_ZERO] = 1;
    if (fraction && p > 0) nx[MS_ZERO * 256 + '.'] = D0;
    for (uint32_t r = 0; r < m; r++) {
        for (int d = 0; d <= 9; d++) {
            uint32_t t = (uint32_t)(((uint64_t)r * 10 + (uint64_t)d) % m);
            nx[(I0 + r) * 256 + '0' + d] = I0 + (int32_t)t;
            if (fraction && p > 0) nx[(D0 + r) * 256 + '0' + d] = F0 + (int32_t)t;
            for (int f = 1; fraction && f < p; f++) nx[(F0 + (f - 1) * (int32_t)m + r) * 256 + '0' + d] = F0 + f * (int32_t)m + (int32_t)t;
        }
        if (fraction && p > 0) nx[(I0 + r) * 256 + '.'] = D0 + (int32_t)r;
        accepting[I0 + r] = (uint64_t)r * scale[p] % m == 0;
        for (int f = 1; fraction && f <= p; f++) accepting[F0 + (f - 1) * (int32_t)m + r] = (uint64_t)r * scale[p - f] % m == 0;
    }
    int rc = finish(out, accepting, err);
    free(accepting), free(scale);
    if (rc) rdfa_free(out);
    return rc;
}

/* ---- intersection ---- */

int rdfa_intersect(rdfa *d, const rdfa *e, ms_err *err) {
    const int limit = RDFA_MAX_STATES * 4;
    size_t n_pairs = (size_t)d->n * (size_t)e->n;
    if (n_pairs > (size_t)1 << 24) return ms_err_set(err, "regex: the combined constraints are too complex");
    int32_t *id = malloc(n_pairs * sizeof *id), *queue = malloc((size_t)limit * sizeof *queue);
    rdfa p = {0};
    uint8_t *accepting = malloc((size_t)limit);
    int rc = -1;
    p.next = malloc((size_t)limit * 256 * sizeof *p.next);
    if (!id || !queue || !accepting || !p.next) goto oom;
    for (size_t i = 0; i < n_pairs; i++) id[i] = -1;
    int qh = 0, qt = 0;
    id[0] = 0, queue[qt++] = 0; /* pair = state of d * e->n + state of e */
    while (qh < qt) {
        int32_t pair = queue[qh], a = pair / e->n, b = pair % e->n, me = qh++;
        accepting[me] = d->rem[a] == 0 && e->rem[b] == 0;
        for (int c = 0; c < 256; c++) {
            int32_t ta = d->next[(size_t)a * 256 + (size_t)c], tb = e->next[(size_t)b * 256 + (size_t)c];
            int32_t *slot = &p.next[(size_t)me * 256 + (size_t)c];
            *slot = -1;
            if (ta < 0 || tb < 0) continue;
            size_t np = (size_t)ta * (size_t)e->n + (size_t)tb;
            if (id[np] < 0) {
                if (qt == limit) {
                    ms_err_set(err, "regex: the combined constraints need over %d automaton states", limit);
                    goto out;
                }
                id[np] = qt, queue[qt++] = (int32_t)np;
            }
            *slot = id[np];
        }
    }
    p.n = qt;
    if (finish(&p, accepting, err)) goto out;
    rdfa_free(d);
    *d = p;
    p.next = NULL, p.rem = NULL;
    rc = 0;
    goto out;
oom:
    ms_err_set(err, "regex: out of memory");
out:
    rdfa_free(&p);
    free(accepting), free(id), free(queue);
    return rc;
}

/* ---- length bounds ---- */

/* Any bytes with lo..hi code point starts (hi UINT32_MAX: no upper bound; then
 * state top = lo stands for "lo or more"). */
static int length_automaton(uint32_t lo, uint32_t hi, uint32_t top, rdfa *out, ms_err *err) {
    out->n = (int)top + 1;
    out->next = malloc((size_t)out->n * 256 * sizeof *out->next);
    out->rem = malloc((size_t)out->n * sizeof *out->rem);
    if (!out->next || !out->rem) {
        rdfa_free(out);
        return ms_err_set(err, "regex: out of memory");
    }
    for (uint32_t cnt = 0; cnt <= top; cnt++) {
        out->rem[cnt] = cnt >= lo ? 0 : lo - cnt; /* any byte can follow: costs are recomputed by the intersection */
        for (int c = 0; c < 256; c++) {
            uint32_t nc = cnt + ((c & 0xC0) != 0x80); /* a code point starts */
            if (nc > top) nc = hi != UINT32_MAX ? UINT32_MAX : top;
            out->next[(size_t)cnt * 256 + (size_t)c] = nc == UINT32_MAX ? -1 : (int32_t)nc;
        }
    }
    return 0;
}

int rdfa_limit_length(rdfa *d, uint32_t lo, uint32_t hi, ms_err *err) {
    uint32_t top = hi != UINT32_MAX ? hi : lo; /* counts above top are all alike (no maxLength) */
    if ((uint64_t)d->n * ((uint64_t)top + 1) > (uint64_t)RDFA_MAX_STATES * 4 || top > 100000)
        return ms_err_set(err, "regex: the pattern with minLength/maxLength %u is too complex", top);
    rdfa len = {0};
    if (length_automaton(lo, hi, top, &len, err) < 0) return -1;
    int rc = rdfa_intersect(d, &len, err); /* at most d->n * (top + 1) states: within the limit checked above */
    rdfa_free(&len);
    return rc;
}

int rdfa_match(const rdfa *d, const char *s, size_t n) {
    int32_t st = 0;
    for (size_t i = 0; i < n && st >= 0; i++) st = d->next[(size_t)st * 256 + (unsigned char)s[i]];
    return st >= 0 && d->rem[st] == 0;
}

void rdfa_free(rdfa *d) {
    free(d->next);
    free(d->rem);
    memset(d, 0, sizeof *d);
}
