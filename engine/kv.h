/* engine/kv.h — the paged latent KV cache of MLA, with prefix caching.
 *
 * Per token and layer MLA caches one compressed latent: kv_lora_rank values
 * (the normalised c_kv) followed by qk_rope_head_dim values (the roped k_pe,
 * shared by all heads) — never per-head K/V. Entries live in pages of
 * KV_PAGE_TOKENS tokens; a page holds that many entries for every layer. A
 * sequence owns a block table (page ids in order); token at position p lives
 * in page table[p / KV_PAGE_TOKENS], slot p % KV_PAGE_TOKENS.
 *
 * Prefix caching: a full page can be registered under a 64-bit chained hash of
 * all token ids up to its end (its parent page's hash + its own 64 ids); a hit
 * needs the hash and the page's own 64 ids to match. Another
 * sequence whose prompt starts with the same tokens takes a reference on the
 * registered pages instead of recomputing them. Pages are reference-counted; a
 * registered page whose count drops to 0 stays cached (evictable, LRU order)
 * until its memory is needed. Shared pages are full, so nobody writes to them.
 *
 * Ownership: the cache owns the page memory (float32, allocated by the backend:
 * host memory on the CPU, device memory on a GPU — only backend ops touch it)
 * and the bookkeeping. A kv_seq owns its block table and one reference on each
 * of its pages. Not thread-safe: used by the engine thread only. */
#ifndef MS_KV_H
#define MS_KV_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct backend;

#define KV_PAGE_TOKENS 64

typedef struct kv_cache {
    struct backend *be;     /* allocator of data; NULL = malloc */
    int n_layers;
    int kv_lora_rank;       /* latent c_kv values per entry */
    int rope_dim;           /* k_pe values per entry, after the latent */
    int entry_dim;          /* kv_lora_rank + rope_dim */
    int n_pages;
    float *data;            /* [n_pages][n_layers][KV_PAGE_TOKENS][entry_dim] */
    int32_t *refcount;      /* [n_pages] */
    int32_t *free_pages;    /* stack of never-registered free page ids */
    int n_free;
    /* prefix cache */
    int prefix_enabled;
    uint64_t *page_hash;    /* [n_pages] chained hash, valid when registered */
    uint8_t *registered;    /* [n_pages] */
    int32_t *page_ids;      /* [n_pages][KV_PAGE_TOKENS] token ids of registered pages */
    int32_t *bucket;        /* [n_buckets] first page of each hash chain, -1 = empty */
    int32_t *chain;         /* [n_pages] next page in the same bucket */
    int n_buckets;          /* power of two */
    int32_t *lru_prev, *lru_next; /* evictable pages (registered, refcount 0), oldest at head */
    int32_t lru_head, lru_tail;
    int n_evictable;
    uint64_t prefix_queries, prefix_hits; /* tokens looked up / found */
} kv_cache;

typedef struct kv_seq {
    int32_t *pages;         /* block table */
    int n_pages, cap_pages;
    int n_tokens;           /* tokens whose entries are written */
    int n_registered;       /* leading pages registered in (or taken from) the prefix cache */
    uint64_t last_hash;     /* chained hash of page n_registered - 1 */
} kv_seq;

/* be == NULL allocates with malloc (tests of the page bookkeeping). */
int kv_cache_init(kv_cache *kv, struct backend *be, int n_layers, int kv_lora_rank, int rope_dim, int n_pages,
                  ms_err *err);
void kv_cache_free(kv_cache *kv);
void kv_cache_set_prefix_caching(kv_cache *kv, int on);

/* Pages needed to hold n tokens. */
static inline int kv_pages_for(int n_tokens) { return (n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS; }

/* Pages that can be handed out now (free + evictable cached). */
static inline int kv_available(const kv_cache *kv) { return kv->n_free + kv->n_evictable; }

/* Makes seq able to hold n_tokens entries, taking free pages first, then
 * evicting least recently used cached pages. Fails (seq unchanged) if there are
 * too few. */
int kv_seq_reserve(kv_cache *kv, kv_seq *seq, int n_tokens, ms_err *err);
/* Drops seq's references to its pages and empties it. */
void kv_seq_release(kv_cache *kv, kv_seq *seq);

/* For an empty seq: takes the longest run of cached full pages matching
 * tokens[0, max_tokens) (rounded down to whole pages) and returns the number of
 * tokens they hold (seq->n_tokens is set to it). 0 when caching is off. */
int kv_prefix_match(kv_cache *kv, kv_seq *seq, const int32_t *tokens, int max_tokens);
/* Adds one lookup to the counters (prefix_queries: the whole pages of
 * max_tokens; prefix_hits: hit_tokens). Separate from kv_prefix_match so a
 * caller that gives the pages back (admission failed for want of pages, to be
 * retried) counts a prompt once, when it is admitted. */
void kv_prefix_count(kv_cache *kv, int max_tokens, int hit_tokens);
/* Registers seq's full pages covering tokens [0, n_tokens) that are not yet
 * registered (tokens = the ids seq's entries were computed from). */
void kv_prefix_register(kv_cache *kv, kv_seq *seq, const int32_t *tokens, int n_tokens);

/* Entry of `layer` at position pos of seq (pos < reserved capacity). */
static inline float *kv_entry(const kv_cache *kv, const kv_seq *seq, int layer, int pos) {
    int32_t page = seq->pages[pos / KV_PAGE_TOKENS];
    size_t off = (((size_t)page * (size_t)kv->n_layers + (size_t)layer) * KV_PAGE_TOKENS +
                  (size_t)(pos % KV_PAGE_TOKENS)) * (size_t)kv->entry_dim;
    return kv->data + off;
}

/* First entry of a page for one layer: KV_PAGE_TOKENS consecutive entries. */
static inline float *kv_page_layer(const kv_cache *kv, int32_t page, int layer) {
    return kv->data + ((size_t)page * (size_t)kv->n_layers + (size_t)layer) * KV_PAGE_TOKENS * (size_t)kv->entry_dim;
}

#endif
