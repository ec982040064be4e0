/* test/unit/test_resp_store.c — server/resp_store: stored Responses by id,
 * evicted oldest first by count and by bytes, and safe from many threads.
 *
 * References: the values put (read back equal with json_equal), the limits
 * set (hand-counted evictions), and the byte count as the serialized lengths
 * computed here. */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "server/resp_store.h"

static json_t *obj(const char *k, int v) { return json_pack("{s:i}", k, v); }

static int has(resp_store *s, const char *id) { return resp_store_get(s, id, NULL, NULL, NULL); }

Test(resp_store, put_get_replace_delete) {
    resp_store *s = resp_store_new(8, 1 << 20);
    cr_assert(s);
    json_t *r = obj("r", 1), *h = json_pack("[{s:s}]", "role", "user"), *it = json_pack("[s]", "x");
    cr_assert_eq(resp_store_put(s, "resp_a", r, h, it), 0);
    json_t *gr = NULL, *gh = NULL, *gi = NULL;
    cr_assert_eq(resp_store_get(s, "resp_a", &gr, &gh, &gi), 1);
    cr_expect(json_equal(gr, r) && json_equal(gh, h) && json_equal(gi, it));
    cr_expect(gr != r, "a copy, not the value put");
    json_decref(gr), json_decref(gh), json_decref(gi);
    json_t *r2 = obj("r", 2);
    cr_assert_eq(resp_store_put(s, "resp_a", r2, h, it), 0);
    cr_assert_eq(resp_store_get(s, "resp_a", &gr, NULL, NULL), 1);
    cr_expect(json_equal(gr, r2), "replaced");
    json_decref(gr);
    int n;
    resp_store_usage(s, &n, NULL);
    cr_expect_eq(n, 1);
    cr_expect_eq(has(s, "resp_b"), 0);
    cr_expect_eq(resp_store_delete(s, "resp_a"), 1);
    cr_expect_eq(resp_store_delete(s, "resp_a"), 0);
    cr_expect_eq(has(s, "resp_a"), 0);
    size_t bytes;
    resp_store_usage(s, &n, &bytes);
    cr_expect(n == 0 && bytes == 0, "%d entries, %zu bytes after the delete", n, bytes);
    json_decref(r), json_decref(r2), json_decref(h), json_decref(it);
    resp_store_free(s);
}

Test(resp_store, evicts_oldest_by_count) {
    resp_store *s = resp_store_new(3, 1 << 20);
    json_t *r = obj("r", 0);
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "resp_%d", i);
        cr_assert_eq(resp_store_put(s, id, r, NULL, NULL), 0);
    }
    cr_expect(!has(s, "resp_0") && !has(s, "resp_1"), "the two oldest are gone");
    cr_expect(has(s, "resp_2") && has(s, "resp_3") && has(s, "resp_4"));
    json_t *h = (json_t *)1;
    cr_assert_eq(resp_store_get(s, "resp_4", NULL, &h, NULL), 1);
    cr_expect(json_is_null(h), "history not put: JSON null");
    json_decref(h);
    json_decref(r);
    resp_store_free(s);
}

Test(resp_store, evicts_oldest_by_bytes) {
    /* each entry: id (6) + {"r":0} (7) = 13 bytes; a budget of 30 holds two */
    resp_store *s = resp_store_new(100, 30);
    json_t *r = obj("r", 0);
    cr_assert_eq(resp_store_put(s, "resp_a", r, NULL, NULL), 0);
    cr_assert_eq(resp_store_put(s, "resp_b", r, NULL, NULL), 0);
    size_t bytes;
    resp_store_usage(s, NULL, &bytes);
    cr_expect_eq(bytes, 26);
    cr_assert_eq(resp_store_put(s, "resp_c", r, NULL, NULL), 0);
    cr_expect(!has(s, "resp_a") && has(s, "resp_b") && has(s, "resp_c"));
    json_t *big = json_pack("{s:s}", "text", "this is longer than the whole budget of thirty bytes");
    cr_expect_eq(resp_store_put(s, "resp_big", big, NULL, NULL), -1, "larger than the budget: refused");
    cr_expect(has(s, "resp_b") && has(s, "resp_c"), "and nothing evicted for it");
    json_decref(big), json_decref(r);
    resp_store_free(s);
}

static resp_store *shared;

static void *worker(void *arg) {
    int t = (int)(long)arg;
    json_t *r = obj("t", t);
    char id[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "resp_%d_%d", t, i % 50);
        resp_store_put(shared, id, r, r, NULL);
        json_t *got = NULL;
        if (resp_store_get(shared, id, &got, NULL, NULL)) json_decref(got);
        if (i % 7 == 0) resp_store_delete(shared, id);
    }
    json_decref(r);
    return NULL;
}

Test(resp_store, many_threads) {
    shared = resp_store_new(64, 1 << 20);
    pthread_t th[4];
    for (long t = 0; t < 4; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    int n;
    size_t bytes;
    resp_store_usage(shared, &n, &bytes);
    cr_expect(n <= 64, "%d entries over the limit", n);
    /* the byte count matches the entries left: each is id + 2 x {"t":k} */
    size_t want = 0;
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 50; i++) {
            char id[32];
            snprintf(id, sizeof id, "resp_%d_%d", t, i);
            if (has(shared, id)) want += strlen(id) + 2 * strlen("{\"t\":0}");
        }
    cr_expect_eq(bytes, want);
    resp_store_free(shared);
}
