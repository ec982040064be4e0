/* test/unit/test_kv.c — page bookkeeping of the paged KV cache and its prefix
 * cache (engine/kv.h), on a malloc'd pool. Reference: hand-traced page states. */
#include <criterion/criterion.h>

#include "engine/kv.h"

static int32_t ids[4 * KV_PAGE_TOKENS];

static void fill_ids(int salt) {
    for (int i = 0; i < 4 * KV_PAGE_TOKENS; i++) ids[i] = (i * 7 + salt) % 1000;
}

Test(kv, reserve_and_release_return_every_page) {
    kv_cache kv;
    cr_assert_eq(kv_cache_init(&kv, NULL, 2, 8, 4, 4, NULL), 0);
    kv_seq a = {0}, b = {0};
    cr_expect_eq(kv_seq_reserve(&kv, &a, 130, NULL), 0); /* 3 pages */
    cr_expect_eq(a.n_pages, 3);
    ms_err err = {{0}};
    cr_expect_neq(kv_seq_reserve(&kv, &b, 128, &err), 0, "only one page left");
    cr_expect(strstr(err.msg, "available"), "%s", err.msg);
    cr_expect_eq(b.n_pages, 0, "a failed reserve changes nothing");
    kv_seq_release(&kv, &a);
    cr_expect_eq(kv_available(&kv), 4);
    kv_cache_free(&kv);
}

Test(kv, prefix_pages_are_shared_then_cached_then_evicted) {
    kv_cache kv;
    cr_assert_eq(kv_cache_init(&kv, NULL, 1, 4, 2, 4, NULL), 0);
    fill_ids(1);
    kv_seq a = {0};
    cr_assert_eq(kv_seq_reserve(&kv, &a, 150, NULL), 0);  /* 3 pages, 2 full */
    a.n_tokens = 150;
    kv_prefix_register(&kv, &a, ids, 150);
    cr_expect_eq(a.n_registered, 2);

    kv_seq b = {0};
    cr_expect_eq(kv_prefix_match(&kv, &b, ids, 149), 128, "two full pages shared");
    cr_expect_eq(b.pages[0], a.pages[0]);
    cr_expect_eq(b.pages[1], a.pages[1]);
    cr_expect_eq(kv.refcount[a.pages[0]], 2);

    kv_seq c = {0};
    ids[70] += 1; /* differs in the second page */
    cr_expect_eq(kv_prefix_match(&kv, &c, ids, 149), 64, "only the first page matches");
    ids[70] -= 1;
    kv_seq_release(&kv, &c);

    kv_seq_release(&kv, &a);
    kv_seq_release(&kv, &b);
    cr_expect_eq(kv.n_evictable, 2, "registered pages stay cached");
    cr_expect_eq(kv_available(&kv), 4);

    kv_seq d = {0};
    cr_expect_eq(kv_prefix_match(&kv, &d, ids, 200), 128, "cached pages are found after release");
    kv_seq_release(&kv, &d);

    kv_seq e = {0};
    cr_assert_eq(kv_seq_reserve(&kv, &e, 4 * KV_PAGE_TOKENS, NULL), 0, "eviction makes room");
    cr_expect_eq(kv.n_evictable, 0);
    kv_seq_release(&kv, &e);
    kv_seq f = {0};
    cr_expect_eq(kv_prefix_match(&kv, &f, ids, 200), 0, "evicted pages are gone");
    kv_seq_release(&kv, &f);
    kv_cache_free(&kv);
}

Test(kv, disabled_prefix_cache_matches_nothing) {
    kv_cache kv;
    cr_assert_eq(kv_cache_init(&kv, NULL, 1, 4, 2, 4, NULL), 0);
    kv_cache_set_prefix_caching(&kv, 0);
    fill_ids(2);
    kv_seq a = {0}, b = {0};
    kv_seq_reserve(&kv, &a, 128, NULL);
    kv_prefix_register(&kv, &a, ids, 128);
    cr_expect_eq(kv_prefix_match(&kv, &b, ids, 200), 0);
    kv_seq_release(&kv, &a);
    kv_seq_release(&kv, &b);
    cr_expect_eq(kv.n_free, 4);
    kv_cache_free(&kv);
}
