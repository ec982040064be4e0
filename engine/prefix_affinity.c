/* engine/prefix_affinity.c — see prefix_affinity.h. */
#include "engine/prefix_affinity.h"

#include <pthread.h>
#include <stdlib.h>

#include "engine/kv.h"

#define SLOTS 4096 /* prompt pages remembered at most (~262k tokens) */

struct prefix_affinity {
    pthread_mutex_t mu;
    uint64_t key[SLOTS]; /* hash of a prefix | 1; 0: empty */
    int32_t rank[SLOTS];
};

prefix_affinity *prefix_affinity_create(void) {
    prefix_affinity *a = calloc(1, sizeof *a);
    if (a) pthread_mutex_init(&a->mu, NULL);
    return a;
}

void prefix_affinity_free(prefix_affinity *a) {
    if (!a) return;
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* FNV-1a over page p's token ids, continuing h (the hash of the pages before). */
static uint64_t hash_page(uint64_t h, const int32_t *tokens, int p) {
    for (int i = p * KV_PAGE_TOKENS; i < (p + 1) * KV_PAGE_TOKENS; i++) {
        uint32_t t = (uint32_t)tokens[i];
        for (int b = 0; b < 4; b++) {
            h ^= (t >> (8 * b)) & 0xffu;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ull

/* The slot of key k: FNV's low bits mix poorly, so they are mixed first
 * (the 64-bit finalizer of MurmurHash3). */
static unsigned slot_of(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return (unsigned)(k % SLOTS);
}

int prefix_affinity_lookup(prefix_affinity *a, const int32_t *tokens, int n, int *pages) {
    int found = -1;
    *pages = 0;
    uint64_t h = FNV_OFFSET;
    pthread_mutex_lock(&a->mu);
    for (int p = 0; p < n / KV_PAGE_TOKENS; p++) {
        h = hash_page(h, tokens, p);
        const uint64_t k = h | 1;
        const unsigned i = slot_of(k);
        if (a->key[i] == k) {
            found = a->rank[i];
            *pages = p + 1;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return found;
}

void prefix_affinity_record(prefix_affinity *a, const int32_t *tokens, int n, int rank) {
    uint64_t h = FNV_OFFSET;
    pthread_mutex_lock(&a->mu);
    for (int p = 0; p < n / KV_PAGE_TOKENS; p++) {
        h = hash_page(h, tokens, p);
        const unsigned i = slot_of(h | 1);
        a->key[i] = h | 1;
        a->rank[i] = rank;
    }
    pthread_mutex_unlock(&a->mu);
}
