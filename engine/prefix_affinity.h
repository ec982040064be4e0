/* engine/prefix_affinity.h — where the expert-parallel front sent earlier
 * prompts, so that a prompt continuing one of them (the next turn of a chat,
 * an agent's growing context) can go to the same data-parallel rank, whose
 * prefix cache may still hold its pages (engine/kv.h). Each rank has its own
 * KV pool, so without this a continuation lands on another rank about
 * (n_ranks - 1) / n_ranks of the time and is computed again in full.
 *
 * A direct-mapped table: the hash of each full-page prefix of a prompt
 * (KV_PAGE_TOKENS tokens per page) -> the rank it went to. A collision or a
 * later prompt overwrites an entry, and a rank may have evicted the pages
 * since, so an answer is a hint: it only steers the choice of rank, never what
 * a request computes. Thread-safe (one mutex). */
#ifndef MS_PREFIX_AFFINITY_H
#define MS_PREFIX_AFFINITY_H

#include <stdint.h>

typedef struct prefix_affinity prefix_affinity;

/* NULL when out of memory. */
prefix_affinity *prefix_affinity_create(void);
void prefix_affinity_free(prefix_affinity *a);

/* The rank recorded for the longest full-page prefix of tokens[0, n) in the
 * table, with its length in pages in *pages; -1 (and *pages = 0) if none. */
int prefix_affinity_lookup(prefix_affinity *a, const int32_t *tokens, int n, int *pages);

/* Records every full-page prefix of tokens[0, n) as sent to rank. */
void prefix_affinity_record(prefix_affinity *a, const int32_t *tokens, int n, int rank);

#endif
