/* common/json_schema.c — compiles a JSON Schema subset, or the DeepSeek-V3 tool-call
 * format, into the grammar graph of common/json_schema.h; and validates JSON values
 * against the same subset (cons_json_validate, the tests' oracle).
 *
 * Owns each cons_grammar it returns (pools of nodes, properties, literal tries,
 * sequence items). Callers: the server when it parses response_format / a forced
 * tool_choice (one grammar per request, or cached). Pure functions of their
 * arguments; thread-safe. */
#include "common/json_schema.h"
#include "common/regex_dfa.h"
#include "common/utf8.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const gram_marker_text[GRAM_MK_COUNT] = {
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",    "<｜tool▁sep｜>",
};

#define MAX_PROPS 256          /* declared properties per object */
#define MAX_NODES 20000        /* after $ref inlining (a "$ref bomb" fails in ~60 ms) */
#define MAX_LITS (1 << 22)     /* literal trie nodes in all */
#define MAX_MIN_LEN (1u << 20) /* shortest matching value, bytes */
#define MAX_SCHEMA_DEPTH 64    /* recursion while compiling */
#define MAX_DFA_STATES 16384   /* automaton states (patterns, formats, bounds) in one grammar: 16 MiB of rows */
#define MAX_RECURSION 16       /* a recursive $ref target is expanded at most this many times in one path */

/* compile()'s answer for a schema with no value at this expansion depth: its
 * every value needs a recursive $ref expanded once more than the grammar is
 * built for (cctx.rec_limit). Not an error: a union drops it, an optional
 * property is never written, an array stays empty. */
#define NONE (-2)

enum { T_STR = 1, T_NUM = 2, T_INT = 4, T_BOOL = 8, T_NULL = 16, T_OBJ = 32, T_ARR = 64, T_ALL = 127 };

/* A compiled $ref target, kept for the next $ref to it made with the same
 * targets being expanded: what compile() makes of a schema depends only on
 * how often each target is on the stack, so the two may share one node. */
typedef struct ref_memo {
    int n;                     /* targets on the stack (the target itself included) */
    const json_t **stack;      /* their addresses, sorted */
    int32_t node;              /* the node, or NONE */
} ref_memo;

typedef struct cctx {
    cons_grammar *g;
    ms_err *err;
    const json_t *root;       /* the schema $ref resolves against */
    const json_t *refs[MAX_SCHEMA_DEPTH];
    int n_refs;               /* $ref targets being expanded, outermost first */
    int merge_base;           /* refs[merge_base ..]: those an allOf being merged entered */
    int rec_limit;            /* a target may be on refs[] this many times; one more gives NONE */
    int cut;                  /* 1 once some NONE came from rec_limit */
    int limit;                /* 1 if the error is a size limit (a smaller rec_limit may fit) */
    ref_memo *memo;
    int n_memo, cap_memo;
    int32_t any, any_obj, str, num, integer; /* shared nodes, -1 until made */
} cctx;

/* ---- pools ---------------------------------------------------------------- */

static int pool_grow(cctx *c, void **p, int32_t *cap, int32_t need, size_t elem) {
    if (need <= *cap) return 0;
    int32_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return ms_err_set(c->err, "json_schema: out of memory");
    *p = q;
    *cap = nc;
    return 0;
}
#define POOL_ADD(c, field, count)                                                                  \
    (pool_grow((c), (void **)&(c)->g->field, &(c)->g->cap_##field, (c)->g->n_##field + (count),    \
               sizeof *(c)->g->field) < 0                                                          \
         ? -1                                                                                      \
         : ((c)->g->n_##field += (count), (c)->g->n_##field - (count)))

/* A size-limit error: c->limit tells the recursion search (build_grammar) to
 * settle for fewer expansions. Returns -1. */
static int limit_err(cctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int limit_err(cctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (c->err) vsnprintf(c->err->msg, sizeof c->err->msg, fmt, ap);
    va_end(ap);
    c->limit = 1;
    return -1;
}

static int32_t new_node(cctx *c, gram_kind kind) {
    if (c->g->n_nodes >= MAX_NODES) return limit_err(c, "json_schema: schema too large (over %d nodes)", MAX_NODES);
    int32_t i = POOL_ADD(c, nodes, 1);
    if (i < 0) return -1;
    gram_node *n = &c->g->nodes[i];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->child = n->child2 = n->list = n->cont = n->win = -1;
    n->hi = GRAM_INF;
    n->depth = 1;
    return i;
}

static void first_add(gram_node *n, int b) { n->first[b >> 3] |= (uint8_t)(1u << (b & 7)); }
static void first_or(gram_node *n, const gram_node *m) {
    for (int i = 0; i < 32; i++) n->first[i] |= m->first[i];
    n->first_mk |= m->first_mk;
}
static uint32_t sat_add(uint64_t a, uint64_t b) { return a + b >= GRAM_INF ? GRAM_INF : (uint32_t)(a + b); }
static uint32_t sat_mul(uint64_t a, uint64_t b) { return b && a >= GRAM_INF / b ? GRAM_INF : (uint32_t)(a * b); }

/* ---- literal tries ---------------------------------------------------------- */

typedef struct lit_in {
    const uint8_t *s;
    uint32_t len;
    int32_t id;
    uint32_t cost; /* added to the remaining bytes when the literal ends */
} lit_in;

static int lit_cmp(const void *pa, const void *pb) {
    const lit_in *a = pa, *b = pb;
    uint32_t m = a->len < b->len ? a->len : b->len;
    int r = memcmp(a->s, b->s, m);
    if (r) return r;
    return a->len < b->len ? -1 : a->len > b->len;
}

/* Preorder trie of lits[0..n) (sorted in place; a repeated literal keeps its first
 * id). Returns the root's index in g->lits, or -1. */
static int32_t lit_trie(cctx *c, lit_in *lits, int n) {
    qsort(lits, (size_t)n, sizeof *lits, lit_cmp);
    uint32_t maxlen = 0;
    for (int i = 0; i < n; i++) maxlen = lits[i].len > maxlen ? lits[i].len : maxlen;
    int32_t *path = malloc((maxlen + 1) * sizeof *path);
    int32_t root = POOL_ADD(c, lits, 1);
    if (!path || root < 0) {
        free(path);
        return root < 0 ? -1 : ms_err_set(c->err, "json_schema: out of memory");
    }
    c->g->lits[root] = (gram_lit){.term = -1};
    path[0] = root;
    uint32_t plen = 0;
    for (int k = 0; k < n; k++) {
        uint32_t l = 0;
        if (k > 0)
            while (l < plen && l < lits[k].len && lits[k - 1].s[l] == lits[k].s[l]) l++;
        if (k > 0 && l == lits[k].len && l == plen) continue; /* duplicate */
        for (uint32_t d = plen; d > l; d--) c->g->lits[path[d]].end = (uint32_t)c->g->n_lits;
        for (uint32_t d = l + 1; d <= lits[k].len; d++) {
            if (c->g->n_lits >= MAX_LITS) {
                free(path);
                return limit_err(c, "json_schema: schema too large (literals)");
            }
            int32_t t = POOL_ADD(c, lits, 1);
            if (t < 0) {
                free(path);
                return -1;
            }
            c->g->lits[t] = (gram_lit){.term = -1, .byte = lits[k].s[d - 1]};
            path[d] = t;
        }
        plen = lits[k].len;
        c->g->lits[path[plen]].term = k; /* sorted index until min_rem is known */
    }
    for (uint32_t d = plen + 1; d-- > 0;) c->g->lits[path[d]].end = (uint32_t)c->g->n_lits;
    free(path);
    gram_lit *L = c->g->lits;
    for (int32_t t = c->g->n_lits - 1; t >= root; t--) {
        uint32_t m = L[t].term >= 0 ? lits[L[t].term].cost : GRAM_INF;
        for (uint32_t ch = (uint32_t)t + 1; ch < L[t].end; ch = L[ch].end) {
            uint32_t v = sat_add(1, L[ch].min_rem);
            m = v < m ? v : m;
        }
        L[t].min_rem = m;
        if (L[t].term >= 0) L[t].term = lits[L[t].term].id;
    }
    return root;
}

static void lit_first(const cons_grammar *g, int32_t root, gram_node *n) {
    for (uint32_t ch = (uint32_t)root + 1; ch < g->lits[root].end; ch = g->lits[ch].end) first_add(n, g->lits[ch].byte);
}

/* A G_LITSET over the given serialized literals (cost 0 each). */
static int32_t make_litset(cctx *c, lit_in *lits, int n) {
    int32_t root = lit_trie(c, lits, n);
    if (root < 0) return -1;
    int32_t i = new_node(c, G_LITSET);
    if (i < 0) return -1;
    gram_node *nd = &c->g->nodes[i];
    nd->list = root;
    nd->min_len = c->g->lits[root].min_rem;
    lit_first(c->g, root, nd);
    return i;
}

/* ---- shared nodes ------------------------------------------------------------ */

static int32_t make_string(cctx *c, uint32_t lo, uint32_t hi) {
    int32_t i = new_node(c, G_STRING);
    if (i < 0) return -1;
    gram_node *n = &c->g->nodes[i];
    n->lo = lo;
    n->hi = hi;
    n->min_len = sat_add(2, lo);
    first_add(n, '"');
    return i;
}

static int32_t make_number(cctx *c, int integer) {
    int32_t *memo = integer ? &c->integer : &c->num;
    if (*memo >= 0) return *memo;
    int32_t i = new_node(c, G_NUMBER);
    if (i < 0) return -1;
    gram_node *n = &c->g->nodes[i];
    n->flags = integer ? G_INTEGER : 0;
    n->min_len = 1;
    first_add(n, '-');
    for (int d = '0'; d <= '9'; d++) first_add(n, d);
    return *memo = i;
}

/* A G_DFA node holding a copy of d (its state k becomes n_dfa + k). */
static int32_t make_dfa(cctx *c, const rdfa *d) {
    cons_grammar *g = c->g;
    if (g->n_dfa + d->n > MAX_DFA_STATES)
        return limit_err(c, "json_schema: patterns, formats and bounds need over %d automaton states", MAX_DFA_STATES);
    int32_t base = g->n_dfa, n = g->n_dfa + d->n;
    int32_t *next = realloc(g->dfa_next, (size_t)n * 256 * sizeof *next);
    if (next) g->dfa_next = next;
    uint32_t *rem = next ? realloc(g->dfa_rem, (size_t)n * sizeof *rem) : NULL;
    if (rem) g->dfa_rem = rem;
    if (!next || !rem) return ms_err_set(c->err, "json_schema: out of memory");
    for (size_t k = 0; k < (size_t)d->n * 256; k++) next[(size_t)base * 256 + k] = d->next[k] < 0 ? -1 : base + d->next[k];
    memcpy(rem + base, d->rem, (size_t)d->n * sizeof *rem);
    g->n_dfa = n;
    int32_t i = new_node(c, G_DFA);
    if (i < 0) return -1;
    gram_node *nd = &g->nodes[i];
    nd->list = base;
    nd->n = d->n;
    nd->min_len = d->rem[0];
    for (int b = 0; b < 256; b++)
        if (d->next[b] >= 0) first_add(nd, b);
    return i;
}

/* true / false / null, as selected by T_BOOL and T_NULL. */
static int32_t make_tfn(cctx *c, uint32_t types) {
    static const char *const words[] = {"true", "false", "null"};
    lit_in lits[3];
    int n = 0;
    for (int k = 0; k < 3; k++)
        if (types & (k < 2 ? T_BOOL : T_NULL))
            lits[n++] = (lit_in){(const uint8_t *)words[k], (uint32_t)strlen(words[k]), k, 0};
    return make_litset(c, lits, n);
}

static int32_t make_any(cctx *c);

/* Any string (one shared node). */
static int32_t any_string(cctx *c) { return c->str >= 0 ? c->str : (c->str = make_string(c, 0, GRAM_INF)); }

/* An object of lo..hi pairs whose keys match key (a string node; -1: any
 * string) and values val (-1: any value). The count is of pairs written: the
 * grammar does not keep keys distinct (compile_object refuses a lo above 1). */
static int32_t make_map(cctx *c, int32_t val, int32_t key, uint32_t lo, uint32_t hi) {
    const int any = val < 0 && key < 0 && lo == 0 && hi == GRAM_INF;
    if (key < 0 && (key = any_string(c)) < 0) return -1;
    int32_t i = new_node(c, G_OBJECT);
    if (i < 0) return -1;
    if (any) c->any_obj = i; /* before make_any, which comes back here for its object */
    if (val < 0 && (val = make_any(c)) < 0) return -1;
    gram_node *n = &c->g->nodes[i];
    const uint32_t pair = sat_add(sat_add(c->g->nodes[key].min_len, 1), c->g->nodes[val].min_len);
    n->flags = G_ANYKEYS;
    n->child = val;
    n->child2 = key;
    n->lo = lo;
    n->hi = hi;
    n->min_len = sat_add(2, lo ? sat_add(sat_mul(lo, pair), lo - 1) : 0);
    n->depth = val == c->any ? 1 : 1 + (c->g->nodes[val].depth > 1 ? c->g->nodes[val].depth : 1);
    first_add(n, '{');
    return i;
}

/* An object of any keys (strings) whose values match val (-1: any value). */
static int32_t make_any_object(cctx *c, int32_t val) {
    if (val < 0 && c->any_obj >= 0) return c->any_obj;
    return make_map(c, val, -1, 0, GRAM_INF);
}

/* Any JSON value. Its object/array alternatives recurse into it; they count as one
 * frame deep: the matcher refuses '{' and '[' where no frame is left, and a value
 * without them always exists. */
static int32_t make_any(cctx *c) {
    if (c->any >= 0) return c->any;
    int32_t u = new_node(c, G_UNION);
    if (u < 0) return -1;
    c->any = u;
    int32_t obj = make_any_object(c, -1);
    int32_t arr = new_node(c, G_ARRAY);
    int32_t num = make_number(c, 0);
    int32_t tfn = make_tfn(c, T_BOOL | T_NULL);
    int32_t base = POOL_ADD(c, idx, 5);
    if (obj < 0 || arr < 0 || num < 0 || tfn < 0 || base < 0) return -1;
    gram_node *a = &c->g->nodes[arr];
    a->child = u;
    a->min_len = 2;
    first_add(a, '[');
    int32_t alts[5] = {obj, arr, c->str, num, tfn};
    gram_node *n = &c->g->nodes[u];
    n->list = base;
    n->n = 5;
    n->min_len = 1;
    for (int k = 0; k < 5; k++) {
        c->g->idx[base + k] = alts[k];
        first_or(n, &c->g->nodes[alts[k]]);
    }
    return u;
}

/* ---- unions, sequences ----------------------------------------------------- */

static int first_overlap(const gram_node *a, const gram_node *b) {
    for (int i = 0; i < 32; i++)
        if (a->first[i] & b->first[i]) return 1;
    return (a->first_mk & b->first_mk) != 0;
}

/* One node choosing among alts by their first symbol (nested unions flattened). */
static int32_t make_union(cctx *c, const int32_t *alts_in, int n_in, const char *kw) {
    int32_t flat[64];
    int n = 0;
    for (int k = 0; k < n_in; k++) {
        const gram_node *a = &c->g->nodes[alts_in[k]];
        int m = a->kind == G_UNION ? a->n : 1;
        if (n + m > 64) return ms_err_set(c->err, "json_schema: '%s' with more than 64 alternatives is not supported", kw);
        for (int j = 0; j < m; j++) flat[n++] = a->kind == G_UNION ? c->g->idx[a->list + j] : alts_in[k];
    }
    if (n == 1) return flat[0];
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (first_overlap(&c->g->nodes[flat[a]], &c->g->nodes[flat[b]]))
                return ms_err_set(c->err,
                                  "json_schema: '%s' alternatives that can start with the same character are not "
                                  "supported (only alternatives of different JSON types, e.g. string | null)",
                                  kw);
    int32_t base = POOL_ADD(c, idx, n);
    int32_t u = base < 0 ? -1 : new_node(c, G_UNION);
    if (u < 0) return -1;
    gram_node *nd = &c->g->nodes[u];
    nd->list = base;
    nd->n = n;
    nd->min_len = GRAM_INF;
    nd->depth = 0;
    for (int k = 0; k < n; k++) {
        const gram_node *a = &c->g->nodes[flat[k]];
        c->g->idx[base + k] = flat[k];
        nd->min_len = a->min_len < nd->min_len ? a->min_len : nd->min_len;
        nd->depth = a->depth > nd->depth ? a->depth : nd->depth;
        first_or(nd, a);
    }
    return u;
}

/* A part of a sequence: a value (node >= 0), a marker (marker >= 0) or text. */
typedef struct seq_part {
    int32_t node;
    int marker;
    const char *text;
} seq_part;
#define SP_NODE(n) ((seq_part){(n), -1, NULL})
#define SP_MK(k) ((seq_part){-1, (k), NULL})
#define SP_TEXT(s) ((seq_part){-1, -1, (s)})

static int32_t make_seq(cctx *c, const seq_part *parts, int n_parts) {
    int32_t first_item = c->g->n_items, n_items = 0;
    for (int k = 0; k < n_parts; k++) {
        int lit = parts[k].node < 0;
        int merge = lit && n_items > 0 && c->g->items[c->g->n_items - 1].node < 0;
        if (!merge) {
            if (POOL_ADD(c, items, 1) < 0) return -1;
            c->g->items[c->g->n_items - 1] = (gram_item){.node = parts[k].node, .off = (uint32_t)c->g->n_syms};
            n_items++;
        }
        if (!lit) continue;
        size_t len = parts[k].text ? strlen(parts[k].text) : 1;
        int32_t s = POOL_ADD(c, syms, (int32_t)len);
        if (s < 0) return -1;
        for (size_t j = 0; j < len; j++)
            c->g->syms[s + j] =
                parts[k].text ? (uint8_t)parts[k].text[j] : (uint16_t)(GRAM_SYM_MARKER + parts[k].marker);
        if (!parts[k].text) c->g->markers |= (uint8_t)(1u << parts[k].marker);
        c->g->items[c->g->n_items - 1].len += (uint32_t)len;
    }
    int32_t i = new_node(c, G_SEQ);
    if (i < 0) return -1;
    cons_grammar *g = c->g;
    uint32_t suffix = 0, depth = 1;
    for (int32_t k = n_items; k-- > 0;) {
        gram_item *it = &g->items[first_item + k];
        it->suffix = suffix;
        if (it->node >= 0) {
            uint32_t d = g->nodes[it->node].depth + (k + 1 < n_items);
            depth = d > depth ? d : depth;
        }
        suffix = sat_add(suffix, it->node >= 0 ? g->nodes[it->node].min_len : it->len);
    }
    gram_node *n = &g->nodes[i];
    n->list = first_item;
    n->n = n_items;
    n->min_len = suffix;
    n->depth = depth;
    const gram_item *it0 = &g->items[first_item];
    if (it0->node >= 0) first_or(n, &g->nodes[it0->node]);
    else if (g->syms[it0->off] >= GRAM_SYM_MARKER) n->first_mk |= (uint8_t)(1u << (g->syms[it0->off] - GRAM_SYM_MARKER));
    else first_add(n, g->syms[it0->off]);
    return i;
}

/* Every value's minimal length is bounded, so that the matcher's cost sums (uint32)
 * cannot overflow, also for optional parts. */
static int check_min_lens(cctx *c) {
    for (int32_t i = 0; i < c->g->n_nodes; i++)
        if (c->g->nodes[i].min_len > MAX_MIN_LEN)
            return limit_err(c, "json_schema: a value the schema allows is at least %u bytes long (at most %u are "
                                "supported)", c->g->nodes[i].min_len, MAX_MIN_LEN);
    return 0;
}

static int32_t make_root(cctx *c, int32_t value, int ws) {
    int32_t i = new_node(c, G_ROOT);
    if (i < 0) return -1;
    gram_node *n = &c->g->nodes[i];
    const gram_node *v = &c->g->nodes[value];
    n->child = value;
    n->flags = ws ? G_WS : 0;
    n->min_len = v->min_len;
    n->depth = 1 + v->depth;
    first_or(n, v);
    if (ws) {
        first_add(n, ' ');
        first_add(n, '\n');
        first_add(n, '\t');
        first_add(n, '\r');
    }
    if (n->depth > GRAM_MAX_DEPTH)
        return limit_err(c, "json_schema: nesting needs %u levels; at most %d are supported", n->depth, GRAM_MAX_DEPTH);
    return check_min_lens(c) < 0 ? -1 : i;
}

/* ---- schema keywords ----------------------------------------------------------- */

static const char *const kw_supported[] = {"type",     "properties", "required",  "additionalProperties",
                                           "enum",     "const",      "items",     "minItems",
                                           "maxItems", "minLength",  "maxLength", "anyOf",
                                           "oneOf",    "$ref",       "pattern",   "minimum",
                                           "maximum",  "exclusiveMinimum",        "exclusiveMaximum",
                                           "multipleOf", "allOf",   "prefixItems", "additionalItems",
                                           "minProperties", "maxProperties", "propertyNames", NULL};
static const char *const kw_ignored[] = {"title",    "description", "default",    "examples", "format",
                                         "$schema",  "$id",         "$comment",   "$defs",    "definitions",
                                         "readOnly", "writeOnly",   "deprecated", "strict",   NULL};

static int kw_in(const char *k, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(k, list[i])) return 1;
    return 0;
}

static int check_keywords(cctx *c, const json_t *s) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if (kw_in(k, kw_supported) || kw_in(k, kw_ignored) || !strncmp(k, "x-", 2)) continue;
        return ms_err_set(c->err, "json_schema keyword '%s' is not supported", k);
    }
    return 0;
}

/* Number of supported keywords in s other than those named in except. */
static int count_constraints(const json_t *s, const char *except1, const char *except2) {
    int n = 0;
    for (int i = 0; kw_supported[i]; i++)
        if (json_object_get(s, kw_supported[i]) && strcmp(kw_supported[i], except1) && strcmp(kw_supported[i], except2))
            n++;
    return n;
}

/* A non-negative integer keyword: *out = its value, or dflt when absent. */
static int get_count(cctx *c, const json_t *s, const char *kw, uint32_t dflt, uint32_t *out) {
    const json_t *v = json_object_get(s, kw);
    *out = dflt;
    if (!v) return 0;
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : -1;
    if (d < 0 || d != floor(d)) return ms_err_set(c->err, "json_schema: '%s' must be a non-negative integer", kw);
    *out = d >= GRAM_INF ? GRAM_INF - 1 : (uint32_t)d;
    return 0;
}

static int parse_types(cctx *c, const json_t *t, uint32_t *out) {
    static const char *const names[] = {"string", "number", "integer", "boolean", "null", "object", "array"};
    *out = 0;
    if (!t) return 0;
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_is_array(t) ? json_array_get(t, i) : t;
        const char *name = json_string_value(e);
        int k = 0;
        while (name && k < 7 && strcmp(name, names[k])) k++;
        if (!name || k == 7)
            return ms_err_set(c->err, "json_schema: unknown 'type' %s%s%s", name ? "'" : "", name ? name : "(not a string)",
                              name ? "'" : "");
        *out |= 1u << k;
    }
    if (!*out) return ms_err_set(c->err, "json_schema: 'type' must not be an empty list");
    return 0;
}

static int value_has_type(const json_t *v, uint32_t types) {
    if (json_is_string(v)) return (types & T_STR) != 0;
    if (json_is_integer(v)) return (types & (T_NUM | T_INT)) != 0;
    if (json_is_real(v))
        return (types & T_NUM) || ((types & T_INT) && json_real_value(v) == floor(json_real_value(v)));
    if (json_is_boolean(v)) return (types & T_BOOL) != 0;
    if (json_is_null(v)) return (types & T_NULL) != 0;
    if (json_is_object(v)) return (types & T_OBJ) != 0;
    return (types & T_ARR) != 0;
}

static int32_t compile(cctx *c, const json_t *s, int depth);

/* Appends alternative a to alts[*n] unless it is NONE; -1 if a is an error. */
static int add_alt(int32_t *alts, int *n, int32_t a) {
    if (a == -1) return -1;
    if (a != NONE) alts[(*n)++] = a;
    return 0;
}

/* enum / const: the allowed values as literal text (jansson's compact form). */
static int32_t compile_enum(cctx *c, const json_t *s, uint32_t types) {
    const json_t *e = json_object_get(s, "enum"), *k = json_object_get(s, "const");
    if (e && (!json_is_array(e) || !json_array_size(e)))
        return ms_err_set(c->err, "json_schema: 'enum' must be a non-empty array");
    size_t n = e ? json_array_size(e) : 1;
    lit_in *lits = calloc(n, sizeof *lits);
    char **texts = calloc(n, sizeof *texts);
    int m = 0;
    int32_t node = -1;
    if (!lits || !texts) {
        ms_err_set(c->err, "json_schema: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *v = e ? json_array_get(e, i) : k;
        if (e && k && !json_equal((json_t *)v, (json_t *)k)) continue;
        if (types && !value_has_type(v, types)) continue;
        if (!(texts[m] = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT))) {
            ms_err_set(c->err, "json_schema: out of memory");
            goto out;
        }
        lits[m] = (lit_in){(const uint8_t *)texts[m], (uint32_t)strlen(texts[m]), m, 0};
        m++;
    }
    if (m == 0) ms_err_set(c->err, "json_schema: no value satisfies 'enum'/'const' and 'type'");
    else node = make_litset(c, lits, m);
out:
    for (int i = 0; texts && i < m; i++) free(texts[i]);
    free(texts);
    free(lits);
    return node;
}

static const json_t *resolve_ref(cctx *c, const char *ref) {
    const char *name = NULL, *kind = NULL;
    if (!strcmp(ref, "#")) return c->root;
    if (!strncmp(ref, "#/$defs/", 8)) kind = "$defs", name = ref + 8;
    else if (!strncmp(ref, "#/definitions/", 14)) kind = "definitions", name = ref + 14;
    char key[256];
    size_t n = 0;
    for (const char *p = name; p && *p && n + 1 < sizeof key; p++) {
        if (*p == '/') return NULL; /* deeper pointers: not supported */
        if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) key[n++] = p[1] == '0' ? '~' : '/', p++;
        else key[n++] = *p;
    }
    key[n] = 0;
    return name ? json_object_get(json_object_get(c->root, kind), key) : NULL;
}

/* The target of s's "$ref", or NULL with err (not a string, not resolvable). */
static const json_t *ref_target(cctx *c, const json_t *s) {
    const char *ref = json_string_value(json_object_get(s, "$ref"));
    if (!ref) return ms_err_set(c->err, "json_schema: '$ref' must be a string"), NULL;
    const json_t *t = resolve_ref(c, ref);
    if (!t)
        ms_err_set(c->err, "json_schema: $ref '%s' is not supported (only #, #/$defs/NAME and #/definitions/NAME of the "
                           "top schema)", ref);
    return t;
}

/* Times t is on the stack of targets being expanded, from refs[from] on. */
static int ref_count(const cctx *c, const json_t *t, int from) {
    int n = 0;
    for (int i = from; i < c->n_refs; i++) n += c->refs[i] == t;
    return n;
}

/* Pushes t on that stack (the caller pops it). 0, or -1 with a limit error. */
static int ref_push(cctx *c, const json_t *t) {
    if (c->n_refs == MAX_SCHEMA_DEPTH) return limit_err(c, "json_schema: schema nested too deeply");
    c->refs[c->n_refs++] = t;
    return 0;
}

static int ptr_cmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (const json_t *const *)a, y = (uintptr_t) * (const json_t *const *)b;
    return x < y ? -1 : x > y;
}

/* The stack of targets, sorted, into sig[0 .. c->n_refs). */
static void ref_signature(const cctx *c, const json_t **sig) {
    memcpy(sig, c->refs, (size_t)c->n_refs * sizeof *sig);
    qsort(sig, (size_t)c->n_refs, sizeof *sig, ptr_cmp);
}

static const ref_memo *memo_find(const cctx *c, const json_t *const *sig) {
    for (int i = 0; i < c->n_memo; i++)
        if (c->memo[i].n == c->n_refs && !memcmp(c->memo[i].stack, sig, (size_t)c->n_refs * sizeof *sig))
            return &c->memo[i];
    return NULL;
}

/* Remembers node for sig; 0, or -1 with err. */
static int memo_add(cctx *c, const json_t *const *sig, int32_t node) {
    if (c->n_memo == c->cap_memo) {
        int cap = c->cap_memo ? 2 * c->cap_memo : 16;
        ref_memo *m = realloc(c->memo, (size_t)cap * sizeof *m);
        if (!m) return ms_err_set(c->err, "json_schema: out of memory");
        c->memo = m;
        c->cap_memo = cap;
    }
    const json_t **copy = malloc((size_t)c->n_refs * sizeof *copy);
    if (!copy) return ms_err_set(c->err, "json_schema: out of memory");
    memcpy(copy, sig, (size_t)c->n_refs * sizeof *copy);
    c->memo[c->n_memo++] = (ref_memo){c->n_refs, copy, node};
    return 0;
}

static void memo_free(cctx *c) {
    for (int i = 0; i < c->n_memo; i++) free(c->memo[i].stack);
    free(c->memo);
    c->memo = NULL;
    c->n_memo = c->cap_memo = 0;
}

/* A recursive target is expanded again while it is on the stack fewer than
 * rec_limit times; then it is NONE. An expansion made before with the same
 * stack is shared (ref_memo). */
static int32_t compile_ref(cctx *c, const json_t *s, int depth) {
    if (json_is_string(json_object_get(s, "$ref")) && count_constraints(s, "$ref", "$ref"))
        return ms_err_set(c->err, "json_schema: '$ref' next to other keywords is not supported");
    const json_t *t = ref_target(c, s);
    if (!t) return -1;
    if (ref_count(c, t, 0) >= c->rec_limit) return c->cut = 1, NONE;
    if (ref_push(c, t) < 0) return -1;
    const json_t *sig[MAX_SCHEMA_DEPTH];
    ref_signature(c, sig);
    const ref_memo *m = memo_find(c, sig);
    int32_t r = m ? m->node : compile(c, t, depth + 1);
    if (!m && r != -1 && memo_add(c, sig, r) < 0) r = -1;
    c->n_refs--;
    return r;
}

static int32_t compile_anyof(cctx *c, const json_t *s, int depth) {
    const char *kw = json_object_get(s, "anyOf") ? "anyOf" : "oneOf";
    const json_t *alts = json_object_get(s, kw);
    if (count_constraints(s, kw, kw))
        return ms_err_set(c->err, "json_schema: '%s' next to other keywords is not supported", kw);
    size_t n = json_array_size(alts);
    if (!json_is_array(alts) || n == 0 || n > 64)
        return ms_err_set(c->err, "json_schema: '%s' must be an array of 1 to 64 schemas", kw);
    int32_t nodes[64];
    int m = 0;
    for (size_t i = 0; i < n; i++)
        if (add_alt(nodes, &m, compile(c, json_array_get(alts, i), depth + 1)) < 0) return -1;
    return m ? make_union(c, nodes, m, kw) : NONE;
}

/* "format" values enforced, as full-match patterns (others are ignored). */
static const char *format_regex(const char *format) {
    static const char *const table[][2] = {
        {"date", "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"},
        {"time", "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"},
        {"date-time", "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                      "(\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"},
        {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
        {"ipv4", "((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"},
        {"email", "[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}"},
        {"hostname", "[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"},
        {"uri", "[A-Za-z][A-Za-z0-9+.-]*:[^ \\t\\r\\n<>{}|^`]+"},
    };
    for (size_t i = 0; format && i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(format, table[i][0])) return table[i][1];
    return NULL;
}

/* The automaton of a string's pattern (JSON Schema: a search) or known format,
 * with its length bounds. 0 with *has (0: neither), or -1 with err. */
static int string_dfa(cctx *c, const json_t *s, uint32_t lo, uint32_t hi, rdfa *d, int *has) {
    const json_t *pat = json_object_get(s, "pattern");
    const char *regex = format_regex(json_string_value(json_object_get(s, "format")));
    int flags = RDFA_JSON_TEXT;
    if (pat && !json_is_string(pat)) return ms_err_set(c->err, "json_schema: 'pattern' must be a string");
    if (pat) regex = json_string_value(pat), flags |= RDFA_SEARCH;
    *has = regex != NULL;
    if (!regex) return 0;
    ms_err e = {{0}};
    if (rdfa_compile(regex, flags, d, &e) < 0 ||
        ((lo || hi != GRAM_INF) && rdfa_limit_length(d, lo, hi == GRAM_INF ? UINT32_MAX : hi, &e) < 0)) {
        rdfa_free(d);
        return ms_err_set(c->err, "json_schema: '%s' %s: %s", pat ? "pattern" : "format",
                          pat ? json_string_value(pat) : json_string_value(json_object_get(s, "format")), e.msg);
    }
    return 0;
}

static int32_t compile_string(cctx *c, const json_t *s) {
    uint32_t lo, hi;
    if (get_count(c, s, "minLength", 0, &lo) < 0 || get_count(c, s, "maxLength", GRAM_INF, &hi) < 0) return -1;
    if (lo > hi) return ms_err_set(c->err, "json_schema: 'minLength' %u is above 'maxLength' %u", lo, hi);
    rdfa d;
    int has;
    if (string_dfa(c, s, lo, hi, &d, &has) < 0) return -1;
    if (!has) return make_string(c, lo, hi);
    int32_t body = make_dfa(c, &d);
    rdfa_free(&d);
    if (body < 0) return -1;
    seq_part parts[3] = {SP_TEXT("\""), SP_NODE(body), SP_TEXT("\"")};
    return make_seq(c, parts, 3);
}

/* minimum / maximum / exclusiveMinimum / exclusiveMaximum (draft 6 numbers, or
 * draft 4 booleans beside minimum/maximum): the tighter bound of each side. */
static int number_bounds(cctx *c, const json_t *s, int *has_lo, double *lo, int *lo_x, int *has_hi, double *hi, int *hi_x) {
    const json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
    const json_t *xmn = json_object_get(s, "exclusiveMinimum"), *xmx = json_object_get(s, "exclusiveMaximum");
    if ((mn && !json_is_number(mn)) || (mx && !json_is_number(mx)) || (xmn && !json_is_number(xmn) && !json_is_boolean(xmn)) ||
        (xmx && !json_is_number(xmx) && !json_is_boolean(xmx)))
        return ms_err_set(c->err, "json_schema: 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum' must be numbers");
    *has_lo = mn != NULL, *lo = mn ? json_number_value(mn) : 0, *lo_x = json_is_true(xmn);
    *has_hi = mx != NULL, *hi = mx ? json_number_value(mx) : 0, *hi_x = json_is_true(xmx);
    if (json_is_number(xmn) && (!*has_lo || json_number_value(xmn) >= *lo))
        *has_lo = 1, *lo = json_number_value(xmn), *lo_x = 1;
    if (json_is_number(xmx) && (!*has_hi || json_number_value(xmx) <= *hi))
        *has_hi = 1, *hi = json_number_value(xmx), *hi_x = 1;
    return 0;
}

static int64_t to_i64(double x) { return x <= -4e18 ? -4000000000000000000LL : x >= 4e18 ? 4000000000000000000LL : (int64_t)x; }

/* multipleOf v as m * 10^-p with the fewest places p (v = 0.05: m = 5, p = 2).
 * 0, or -1 with err. */
static int multiple_parts(cctx *c, const json_t *mul, uint32_t *m, int *p) {
    double v = json_number_value(mul);
    for (int k = 0; json_is_number(mul) && v > 0 && k <= 9; k++) {
        double x = v * pow(10, k), r = round(x);
        if (r >= 1 && r <= 4294967295.0 && fabs(x - r) <= 1e-9 * r) {
            *m = (uint32_t)r, *p = k;
            return 0;
        }
    }
    return ms_err_set(c->err, "json_schema: 'multipleOf' must be a positive number with at most 9 decimal places");
}

/* The automaton of s's numbers (integer: integers only) within its bounds and
 * multipleOf; *has 0 when s has neither. 0, or -1 with err. */
static int number_dfa(cctx *c, const json_t *s, int integer, rdfa *d, int *has) {
    int has_lo, lo_x, has_hi, hi_x;
    double lo, hi;
    const json_t *mul = json_object_get(s, "multipleOf");
    uint32_t m = 1;
    int p = 0;
    if (number_bounds(c, s, &has_lo, &lo, &lo_x, &has_hi, &hi, &hi_x) < 0 || (mul && multiple_parts(c, mul, &m, &p) < 0))
        return -1;
    *has = has_lo || has_hi || mul;
    if (!*has) return 0;
    ms_err e = {{0}};
    rdfa mdfa = {0};
    int rc; /* the range (without bounds: the 18 digits numbers have here), then the multiples in it */
    if (integer) {
        double l = !has_lo ? -4e18 : lo_x ? floor(lo) + 1 : ceil(lo), h = !has_hi ? 4e18 : hi_x ? ceil(hi) - 1 : floor(hi);
        rc = rdfa_int_range(to_i64(l), to_i64(h), d, &e);
    } else {
        rc = rdfa_number_range(has_lo, lo, lo_x, has_hi, hi, hi_x, d, &e);
    }
    if (rc < 0) return ms_err_set(c->err, "json_schema: the %s bounds: %s", integer ? "integer" : "number", e.msg);
    if (!mul) return 0;
    if (rdfa_multiple_of(m, p, !integer, &mdfa, &e) < 0) {
        rdfa_free(d);
        return ms_err_set(c->err, "json_schema: 'multipleOf' %g: %s", json_number_value(mul), e.msg);
    }
    rc = rdfa_intersect(d, &mdfa, &e);
    rdfa_free(&mdfa);
    if (rc == 0) return 0;
    rdfa_free(d);
    return ms_err_set(c->err, "json_schema: no %s this server can write is a multiple of %g within the bounds (%s)",
                      integer ? "integer" : "number", json_number_value(mul), e.msg);
}

static int32_t compile_number(cctx *c, const json_t *s, int integer) {
    rdfa d;
    int has;
    if (number_dfa(c, s, integer, &d, &has) < 0) return -1;
    if (!has) return make_number(c, integer);
    int32_t node = make_dfa(c, &d);
    rdfa_free(&d);
    return node;
}

/* prefixItems (or draft 4's array form of items): written as exactly those n
 * items, each by its schema — a length every such schema allows when minItems
 * <= n <= maxItems (extra items, which "items" may allow, are not written). */
static int32_t compile_tuple(cctx *c, const json_t *tuple, uint32_t lo, uint32_t hi, int depth) {
    size_t n = json_array_size(tuple);
    if (!json_is_array(tuple) || n > 64) return ms_err_set(c->err, "json_schema: 'prefixItems' must be an array of at most 64 schemas");
    if (lo > n || hi < n)
        return ms_err_set(c->err, "json_schema: 'prefixItems' of %zu schemas with minItems %u / maxItems %u is not supported "
                                  "(the array is written with exactly its %zu items)", n, lo, hi, n);
    seq_part parts[2 * 64 + 1];
    int np = 0;
    parts[np++] = SP_TEXT("[");
    for (size_t i = 0; i < n; i++) {
        int32_t it = compile(c, json_array_get(tuple, i), depth + 1);
        if (it < 0) return it; /* an error, or NONE: so is the tuple */
        if (i) parts[np++] = SP_TEXT(",");
        parts[np++] = SP_NODE(it);
    }
    parts[np++] = SP_TEXT("]");
    return make_seq(c, parts, np);
}

static int32_t compile_array(cctx *c, const json_t *s, int depth) {
    uint32_t lo, hi;
    if (get_count(c, s, "minItems", 0, &lo) < 0 || get_count(c, s, "maxItems", GRAM_INF, &hi) < 0) return -1;
    if (lo > hi) return ms_err_set(c->err, "json_schema: 'minItems' %u is above 'maxItems' %u", lo, hi);
    const json_t *items = json_object_get(s, "items");
    const json_t *tuple = json_object_get(s, "prefixItems") ? json_object_get(s, "prefixItems") : json_is_array(items) ? items : NULL;
    if (tuple) return compile_tuple(c, tuple, lo, hi, depth);
    int32_t it = items ? compile(c, items, depth + 1) : make_any(c);
    const int empty = it == NONE; /* items without a value: only [] */
    if (empty && lo > 0) return NONE;
    if (empty) it = make_any(c), hi = 0;
    int32_t i = it < 0 ? -1 : new_node(c, G_ARRAY);
    if (i < 0) return -1;
    gram_node *n = &c->g->nodes[i];
    const gram_node *in = &c->g->nodes[it];
    n->child = it;
    n->lo = lo;
    n->hi = hi;
    n->min_len = sat_add(2, lo ? sat_add(sat_mul(lo, in->min_len), lo - 1) : 0);
    n->depth = empty ? 1 : 1 + in->depth;
    first_add(n, '[');
    return i;
}

/* Declared properties, then required names not declared (any value). */
typedef struct prop_in {
    const char *name;
    const json_t *schema;
    int required;
} prop_in;

static int collect_props(cctx *c, const json_t *s, prop_in *out, int *n_out) {
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    if (props && !json_is_object(props)) return ms_err_set(c->err, "json_schema: 'properties' must be an object");
    if (req && !json_is_array(req)) return ms_err_set(c->err, "json_schema: 'required' must be an array of strings");
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)props, k, v) {
        if (n == MAX_PROPS) return ms_err_set(c->err, "json_schema: objects with over %d properties are not supported", MAX_PROPS);
        out[n++] = (prop_in){k, v, 0};
    }
    for (size_t i = 0; i < json_array_size(req); i++) {
        const char *name = json_string_value(json_array_get(req, i));
        if (!name) return ms_err_set(c->err, "json_schema: 'required' must be an array of strings");
        int j = 0;
        while (j < n && strcmp(out[j].name, name)) j++;
        if (j == n) {
            if (n == MAX_PROPS) return ms_err_set(c->err, "json_schema: objects with over %d properties are not supported", MAX_PROPS);
            out[n++] = (prop_in){name, NULL, 0};
        }
        out[j].required = 1;
    }
    *n_out = n;
    return 0;
}

/* The key tries: after property w-1 (w = 0: none yet) the next key is one of
 * w .. the next required property (inclusive). */
static int build_windows(cctx *c, int32_t node, const char *const *keys, int n) {
    int32_t win = POOL_ADD(c, idx, n + 1);
    lit_in *lits = malloc((size_t)(n ? n : 1) * sizeof *lits);
    if (win < 0 || !lits) {
        free(lits);
        return win < 0 ? -1 : ms_err_set(c->err, "json_schema: out of memory");
    }
    int32_t p0 = c->g->nodes[node].list;
    for (int w = 0; w <= n; w++) {
        int m = 0;
        for (int j = w; j < n; j++) {
            const gram_prop *p = &c->g->props[p0 + j];
            uint32_t cost = sat_add(sat_add(1, c->g->nodes[p->node].min_len), p->tail);
            lits[m++] = (lit_in){(const uint8_t *)keys[j], p->key_len, j, cost};
            if (p->required) break;
        }
        int32_t root = m ? lit_trie(c, lits, m) : -1;
        if (m && root < 0) {
            free(lits);
            return -1;
        }
        c->g->idx[win + w] = root;
    }
    free(lits);
    c->g->nodes[node].win = win;
    return 0;
}

/* propertyNames as the key node of a map: any string when absent; NONE when no
 * string matches; a 400 when it allows values other than strings. */
static int32_t compile_key(cctx *c, const json_t *pn, int depth) {
    if (!pn || json_is_true(pn)) return any_string(c);
    if (json_is_false(pn)) return NONE;
    int32_t key = compile(c, pn, depth + 1);
    if (key < 0) return key; /* an error, or NONE */
    if (key == c->any) return any_string(c);
    gram_node quote = {0};
    first_add(&quote, '"');
    const gram_node *k = &c->g->nodes[key];
    if (k->first_mk || memcmp(k->first, quote.first, sizeof quote.first))
        return ms_err_set(c->err, "json_schema: 'propertyNames' must describe strings only (keys are strings)");
    return key;
}

/* An object without declared properties: a map of keys to additionalProperties. */
static int32_t compile_map(cctx *c, const json_t *s, const json_t *addl, uint32_t lo, uint32_t hi, int depth) {
    if (lo > 1)
        return ms_err_set(c->err, "json_schema: 'minProperties' above 1 on an object without declared properties is not "
                          "supported (the grammar cannot keep its keys distinct)");
    int32_t key = compile_key(c, json_object_get(s, "propertyNames"), depth);
    int32_t val = key == -1 ? -1 : json_is_object(addl) ? compile(c, addl, depth + 1) : make_any(c);
    if (key == -1 || val == -1) return -1;
    if (key == NONE || val == NONE) /* no pair can be written: only {} */
        return lo ? NONE : make_map(c, -1, -1, 0, 0);
    return make_map(c, val, key, lo, hi);
}

static int key_matches(const cctx *c, const json_t *pn, const char *name);

static int32_t compile_object(cctx *c, const json_t *s, int depth) {
    const json_t *addl = json_object_get(s, "additionalProperties"), *pn = json_object_get(s, "propertyNames");
    if (addl && !json_is_boolean(addl) && !json_is_object(addl))
        return ms_err_set(c->err, "json_schema: 'additionalProperties' must be a boolean or a schema");
    uint32_t lo, hi;
    if (get_count(c, s, "minProperties", 0, &lo) < 0 || get_count(c, s, "maxProperties", GRAM_INF, &hi) < 0) return -1;
    if (lo > hi) return ms_err_set(c->err, "json_schema: 'minProperties' %u is above 'maxProperties' %u", lo, hi);
    prop_in *in = malloc(MAX_PROPS * sizeof *in);
    char **keys = calloc(MAX_PROPS, sizeof *keys);
    int n = 0;
    int32_t node = -1;
    if (!in || !keys) {
        ms_err_set(c->err, "json_schema: out of memory");
        goto out;
    }
    if (collect_props(c, s, in, &n) < 0) goto out;
    if (n == 0 && !json_is_false(addl)) {
        node = compile_map(c, s, addl, lo, hi, depth);
        goto out;
    }
    if (pn && compile_key(c, pn, depth) == -1) goto out; /* its errors, as for a map's */
    int32_t vals[MAX_PROPS];
    int kept = 0, n_req = 0; /* properties with a value; an optional one without (NONE) is never written */
    for (int j = 0; j < n; j++) {
        const int named = !pn || key_matches(c, pn, in[j].name); /* a name propertyNames refuses: as if without a value */
        int32_t v = !named ? NONE : in[j].schema ? compile(c, in[j].schema, depth + 1) : make_any(c);
        if (v == -1 || (v == NONE && in[j].required)) {
            node = v;
            goto out;
        }
        if (v == NONE) continue;
        n_req += in[j].required;
        json_t *js = json_string(in[j].name);
        keys[kept] = js ? json_dumps(js, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(js);
        if (!keys[kept]) {
            ms_err_set(c->err, "json_schema: out of memory");
            goto out;
        }
        in[kept] = in[j];
        vals[kept++] = v;
    }
    n = kept;
    if (lo > (n_req > 1 ? (uint32_t)n_req : 1) || hi < (uint32_t)n) {
        ms_err_set(c->err, "json_schema: 'minProperties' above the required properties' count (other than 1), or "
                   "'maxProperties' below the number of properties, is not supported");
        goto out;
    }
    if (lo > (uint32_t)n) { /* minProperties 1 and no property with a value */
        node = NONE;
        goto out;
    }
    int32_t base = POOL_ADD(c, props, n);
    if (base < 0) goto out;
    for (int j = 0; j < n; j++)
        c->g->props[base + j] = (gram_prop){.node = vals[j], .key_len = (uint32_t)strlen(keys[j]), .required = (uint8_t)in[j].required};
    uint32_t tail = 1, depth_max = 0;
    for (int j = n; j-- > 0;) {
        gram_prop *p = &c->g->props[base + j];
        const gram_node *v = &c->g->nodes[p->node];
        p->tail = tail;
        if (p->required) tail = sat_add(tail, sat_add(p->key_len + 2, v->min_len));
        depth_max = v->depth > depth_max ? v->depth : depth_max;
    }
    if ((node = new_node(c, G_OBJECT)) < 0) goto out;
    c->g->nodes[node].list = base;
    c->g->nodes[node].n = n;
    if (build_windows(c, node, (const char *const *)keys, n) < 0) {
        node = -1;
        goto out;
    }
    gram_node *nd = &c->g->nodes[node];
    int has_req = tail > 1 || lo > 0; /* minProperties 1: '}' only once a property is written */
    nd->head = has_req ? c->g->lits[c->g->idx[nd->win]].min_rem : 1;
    nd->min_len = sat_add(1, nd->head);
    nd->depth = 1 + depth_max;
    first_add(nd, '{');
out:
    for (int j = 0; keys && j < n; j++) free(keys[j]);
    free(keys);
    free(in);
    return node;
}

/* ---- allOf: its parts merged into one schema ---------------------------------------- */

static const char *const kw_lower[] = {"minimum", "minLength", "minItems", "minProperties", NULL}; /* merged: the larger */
static const char *const kw_upper[] = {"maximum", "maxLength", "maxItems", "maxProperties", NULL}; /* merged: the smaller */

static int merge_part(cctx *c, json_t *acc, const json_t *part, int depth);

/* The types both t1 and t2 allow ("integer" within "number"), written back as a
 * list. 0, or -1 with err. */
static int merge_types(cctx *c, json_t *acc, const json_t *t2) {
    static const char *const names[] = {"string", "number", "integer", "boolean", "null", "object", "array"};
    uint32_t a, b;
    if (parse_types(c, json_object_get(acc, "type"), &a) < 0 || parse_types(c, t2, &b) < 0) return -1;
    if (a & T_NUM) a |= T_INT;
    if (b & T_NUM) b |= T_INT;
    uint32_t r = a & b;
    if (!r) return ms_err_set(c->err, "json_schema: the 'allOf' parts allow no common type");
    json_t *list = json_array();
    for (int k = 0; k < 7; k++)
        if ((r & (1u << k)) && !((1u << k) == T_INT && (r & T_NUM))) json_array_append_new(list, json_string(names[k]));
    return json_object_set_new(acc, "type", list) ? ms_err_set(c->err, "json_schema: out of memory") : 0;
}

/* 1 if every property the object schema o declares is declared in props. */
static int props_within(const json_t *o, const json_t *props) {
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "properties"), k, v) if (!json_object_get(props, k)) return 0;
    return 1;
}

static int merge_properties(cctx *c, json_t *acc, const json_t *part) {
    const json_t *props = json_object_get(part, "properties");
    if (!json_is_object(props)) return ms_err_set(c->err, "json_schema: 'properties' must be an object");
    json_t *mine = json_object_get(acc, "properties");
    if (json_is_false(json_object_get(acc, "additionalProperties")) && !props_within(part, mine))
        return ms_err_set(c->err, "json_schema: an 'allOf' part adds properties another forbids (additionalProperties "
                                  "false): not supported");
    if (!mine) return json_object_set_new(acc, "properties", json_copy((json_t *)props));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)props, k, v) {
        const json_t *old = json_object_get(mine, k);
        if (old && !json_equal((json_t *)old, v))
            return ms_err_set(c->err, "json_schema: 'allOf' parts declare property '%s' differently: not supported", k);
        json_object_set(mine, k, v);
    }
    return 0;
}

static int merge_required(cctx *c, json_t *acc, const json_t *req) {
    if (!json_is_array(req)) return ms_err_set(c->err, "json_schema: 'required' must be an array of strings");
    json_t *mine = json_object_get(acc, "required");
    if (!mine) json_object_set_new(acc, "required", mine = json_array());
    for (size_t i = 0; i < json_array_size(req); i++) {
        size_t j = 0;
        while (j < json_array_size(mine) && !json_equal(json_array_get(mine, j), json_array_get(req, i))) j++;
        if (j == json_array_size(mine)) json_array_append(mine, json_array_get(req, i));
    }
    return 0;
}

/* One keyword of an allOf part into acc. 0, or -1 with err. */
static int merge_keyword(cctx *c, json_t *acc, const char *k, const json_t *v, const json_t *part) {
    const json_t *old = json_object_get(acc, k);
    if (!strcmp(k, "$ref") || !strcmp(k, "allOf") || !strcmp(k, "$defs") || !strcmp(k, "definitions")) return 0;
    if (!strcmp(k, "properties")) return 0; /* merged first, by merge_part */
    if (!strcmp(k, "required")) return merge_required(c, acc, v);
    if (!strcmp(k, "type") && old) return merge_types(c, acc, v);
    if (!strcmp(k, "additionalProperties") && json_is_false(v) && !props_within(acc, json_object_get(part, "properties")))
        return ms_err_set(c->err, "json_schema: an 'allOf' part forbids (additionalProperties false) properties another "
                                  "declares: not supported");
    if (old && (kw_in(k, kw_lower) || kw_in(k, kw_upper)) && json_is_number(old) && json_is_number(v)) {
        int keep_old = kw_in(k, kw_lower) ? json_number_value(old) >= json_number_value(v)
                                          : json_number_value(old) <= json_number_value(v);
        return keep_old ? 0 : json_object_set(acc, k, (json_t *)v);
    }
    if (!old) return json_object_set(acc, k, (json_t *)v);
    if (json_equal((json_t *)old, (json_t *)v) || kw_in(k, kw_ignored) || !strncmp(k, "x-", 2)) return 0;
    return ms_err_set(c->err, "json_schema: 'allOf' parts with different '%s' are not supported", k);
}

/* s with its allOf parts merged in (a new schema without allOf) in *out; 0,
 * 1 (NONE: a part is a recursive target at its limit) or -1 with err. The
 * targets the parts' $refs entered stay on c->refs (the caller pops them). */
static int merge_allof(cctx *c, const json_t *s, int depth, json_t **out) {
    json_t *acc = json_object();
    int outer = c->merge_base;
    c->merge_base = c->n_refs;
    int rc = acc ? merge_part(c, acc, s, depth) : ms_err_set(c->err, "json_schema: out of memory");
    c->merge_base = outer;
    if (rc == 0) *out = acc;
    else json_decref(acc);
    return rc;
}

/* Merges one allOf part (its own allOf and $ref resolved first) into acc: 0,
 * 1 (NONE) or -1 with err. */
static int merge_part(cctx *c, json_t *acc, const json_t *part, int depth) {
    if (depth > MAX_SCHEMA_DEPTH) return limit_err(c, "json_schema: schema nested too deeply");
    if (json_is_true(part)) return 0;
    if (!json_is_object(part)) return ms_err_set(c->err, "json_schema: an 'allOf' part must be a schema object");
    if (check_keywords(c, part) < 0) return -1;
    const json_t *inner = json_object_get(part, "allOf");
    if (inner && (!json_is_array(inner) || json_array_size(inner) == 0 || json_array_size(inner) > 64))
        return ms_err_set(c->err, "json_schema: 'allOf' must be an array of 1 to 64 schemas");
    if (json_object_get(part, "$ref")) {
        const json_t *t = ref_target(c, part);
        if (!t) return -1;
        if (!ref_count(c, t, c->merge_base)) { /* a target this merge entered already adds nothing */
            if (ref_count(c, t, 0) >= c->rec_limit) return c->cut = 1, 1;
            int rc = ref_push(c, t) < 0 ? -1 : merge_part(c, acc, t, depth + 1);
            if (rc) return rc;
        }
    }
    if (json_object_get(part, "properties") && merge_properties(c, acc, part) < 0) return -1;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)part, k, v) if (merge_keyword(c, acc, k, v, part) < 0) return -1;
    for (size_t i = 0; i < json_array_size(inner); i++) {
        int rc = merge_part(c, acc, json_array_get(inner, i), depth + 1);
        if (rc) return rc;
    }
    return 0;
}

/* The merged schema is compiled with the targets its parts entered still on
 * the stack: a $ref back to one of them inside is recursion. */
static int32_t compile_allof(cctx *c, const json_t *s, int depth) {
    const int base = c->n_refs;
    json_t *m = NULL;
    int rc = merge_allof(c, s, depth, &m);
    int32_t r = rc < 0 ? -1 : rc > 0 ? NONE : compile(c, m, depth + 1);
    json_decref(m);
    c->n_refs = base;
    return r;
}

/* Types implied by the keywords present when "type" is absent (0: any value). */
static uint32_t infer_types(const json_t *s) {
    uint32_t t = 0;
    if (json_object_get(s, "properties") || json_object_get(s, "required") || json_object_get(s, "additionalProperties") ||
        json_object_get(s, "minProperties") || json_object_get(s, "maxProperties") || json_object_get(s, "propertyNames"))
        t |= T_OBJ;
    if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems") ||
        json_object_get(s, "prefixItems"))
        t |= T_ARR;
    if (json_object_get(s, "minLength") || json_object_get(s, "maxLength") || json_object_get(s, "pattern")) t |= T_STR;
    if (json_object_get(s, "minimum") || json_object_get(s, "maximum") || json_object_get(s, "exclusiveMinimum") ||
        json_object_get(s, "exclusiveMaximum") || json_object_get(s, "multipleOf"))
        t |= T_NUM;
    return t;
}

static int32_t compile(cctx *c, const json_t *s, int depth) {
    if (depth > MAX_SCHEMA_DEPTH) return limit_err(c, "json_schema: schema nested too deeply");
    if (json_is_true(s)) return make_any(c);
    if (json_is_false(s)) return ms_err_set(c->err, "json_schema: schema false (matches nothing) is not supported");
    if (!json_is_object(s)) return ms_err_set(c->err, "json_schema: a schema must be an object or a boolean");
    if (check_keywords(c, s) < 0) return -1;
    if (json_object_get(s, "allOf")) return compile_allof(c, s, depth);
    if (json_object_get(s, "$ref")) return compile_ref(c, s, depth);
    if (json_object_get(s, "anyOf") && json_object_get(s, "oneOf"))
        return ms_err_set(c->err, "json_schema: 'anyOf' together with 'oneOf' is not supported");
    if (json_object_get(s, "anyOf") || json_object_get(s, "oneOf")) return compile_anyof(c, s, depth);
    uint32_t types;
    if (parse_types(c, json_object_get(s, "type"), &types) < 0) return -1;
    if (json_object_get(s, "enum") || json_object_get(s, "const")) return compile_enum(c, s, types);
    if (!types) types = infer_types(s);
    if (!types) return make_any(c);
    if (types & T_NUM) types &= ~(uint32_t)T_INT;
    int32_t alts[6];
    int n = 0;
    if ((types & T_OBJ) && add_alt(alts, &n, compile_object(c, s, depth)) < 0) return -1;
    if ((types & T_ARR) && add_alt(alts, &n, compile_array(c, s, depth)) < 0) return -1;
    if ((types & T_STR) && add_alt(alts, &n, compile_string(c, s)) < 0) return -1;
    if ((types & (T_NUM | T_INT)) && add_alt(alts, &n, compile_number(c, s, !(types & T_NUM))) < 0) return -1;
    if ((types & (T_BOOL | T_NULL)) && add_alt(alts, &n, make_tfn(c, types)) < 0) return -1;
    return n ? make_union(c, alts, n, "type") : NONE;
}

/* ---- public: building grammars -------------------------------------------------- */

static cons_grammar *grammar_new(cctx *c, const json_t *root, ms_err *err) {
    memset(c, 0, sizeof *c);
    c->err = err;
    c->root = root;
    c->any = c->any_obj = c->str = c->num = c->integer = -1;
    c->rec_limit = 1;
    c->g = calloc(1, sizeof *c->g);
    if (!c->g) ms_err_set(err, "json_schema: out of memory");
    return c->g;
}

void cons_grammar_free(cons_grammar *g) {
    if (!g) return;
    free(g->nodes);
    free(g->props);
    free(g->lits);
    free(g->items);
    free(g->idx);
    free(g->syms);
    free(g->dfa_next);
    free(g->dfa_rem);
    free(g);
}

/* The error for a schema compiled to NONE with rec_limit 1: no value at all
 * (a value with a target twice on one path can lose the outer one). */
static int no_value_err(cctx *c) {
    return ms_err_set(c->err, "json_schema: no finite value matches (every value needs another level of a recursive $ref)");
}

/* Builds a grammar with build(c, arg) (its root node, or -1 with err),
 * expanding recursive $ref targets as often as the limits allow: rec_limit 1,
 * 2, ... MAX_RECURSION while some recursion was cut (NONE) and the grammar
 * still fits (nodes, matcher frames, automaton states); the last that fitted
 * is kept. An error at rec_limit 1, or one that is not a size limit, is the
 * answer. */
typedef int32_t (*build_fn)(cctx *c, const void *arg);

static cons_grammar *build_grammar(build_fn build, const void *arg, ms_err *err) {
    cons_grammar *best = NULL;
    for (int k = 1; k <= MAX_RECURSION; k++) {
        ms_err e = {{0}};
        cctx c;
        int32_t root = grammar_new(&c, NULL, &e) ? (c.rec_limit = k, build(&c, arg)) : -1;
        memo_free(&c);
        if (root < 0) {
            cons_grammar_free(c.g);
            if (best && c.limit) break;
            cons_grammar_free(best);
            if (err) *err = e;
            return NULL;
        }
        c.g->root = root;
        cons_grammar_free(best);
        best = c.g;
        if (!c.cut) break;
    }
    return best;
}

static int32_t build_json(cctx *c, const void *arg) {
    const json_t *schema = arg;
    c->root = schema;
    int32_t v = schema ? compile(c, schema, 0) : make_any_object(c, -1);
    if (v == NONE) return no_value_err(c);
    return v < 0 ? -1 : make_root(c, v, 1);
}

cons_grammar *cons_grammar_json(const json_t *schema, ms_err *err) { return build_grammar(build_json, schema, err); }

static int check_choices(const char *const *choices, int n, ms_err *err) {
    if (n < 1) return ms_err_set(err, "choice: at least one choice is needed");
    for (int i = 0; i < n; i++) {
        size_t len = choices[i] ? strlen(choices[i]) : 0;
        if (len == 0 || len > 1024) return ms_err_set(err, "choice %d: must be 1 to 1024 bytes", i);
        if (utf8_validate(choices[i], len) != len) return ms_err_set(err, "choice %d: not valid UTF-8", i);
        for (int j = 0; j < i; j++)
            if (!strcmp(choices[i], choices[j])) return ms_err_set(err, "choice %d: '%.64s' appears twice", i, choices[i]);
    }
    return 0;
}

cons_grammar *cons_grammar_choice(const char *const *choices, int n, ms_err *err) {
    if (check_choices(choices, n, err) < 0) return NULL;
    cctx c;
    if (!grammar_new(&c, NULL, err)) return NULL;
    lit_in *lits = calloc((size_t)n, sizeof *lits);
    int32_t set = -1;
    if (!lits) ms_err_set(err, "choice: out of memory");
    for (int i = 0; lits && i < n; i++) lits[i] = (lit_in){(const uint8_t *)choices[i], (uint32_t)strlen(choices[i]), i, 0};
    if (lits) set = make_litset(&c, lits, n);
    free(lits);
    if (set < 0 || (c.g->root = make_root(&c, set, 0)) < 0) {
        cons_grammar_free(c.g);
        return NULL;
    }
    return c.g;
}

cons_grammar *cons_grammar_regex(const char *pattern, ms_err *err) {
    rdfa d;
    ms_err e = {{0}};
    if (!pattern || rdfa_compile(pattern, 0, &d, &e) < 0) {
        ms_err_set(err, "%s", pattern ? e.msg : "regex: no pattern");
        return NULL;
    }
    cctx c;
    cons_grammar *g = grammar_new(&c, NULL, err);
    int32_t node = g ? make_dfa(&c, &d) : -1;
    rdfa_free(&d);
    if (node < 0 || (c.g->root = make_root(&c, node, 0)) < 0) {
        cons_grammar_free(c.g);
        return NULL;
    }
    return c.g;
}

static int check_tool_names(const char *const *names, int n_tools, ms_err *err) {
    if (n_tools < 1) return ms_err_set(err, "tool calls: at least one tool is needed");
    for (int i = 0; i < n_tools; i++) {
        if (!names[i] || !names[i][0]) return ms_err_set(err, "tool calls: tool %d has no name", i);
        if (strchr(names[i], '\n')) return ms_err_set(err, "tool calls: tool name '%s' holds a newline", names[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j])) return ms_err_set(err, "tool calls: tool name '%s' appears twice", names[i]);
    }
    return 0;
}

/* NAME "\n```json\n" for each tool, each followed by ARGS "\n```" <call_end>. */
/* One of the tools: its name as a literal, then (V3) "\n```json\n" ARGS "\n```"
 * or (V3.1) <｜tool▁sep｜> ARGS, then <｜tool▁call▁end｜>. */
static int32_t make_tool_switch(cctx *c, const char *const *names, const json_t *const *params, int n_tools,
                                cons_tool_format format) {
    int32_t cont = POOL_ADD(c, idx, n_tools);
    lit_in *lits = calloc((size_t)n_tools, sizeof *lits);
    char **texts = calloc((size_t)n_tools, sizeof *texts);
    int32_t node = -1;
    if (cont < 0 || !lits || !texts) {
        if (cont >= 0) ms_err_set(c->err, "tool calls: out of memory");
        goto out;
    }
    for (int i = 0; i < n_tools; i++) {
        c->root = params[i];
        int32_t args = params[i] ? compile(c, params[i], 0) : make_any_object(c, -1);
        if (args == NONE) args = no_value_err(c);
        if (args < 0) {
            ms_err_prefix(c->err, "tool '%s' parameters", names[i]);
            goto out;
        }
        const int v31 = format == CONS_TOOLS_V31;
        seq_part v3_parts[] = {SP_NODE(args), SP_TEXT("\n```"), SP_MK(GRAM_MK_CALL_END)};
        seq_part v31_parts[] = {SP_MK(GRAM_MK_SEP), SP_NODE(args), SP_MK(GRAM_MK_CALL_END)};
        int32_t seq = make_seq(c, v31 ? v31_parts : v3_parts, 3);
        size_t len = strlen(names[i]) + (v31 ? 0 : 9);
        if (seq < 0 || !(texts[i] = malloc(len + 1))) {
            if (seq >= 0) ms_err_set(c->err, "tool calls: out of memory");
            goto out;
        }
        snprintf(texts[i], len + 1, v31 ? "%s" : "%s\n```json\n", names[i]);
        c->g->idx[cont + i] = seq;
        lits[i] = (lit_in){(const uint8_t *)texts[i], (uint32_t)len, i, c->g->nodes[seq].min_len};
    }
    int32_t root = lit_trie(c, lits, n_tools);
    if (root < 0 || (node = new_node(c, G_LITSET)) < 0) goto out;
    gram_node *n = &c->g->nodes[node];
    n->list = root;
    n->cont = cont;
    n->min_len = c->g->lits[root].min_rem;
    for (int i = 0; i < n_tools; i++) {
        uint32_t d = c->g->nodes[c->g->idx[cont + i]].depth;
        n->depth = d > n->depth ? d : n->depth;
    }
    lit_first(c->g, root, n);
out:
    for (int i = 0; texts && i < n_tools; i++) free(texts[i]);
    free(texts);
    free(lits);
    return node;
}

/* V3: CALLS_BEGIN (CALL_BEGIN "function" SEP tool) repeated with "\n" between, CALLS_END.
 * V3.1: CALLS_BEGIN CALL_BEGIN tool repeated with CALL_BEGIN between, CALLS_END
 * (the repeat's separator is the next call's opening marker). */
typedef struct tools_in {
    const char *const *names;
    const json_t *const *params;
    int n_tools, parallel;
    cons_tool_format format;
} tools_in;

static int32_t build_tools(cctx *c, const void *arg) {
    const tools_in *t = arg;
    const int v31 = t->format == CONS_TOOLS_V31;
    int32_t sw = make_tool_switch(c, t->names, t->params, t->n_tools, t->format);
    seq_part call[] = {SP_MK(GRAM_MK_CALL_BEGIN), SP_TEXT("function"), SP_MK(GRAM_MK_SEP), SP_NODE(sw)};
    int32_t one = sw < 0 ? -1 : v31 ? sw : make_seq(c, call, 4);
    int32_t rep = one < 0 ? -1 : new_node(c, G_REPEAT);
    int32_t sep = rep < 0 ? -1 : POOL_ADD(c, syms, 1);
    if (sep >= 0) {
        gram_node *r = &c->g->nodes[rep];
        const gram_node *o = &c->g->nodes[one];
        c->g->syms[sep] = v31 ? GRAM_SYM_MARKER + GRAM_MK_CALL_BEGIN : '\n';
        r->child = one;
        r->list = sep;
        r->n = 1;
        r->lo = 1;
        r->hi = t->parallel ? GRAM_INF : 1;
        r->min_len = o->min_len;
        r->depth = 1 + o->depth;
        first_or(r, o);
    }
    seq_part v3_top[] = {SP_MK(GRAM_MK_CALLS_BEGIN), SP_NODE(rep), SP_MK(GRAM_MK_CALLS_END)};
    seq_part v31_top[] = {SP_MK(GRAM_MK_CALLS_BEGIN), SP_MK(GRAM_MK_CALL_BEGIN), SP_NODE(rep), SP_MK(GRAM_MK_CALLS_END)};
    int32_t all = sep < 0 ? -1 : v31 ? make_seq(c, v31_top, 4) : make_seq(c, v3_top, 3);
    return all < 0 ? -1 : make_root(c, all, 0);
}

cons_grammar *cons_grammar_tool_calls(const char *const *names, const json_t *const *params, int n_tools,
                                      int parallel, cons_tool_format format, ms_err *err) {
    if (check_tool_names(names, n_tools, err) < 0) return NULL;
    tools_in t = {names, params, n_tools, parallel, format};
    return build_grammar(build_tools, &t, err);
}

/* ---- validation -------------------------------------------------------------------- */

typedef struct vctx {
    const json_t *root;
    char *why;
    size_t why_len;
    char path[512];
    int depth;
} vctx;

static int vfail(vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vfail(vctx *v, const char *fmt, ...) {
    if (!v->why || !v->why_len) return 0;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(v->why, v->why_len, "%s: %s", v->path, msg);
    return 0;
}

static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static int validate(vctx *v, const json_t *s, const json_t *x);

/* Validates x at path + suffix, restoring the path afterwards. */
static int validate_at(vctx *v, const json_t *s, const json_t *x, const char *fmt, const char *key, size_t i) {
    size_t n = strlen(v->path);
    if (key) snprintf(v->path + n, sizeof v->path - n, fmt, key);
    else snprintf(v->path + n, sizeof v->path - n, fmt, i);
    int ok = validate(v, s, x);
    v->path[n] = 0;
    return ok;
}

static int validate_count(vctx *v, const json_t *s, const char *lo_kw, const char *hi_kw, size_t n) {
    const json_t *lo = json_object_get(s, lo_kw), *hi = json_object_get(s, hi_kw);
    if (lo && (double)n < json_number_value(lo)) return vfail(v, "%zu is below %s", n, lo_kw);
    if (hi && (double)n > json_number_value(hi)) return vfail(v, "%zu is above %s", n, hi_kw);
    return 1;
}

/* pattern (a search) or a known format (a full match). */
static int validate_pattern(vctx *v, const json_t *s, const json_t *x) {
    const char *pat = json_string_value(json_object_get(s, "pattern"));
    const char *regex = pat ? pat : format_regex(json_string_value(json_object_get(s, "format")));
    if (!regex) return 1;
    rdfa d;
    ms_err e = {{0}};
    if (rdfa_compile(regex, pat ? RDFA_SEARCH : 0, &d, &e) < 0) return vfail(v, "%s", e.msg);
    int ok = rdfa_match(&d, json_string_value(x), json_string_length(x));
    rdfa_free(&d);
    return ok ? 1 : vfail(v, "does not match '%s'", regex);
}

static int validate_bounds(vctx *v, const json_t *s, double x) {
    int has_lo, lo_x, has_hi, hi_x;
    double lo, hi;
    cctx c = {0};
    ms_err e = {{0}};
    c.err = &e;
    if (number_bounds(&c, s, &has_lo, &lo, &lo_x, &has_hi, &hi, &hi_x) < 0) return vfail(v, "%s", e.msg);
    if (has_lo && (lo_x ? x <= lo : x < lo)) return vfail(v, "%g is below the minimum %g", x, lo);
    if (has_hi && (hi_x ? x >= hi : x > hi)) return vfail(v, "%g is above the maximum %g", x, hi);
    const json_t *mul = json_object_get(s, "multipleOf");
    uint32_t m;
    int p;
    if (mul && multiple_parts(&c, mul, &m, &p) < 0) return vfail(v, "%s", e.msg);
    if (mul) {
        double q = x * pow(10, p) / m;
        if (fabs(q - round(q)) > 1e-9 * (fabs(q) > 1 ? fabs(q) : 1)) return vfail(v, "%g is not a multiple of %g", x, json_number_value(mul));
    }
    return 1;
}

/* The key name against propertyNames. */
static int validate_key(vctx *v, const json_t *pn, const char *name) {
    json_t *k = json_string(name);
    int ok = k && validate_at(v, pn, k, ".%s (the key)", name, 0);
    json_decref(k);
    return ok;
}

static int validate_object(vctx *v, const json_t *s, const json_t *x) {
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    const json_t *addl = json_object_get(s, "additionalProperties"), *pn = json_object_get(s, "propertyNames");
    if (!validate_count(v, s, "minProperties", "maxProperties", json_object_size(x))) return 0;
    for (size_t i = 0; i < json_array_size(req); i++) {
        const char *k = json_string_value(json_array_get(req, i));
        if (k && !json_object_get(x, k)) return vfail(v, "required property '%s' is missing", k);
    }
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)x, k, val) {
        const json_t *ps = json_object_get(props, k);
        if (!ps && json_is_false(addl)) return vfail(v, "property '%s' is not allowed", k);
        if (!ps && json_is_object(addl)) ps = addl;
        if (ps && !validate_at(v, ps, val, ".%s", k, 0)) return 0;
        if (pn && !validate_key(v, pn, k)) return 0;
    }
    return 1;
}

static int validate_typed(vctx *v, const json_t *s, const json_t *x) {
    if (json_is_object(x)) return validate_object(v, s, x);
    if (json_is_array(x)) {
        if (!validate_count(v, s, "minItems", "maxItems", json_array_size(x))) return 0;
        const json_t *items = json_object_get(s, "items"), *tuple = json_object_get(s, "prefixItems");
        if (!tuple && json_is_array(items)) tuple = items, items = json_object_get(s, "additionalItems");
        for (size_t i = 0; i < json_array_size(x); i++) {
            const json_t *is = i < json_array_size(tuple) ? json_array_get(tuple, i) : items;
            if (json_is_false(is)) return vfail(v, "item %zu is not allowed", i);
            if (is && !validate_at(v, is, json_array_get(x, i), "[%zu]", NULL, i)) return 0;
        }
        return 1;
    }
    if (json_is_string(x)) {
        if (!validate_count(v, s, "minLength", "maxLength", utf8_chars(json_string_value(x), json_string_length(x))))
            return 0;
        return validate_pattern(v, s, x);
    }
    if (json_is_number(x)) return validate_bounds(v, s, json_number_value(x));
    return 1;
}

static int validate(vctx *v, const json_t *s, const json_t *x) {
    if (++v->depth > MAX_SCHEMA_DEPTH * 2) return v->depth--, vfail(v, "schema nested too deeply");
    int ok = 1;
    const json_t *t;
    if (json_is_false(s)) ok = vfail(v, "schema false");
    else if (!json_is_object(s)) ok = json_is_true(s) ? 1 : vfail(v, "schema is not an object");
    else if ((t = json_object_get(s, "$ref"))) {
        cctx c = {.root = v->root};
        const json_t *target = json_is_string(t) ? resolve_ref(&c, json_string_value(t)) : NULL;
        ok = target ? validate(v, target, x) : vfail(v, "unsupported $ref");
    } else {
        const char *k;
        json_t *kv;
        json_object_foreach((json_t *)s, k, kv) {
            if (!kw_in(k, kw_supported) && !kw_in(k, kw_ignored) && strncmp(k, "x-", 2)) {
                ok = vfail(v, "keyword '%s' is not supported", k);
                break;
            }
        }
        uint32_t types = 0;
        cctx c = {0};
        const json_t *any = json_object_get(s, "anyOf") ? json_object_get(s, "anyOf") : json_object_get(s, "oneOf");
        if (ok && parse_types(&c, json_object_get(s, "type"), &types) < 0) ok = vfail(v, "bad 'type'");
        if (ok && types && !value_has_type(x, types)) ok = vfail(v, "wrong type");
        if (ok && (t = json_object_get(s, "const")) && !json_equal((json_t *)t, (json_t *)x)) ok = vfail(v, "not the const value");
        if (ok && (t = json_object_get(s, "enum"))) {
            size_t i = 0;
            while (i < json_array_size(t) && !json_equal(json_array_get(t, i), (json_t *)x)) i++;
            if (i == json_array_size(t)) ok = vfail(v, "not one of the enum values");
        }
        if (ok && any) {
            size_t matches = 0;
            char save[sizeof v->path];
            memcpy(save, v->path, sizeof save);
            for (size_t i = 0; i < json_array_size(any); i++) matches += (size_t)validate(v, json_array_get(any, i), x);
            memcpy(v->path, save, sizeof save);
            int one = json_object_get(s, "oneOf") != NULL;
            if (matches == 0 || (one && matches > 1)) ok = vfail(v, "%zu of the %s alternatives match", matches, one ? "oneOf" : "anyOf");
        }
        const json_t *all = json_object_get(s, "allOf");
        for (size_t i = 0; ok && i < json_array_size(all); i++) ok = validate(v, json_array_get(all, i), x);
        if (ok) ok = validate_typed(v, s, x);
    }
    v->depth--;
    return ok;
}

/* 1 when the key name matches propertyNames pn (the document's $refs resolve
 * against the root being compiled), else 0. */
static int key_matches(const cctx *c, const json_t *pn, const char *name) {
    vctx v = {.root = c->root, .path = "$"};
    return validate_key(&v, pn, name);
}

int cons_json_validate(const json_t *schema, const json_t *value, char *why, size_t why_len) {
    vctx v = {.root = schema, .why = why, .why_len = why_len, .path = "$"};
    if (why && why_len) why[0] = 0;
    if (!value) return vfail(&v, "no value");
    if (!schema) return json_is_object(value) ? 1 : vfail(&v, "not an object");
    return validate(&v, schema, value);
}
