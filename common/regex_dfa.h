/* common/regex_dfa.h — regular expressions compiled to byte-level DFAs, for
 * constrained decoding: JSON Schema "pattern" and "format", integer and number
 * bounds, vLLM's guided_regex (common/json_schema.c puts the automaton in a
 * grammar node; common/constrain.c runs it).
 *
 * Syntax (the common subset of ECMAScript and Python): literal characters
 * (UTF-8), '.', classes [...] with ranges and '^' negation, the escapes \d \D \w
 * \W \s \S \t \n \r \f \v \0 \xHH \uHHHH (surrogate pairs joined) \u{H...} and
 * escaped punctuation; groups (...) and (?:...); '|'; the quantifiers * + ?
 * {n} {n,} {n,m} (at most 1000; a lazy '?' after one is accepted: the language
 * is the same); '^' at the start and '$' at the end of a top-level
 * alternative. Everything else — backreferences, lookaround, \b, named groups,
 * inline flags, anchors elsewhere — is an error naming it.
 *
 * Semantics. RDFA_SEARCH (JSON Schema's "pattern"): an alternative without '^'
 * may have any text before it, without '$' any text after it. Otherwise the
 * whole input must match (vLLM's guided_regex, Python's fullmatch). The
 * automaton reads UTF-8 and accepts only valid UTF-8 (a '.' or a negated class
 * is any code point except those excluded; surrogates never). RDFA_JSON_TEXT:
 * the bytes JSON must escape inside a string — '"', '\\' and 0x00-0x1F — are
 * never read, so the automaton accepts exactly the matches without them (the
 * text then goes into a JSON string as it is).
 *
 * The result has no dead states: every transition leads to a state from which
 * an accepting state is reachable, and rem[s] is the fewest bytes from s to
 * acceptance (0: accepting) — the exact costs the constraint matcher needs.
 *
 * Who calls it: common/json_schema.c (grammar compilation, validation), the
 * tests. Pure; thread-safe. */
#ifndef MS_REGEX_DFA_H
#define MS_REGEX_DFA_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define RDFA_MAX_STATES 4096   /* DFA states at most (each is a 1 KiB transition row) */
#define RDFA_MAX_PATTERN 4096  /* pattern bytes at most */

enum { RDFA_SEARCH = 1, RDFA_JSON_TEXT = 2 };

typedef struct rdfa {
    int n;          /* states; 0 is the start */
    int32_t *next;  /* [n * 256]: the state after byte b, or -1 */
    uint32_t *rem;  /* [n]: fewest bytes to an accepting state; 0 = accepting */
} rdfa;

/* Compiles pattern (NUL-terminated UTF-8). 0, or -1 with err ("regex: ...";
 * also when nothing can match, e.g. every match needs a '"' under
 * RDFA_JSON_TEXT). */
int rdfa_compile(const char *pattern, int flags, rdfa *out, ms_err *err);

/* The JSON integers in [lo, hi] (no leading zeros, "-" for negatives, at most 18
 * digits: lo and hi are clamped to +-(10^18 - 1)). 0, or -1 with err (empty range). */
int rdfa_int_range(int64_t lo, int64_t hi, rdfa *out, ms_err *err);

/* JSON numbers within bounds (has_lo/has_hi: the bound is there; *_excl:
 * exclusive), written with up to 18 digits before and 18 after the point and
 * no exponent: exactly those whose decimal value lies within the bounds, an
 * exclusive bound first moved to the next double inward (so that a client that
 * reads the number as a double sees it within the bounds too). 0, or -1 with
 * err when none is. */
int rdfa_number_range(int has_lo, double lo, int lo_excl, int has_hi, double hi, int hi_excl, rdfa *out, ms_err *err);

/* The JSON numbers that are multiples of m * 10^-p (m >= 1, 0 <= p <= 9):
 * integers whose value times 10^p is divisible by m, and when fraction is set
 * also decimals with 1..p fraction digits (no exponent) whose digits, read as an
 * integer scaled to p places, are. Sound and complete for those spellings.
 * 0, or -1 with err (m * (p + 2) over the state limit). */
int rdfa_multiple_of(uint32_t m, int p, int fraction, rdfa *out, ms_err *err);

/* Replaces d by the automaton of the texts both d and e accept. 0, or -1 with
 * err (too many states, or nothing left: d is then unchanged). */
int rdfa_intersect(rdfa *d, const rdfa *e, ms_err *err);

/* Intersects d with a length of lo..hi code points (hi UINT32_MAX: none); d is
 * replaced. 0, or -1 with err (too many states, or nothing left). */
int rdfa_limit_length(rdfa *d, uint32_t lo, uint32_t hi, ms_err *err);

/* 1 if d accepts the n bytes of s. */
int rdfa_match(const rdfa *d, const char *s, size_t n);

void rdfa_free(rdfa *d);

#endif
