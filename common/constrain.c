/* common/constrain.c — the byte-level pushdown matcher over a cons_grammar, the
 * token trie (cons_vocab) and the per-step mask (contract in constrain.h).
 *
 * Matcher: a fixed-size state (mstate): a stack of at most GRAM_MAX_DEPTH frames,
 * one per open value (object, array, string, number, literal set, sequence, ...).
 * A symbol goes to the top frame, which consumes it, rejects it, pushes a child
 * that then takes it, or, when it is complete and the symbol is not its own
 * (a number before ','), pops so that its parent takes it. Each frame knows rem,
 * the fewest symbols that complete it (json_schema.h's min_len values); `below`
 * caches the sum over the frames under the top, so the cost of the whole state
 * (the exact shortest completion) is O(1).
 *
 * Mask: a DFS over the token trie from the current state, one state copy per trie
 * level (copying only the live frames), pruning a subtree at the first rejected
 * byte. Inside a string (and before "</think>") tokens without a quote, backslash
 * or control byte (without '<') are decided in bulk from per-UTF-8-state bitmaps,
 * and the DFS only walks the subtrees holding the other tokens.
 *
 * Owns: cons_vocab (trie, token bytes, bitmaps), cons_state (state + scratch).
 * The vocab is read-only after creation (any thread); a state is one thread's. */
#include "common/constrain.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_schema.h"

#define THINK_LEN 8
static const char think_tag[THINK_LEN + 1] = "</think>";

/* ---- matcher state -------------------------------------------------------------- */

typedef struct cframe {
    uint32_t node; /* grammar node */
    uint8_t ph;    /* phase (per kind, below) */
    uint8_t sub;   /* whitespace bytes in the current slot / UTF-8 state / hex digits read */
    uint16_t x;    /* \u code unit being read */
    uint32_t a;    /* object: last prop + 1; array/repeat: items; string: code points;
                      number: digits in the current part; litset: trie node; seq: item */
    uint32_t b;    /* object: key trie node; seq, repeat: position in a literal */
} cframe;

typedef struct mstate {
    uint8_t depth;   /* frames in use (>= 1: the root never pops) */
    uint8_t think;   /* bytes of "</think>" matched; THINK_LEN once the grammar runs */
    uint8_t done;    /* EOS accepted */
    uint32_t below;  /* sum of rem over f[0 .. depth-2] */
    cframe f[GRAM_MAX_DEPTH];
} mstate;

enum { R_OK, R_REJ, R_POP, R_AGAIN }; /* frame step: consumed / rejected / pop me and retry / retry on new top */
enum { RT_WS, RT_DONE };
enum { OB_START, OB_OPEN, OB_KEY, OB_AKEY, OB_ACOLON, OB_AVAL, OB_ACOMMA };
enum { AR_START, AR_OPEN, AR_AVAL, AR_ACOMMA };
enum { ST_START, ST_BODY, ST_ESC, ST_U, ST_LS1, ST_LS2, ST_U2 };
enum { NU_START, NU_MINUS, NU_ZERO, NU_INT, NU_DOT, NU_FRAC, NU_E, NU_ESIGN, NU_EXP };
enum { RP_START, RP_AFTER, RP_SEP, RP_NEXT };
static const uint8_t num_rem[] = {1, 1, 0, 0, 1, 0, 1, 1, 0};

/* UTF-8 DFA states: S0 = at a character boundary, Cn = n continuation bytes due,
 * E0/ED/F0/F4 = after those lead bytes (restricted second byte). */
enum { U_S0, U_C1, U_C2, U_C3, U_E0, U_ED, U_F0, U_F4, U_BAD = 15 };
static const uint8_t u8_pending[8] = {0, 1, 2, 3, 2, 2, 3, 3};

static int u8_next(int s, unsigned b) {
    int cont = (b & 0xC0) == 0x80;
    switch (s) {
    case U_S0:
        if (b < 0x80) return U_S0;
        if (b < 0xC2) return U_BAD;
        if (b < 0xE0) return U_C1;
        if (b == 0xE0) return U_E0;
        if (b == 0xED) return U_ED;
        if (b < 0xF0) return U_C2;
        if (b == 0xF0) return U_F0;
        if (b < 0xF4) return U_C3;
        return b == 0xF4 ? U_F4 : U_BAD;
    case U_C1: return cont ? U_S0 : U_BAD;
    case U_C2: return cont ? U_C1 : U_BAD;
    case U_C3: return cont ? U_C2 : U_BAD;
    case U_E0: return b >= 0xA0 && b <= 0xBF ? U_C1 : U_BAD;
    case U_ED: return b >= 0x80 && b <= 0x9F ? U_C1 : U_BAD;
    case U_F0: return b >= 0x90 && b <= 0xBF ? U_C2 : U_BAD;
    default: return b >= 0x80 && b <= 0x8F ? U_C2 : U_BAD; /* U_F4 */
    }
}

static int is_ws(int sym) { return sym == ' ' || sym == '\n' || sym == '\t' || sym == '\r'; }

/* \uXXXX with `digits` hex digits read so far (value x): the range of completions. */
static void u_range(uint32_t x, int digits, uint32_t *lo, uint32_t *hi) {
    int shift = 4 * (4 - digits);
    *lo = x << shift;
    *hi = *lo | ((1u << shift) - 1);
}
/* First unit: U+0001..U+DBFF (high surrogates need a low one next) or U+E000..U+FFFF;
 * jansson rejects \u0000 and unpaired surrogates. */
static int u_first_ok(uint32_t x, int digits) {
    uint32_t lo, hi;
    u_range(x, digits, &lo, &hi);
    return (lo <= 0xDBFF && hi >= 0x0001) || hi >= 0xE000;
}
static int u_high_only(uint32_t x, int digits) {
    uint32_t lo, hi;
    u_range(x, digits, &lo, &hi);
    return lo >= 0xD800 && hi <= 0xDBFF;
}
static int u_low_ok(uint32_t x, int digits) {
    uint32_t lo, hi;
    u_range(x, digits, &lo, &hi);
    return lo <= 0xDFFF && hi >= 0xDC00;
}
static int hex_val(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* ---- remaining cost of a frame ----------------------------------------------------- */

static uint32_t rem_object(const cons_grammar *g, const gram_node *n, const cframe *f) {
    if (n->flags & G_ANYKEYS) { /* f->a: pairs begun; fewer than n->lo need more ",KEY:VALUE" */
        uint32_t v = g->nodes[n->child].min_len, k = g->nodes[n->child2].min_len;
        uint32_t a = f->a + (f->ph == OB_ACOMMA || f->ph == OB_OPEN), pair = k + 1 + v + 1;
        uint32_t more = a < n->lo ? (n->lo - a) * pair : 0;
        switch (f->ph) {
        case OB_START: return n->min_len;
        case OB_OPEN: return n->lo ? k + v + 2 + more : 1;
        case OB_AKEY: return v + 2 + more;
        case OB_ACOLON: return v + 1 + more;
        case OB_ACOMMA: return k + v + 2 + more;
        default: return 1 + more; /* AVAL: '}' */
        }
    }
    const gram_prop *p = f->a ? &g->props[n->list + (int32_t)f->a - 1] : NULL;
    switch (f->ph) {
    case OB_START: return n->min_len;
    case OB_OPEN: return n->head;
    case OB_KEY: return g->lits[f->b].min_rem;
    case OB_AKEY: return 1 + g->nodes[p->node].min_len + p->tail;
    case OB_ACOLON: return g->nodes[p->node].min_len + p->tail;
    case OB_AVAL: return p->tail;
    default: return g->lits[g->idx[n->win + (int32_t)f->a]].min_rem; /* OB_ACOMMA */
    }
}

static uint32_t rem_array(const cons_grammar *g, const gram_node *n, const cframe *f) {
    uint32_t mi = g->nodes[n->child].min_len;
    switch (f->ph) {
    case AR_START: return n->min_len;
    case AR_OPEN: return n->lo ? n->lo * mi + n->lo : 1;
    case AR_AVAL: return f->a < n->lo ? (n->lo - f->a) * (mi + 1) + 1 : 1;
    default: return mi + (f->a + 1 < n->lo ? (n->lo - f->a - 1) * (mi + 1) : 0) + 1; /* AR_ACOMMA */
    }
}

static uint32_t rem_string(const gram_node *n, const cframe *f) {
    uint32_t close = (f->a < n->lo ? n->lo - f->a : 0) + 1; /* more code points, '"' */
    switch (f->ph) {
    case ST_START: return n->min_len;
    case ST_BODY: return u8_pending[f->sub] + close;
    case ST_ESC: return 1 + close;
    case ST_U: return 4u - f->sub + (u_high_only(f->x, f->sub) ? 6 : 0) + close;
    case ST_LS1: return 6 + close;
    case ST_LS2: return 5 + close;
    default: return 4u - f->sub + close; /* ST_U2 */
    }
}

static uint32_t rem_repeat(const cons_grammar *g, const gram_node *n, const cframe *f) {
    uint32_t per = g->nodes[n->child].min_len + (uint32_t)n->n, mi = g->nodes[n->child].min_len;
    uint32_t more = f->a + 1 < n->lo ? (n->lo - f->a - 1) * per : 0; /* items after the next one */
    switch (f->ph) {
    case RP_START: return n->min_len;
    case RP_AFTER: return f->a < n->lo ? (n->lo - f->a) * per : 0;
    case RP_SEP: return (uint32_t)n->n - f->b + mi + more;
    default: return mi + more; /* RP_NEXT */
    }
}

static uint32_t rem(const cons_grammar *g, const cframe *f) {
    const gram_node *n = &g->nodes[f->node];
    switch (n->kind) {
    case G_ROOT: return f->ph == RT_WS ? n->min_len : 0;
    case G_OBJECT: return rem_object(g, n, f);
    case G_ARRAY: return rem_array(g, n, f);
    case G_STRING: return rem_string(n, f);
    case G_NUMBER: return num_rem[f->ph];
    case G_LITSET: return g->lits[f->a].min_rem;
    case G_SEQ: {
        const gram_item *it = &g->items[n->list + (int32_t)f->a];
        return (it->node >= 0 ? g->nodes[it->node].min_len : it->len - f->b) + it->suffix;
    }
    case G_REPEAT: return rem_repeat(g, n, f);
    case G_DFA: return g->dfa_rem[f->a];
    default: return n->min_len; /* G_UNION: not started */
    }
}

static uint32_t m_cost(const cons_grammar *g, const mstate *s) {
    uint32_t c = s->below + rem(g, &s->f[s->depth - 1]);
    return s->think < THINK_LEN ? c + THINK_LEN - s->think : c;
}

/* ---- stack -------------------------------------------------------------------------- */

static void frame_init(const cons_grammar *g, cframe *f, int32_t node) {
    memset(f, 0, sizeof *f);
    f->node = (uint32_t)node;
    if (g->nodes[node].kind == G_LITSET || g->nodes[node].kind == G_DFA) f->a = (uint32_t)g->nodes[node].list;
}

/* Pushes node above the top (whose phase already says what follows the child). */
static int push(const cons_grammar *g, mstate *s, int32_t node) {
    if (s->depth >= GRAM_MAX_DEPTH) return R_REJ;
    s->below += rem(g, &s->f[s->depth - 1]);
    frame_init(g, &s->f[s->depth++], node);
    return R_AGAIN;
}

static void pop(const cons_grammar *g, mstate *s) {
    s->depth--;
    s->below -= rem(g, &s->f[s->depth - 1]);
}

/* Trie child of t labelled sym, or -1. */
static int32_t lit_child(const cons_grammar *g, uint32_t t, int sym) {
    for (uint32_t c = t + 1; c < g->lits[t].end; c = g->lits[c].end)
        if (g->lits[c].byte == sym) return (int32_t)c;
    return -1;
}

/* ---- frame steps --------------------------------------------------------------------- */

/* A whitespace slot: R_OK if sym is whitespace and fits, R_REJ if it does not fit,
 * -1 if sym is not whitespace (the slot ends). */
static int ws_slot(cframe *f, int sym) {
    if (!is_ws(sym)) {
        f->sub = 0;
        return -1;
    }
    if (f->sub >= GRAM_WS_MAX) return R_REJ;
    f->sub++;
    return R_OK;
}

static int step_root(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    if (f->ph == RT_DONE) return R_REJ;
    if ((n->flags & G_WS) && is_ws(sym)) return f->sub < GRAM_WS_MAX ? (f->sub++, R_OK) : R_REJ;
    f->ph = RT_DONE;
    return push(g, s, n->child);
}

static int obj_key_step(const cons_grammar *g, cframe *f, int sym) {
    int32_t c = lit_child(g, f->b, sym);
    if (c < 0) return R_REJ;
    if (g->lits[c].end == (uint32_t)c + 1) { /* keys end with '"': a leaf */
        f->a = (uint32_t)g->lits[c].term + 1;
        f->ph = OB_AKEY;
    } else {
        f->b = (uint32_t)c;
    }
    return R_OK;
}

static int obj_key_start(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    if (sym != '"') return R_REJ;
    if (n->flags & G_ANYKEYS) {
        if (f->a >= n->hi) return R_REJ; /* maxProperties */
        f->a++;
        f->ph = OB_AKEY;
        return push(g, s, n->child2);
    }
    int32_t root = g->idx[n->win + (int32_t)f->a];
    if (root < 0) return R_REJ;
    f->ph = OB_KEY;
    f->b = (uint32_t)root;
    return obj_key_step(g, f, sym);
}

static int obj_can_close(const cons_grammar *g, const gram_node *n, const cframe *f) {
    return rem_object(g, n, f) == 1;
}

static int step_object(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    if (f->ph == OB_START) return sym == '{' ? (f->ph = OB_OPEN, R_OK) : R_REJ;
    if (f->ph == OB_KEY) return obj_key_step(g, f, sym);
    int r = ws_slot(f, sym);
    if (r >= 0) return r;
    switch (f->ph) {
    case OB_AKEY: return sym == ':' ? (f->ph = OB_ACOLON, R_OK) : R_REJ;
    case OB_ACOLON:
        f->ph = OB_AVAL;
        return push(g, s, (n->flags & G_ANYKEYS) ? n->child : g->props[n->list + (int32_t)f->a - 1].node);
    case OB_ACOMMA: return obj_key_start(g, s, f, n, sym);
    default: break; /* OPEN, AVAL */
    }
    if (sym == '}') {
        if (!obj_can_close(g, n, f)) return R_REJ;
        pop(g, s);
        return R_OK;
    }
    if (f->ph == OB_OPEN) return obj_key_start(g, s, f, n, sym);
    if (sym != ',') return R_REJ;
    int more = (n->flags & G_ANYKEYS) ? s->depth < GRAM_MAX_DEPTH && f->a < n->hi : g->idx[n->win + (int32_t)f->a] >= 0;
    if (!more) return R_REJ;
    f->ph = OB_ACOMMA;
    return R_OK;
}

static int step_array(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    if (f->ph == AR_START) return sym == '[' ? (f->ph = AR_OPEN, R_OK) : R_REJ;
    int r = ws_slot(f, sym);
    if (r >= 0) return r;
    if (sym == ']' && f->ph != AR_ACOMMA) {
        if (f->a < n->lo) return R_REJ;
        pop(g, s);
        return R_OK;
    }
    if (f->ph == AR_AVAL) {
        if (sym != ',' || f->a >= n->hi) return R_REJ;
        f->ph = AR_ACOMMA;
        return R_OK;
    }
    if (f->a >= n->hi) return R_REJ; /* OPEN with maxItems 0 */
    f->a++;
    f->ph = AR_AVAL;
    return push(g, s, n->child);
}

static int step_string_body(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    if (f->sub != U_S0) { /* inside a UTF-8 character */
        int u = u8_next(f->sub, (unsigned)sym);
        if (u == U_BAD) return R_REJ;
        f->sub = (uint8_t)u;
        return R_OK;
    }
    if (sym == '"') {
        if (f->a < n->lo) return R_REJ;
        pop(g, s);
        return R_OK;
    }
    if (sym < 0x20 || f->a >= n->hi) return R_REJ;
    if (sym == '\\') f->ph = ST_ESC;
    int u = u8_next(U_S0, (unsigned)sym);
    if (u == U_BAD) return R_REJ;
    f->sub = (uint8_t)u;
    f->a++;
    return R_OK;
}

static int step_string(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    if (sym >= GRAM_SYM_MARKER) return R_REJ;
    int h;
    switch (f->ph) {
    case ST_START: return sym == '"' ? (f->ph = ST_BODY, R_OK) : R_REJ;
    case ST_BODY: return step_string_body(g, s, f, n, sym);
    case ST_ESC:
        if (sym == 'u') {
            f->ph = ST_U;
            f->sub = 0;
            f->x = 0;
            return R_OK;
        }
        return sym && strchr("\"\\/bfnrt", sym) ? (f->ph = ST_BODY, R_OK) : R_REJ;
    case ST_LS1: return sym == '\\' ? (f->ph = ST_LS2, R_OK) : R_REJ;
    case ST_LS2: return sym == 'u' ? (f->ph = ST_U2, f->sub = 0, f->x = 0, R_OK) : R_REJ;
    default: break; /* ST_U, ST_U2 */
    }
    if ((h = hex_val(sym)) < 0) return R_REJ;
    uint32_t x = (uint32_t)f->x * 16 + (uint32_t)h;
    int d = f->sub + 1;
    if (!(f->ph == ST_U ? u_first_ok(x, d) : u_low_ok(x, d))) return R_REJ;
    f->x = (uint16_t)x;
    f->sub = (uint8_t)d;
    if (d == 4) { /* a high surrogate needs "\uDC00".."\uDFFF" next */
        f->ph = f->ph == ST_U && x >= 0xD800 && x <= 0xDBFF ? ST_LS1 : ST_BODY;
        f->sub = 0;
    }
    return R_OK;
}

static int step_number(cframe *f, const gram_node *n, int sym) {
    int digit = sym >= '0' && sym <= '9', integer = n->flags & G_INTEGER;
    int frac_ok = !integer && sym == '.', exp_ok = !integer && (sym == 'e' || sym == 'E');
    uint8_t ph = f->ph;
    if (ph == NU_START && sym == '-') return f->ph = NU_MINUS, R_OK;
    if (ph == NU_START || ph == NU_MINUS)
        return digit ? (f->ph = sym == '0' ? NU_ZERO : NU_INT, f->a = 1, R_OK) : R_REJ;
    if (ph == NU_DOT || ph == NU_ESIGN) return digit ? (f->ph = ph == NU_DOT ? NU_FRAC : NU_EXP, f->a = 1, R_OK) : R_REJ;
    if (ph == NU_E) {
        if (sym == '+' || sym == '-') return f->ph = NU_ESIGN, R_OK;
        return digit ? (f->ph = NU_EXP, f->a = 1, R_OK) : R_REJ;
    }
    /* accepting phases: ZERO, INT, FRAC, EXP */
    uint32_t max = ph == NU_INT ? GRAM_INT_DIGITS : ph == NU_FRAC ? GRAM_FRAC_DIGITS : GRAM_EXP_DIGITS;
    if (digit && ph != NU_ZERO) return f->a < max ? (f->a++, R_OK) : R_POP;
    if (frac_ok && (ph == NU_ZERO || ph == NU_INT)) return f->ph = NU_DOT, R_OK;
    if (exp_ok && ph != NU_EXP) return f->ph = NU_E, R_OK;
    return R_POP;
}

static int step_litset(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    int32_t c = sym < GRAM_SYM_MARKER ? lit_child(g, f->a, sym) : -1;
    if (c < 0 && g->lits[f->a].term >= 0 && n->cont >= 0) { /* a tool name that prefixes another */
        frame_init(g, f, g->idx[n->cont + g->lits[f->a].term]);
        return R_AGAIN;
    }
    if (c < 0) return g->lits[f->a].term >= 0 ? R_POP : R_REJ;
    if (g->lits[c].end != (uint32_t)c + 1) {
        f->a = (uint32_t)c;
        return R_OK;
    }
    if (n->cont >= 0) frame_init(g, f, g->idx[n->cont + g->lits[c].term]); /* the tool's arguments */
    else pop(g, s);
    return R_OK;
}

static int step_seq(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    const gram_item *it = &g->items[n->list + (int32_t)f->a];
    if (it->node >= 0) {
        if ((int32_t)f->a + 1 == n->n) { /* last item: it replaces the sequence */
            frame_init(g, f, it->node);
            return R_AGAIN;
        }
        f->a++, f->b = 0;
        return push(g, s, it->node);
    }
    if (sym != g->syms[it->off + f->b]) return R_REJ;
    if (++f->b < it->len) return R_OK;
    f->a++, f->b = 0;
    if ((int32_t)f->a == n->n) pop(g, s);
    return R_OK;
}

static int step_repeat(const cons_grammar *g, mstate *s, cframe *f, const gram_node *n, int sym) {
    switch (f->ph) {
    case RP_AFTER:
        if (f->a < n->hi && sym == g->syms[n->list]) {
            f->ph = n->n == 1 ? RP_NEXT : RP_SEP, f->b = 1;
            return R_OK;
        }
        return f->a >= n->lo ? R_POP : R_REJ;
    case RP_SEP:
        if (sym != g->syms[n->list + (int32_t)f->b]) return R_REJ;
        if ((int32_t)++f->b == n->n) f->ph = RP_NEXT;
        return R_OK;
    default: /* START, NEXT */
        f->a++;
        f->ph = RP_AFTER;
        return push(g, s, n->child);
    }
}

/* An automaton takes the byte if it has a transition (its states all lead to
 * acceptance); else, in an accepting state, it is complete and its parent takes it. */
static int step_dfa(const cons_grammar *g, cframe *f, int sym) {
    int32_t t = sym < GRAM_SYM_MARKER ? g->dfa_next[(size_t)f->a * 256 + (size_t)sym] : -1;
    if (t >= 0) {
        f->a = (uint32_t)t;
        return R_OK;
    }
    return g->dfa_rem[f->a] == 0 ? R_POP : R_REJ;
}

static int step_union(const cons_grammar *g, cframe *f, const gram_node *n, int sym) {
    for (int32_t k = 0; k < n->n; k++) {
        int32_t alt = g->idx[n->list + k];
        if (gram_first_has(&g->nodes[alt], sym)) {
            frame_init(g, f, alt);
            return R_AGAIN;
        }
    }
    return R_REJ;
}

static int fr_step(const cons_grammar *g, mstate *s, int sym) {
    cframe *f = &s->f[s->depth - 1];
    const gram_node *n = &g->nodes[f->node];
    int json = n->kind != G_ROOT && n->kind != G_SEQ && n->kind != G_REPEAT && n->kind != G_UNION &&
               !(n->kind == G_LITSET && n->cont >= 0); /* a tool name may end at a marker (V3.1) */
    if (sym >= GRAM_SYM_MARKER && json) return rem(g, f) == 0 ? R_POP : R_REJ; /* markers are not JSON */
    switch (n->kind) {
    case G_ROOT: return step_root(g, s, f, n, sym);
    case G_OBJECT: return step_object(g, s, f, n, sym);
    case G_ARRAY: return step_array(g, s, f, n, sym);
    case G_STRING: return step_string(g, s, f, n, sym);
    case G_NUMBER: return step_number(f, n, sym);
    case G_LITSET: return step_litset(g, s, f, n, sym);
    case G_SEQ: return step_seq(g, s, f, n, sym);
    case G_REPEAT: return step_repeat(g, s, f, n, sym);
    case G_DFA: return step_dfa(g, f, sym);
    default: return step_union(g, f, n, sym);
    }
}

static int think_step(mstate *s, int sym) {
    if (sym >= GRAM_SYM_MARKER) return -1;
    s->think = sym == think_tag[s->think] ? s->think + 1 : sym == '<';
    return 0;
}

/* Feeds one symbol (byte, or GRAM_SYM_MARKER + k). 0, or -1 with s garbage. */
static int m_step(const cons_grammar *g, mstate *s, int sym) {
    if (s->think < THINK_LEN) return think_step(s, sym);
    for (;;) {
        int r = fr_step(g, s, sym);
        if (r == R_OK) return 0;
        if (r == R_REJ || (r == R_POP && s->depth == 1)) return -1;
        if (r == R_POP) pop(g, s);
    }
}

static void m_copy(mstate *dst, const mstate *src) {
    memcpy(dst, src, offsetof(mstate, f) + src->depth * sizeof(cframe));
}

/* ---- vocabulary ------------------------------------------------------------------------ */

enum { CLS_STR = 1, CLS_LT = 2 }; /* bytes that end "plain" string text / think text */

static uint8_t byte_cls(unsigned b) {
    return (uint8_t)((b == '"' || b == '\\' || b < 0x20 ? CLS_STR : 0) | (b == '<' ? CLS_LT : 0));
}

/* Token trie node, preorder: children of t are t+1, then trie[c].end, ... < trie[t].end. */
typedef struct tnode {
    uint32_t end;
    uint32_t ord;   /* first ord of the tokens spelled by the path to here */
    uint16_t n_tok; /* how many (tokens with identical bytes have consecutive ords) */
    uint8_t byte;
    uint8_t below;  /* CLS_* of every byte in the subtree under this node */
} tnode;

struct cons_vocab {
    int32_t n_logits, eos_id;
    int32_t marker_id[GRAM_MK_COUNT];
    uint32_t n_trie_tok;      /* ords [0, n_trie_tok) are trie tokens, in byte order; then */
    uint32_t n_ords;          /* the markers (n_trie_tok + k) and EOS (n_trie_tok + GRAM_MK_COUNT) */
    uint32_t n_nodes, max_len, max_plain_chars;
    size_t n_words;           /* uint64 words of an ord bitmap */
    tnode *trie;
    int32_t *id2ord;          /* [n_logits]; -1: never allowed */
    uint32_t *tok_off;        /* [n_trie_tok + 1] into bytes */
    uint8_t *bytes;
    uint32_t *trans;          /* [n_trie_tok]: nibble s = UTF-8 state after the token inside a
                                 string started in state s; U_BAD if it cannot (or not plain) */
    uint8_t *nchars;          /* [n_trie_tok]: code points the token starts */
    uint64_t *plain[8];       /* bitmap: plain token valid from UTF-8 state s */
    uint64_t *nolt;           /* bitmap: token without '<' */
};

typedef struct tok_ref {
    const uint8_t *s;
    uint32_t len;
    int32_t id;
} tok_ref;

static int tok_cmp(const void *pa, const void *pb) {
    const tok_ref *a = pa, *b = pb;
    uint32_t m = a->len < b->len ? a->len : b->len;
    int r = memcmp(a->s, b->s, m);
    if (r) return r;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int trie_build(cons_vocab *v, const tok_ref *t, uint32_t n, ms_err *err) {
    uint32_t cap = 1024, *path = malloc((v->max_len + 1) * sizeof *path);
    v->trie = malloc(cap * sizeof *v->trie);
    if (!path || !v->trie) return free(path), ms_err_set(err, "constrain: out of memory");
    v->trie[0] = (tnode){0};
    v->n_nodes = 1;
    path[0] = 0;
    uint32_t plen = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t l = 0;
        while (k && l < plen && l < t[k].len && t[k - 1].s[l] == t[k].s[l]) l++;
        for (uint32_t d = plen; d > l; d--) v->trie[path[d]].end = v->n_nodes;
        for (uint32_t d = l + 1; d <= t[k].len; d++) {
            if (v->n_nodes == cap) {
                tnode *q = realloc(v->trie, (cap *= 2) * sizeof *q);
                if (!q) return free(path), ms_err_set(err, "constrain: out of memory");
                v->trie = q;
            }
            v->trie[v->n_nodes] = (tnode){.byte = t[k].s[d - 1]};
            path[d] = v->n_nodes++;
        }
        plen = t[k].len;
        tnode *e = &v->trie[path[plen]];
        if (!e->n_tok) e->ord = k;
        e->n_tok++;
    }
    for (uint32_t d = plen + 1; d-- > 0;) v->trie[path[d]].end = v->n_nodes;
    free(path);
    for (uint32_t i = v->n_nodes; i-- > 0;) {
        uint8_t below = 0;
        for (uint32_t c = i + 1; c < v->trie[i].end; c = v->trie[c].end) below |= byte_cls(v->trie[c].byte) | v->trie[c].below;
        v->trie[i].below = below;
    }
    return 0;
}

/* Per-token UTF-8 transitions and code-point counts for the bulk string case. */
static void token_info(cons_vocab *v, uint32_t o) {
    const uint8_t *s = v->bytes + v->tok_off[o];
    uint32_t len = v->tok_off[o + 1] - v->tok_off[o], plain = 1, lt = 0, chars = 0;
    for (uint32_t i = 0; i < len; i++) {
        plain &= !(byte_cls(s[i]) & CLS_STR);
        lt |= s[i] == '<';
        chars += (s[i] & 0xC0) != 0x80;
    }
    uint32_t trans = 0;
    for (int st = 0; st < 8; st++) {
        int u = plain ? st : U_BAD;
        for (uint32_t i = 0; i < len && u != U_BAD; i++) u = u8_next(u, s[i]);
        trans |= (uint32_t)u << (4 * st);
        if (u != U_BAD) v->plain[st][o >> 6] |= 1ull << (o & 63);
    }
    v->trans[o] = trans;
    v->nchars[o] = (uint8_t)(chars > 255 ? 255 : chars);
    if (plain && chars > v->max_plain_chars) v->max_plain_chars = chars;
    if (!lt) v->nolt[o >> 6] |= 1ull << (o & 63);
}

/* The tokens the trie holds: not EOS, not special, not a marker, non-empty. */
static tok_ref *collect_tokens(cons_vocab *v, const tokenizer *tok, uint32_t *n_out) {
    int32_t lim = tokenizer_vocab_size(tok);
    if (lim > v->n_logits) lim = v->n_logits;
    tok_ref *t = malloc((size_t)(lim > 0 ? lim : 1) * sizeof *t);
    uint32_t n = 0;
    for (int32_t id = 0; t && id < lim; id++) {
        size_t len;
        const char *b = tokenizer_token_bytes(tok, id, &len);
        int marker = 0;
        for (int k = 0; k < GRAM_MK_COUNT; k++) marker |= v->marker_id[k] == id;
        if (!b || !len || len > 65535 || id == v->eos_id || marker || tokenizer_is_special(tok, id)) continue;
        t[n++] = (tok_ref){(const uint8_t *)b, (uint32_t)len, id};
        if (len > v->max_len) v->max_len = (uint32_t)len;
    }
    *n_out = n;
    return t;
}

static int vocab_tables(cons_vocab *v, const tok_ref *t, uint32_t n, ms_err *err) {
    size_t total = 0;
    for (uint32_t k = 0; k < n; k++) total += t[k].len;
    v->n_words = (v->n_ords + 63) / 64;
    v->tok_off = malloc((n + 1) * sizeof *v->tok_off);
    v->bytes = malloc(total ? total : 1);
    v->trans = malloc((n ? n : 1) * sizeof *v->trans);
    v->nchars = malloc(n ? n : 1);
    v->nolt = calloc(v->n_words, 8);
    int ok = v->tok_off && v->bytes && v->trans && v->nchars && v->nolt;
    for (int s = 0; s < 8; s++) ok &= (v->plain[s] = calloc(v->n_words, 8)) != NULL;
    if (!ok) return ms_err_set(err, "constrain: out of memory");
    size_t off = 0;
    for (uint32_t k = 0; k < n; k++) {
        v->tok_off[k] = (uint32_t)off;
        memcpy(v->bytes + off, t[k].s, t[k].len);
        off += t[k].len;
        v->id2ord[t[k].id] = (int32_t)k;
    }
    v->tok_off[n] = (uint32_t)off;
    for (uint32_t k = 0; k < n; k++) token_info(v, k);
    return 0;
}

void cons_vocab_free(cons_vocab *v) {
    if (!v) return;
    free(v->trie);
    free(v->id2ord);
    free(v->tok_off);
    free(v->bytes);
    free(v->trans);
    free(v->nchars);
    for (int s = 0; s < 8; s++) free(v->plain[s]);
    free(v->nolt);
    free(v);
}

/* Every byte must have a single-byte token: the completion guarantee relies on it. */
static int check_single_bytes(const cons_vocab *v, ms_err *err) {
    int have[256] = {0};
    for (uint32_t c = 1; c < v->trie[0].end; c = v->trie[c].end) have[v->trie[c].byte] = v->trie[c].n_tok > 0;
    for (int b = 0; b < 256; b++)
        if (!have[b]) return ms_err_set(err, "constrain: the tokenizer has no token for the single byte 0x%02x", b);
    return 0;
}

cons_vocab *cons_vocab_create(const tokenizer *tok, int32_t eos_id, int32_t n_logits, ms_err *err) {
    if (n_logits < 1 || eos_id < 0 || eos_id >= n_logits) {
        ms_err_set(err, "constrain: eos id %d must be in [0, n_logits = %d)", eos_id, n_logits);
        return NULL;
    }
    cons_vocab *v = calloc(1, sizeof *v);
    if (!v || !(v->id2ord = malloc((size_t)n_logits * sizeof *v->id2ord))) {
        free(v);
        ms_err_set(err, "constrain: out of memory");
        return NULL;
    }
    v->n_logits = n_logits;
    v->eos_id = eos_id;
    for (int32_t i = 0; i < n_logits; i++) v->id2ord[i] = -1;
    for (int k = 0; k < GRAM_MK_COUNT; k++) {
        int32_t id = tokenizer_token_id(tok, gram_marker_text[k]);
        v->marker_id[k] = id >= 0 && id < n_logits && id != eos_id ? id : -1;
    }
    uint32_t n = 0;
    tok_ref *t = collect_tokens(v, tok, &n);
    if (!t) {
        ms_err_set(err, "constrain: out of memory");
        goto fail;
    }
    qsort(t, n, sizeof *t, tok_cmp);
    v->n_trie_tok = n;
    v->n_ords = n + GRAM_MK_COUNT + 1;
    if (vocab_tables(v, t, n, err) < 0 || trie_build(v, t, n, err) < 0 || check_single_bytes(v, err) < 0) goto fail;
    free(t);
    for (int k = 0; k < GRAM_MK_COUNT; k++)
        if (v->marker_id[k] >= 0) v->id2ord[v->marker_id[k]] = (int32_t)(n + (uint32_t)k);
    v->id2ord[eos_id] = (int32_t)(n + GRAM_MK_COUNT);
    return v;
fail:
    free(t);
    cons_vocab_free(v);
    return NULL;
}

/* ---- per-request state ------------------------------------------------------------------ */

struct cons_state {
    const cons_grammar *g;
    const cons_vocab *v;
    mstate m;
    uint64_t *bits; /* allowed ords of the current mask */
    mstate *stk;    /* DFS scratch: one state per trie level */
};

cons_state *cons_state_create(const cons_grammar *g, const cons_vocab *v, int after_think, ms_err *err) {
    for (int k = 0; k < GRAM_MK_COUNT; k++)
        if (((g->markers >> k) & 1) && v->marker_id[k] < 0) {
            ms_err_set(err, "constrain: tool call marker '%s' is not a token of this tokenizer", gram_marker_text[k]);
            return NULL;
        }
    cons_state *st = calloc(1, sizeof *st);
    if (st) {
        st->bits = malloc(v->n_words * 8);
        st->stk = malloc((v->max_len + 2) * sizeof *st->stk);
    }
    if (!st || !st->bits || !st->stk) {
        cons_state_free(st);
        ms_err_set(err, "constrain: out of memory");
        return NULL;
    }
    st->g = g;
    st->v = v;
    st->m.depth = 1;
    st->m.think = after_think ? 0 : THINK_LEN;
    frame_init(g, &st->m.f[0], g->root);
    return st;
}

void cons_state_free(cons_state *st) {
    if (!st) return;
    free(st->bits);
    free(st->stk);
    free(st);
}

/* ---- mask ------------------------------------------------------------------------------ */

typedef struct mctx {
    const cons_grammar *g;
    const cons_vocab *v;
    uint64_t *bits;
    mstate *stk;
    int64_t limit;  /* largest cost allowed after a token */
    uint8_t skip;   /* CLS_* whose absence makes a token "plain" (decided in bulk) */
} mctx;

static void set_bits(uint64_t *bits, uint32_t o, uint32_t n) {
    for (uint32_t i = o; i < o + n; i++) bits[i >> 6] |= 1ull << (i & 63);
}

/* Tokens under trie node `node`, from state stk[d]. `covered`: the path is plain
 * so far, so plain tokens were decided in bulk and plain-only subtrees are skipped. */
static void dfs(mctx *c, uint32_t node, int d, int covered) {
    const tnode *tr = c->v->trie;
    for (uint32_t ch = node + 1; ch < tr[node].end; ch = tr[ch].end) {
        int cov = covered && !(byte_cls(tr[ch].byte) & c->skip);
        if (cov && !(tr[ch].below & c->skip)) continue;
        mstate *ns = &c->stk[d + 1];
        m_copy(ns, &c->stk[d]);
        if (m_step(c->g, ns, tr[ch].byte) < 0) continue;
        if (tr[ch].n_tok && !cov && (int64_t)m_cost(c->g, ns) <= c->limit) set_bits(c->bits, tr[ch].ord, tr[ch].n_tok);
        if (tr[ch].end > ch + 1) dfs(c, ch, d + 1, cov);
    }
}

static void or_bits(uint64_t *dst, const uint64_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] |= src[i];
}

/* Inside a string body: every plain token at once. */
static void bulk_string(mctx *c, const mstate *s, const cframe *f, const gram_node *n) {
    const cons_vocab *v = c->v;
    uint32_t need = f->a < n->lo ? n->lo - f->a : 0;
    if ((uint64_t)f->a + v->max_plain_chars <= n->hi && (int64_t)s->below + need + 3 + 1 <= c->limit) {
        or_bits(c->bits, v->plain[f->sub], v->n_words);
        return;
    }
    for (uint32_t o = 0; o < v->n_trie_tok; o++) { /* a bound may bite: token by token */
        uint32_t u = (v->trans[o] >> (4 * f->sub)) & 15, ch = v->nchars[o];
        if (u == U_BAD || (uint64_t)f->a + ch > n->hi) continue;
        uint32_t left = need > ch ? need - ch : 0;
        if ((int64_t)s->below + left + u8_pending[u] + 1 <= c->limit) c->bits[o >> 6] |= 1ull << (o & 63);
    }
}

/* Decides the plain tokens in bulk where it applies; sets c->skip accordingly. */
static void bulk(mctx *c, const mstate *s, uint32_t cost) {
    c->skip = 0;
    if (s->think < THINK_LEN) {
        if (s->think) return;
        c->skip = CLS_LT; /* a token without '<' leaves "</think>" unmatched: cost unchanged */
        if ((int64_t)cost <= c->limit) or_bits(c->bits, c->v->nolt, c->v->n_words);
        return;
    }
    const cframe *f = &s->f[s->depth - 1];
    const gram_node *n = &c->g->nodes[f->node];
    if (n->kind != G_STRING || f->ph != ST_BODY) return;
    c->skip = CLS_STR;
    bulk_string(c, s, f, n);
}

static int apply_token(const cons_state *st, mstate *s, int32_t ord) {
    const cons_vocab *v = st->v;
    if ((uint32_t)ord >= v->n_trie_tok) return m_step(st->g, s, GRAM_SYM_MARKER + ord - (int32_t)v->n_trie_tok);
    for (uint32_t i = v->tok_off[ord]; i < v->tok_off[ord + 1]; i++)
        if (m_step(st->g, s, v->bytes[i]) < 0) return -1;
    return 0;
}

/* The largest cost a token may leave: room for the rest and for EOS, but never less
 * than "one shorter" (when the budget is already too small). */
static int64_t cost_limit(uint32_t cost, int tokens_left) {
    int64_t lim = (int64_t)tokens_left - 2;
    return cost > 0 && lim < (int64_t)cost - 1 ? (int64_t)cost - 1 : lim;
}

static int finish_mask(const cons_vocab *v, const uint64_t *bits, float *logits) {
    int count = 0;
    for (int32_t i = 0; i < v->n_logits; i++) {
        int32_t o = v->id2ord[i];
        if (o >= 0 && ((bits[o >> 6] >> (o & 63)) & 1)) count++;
        else logits[i] = -INFINITY;
    }
    return count;
}

int cons_mask(cons_state *st, float *logits, int tokens_left) {
    const cons_vocab *v = st->v;
    memset(st->bits, 0, v->n_words * 8);
    if (st->m.done) return finish_mask(v, st->bits, logits);
    uint32_t cost = m_cost(st->g, &st->m);
    mctx c = {st->g, v, st->bits, st->stk, cost_limit(cost, tokens_left), 0};
    if (cost == 0) set_bits(st->bits, v->n_trie_tok + GRAM_MK_COUNT, 1); /* EOS */
    if (c.limit < 0) return finish_mask(v, st->bits, logits);
    bulk(&c, &st->m, cost);
    m_copy(&st->stk[0], &st->m);
    dfs(&c, 0, 0, c.skip != 0);
    for (int k = 0; k < GRAM_MK_COUNT; k++) {
        if (v->marker_id[k] < 0) continue;
        m_copy(&st->stk[1], &st->m);
        if (m_step(st->g, &st->stk[1], GRAM_SYM_MARKER + k) == 0 && (int64_t)m_cost(st->g, &st->stk[1]) <= c.limit)
            set_bits(st->bits, v->n_trie_tok + (uint32_t)k, 1);
    }
    return finish_mask(v, st->bits, logits);
}

int cons_token_allowed(const cons_state *st, int32_t token, int tokens_left) {
    const cons_vocab *v = st->v;
    if (st->m.done || token < 0 || token >= v->n_logits || v->id2ord[token] < 0) return 0;
    uint32_t cost = m_cost(st->g, &st->m);
    int32_t ord = v->id2ord[token];
    if (token == v->eos_id) return cost == 0;
    mstate tmp;
    m_copy(&tmp, &st->m);
    return apply_token(st, &tmp, ord) == 0 && (int64_t)m_cost(st->g, &tmp) <= cost_limit(cost, tokens_left);
}

int cons_accept(cons_state *st, int32_t token) {
    const cons_vocab *v = st->v;
    if (st->m.done || token < 0 || token >= v->n_logits || v->id2ord[token] < 0) return -1;
    uint32_t cost = m_cost(st->g, &st->m);
    if (token == v->eos_id) {
        if (cost) return -1;
        st->m.done = 1;
        return 0;
    }
    mstate tmp;
    m_copy(&tmp, &st->m);
    if (apply_token(st, &tmp, v->id2ord[token]) < 0) return -1;
    m_copy(&st->m, &tmp);
    return 0;
}

int cons_is_complete(const cons_state *st) { return st->m.done || m_cost(st->g, &st->m) == 0; }

int cons_min_tokens(const cons_state *st) { return st->m.done ? 0 : (int)m_cost(st->g, &st->m); }
