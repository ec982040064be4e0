/* server/resp_store.h — the stored Responses (`store: true`, the Responses
 * API's default): what `previous_response_id`, `GET /v1/responses/{id}`,
 * `GET /v1/responses/{id}/input_items` and `DELETE /v1/responses/{id}` read.
 *
 * In memory, in this process only (behind a load balancer, a follow-up must
 * reach the same replica, or the client sends the whole conversation), bounded
 * by a count and a byte budget: the oldest entries are evicted first. Each
 * entry keeps three JSON texts — the Response object, the conversation it
 * ended (chat messages, for previous_response_id) and its input items — so
 * what a reader gets is its own copy (jansson values are never shared across
 * threads).
 *
 * Who calls it: server/http.c from any HTTP worker thread. Thread-safe (one
 * mutex; every call is O(1) expected plus the JSON copies). */
#ifndef MS_RESP_STORE_H
#define MS_RESP_STORE_H

#include <jansson.h>
#include <stddef.h>

typedef struct resp_store resp_store;

#define RESP_STORE_DEFAULT_ENTRIES 1024
#define RESP_STORE_DEFAULT_BYTES ((size_t)256 << 20)

/* max_entries >= 1; max_bytes: the stored JSON texts' total at most (an entry
 * larger than it alone is not stored). NULL when out of memory. */
resp_store *resp_store_new(int max_entries, size_t max_bytes);
void resp_store_free(resp_store *s);

/* Stores (or replaces) id's entry; the values are serialized, not kept.
 * 0, or -1 (out of memory, or the entry is larger than the budget). */
int resp_store_put(resp_store *s, const char *id, const json_t *response, const json_t *history, const json_t *items);

/* 1 with new references in the non-NULL out pointers, 0 when id is not stored. */
int resp_store_get(resp_store *s, const char *id, json_t **response, json_t **history, json_t **items);

/* 1 if id was stored (and now is not), else 0. */
int resp_store_delete(resp_store *s, const char *id);

/* Entries and bytes held (for /metrics and the tests). */
void resp_store_usage(resp_store *s, int *entries, size_t *bytes);

#endif
