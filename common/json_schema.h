/* common/json_schema.h — the compiled grammar behind constrained decoding: a JSON
 * Schema subset (or a forced DeepSeek-V3 tool call) turned into a graph of nodes
 * that common/constrain.c runs as a byte-level pushdown matcher.
 *
 * This header is internal to the constrain module: json_schema.c builds a
 * cons_grammar (cons_grammar_json, cons_grammar_tool_calls) and validates values
 * (cons_json_validate); constrain.c reads the structs below. Everything else uses
 * common/constrain.h. A built grammar is immutable: any number of threads may read it.
 *
 * Symbols: the matcher consumes bytes (0..255) and, for tool calls, "markers"
 * (GRAM_SYM_MARKER + k): the tokenizer's added tokens <｜tool▁calls▁begin｜> etc.,
 * which only the added token itself can produce (never their spelling in bytes).
 *
 * Costs: every node knows min_len, the fewest symbols of a complete value; a
 * frame's remaining cost (constrain.c) is built from these, so the matcher always
 * knows the exact shortest completion of the output so far. */
#ifndef MS_JSON_SCHEMA_H
#define MS_JSON_SCHEMA_H

#include <stdint.h>

#include "common/constrain.h"

enum {
    GRAM_MK_CALLS_BEGIN,
    GRAM_MK_CALLS_END,
    GRAM_MK_CALL_BEGIN,
    GRAM_MK_CALL_END,
    GRAM_MK_SEP,
    GRAM_MK_COUNT
};
#define GRAM_SYM_MARKER 256
extern const char *const gram_marker_text[GRAM_MK_COUNT];

#define GRAM_MAX_DEPTH 32 /* matcher frames at most (constrain.c's stack) */
#define GRAM_WS_MAX 32    /* whitespace bytes per slot at most */
#define GRAM_INT_DIGITS 18 /* digits before '.', after '.', after 'e' at most: */
#define GRAM_FRAC_DIGITS 18 /* keeps every integer in int64 and every real finite, */
#define GRAM_EXP_DIGITS 2   /* as jansson (and most JSON parsers) need */
#define GRAM_INF 0x3fffffffu

typedef enum {
    G_ROOT,   /* child: the value; flags & G_WS: a whitespace slot before it */
    G_OBJECT, /* n > 0 or !(flags & G_ANYKEYS): declared props; else keys child2, values child */
    G_ARRAY,  /* child: items; lo/hi: minItems/maxItems */
    G_STRING, /* lo/hi: minLength/maxLength in code points */
    G_NUMBER, /* flags & G_INTEGER: no fraction or exponent */
    G_LITSET, /* list: literal-trie root; cont (>= 0): per literal, the node that follows it */
    G_UNION,  /* list/n: alternatives in idx[], first symbols pairwise disjoint */
    G_SEQ,    /* list/n: items[] */
    G_REPEAT, /* child: item; lo/hi: count; list/n: separator symbols in syms[] */
    G_DFA     /* a byte automaton (common/regex_dfa.h): list/n: its states in dfa_next/dfa_rem (list = start) */
} gram_kind;

enum { G_WS = 1, G_INTEGER = 2, G_ANYKEYS = 4 };

typedef struct gram_node {
    uint8_t kind, flags;
    uint32_t min_len; /* fewest symbols of a complete value */
    uint32_t depth;   /* matcher frames a value needs at most (G_ANY-like nodes: 1) */
    uint32_t lo, hi;  /* kind-specific bounds (hi GRAM_INF = none) */
    int32_t child, child2;
    int32_t list, n;  /* kind-specific index + count into a pool */
    int32_t cont;     /* G_LITSET: index into idx[] of per-literal continuation nodes, or -1 */
    int32_t win;      /* G_OBJECT (declared props): idx[win + i] = key trie after prop i-1 (-1: none) */
    uint32_t head;    /* G_OBJECT: cost after '{' with no property written yet */
    uint8_t first[32];  /* bytes that can start a value */
    uint8_t first_mk;   /* markers that can start a value (bit k) */
} gram_node;

typedef struct gram_prop {
    int32_t node;     /* the value's schema */
    uint32_t key_len; /* bytes of the quoted key */
    uint32_t tail;    /* cost of closing the object once this prop is written: the
                         required props after it (",KEY:VALUE" each) + '}' */
    uint8_t required;
} gram_prop;

/* Literal trie, preorder: children of t are t+1, then lit[c].end, ... < lit[t].end. */
typedef struct gram_lit {
    uint32_t end;
    uint32_t min_rem; /* fewest symbols from here to the end of the value (or, for object
                         keys, to the end of the object) through a literal of this subtree */
    int32_t term;     /* literal id ending here, or -1 */
    uint8_t byte;
} gram_lit;

typedef struct gram_item {
    int32_t node;        /* >= 0: a value; -1: the literal syms[off .. off+len) */
    uint32_t off, len;
    uint32_t suffix;     /* min cost of the items after this one */
} gram_item;

struct cons_grammar {
    gram_node *nodes;
    gram_prop *props;
    gram_lit *lits;
    gram_item *items;
    int32_t *idx;
    uint16_t *syms;
    int32_t *dfa_next;   /* [n_dfa * 256]: the state after a byte (global index), or -1 */
    uint32_t *dfa_rem;   /* [n_dfa]: fewest bytes to an accepting state (0: accepting) */
    int32_t n_nodes, n_props, n_lits, n_items, n_idx, n_syms, n_dfa;
    int32_t cap_nodes, cap_props, cap_lits, cap_items, cap_idx, cap_syms;
    int32_t root;
    uint8_t markers; /* bit k: uses marker k */
};

static inline int gram_first_has(const gram_node *n, int sym) {
    if (sym >= GRAM_SYM_MARKER) return (n->first_mk >> (sym - GRAM_SYM_MARKER)) & 1;
    return (n->first[sym >> 3] >> (sym & 7)) & 1;
}

#endif
