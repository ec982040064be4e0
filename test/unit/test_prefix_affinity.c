/* test/unit/test_prefix_affinity.c — the expert-parallel front's memory of
 * where prompt prefixes went (engine/prefix_affinity.h): longest full-page
 * prefix wins, continuations find their prompt, partial pages never count,
 * later prompts overwrite what they share. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "engine/kv.h"
#include "engine/prefix_affinity.h"

#define P KV_PAGE_TOKENS

static void fill(int32_t *t, int n, int32_t base) {
    for (int i = 0; i < n; i++) t[i] = base + i;
}

Test(prefix_affinity, longest_full_page_prefix_wins) {
    prefix_affinity *a = prefix_affinity_create();
    cr_assert(a);
    int32_t A[5 * P], B[5 * P];
    fill(A, 5 * P, 1000);
    int pages = -1;
    cr_expect_eq(prefix_affinity_lookup(a, A, 5 * P, &pages), -1, "empty table");
    cr_expect_eq(pages, 0);

    prefix_affinity_record(a, A, 3 * P + 10, 1); /* 3 full pages */
    cr_expect_eq(prefix_affinity_lookup(a, A, 3 * P + 10, &pages), 1);
    cr_expect_eq(pages, 3);
    cr_expect_eq(prefix_affinity_lookup(a, A, 5 * P, &pages), 1, "a continuation finds its prompt");
    cr_expect_eq(pages, 3);
    cr_expect_eq(prefix_affinity_lookup(a, A, 2 * P + 5, &pages), 1);
    cr_expect_eq(pages, 2);
    cr_expect_eq(prefix_affinity_lookup(a, A, P - 1, &pages), -1, "less than a page never matches");

    /* B shares A's first page only, and goes to rank 0 */
    fill(B, 5 * P, 1000);
    B[P + 3] = 7;
    prefix_affinity_record(a, B, 2 * P, 0);
    cr_expect_eq(prefix_affinity_lookup(a, B, 2 * P, &pages), 0);
    cr_expect_eq(pages, 2);
    cr_expect_eq(prefix_affinity_lookup(a, A, 3 * P, &pages), 1, "A's longer prefix still points to rank 1");
    cr_expect_eq(pages, 3);
    cr_expect_eq(prefix_affinity_lookup(a, A, P, &pages), 0, "the shared first page now points to B's rank");
    cr_expect_eq(pages, 1);

    int32_t C[2 * P];
    fill(C, 2 * P, 1000);
    C[0] = 5; /* differs in its first token: nothing in common */
    cr_expect_eq(prefix_affinity_lookup(a, C, 2 * P, &pages), -1);
    cr_expect_eq(prefix_affinity_lookup(a, A, 0, &pages), -1, "an empty prompt");
    prefix_affinity_free(a);
}

/* Many prompts: each still finds its own rank for its longest prefix unless
 * a later one overwrote the slot (direct-mapped: a hint, not a promise). */
Test(prefix_affinity, many_prompts_mostly_remembered) {
    prefix_affinity *a = prefix_affinity_create();
    enum { N = 200 };
    static int32_t t[N][2 * P];
    for (int i = 0; i < N; i++) {
        fill(t[i], 2 * P, 100000 * (i + 1));
        prefix_affinity_record(a, t[i], 2 * P, i % 7);
    }
    int found = 0, pages;
    for (int i = 0; i < N; i++) {
        int r = prefix_affinity_lookup(a, t[i], 2 * P, &pages);
        cr_assert(r == -1 || r == i % 7, "prompt %d: rank %d", i, r);
        found += r == i % 7;
    }
    cr_expect(found >= N * 9 / 10, "%d of %d prompts remembered in a 4096-slot table", found, N);
    prefix_affinity_free(a);
}
