/* common/constrain.h — grammar-constrained decoding by token masking: OpenAI
 * response_format json_object / json_schema and forced tool calls.
 *
 * Three objects:
 *   cons_vocab   per tokenizer: a byte trie over every token's bytes plus bitmaps
 *                for the common cases. Immutable; shared by all requests and threads.
 *   cons_grammar a compiled JSON Schema (common/json_schema.c) or tool-call format.
 *                Immutable; shareable.
 *   cons_state   one request's position in the grammar; used by one thread at a time.
 * Per decoding step the engine calls cons_mask (before sampling) and cons_accept
 * (with the sampled token).
 *
 * Guarantees. Every token cons_mask leaves allowed keeps the output a prefix of a
 * valid document: valid UTF-8, JSON that jansson parses (control characters never
 * raw in strings, \u escapes with proper surrogate pairs and no \u0000, numbers
 * with at most 18 integer / 18 fraction / 2 exponent digits), matching the schema.
 * EOS is allowed exactly when the document is complete; then nothing else is,
 * except where the value itself may go on (a top-level number: "1" -> "12").
 * Closing: the state knows the exact minimal number of tokens that completes the
 * document (cons_min_tokens; every byte has a token). A token is allowed only if
 * the minimum after it still fits in tokens_left - 1 with one token to spare for
 * EOS. So if tokens_left >= cons_min_tokens(initial state) + 1 at the first step
 * (and the caller passes tokens_left = budget - tokens generated), the document
 * is complete and EOS allowed within the budget, whatever the model prefers. With
 * a smaller budget the mask still only allows tokens that shorten the minimum.
 *
 * Tokens: special tokens (tokenizer_is_special) are never allowed except EOS; the
 * five tool-call markers are allowed only as markers of the tool-call grammar (and
 * never inside JSON); every other token counts as its bytes. Ids in
 * [tokenizer_vocab_size, n_logits) are always masked.
 *
 * Cost: cons_mask is a DFS over the token trie that prunes a prefix as soon as
 * the grammar rejects it; inside strings (most tokens allowed) and before
 * "</think>" the plain tokens are decided by precomputed bitmaps and only tokens
 * holding a quote, backslash, control byte (or '<') are walked. See
 * bench/bench_constrain.c for numbers. cons_accept is O(token bytes). */
#ifndef MS_CONSTRAIN_H
#define MS_CONSTRAIN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/tokenizer.h"

typedef struct cons_vocab cons_vocab;
typedef struct cons_grammar cons_grammar;
typedef struct cons_state cons_state;

/* Builds the token trie of tok (copied: tok may be freed afterwards). eos_id is the
 * end-of-sequence token; n_logits >= 1 is the model's vocab size (ids >= the
 * tokenizer's vocabulary are always masked). Fails if some byte value has no
 * single-byte token (completion could not be guaranteed). ~0.1 s, ~10 MB. */
cons_vocab *cons_vocab_create(const tokenizer *tok, int32_t eos_id, int32_t n_logits, ms_err *err);
void cons_vocab_free(cons_vocab *v);

/* A grammar for one JSON value matching schema (not retained; NULL: any JSON
 * object, i.e. response_format json_object). Supported keywords: type (one or a
 * list), properties, required, additionalProperties, enum, const, items,
 * prefixItems (and draft 4's array form of items, with additionalItems; written
 * as exactly its items), minItems, maxItems, minLength, maxLength, pattern
 * (common/regex_dfa.h's syntax; a search, as JSON Schema says; matches needing
 * '"', '\' or control characters are not produced; with minLength/maxLength
 * too), minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf
 * (exactly: every decimal of up to 18 + 18 digits in range can be written, no
 * exponents), anyOf / oneOf (when the alternatives start with different
 * characters, e.g. string | null or object | array), allOf (its parts merged
 * into one schema; parts that disagree are an error), $ref to "#",
 * "#/$defs/..." or "#/definitions/...". A recursive $ref (a tree, a linked
 * list) is expanded as often as the limits allow — at most 16 times on one
 * path, within the matcher's frames and the grammar's size — and where it
 * cannot be expanded again the value is written without it (the other anyOf
 * alternative, an optional property left out, an empty array); a schema whose
 * every value recurses forever is an error. format is enforced for date,
 * time, date-time, uuid, ipv4, email, hostname and uri (as patterns; others
 * are ignored). Ignored: title, description, default, examples, $schema, $id,
 * $comment, $defs, definitions, readOnly, writeOnly, deprecated, strict and
 * "x-..." keys. Any other keyword gives NULL with err "json_schema keyword
 * 'uniqueItems' is not supported".
 * Objects with declared properties emit them in declared order, required ones
 * always, optional ones when the model chooses, and no other keys (also when
 * additionalProperties is true or absent: the output is still valid).
 * {"type":"object"} alone is any object; additionalProperties given as a schema
 * without properties is any keys with values of that schema. propertyNames (a
 * schema of strings) limits such a map's keys, and leaves out a declared
 * property whose name it refuses (a required one: no value). maxProperties
 * caps a map's pairs; minProperties 1 makes a map, or an object of optional
 * properties, write at least one. Other counts are errors: minProperties above
 * 1 on a map (the grammar does not keep a map's keys distinct — a model may
 * repeat a key, which parsers read as one), above the required count on
 * declared properties, or maxProperties below their number. Whitespace: at most
 * 32 bytes of " \t\n\r" before the value and around each ':' ',' '{' '}' '['
 * ']'; none after the value. Nesting deeper than 32 matcher frames is rejected
 * (for schema-less values, "{" and "[" are refused beyond that depth). */
cons_grammar *cons_grammar_json(const json_t *schema, ms_err *err);

/* The tool-call format a chat template teaches its model. */
typedef enum {
    CONS_TOOLS_V3,  /* DeepSeek-V3 / R1 */
    CONS_TOOLS_V31, /* DeepSeek-V3.1 */
} cons_tool_format;

/* A forced tool call (markers are the added tokens). CONS_TOOLS_V3:
 *   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
 *   [ \n<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜> ]...
 *   <｜tool▁calls▁end｜>
 * CONS_TOOLS_V31:
 *   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>
 *   [ <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜> ]...
 *   <｜tool▁calls▁end｜>
 * NAME is one of names[0..n_tools) (non-empty, no newline, distinct) and ARGS the
 * JSON (no surrounding whitespace) matching that tool's params[i] (NULL: any
 * object). parallel = 1 allows one or more calls, 0 exactly one. */
cons_grammar *cons_grammar_tool_calls(const char *const *names, const json_t *const *params, int n_tools,
                                      int parallel, cons_tool_format format, ms_err *err);
/* A grammar for exactly one of n >= 1 texts, written raw (not as JSON strings):
 * vLLM's guided_choice. Each choice is 1..1024 bytes of valid UTF-8 without NUL;
 * duplicates are refused. A choice that prefixes another may end where it ends
 * (EOS allowed there) or go on. NULL with err naming the choice at fault. */
cons_grammar *cons_grammar_choice(const char *const *choices, int n, ms_err *err);
/* A grammar for raw text matching pattern as a whole (vLLM's guided_regex,
 * Python's fullmatch; common/regex_dfa.h's syntax). NULL with err ("regex: ...")
 * when the pattern is refused. */
cons_grammar *cons_grammar_regex(const char *pattern, ms_err *err);
void cons_grammar_free(cons_grammar *g);

/* A request's state; g and v must outlive it. after_think: the grammar starts only
 * after the literal "</think>" (any text, any non-special token before it; the rest
 * of a token completing "</think>" must be accepted by the grammar). NULL with err
 * if the grammar needs a tool-call marker the tokenizer lacks. */
cons_state *cons_state_create(const cons_grammar *g, const cons_vocab *v, int after_think, ms_err *err);
void cons_state_free(cons_state *st);

/* Sets logits[i] = -INFINITY for every i in [0, n_logits) that may not come next;
 * tokens_left = how many more tokens may be generated, this one included. Returns
 * how many tokens stay allowed (>= 1 until EOS has been accepted, then 0). With
 * tokens_left too small to complete, only tokens that shorten the minimum remain. */
int cons_mask(cons_state *st, float *logits, int tokens_left);

/* Advances the state by token. Returns 0, or -1 (state unchanged) if the grammar
 * does not allow the token next (the tokens_left rule of cons_mask is not applied). */
int cons_accept(cons_state *st, int32_t token);

/* 1 once the document is complete (EOS allowed). */
int cons_is_complete(const cons_state *st);

/* Fewest tokens that complete the document from here (0 when complete), EOS not
 * counted: a request needs max_tokens >= cons_min_tokens(new state) + 1. */
int cons_min_tokens(const cons_state *st);

/* 1 if cons_mask(st, ..., tokens_left) would allow token (the reference the mask's
 * fast paths are tested against; O(token bytes), no side effects). */
int cons_token_allowed(const cons_state *st, int32_t token, int tokens_left);

/* 1 if value validates against schema (the supported subset above; for schema
 * NULL: value is an object). Else 0 with a reason and a JSON path in why
 * (may be NULL). Keywords the compiler would reject are checked only as far as
 * this validator knows them (it never says 1 for an unknown keyword: it says 0). */
int cons_json_validate(const json_t *schema, const json_t *value, char *why, size_t why_len);

#endif
