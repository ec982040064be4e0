/* server/resp_store.c — see resp_store.h.
 *
 * A chained hash table on the id for lookups and a doubly-linked list in
 * insertion order for eviction (oldest at the head). */
#include "server/resp_store.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *id;
    char *response, *history, *items; /* JSON texts */
    size_t bytes;
    struct entry *next_in_bucket;
    struct entry *older, *newer;
} entry;

struct resp_store {
    pthread_mutex_t mu;
    entry **buckets;
    size_t n_buckets;
    entry *oldest, *newest;
    int n, max_entries;
    size_t bytes, max_bytes;
};

static uint64_t hash_id(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

resp_store *resp_store_new(int max_entries, size_t max_bytes) {
    resp_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->max_entries = max_entries > 0 ? max_entries : 1;
    s->max_bytes = max_bytes;
    s->n_buckets = (size_t)s->max_entries * 2 + 1;
    s->buckets = calloc(s->n_buckets, sizeof *s->buckets);
    if (!s->buckets) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void entry_free(entry *e) {
    free(e->id), free(e->response), free(e->history), free(e->items);
    free(e);
}

void resp_store_free(resp_store *s) {
    if (!s) return;
    for (entry *e = s->oldest, *next; e; e = next) next = e->newer, entry_free(e);
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static entry **slot_of(resp_store *s, const char *id) {
    entry **p = &s->buckets[hash_id(id) % s->n_buckets];
    while (*p && strcmp((*p)->id, id)) p = &(*p)->next_in_bucket;
    return p;
}

/* Unlinks *slot's entry from the table and the age list, and frees it. */
static void remove_at(resp_store *s, entry **slot) {
    entry *e = *slot;
    *slot = e->next_in_bucket;
    if (e->older) e->older->newer = e->newer;
    else s->oldest = e->newer;
    if (e->newer) e->newer->older = e->older;
    else s->newest = e->older;
    s->n--;
    s->bytes -= e->bytes;
    entry_free(e);
}

static char *dump(const json_t *v) { return v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) : NULL; }

static size_t len_or_0(const char *s) { return s ? strlen(s) : 0; }

int resp_store_put(resp_store *s, const char *id, const json_t *response, const json_t *history, const json_t *items) {
    entry *e = calloc(1, sizeof *e);
    if (!e) return -1;
    e->id = strdup(id);
    e->response = dump(response), e->history = dump(history), e->items = dump(items);
    e->bytes = strlen(id) + len_or_0(e->response) + len_or_0(e->history) + len_or_0(e->items);
    if (!e->id || (response && !e->response) || (history && !e->history) || (items && !e->items) ||
        e->bytes > s->max_bytes) {
        entry_free(e);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    entry **slot = slot_of(s, id);
    if (*slot) remove_at(s, slot);
    while (s->oldest && (s->n >= s->max_entries || s->bytes + e->bytes > s->max_bytes))
        remove_at(s, slot_of(s, s->oldest->id));
    slot = slot_of(s, id); /* the chain may have changed */
    *slot = e;
    e->older = s->newest;
    if (s->newest) s->newest->newer = e;
    else s->oldest = e;
    s->newest = e;
    s->n++;
    s->bytes += e->bytes;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static json_t *load(const char *text) { return text ? json_loads(text, JSON_DECODE_ANY, NULL) : json_null(); }

int resp_store_get(resp_store *s, const char *id, json_t **response, json_t **history, json_t **items) {
    pthread_mutex_lock(&s->mu);
    entry *e = *slot_of(s, id);
    /* parsing under the lock keeps the texts alive; they are small next to a generation */
    if (e) {
        if (response) *response = load(e->response);
        if (history) *history = load(e->history);
        if (items) *items = load(e->items);
    }
    pthread_mutex_unlock(&s->mu);
    return e != NULL;
}

int resp_store_delete(resp_store *s, const char *id) {
    pthread_mutex_lock(&s->mu);
    entry **slot = slot_of(s, id);
    int found = *slot != NULL;
    if (found) remove_at(s, slot);
    pthread_mutex_unlock(&s->mu);
    return found;
}

void resp_store_usage(resp_store *s, int *entries, size_t *bytes) {
    pthread_mutex_lock(&s->mu);
    if (entries) *entries = s->n;
    if (bytes) *bytes = s->bytes;
    pthread_mutex_unlock(&s->mu);
}
