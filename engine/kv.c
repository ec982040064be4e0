/* engine/kv.c — see kv.h. */
#include "engine/kv.h"

#include "engine/backend.h"

#include <stdlib.h>
#include <string.h>

int kv_cache_init(kv_cache *kv, backend *be, int n_layers, int kv_lora_rank, int rope_dim, int n_pages,
                  ms_err *err) {
    memset(kv, 0, sizeof *kv);
    kv->be = be;
    int entry_dim = kv_lora_rank + rope_dim;
    if (n_layers <= 0 || entry_dim <= 0 || n_pages <= 0)
        return ms_err_set(err, "kv cache: layers, entry size and pages must be positive");
    size_t floats = (size_t)n_pages * (size_t)n_layers * KV_PAGE_TOKENS * (size_t)entry_dim;
    kv->data = be ? be->ops->alloc(be, floats * sizeof(float)) : malloc(floats * sizeof(float));
    kv->refcount = calloc((size_t)n_pages, sizeof *kv->refcount);
    kv->free_pages = malloc((size_t)n_pages * sizeof *kv->free_pages);
    if (!kv->data || !kv->refcount || !kv->free_pages) {
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
    return 0;
}

void kv_cache_free(kv_cache *kv) {
    if (kv->be && kv->data) kv->be->ops->free(kv->be, kv->data);
    else free(kv->data);
    free(kv->refcount);
    free(kv->free_pages);
    memset(kv, 0, sizeof *kv);
}

int kv_seq_reserve(kv_cache *kv, kv_seq *seq, int n_tokens, ms_err *err) {
    int need = kv_pages_for(n_tokens) - seq->n_pages;
    if (need <= 0) return 0;
    if (need > kv->n_free)
        return ms_err_set(err, "kv cache: %d more pages needed, %d free", need, kv->n_free);
    if (seq->n_pages + need > seq->cap_pages) {
        int cap = seq->cap_pages ? seq->cap_pages : 4;
        while (cap < seq->n_pages + need) cap *= 2;
        int32_t *grown = realloc(seq->pages, (size_t)cap * sizeof *grown);
        if (!grown) return ms_err_set(err, "out of memory");
        seq->pages = grown;
        seq->cap_pages = cap;
    }
    for (int i = 0; i < need; i++) {
        int32_t page = kv->free_pages[--kv->n_free];
        kv->refcount[page] = 1;
        seq->pages[seq->n_pages++] = page;
    }
    return 0;
}

void kv_seq_release(kv_cache *kv, kv_seq *seq) {
    for (int i = 0; i < seq->n_pages; i++) {
        int32_t page = seq->pages[i];
        if (--kv->refcount[page] == 0) kv->free_pages[kv->n_free++] = page;
    }
    free(seq->pages);
    memset(seq, 0, sizeof *seq);
}
