/* engine/kv.c — see kv.h. */
#include "engine/kv.h"

#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"

static int alloc_bookkeeping(kv_cache *kv, int n_pages) {
    int nb = 1;
    while (nb < 2 * n_pages) nb *= 2;
    kv->n_buckets = nb;
    kv->refcount = calloc((size_t)n_pages, sizeof *kv->refcount);
    kv->free_pages = malloc((size_t)n_pages * sizeof *kv->free_pages);
    kv->page_hash = calloc((size_t)n_pages, sizeof *kv->page_hash);
    kv->registered = calloc((size_t)n_pages, 1);
    kv->page_ids = malloc((size_t)n_pages * KV_PAGE_TOKENS * sizeof *kv->page_ids);
    kv->bucket = malloc((size_t)nb * sizeof *kv->bucket);
    kv->chain = malloc((size_t)n_pages * sizeof *kv->chain);
    kv->lru_prev = malloc((size_t)n_pages * sizeof *kv->lru_prev);
    kv->lru_next = malloc((size_t)n_pages * sizeof *kv->lru_next);
    return kv->refcount && kv->free_pages && kv->page_hash && kv->registered && kv->page_ids && kv->bucket &&
                   kv->chain && kv->lru_prev && kv->lru_next ? 0 : -1;
}

int kv_cache_init(kv_cache *kv, backend *be, int n_layers, int kv_lora_rank, int rope_dim, int n_pages,
                  ms_err *err) {
    memset(kv, 0, sizeof *kv);
    kv->be = be;
    int entry_dim = kv_lora_rank + rope_dim;
    if (n_layers <= 0 || entry_dim <= 0 || n_pages <= 0)
        return ms_err_set(err, "kv cache: layers, entry size and pages must be positive");
    size_t floats = (size_t)n_pages * (size_t)n_layers * KV_PAGE_TOKENS * (size_t)entry_dim;
    kv->data = be ? be->ops->alloc(be, floats * sizeof(float)) : malloc(floats * sizeof(float));
    if (!kv->data || alloc_bookkeeping(kv, n_pages) != 0) {
        kv_cache_free(kv);
        return ms_err_set(err, "kv cache: cannot allocate %zu MiB for %d pages", floats * 4 >> 20, n_pages);
    }
    kv->n_layers = n_layers;
    kv->kv_lora_rank = kv_lora_rank;
    kv->rope_dim = rope_dim;
    kv->entry_dim = entry_dim;
    kv->n_pages = n_pages;
    for (int i = 0; i < n_pages; i++) kv->free_pages[i] = n_pages - 1 - i; /* page 0 handed out first */
    kv->n_free = n_pages;
    for (int i = 0; i < kv->n_buckets; i++) kv->bucket[i] = -1;
    kv->lru_head = kv->lru_tail = -1;
    kv->prefix_enabled = 1;
    return 0;
}

void kv_cache_free(kv_cache *kv) {
    if (kv->be && kv->data) kv->be->ops->free(kv->be, kv->data);
    else free(kv->data);
    free(kv->refcount);
    free(kv->free_pages);
    free(kv->page_hash);
    free(kv->registered);
    free(kv->page_ids);
    free(kv->bucket);
    free(kv->chain);
    free(kv->lru_prev);
    free(kv->lru_next);
    memset(kv, 0, sizeof *kv);
}

/* ---------------------------------------------------------- LRU of evictable pages */

static void lru_push(kv_cache *kv, int32_t p) {
    kv->lru_prev[p] = kv->lru_tail;
    kv->lru_next[p] = -1;
    if (kv->lru_tail >= 0) kv->lru_next[kv->lru_tail] = p; else kv->lru_head = p;
    kv->lru_tail = p;
    kv->n_evictable++;
}

static void lru_remove(kv_cache *kv, int32_t p) {
    if (kv->lru_prev[p] >= 0) kv->lru_next[kv->lru_prev[p]] = kv->lru_next[p]; else kv->lru_head = kv->lru_next[p];
    if (kv->lru_next[p] >= 0) kv->lru_prev[kv->lru_next[p]] = kv->lru_prev[p]; else kv->lru_tail = kv->lru_prev[p];
    kv->n_evictable--;
}

/* ---------------------------------------------------------- hash table */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Hash of a full page given its parent's hash (0 for the first page). */
static uint64_t page_hash_of(uint64_t parent, const int32_t *ids) {
    uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < KV_PAGE_TOKENS; i++) h = mix64(h ^ (uint32_t)ids[i]) + (uint64_t)i;
    return h;
}

static int32_t *bucket_of(kv_cache *kv, uint64_t h) { return &kv->bucket[h & (uint64_t)(kv->n_buckets - 1)]; }

static void unregister(kv_cache *kv, int32_t p) {
    int32_t *link = bucket_of(kv, kv->page_hash[p]);
    while (*link != p) link = &kv->chain[*link];
    *link = kv->chain[p];
    kv->registered[p] = 0;
}

/* A registered page with this hash, parent chain and ids; -1 if none. */
static int32_t lookup(kv_cache *kv, uint64_t h, const int32_t *ids) {
    for (int32_t p = *bucket_of(kv, h); p >= 0; p = kv->chain[p])
        if (kv->page_hash[p] == h && memcmp(&kv->page_ids[(size_t)p * KV_PAGE_TOKENS], ids,
                                            KV_PAGE_TOKENS * sizeof *ids) == 0)
            return p;
    return -1;
}

/* ---------------------------------------------------------- pages */

/* A page with refcount 1: a never-registered free page, else the LRU cached one. */
static int32_t take_page(kv_cache *kv) {
    int32_t p;
    if (kv->n_free) {
        p = kv->free_pages[--kv->n_free];
    } else {
        p = kv->lru_head;
        lru_remove(kv, p);
        unregister(kv, p);
    }
    kv->refcount[p] = 1;
    return p;
}

static int table_grow(kv_seq *seq, int n_pages, ms_err *err) {
    if (n_pages <= seq->cap_pages) return 0;
    int cap = seq->cap_pages ? seq->cap_pages : 4;
    while (cap < n_pages) cap *= 2;
    int32_t *grown = realloc(seq->pages, (size_t)cap * sizeof *grown);
    if (!grown) return ms_err_set(err, "out of memory");
    seq->pages = grown;
    seq->cap_pages = cap;
    return 0;
}

int kv_seq_reserve(kv_cache *kv, kv_seq *seq, int n_tokens, ms_err *err) {
    int need = kv_pages_for(n_tokens) - seq->n_pages;
    if (need <= 0) return 0;
    if (need > kv_available(kv))
        return ms_err_set(err, "kv cache: %d more pages needed, %d available", need, kv_available(kv));
    if (table_grow(seq, seq->n_pages + need, err) != 0) return -1;
    for (int i = 0; i < need; i++) seq->pages[seq->n_pages++] = take_page(kv);
    return 0;
}

void kv_seq_release(kv_cache *kv, kv_seq *seq) {
    for (int i = seq->n_pages - 1; i >= 0; i--) { /* tail pages first: they are evicted first */
        int32_t p = seq->pages[i];
        if (--kv->refcount[p] > 0) continue;
        if (kv->registered[p]) lru_push(kv, p);
        else kv->free_pages[kv->n_free++] = p;
    }
    free(seq->pages);
    memset(seq, 0, sizeof *seq);
}

void kv_cache_set_prefix_caching(kv_cache *kv, int on) { kv->prefix_enabled = on; }

int kv_prefix_match(kv_cache *kv, kv_seq *seq, const int32_t *tokens, int max_tokens) {
    if (!kv->prefix_enabled || seq->n_pages) return 0;
    int full = max_tokens / KV_PAGE_TOKENS;
    uint64_t h = 0;
    for (int i = 0; i < full; i++) {
        const int32_t *ids = tokens + (size_t)i * KV_PAGE_TOKENS;
        uint64_t hi = page_hash_of(h, ids);
        int32_t p = lookup(kv, hi, ids);
        if (p < 0 || table_grow(seq, seq->n_pages + 1, NULL) != 0) break;
        if (kv->refcount[p]++ == 0) lru_remove(kv, p);
        seq->pages[seq->n_pages++] = p;
        seq->n_registered = seq->n_pages;
        seq->last_hash = h = hi;
    }
    seq->n_tokens = seq->n_pages * KV_PAGE_TOKENS;
    return seq->n_tokens;
}

void kv_prefix_count(kv_cache *kv, int max_tokens, int hit_tokens) {
    if (!kv->prefix_enabled) return;
    kv->prefix_queries += (uint64_t)(max_tokens / KV_PAGE_TOKENS * KV_PAGE_TOKENS);
    kv->prefix_hits += (uint64_t)hit_tokens;
}

void kv_prefix_register(kv_cache *kv, kv_seq *seq, const int32_t *tokens, int n_tokens) {
    if (!kv->prefix_enabled) return;
    int full = n_tokens / KV_PAGE_TOKENS;
    if (full > seq->n_pages) full = seq->n_pages;
    for (int i = seq->n_registered; i < full; i++) {
        const int32_t *ids = tokens + (size_t)i * KV_PAGE_TOKENS;
        uint64_t h = page_hash_of(i ? seq->last_hash : 0, ids);
        int32_t p = seq->pages[i];
        if (!kv->registered[p] && lookup(kv, h, ids) < 0) { /* the first computation of a prefix wins */
            kv->page_hash[p] = h;
            memcpy(&kv->page_ids[(size_t)p * KV_PAGE_TOKENS], ids, KV_PAGE_TOKENS * sizeof *ids);
            int32_t *b = bucket_of(kv, h);
            kv->chain[p] = *b;
            *b = p;
            kv->registered[p] = 1;
        }
        seq->last_hash = h;
        seq->n_registered = i + 1;
    }
}
