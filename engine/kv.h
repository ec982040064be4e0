/* engine/kv.h — the paged latent KV cache of MLA.
 *
 * Per token and layer MLA caches one compressed latent: kv_lora_rank values
 * (the normalised c_kv) followed by qk_rope_head_dim values (the roped k_pe,
 * shared by all heads) — never per-head K/V. Entries live in pages of
 * KV_PAGE_TOKENS tokens; a page holds that many entries for every layer. A
 * sequence owns a block table (page ids in order); token at position p lives
 * in page table[p / KV_PAGE_TOKENS], slot p % KV_PAGE_TOKENS. Pages are
 * reference-counted so a shared prefix can be reused later.
 *
 * Ownership: the cache owns the page memory (float32, allocated by the backend:
 * host memory on the CPU, device memory on a GPU — only backend ops touch it). A kv_seq owns its block table and holds one reference on each page.
 * Not thread-safe: used by the engine thread only. */
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
    int32_t *free_pages;    /* stack of free page ids */
    int n_free;
} kv_cache;

typedef struct kv_seq {
    int32_t *pages;         /* block table */
    int n_pages, cap_pages;
    int n_tokens;           /* tokens whose entries are written */
} kv_seq;

/* be == NULL allocates with malloc (tests of the page bookkeeping). */
int kv_cache_init(kv_cache *kv, struct backend *be, int n_layers, int kv_lora_rank, int rope_dim, int n_pages,
                  ms_err *err);
void kv_cache_free(kv_cache *kv);

/* Pages needed to hold n tokens. */
static inline int kv_pages_for(int n_tokens) { return (n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS; }

/* Makes seq able to hold n_tokens entries, taking pages from the pool.
 * Fails (seq unchanged) if the pool has too few free pages. */
int kv_seq_reserve(kv_cache *kv, kv_seq *seq, int n_tokens, ms_err *err);
/* Drops seq's references to its pages and empties it. */
void kv_seq_release(kv_cache *kv, kv_seq *seq);

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
