/* test/unit/test_regex_dfa.c — common/regex_dfa: patterns to DFAs, integer and
 * number ranges, length limits.
 *
 * References: hand-written match / no-match lists; glibc's POSIX regex engine
 * (regcomp REG_EXTENDED, an independent implementation) on random ASCII
 * patterns and strings; integer arithmetic for the ranges (every number in
 * and around them, and random ones); the costs against a breadth-first search
 * written here. */
#include <criterion/criterion.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/regex_dfa.h"

static int matches(const rdfa *d, const char *s) { return rdfa_match(d, s, strlen(s)); }

static void expect_lang(const char *pattern, int flags, const char *const *yes, const char *const *no) {
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_compile(pattern, flags, &d, &e), 0, "%s: %s", pattern, e.msg);
    for (; yes && *yes; yes++) cr_expect(matches(&d, *yes), "%s should match '%s'", pattern, *yes);
    for (; no && *no; no++) cr_expect(!matches(&d, *no), "%s should not match '%s'", pattern, *no);
    rdfa_free(&d);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(regex_dfa, full_match_basics) {
    expect_lang("abc", 0, L("abc"), L("", "ab", "abcd", "xabc"));
    expect_lang("a|bc|", 0, L("a", "bc", ""), L("b", "abc"));
    expect_lang("[a-c]+x?", 0, L("a", "cab", "cabx"), L("", "x", "dx", "abxx"));
    expect_lang("\\d{3}-\\d{4}", 0, L("555-1234"), L("5555-1234", "55-1234", "555-123a"));
    expect_lang("a{2,3}", 0, L("aa", "aaa"), L("a", "aaaa"));
    expect_lang("a{2,}", 0, L("aa", "aaaaaaa"), L("a", ""));
    expect_lang("a{0}b", 0, L("b"), L("ab"));
    expect_lang("(?:ab)*c", 0, L("c", "abc", "ababc"), L("ac", "abab"));
    expect_lang("[^abc]", 0, L("d", "é", "中", "\n"), L("a", "", "dd"));
    expect_lang(".", 0, L("a", "é", "😀"), L("\n", "\r", "", "ab"));
    expect_lang("[\\w.-]+@x\\.org", 0, L("a.b-c_1@x.org"), L("a b@x.org", "@x.org", "a@xxorg"));
    expect_lang("\\s\\S", 0, L(" a", "\ta"), L("  ", "ab"));
    expect_lang("\\u00e9\\x41\\u{1F600}", 0, L("éA😀"), L("eA😀"));
    expect_lang("\\ud83d\\ude00", 0, L("😀"), L("\xed\xa0\xbd\xed\xb8\x80"));
    expect_lang("[é-ë]", 0, L("é", "ê", "ë"), L("e", "ì"));
    expect_lang("a{,2}", 0, L("a{,2}"), L("aa")); /* not a quantifier: literal braces (as ECMAScript and Python) */
    expect_lang("x*?y+?", 0, L("y", "xxyy"), L("x"));
    expect_lang("[]a]", 0, L("]", "a"), L("b"));
    expect_lang("\\.\\*\\(\\)\\[\\]\\{\\}\\|\\?\\+\\^\\$\\\\\\/", 0, L(".*()[]{}|?+^$\\/"), L("a"));
}

Test(regex_dfa, search_semantics_and_anchors) {
    expect_lang("abc", RDFA_SEARCH, L("abc", "xxabcyy", "abcabc"), L("ab", "acb"));
    expect_lang("^abc", RDFA_SEARCH, L("abc", "abcyy"), L("xabc"));
    expect_lang("abc$", RDFA_SEARCH, L("abc", "xxabc"), L("abcx"));
    expect_lang("^a$|^b", RDFA_SEARCH, L("a", "b", "bzz"), L("az", "zb"));
    expect_lang("^$", RDFA_SEARCH, L(""), L("a"));
    expect_lang("^[0-9]{4}-[0-9]{2}$", RDFA_SEARCH, L("2024-01"), L("2024-1", "x2024-01"));
}

Test(regex_dfa, json_text_drops_escaped_characters) {
    expect_lang(".*", RDFA_JSON_TEXT, L("", "a b", "é"), L("a\"b", "a\\b", "a\nb", "\x01"));
    expect_lang("[^x]+", RDFA_JSON_TEXT | RDFA_SEARCH, L("ab"), L("\"", "\\"));
    rdfa d;
    ms_err e = {{0}};
    cr_expect_eq(rdfa_compile("^\"a\"$", RDFA_JSON_TEXT | RDFA_SEARCH, &d, &e), -1, "every match needs a quote");
    cr_expect(strstr(e.msg, "nothing can match"), "%s", e.msg);
}

Test(regex_dfa, errors_name_the_construct) {
    static const char *const bad[][2] = {
        {"(a", "without ')'"},          {"a)", "without '('"},        {"\\1", "backreferences"},
        {"(?=a)", "(?...)"},            {"(?<n>a)", "(?...)"},        {"a**", "nothing to repeat"},
        {"*a", "nothing to repeat"},    {"[z-a]", "backwards"},       {"a{5,2}", "m < n"},
        {"a\\b", "word boundaries"},    {"a^b", "'^'"},               {"a$b", "'$'"},
        {"(^a)", "'^'"},                {"[a", "without ']'"},        {"a{1001}", "above 1000"},
        {"\\q", "\\q"},                 {"\\x4", "two hex digits"},   {"a\\", "ends with"},
        {"(a{1000}){1000}", "too large"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rdfa d;
        ms_err e = {{0}};
        cr_expect_eq(rdfa_compile(bad[i][0], 0, &d, &e), -1, "accepted: %s", bad[i][0]);
        cr_expect(strstr(e.msg, bad[i][1]), "%s: '%s' lacks '%s'", bad[i][0], e.msg, bad[i][1]);
    }
    rdfa d;
    ms_err e = {{0}};
    cr_expect_eq(rdfa_compile("(a|b)*a(a|b){14}", 0, &d, &e), -1, "2^15 states");
    cr_expect(strstr(e.msg, "too complex"), "%s", e.msg);
}

/* rem[s] against a BFS from s written here; no transition leads to a dead state. */
static void check_costs(const rdfa *d) {
    int *dist = malloc((size_t)d->n * sizeof *dist), *q = malloc((size_t)d->n * sizeof *q);
    for (int s = 0; s < d->n; s++) {
        for (int i = 0; i < d->n; i++) dist[i] = -1;
        int h = 0, t = 0, found = -1;
        dist[s] = 0, q[t++] = s;
        while (h < t && found < 0) {
            int u = q[h++];
            if (d->rem[u] == 0) found = dist[u];
            for (int c = 0; c < 256; c++) {
                int v = d->next[u * 256 + c];
                if (v >= 0 && dist[v] < 0) dist[v] = dist[u] + 1, q[t++] = v;
            }
        }
        cr_expect_eq((int)d->rem[s], found, "state %d: rem %u, BFS %d", s, d->rem[s], found);
    }
    free(dist), free(q);
}

Test(regex_dfa, costs_are_exact) {
    const char *pats[] = {"abc", "[a-z]{3,5}@(x|yy)\\.com", ".{2}é", "(ab|cde)+f?", "\\u{10FFFF}|z"};
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++) {
        rdfa d;
        ms_err e = {{0}};
        cr_assert_eq(rdfa_compile(pats[i], 0, &d, &e), 0, "%s", e.msg);
        check_costs(&d);
        rdfa_free(&d);
    }
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_compile("abc", 0, &d, &e), 0);
    cr_expect_eq(d.rem[0], 3);
    rdfa_free(&d);
    cr_assert_eq(rdfa_compile("😀", 0, &d, &e), 0);
    cr_expect_eq(d.rem[0], 4, "four UTF-8 bytes");
    rdfa_free(&d);
}

/* ---- against glibc's POSIX engine ---- */

static unsigned rng_state = 12345;
static unsigned rnd(unsigned n) {
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

/* A random ERE over {a,b,c} that both engines read the same way. */
static void random_regex(char *out, size_t cap, int depth) {
    size_t len = strlen(out);
    int k = (int)rnd(depth > 3 ? 3 : 7);
    const char *piece;
    char buf[64];
    switch (k) {
    case 0: piece = (const char *[]){"a", "b", "c"}[rnd(3)]; break;
    case 1: piece = (const char *[]){"[ab]", "[^a]", "[a-c]", "."}[rnd(4)]; break;
    case 2: piece = "a"; break;
    case 3: { /* group with alternation */
        char inner1[256] = "", inner2[256] = "";
        random_regex(inner1, sizeof inner1, depth + 1);
        random_regex(inner2, sizeof inner2, depth + 1);
        snprintf(buf, sizeof buf, "(%.25s|%.25s)", inner1, inner2);
        piece = buf;
        break;
    }
    case 4: { /* quantified group */
        char inner[256] = "";
        random_regex(inner, sizeof inner, depth + 1);
        static const char *const q[] = {"*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}"};
        snprintf(buf, sizeof buf, "(%.40s)%s", inner, q[rnd(7)]);
        piece = buf;
        break;
    }
    default: { /* concatenation */
        char a[256] = "", b[256] = "";
        random_regex(a, sizeof a, depth + 1);
        random_regex(b, sizeof b, depth + 1);
        snprintf(buf, sizeof buf, "%.30s%.30s", a, b);
        piece = buf;
        break;
    }
    }
    snprintf(out + len, cap - len, "%s", piece);
}

/* search: the unanchored pattern under RDFA_SEARCH against regexec's search. */
static void compare_with_posix(int search, int rounds) {
    int compared = 0;
    for (int round = 0; round < rounds; round++) {
        char pat[256] = "";
        random_regex(pat, sizeof pat, 0);
        char posix[300];
        snprintf(posix, sizeof posix, search ? "(%s)" : "^(%s)$", pat);
        regex_t re;
        if (regcomp(&re, posix, REG_EXTENDED | REG_NOSUB)) continue;
        rdfa d;
        ms_err e = {{0}};
        if (rdfa_compile(pat, search ? RDFA_SEARCH : 0, &d, &e) != 0) {
            cr_expect(strstr(e.msg, "too complex") != NULL, "%s: %s", pat, e.msg);
            regfree(&re);
            continue;
        }
        for (int t = 0; t < 100; t++) {
            char s[12];
            int n = (int)rnd(9);
            for (int i = 0; i < n; i++) s[i] = "abcd"[rnd(4)];
            s[n] = 0;
            int want = regexec(&re, s, 0, NULL, 0) == 0;
            cr_expect_eq(matches(&d, s), want, "pattern %s (%s), text '%s': posix %d", pat, search ? "search" : "full",
                         s, want);
            compared++;
        }
        if (round % 10 == 0) check_costs(&d);
        rdfa_free(&d);
        regfree(&re);
    }
    cr_expect_gt(compared, rounds * 50);
}

Test(regex_dfa, agrees_with_posix_regex) {
    compare_with_posix(0, 2000);
    compare_with_posix(1, 2000);
}

/* ---- ranges ---- */

static void check_int_range(long long lo, long long hi) {
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_int_range(lo, hi, &d, &e), 0, "[%lld, %lld]: %s", lo, hi, e.msg);
    for (long long v = lo - 120; v <= hi + 120; v++) {
        if (v > lo + 300 && v < hi - 300) v = hi - 300; /* the edges, not the whole middle */
        char s[32];
        snprintf(s, sizeof s, "%lld", v);
        cr_expect_eq(matches(&d, s), v >= lo && v <= hi, "[%lld, %lld] on %s", lo, hi, s);
    }
    for (int i = 0; i < 2000; i++) { /* random values in range */
        long long span = hi - lo + 1, v = lo + (long long)(((unsigned long long)rnd(1u << 30) << 30 | rnd(1u << 30)) % (unsigned long long)span);
        char s[32];
        snprintf(s, sizeof s, "%lld", v);
        cr_expect(matches(&d, s), "[%lld, %lld] on %s", lo, hi, s);
    }
    cr_expect(!matches(&d, "-0") && !matches(&d, "007") && !matches(&d, "+1") && !matches(&d, ""));
    check_costs(&d);
    rdfa_free(&d);
}

Test(regex_dfa, integer_ranges) {
    check_int_range(0, 0);
    check_int_range(0, 150);
    check_int_range(1, 9);
    check_int_range(7, 1234);
    check_int_range(-50, 50);
    check_int_range(-1234, -7);
    check_int_range(100, 100099);
    check_int_range(-999999999999999999LL, 999999999999999999LL);
    check_int_range(18, 999999999999999999LL);
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_int_range(0, 999999999999999999LL, &d, &e), 0);
    cr_expect(!matches(&d, "1000000000000000000"), "19 digits");
    rdfa_free(&d);
    cr_expect_eq(rdfa_int_range(5, 4, &d, &e), -1);
}

/* Exactly the numbers in the bounds are accepted, on random integers and
 * decimals of 1..4 fraction digits (whose doubles compare as their decimals
 * do); a negative zero ("-0.0") only need not be. */
static void check_number_range(int has_lo, double lo, int lo_excl, int has_hi, double hi, int hi_excl) {
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_number_range(has_lo, lo, lo_excl, has_hi, hi, hi_excl, &d, &e), 0, "%s", e.msg);
    int accepted = 0;
    for (int i = 0; i < 20000; i++) {
        char s[48];
        long long k = (long long)rnd(400) - 200;
        if (rnd(2)) snprintf(s, sizeof s, "%lld", k);
        else snprintf(s, sizeof s, "%s%lld.%0*u", k < 0 || (k == 0 && rnd(2)) ? "-" : "", k < 0 ? -k : k, (int)(1 + rnd(4)), rnd(10000) % (unsigned[]){10, 100, 1000, 10000}[rnd(4)]);
        double v = strtod(s, NULL);
        int ok = (!has_lo || (lo_excl ? v > lo : v >= lo)) && (!has_hi || (hi_excl ? v < hi : v <= hi));
        int m = matches(&d, s);
        accepted += m;
        if (s[0] == '-' && v == 0) cr_expect(!m || ok, "accepted %s outside the bounds", s);
        else cr_expect_eq(m, ok, "%s: accepted %d, in the bounds %d", s, m, ok);
    }
    cr_expect_gt(accepted, 0);
    check_costs(&d);
    rdfa_free(&d);
}

static void expect_numbers(int has_lo, double lo, int lo_excl, int has_hi, double hi, int hi_excl, const char *const *yes,
                           const char *const *no) {
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_number_range(has_lo, lo, lo_excl, has_hi, hi, hi_excl, &d, &e), 0, "%s", e.msg);
    for (int i = 0; yes && yes[i]; i++) cr_expect(matches(&d, yes[i]), "[%g, %g]: %s refused", lo, hi, yes[i]);
    for (int i = 0; no && no[i]; i++) cr_expect(!matches(&d, no[i]), "[%g, %g]: %s accepted", lo, hi, no[i]);
    rdfa_free(&d);
}

Test(regex_dfa, number_ranges) {
    check_number_range(1, 0, 0, 1, 1, 0);
    check_number_range(1, 0, 1, 0, 0, 0);
    check_number_range(1, -10.5, 0, 1, 3.25, 1);
    check_number_range(0, 0, 0, 1, -2, 0);
    check_number_range(1, -0.5, 0, 1, 0.5, 0);
    check_number_range(1, 0.2, 0, 1, 0.8, 0);
    check_number_range(1, -100, 1, 1, -99, 1);
    check_number_range(1, -1.375, 1, 1, 150.05, 0);
    check_number_range(1, 17.0625, 0, 1, 17.5, 1);
    check_number_range(0, 0, 0, 1, 0.001, 0);
    expect_numbers(1, 0.2, 0, 1, 0.8, 0, L("0.2", "0.5", "0.8", "0.80000", "0.799999999999999999"), L("0.19999", "0.81", "1", "0", "-0.5", "0.7999999999999999999"));
    /* exclusive: also the doubles of what is written stay inside */
    expect_numbers(1, 0.1, 1, 1, 0.3, 1, L("0.2", "0.2999999999999999", "0.10000000000000002"),
                   L("0.3", "0.29999999999999999", "0.1", "0.10000000000000000001"));
    expect_numbers(1, 0, 1, 0, 0, 0, L("0.000000000000000001", "1", "123456789012345678.5"), L("0", "0.0", "-0.1", "-0"));
    expect_numbers(1, 1e17, 0, 0, 0, 0, L("100000000000000000", "999999999999999999.999"), L("99999999999999999.9", "1e17"));
    expect_numbers(0, 0, 0, 1, 1e-300, 0, L("0", "-5", "0.000"), L("0.000000000000000001"));
    expect_numbers(1, -2.5e-5, 0, 1, 2.5e-5, 0, L("0.000025", "-0.000025", "0.0000249", "0"), L("0.0000251", "-0.00003"));
    rdfa d;
    ms_err e = {{0}};
    cr_expect_eq(rdfa_number_range(1, 5, 0, 1, 4, 0, &d, &e), -1, "empty");
    cr_expect_eq(rdfa_number_range(1, 1, 1, 1, 1, 1, &d, &e), -1, "(1, 1)");
    cr_expect_eq(rdfa_number_range(1, 1e18, 0, 0, 0, 0, &d, &e), -1, "beyond 18 digits");
    cr_expect(strstr(e.msg, "no number"), "%s", e.msg);
}

Test(regex_dfa, length_limits) {
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_compile("[a-zé]*", 0, &d, &e), 0);
    cr_assert_eq(rdfa_limit_length(&d, 2, 4, &e), 0, "%s", e.msg);
    expect_lang("[a-z]*", 0, L("", "a"), NULL); /* unchanged source */
    cr_expect(!matches(&d, "a") && matches(&d, "ab") && matches(&d, "éé") && matches(&d, "abcd") && !matches(&d, "abcde"));
    check_costs(&d);
    rdfa_free(&d);
    cr_assert_eq(rdfa_compile("[ab]*", 0, &d, &e), 0);
    cr_assert_eq(rdfa_limit_length(&d, 3, UINT32_MAX, &e), 0, "%s", e.msg);
    cr_expect(!matches(&d, "ab") && matches(&d, "abb") && matches(&d, "abababab"));
    cr_expect_eq(d.rem[0], 3);
    rdfa_free(&d);
    cr_assert_eq(rdfa_compile("abc", 0, &d, &e), 0);
    cr_expect_eq(rdfa_limit_length(&d, 4, 9, &e), -1, "nothing of length 4..9");
    rdfa_free(&d);
}

/* Multiples of m * 10^-p against integer arithmetic on random spellings: a number
 * with f fraction digits (0 <= f <= p; integers only without fraction) is
 * accepted exactly when its digits, scaled to p places, are divisible by m. */
static void check_multiple(uint32_t m, int p, int fraction) {
    rdfa d;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_multiple_of(m, p, fraction, &d, &e), 0, "m %u p %d: %s", m, p, e.msg);
    int accepted = 0;
    for (int i = 0; i < 4000; i++) {
        char s[48];
        unsigned long long ip = rnd(3) ? rnd(2000) : rnd(1u << 30), fr = 0;
        int f = rnd(3) ? 0 : 1 + (int)rnd((unsigned)p + 2);
        int n = snprintf(s, sizeof s, "%s%llu", rnd(4) ? "" : "-", ip);
        if (f) {
            unsigned long long ten_f = 1;
            for (int k = 0; k < f; k++) ten_f *= 10;
            fr = rnd(1000000000u) % ten_f;
            snprintf(s + n, sizeof s - (size_t)n, ".%0*llu", f, fr);
        }
        unsigned long long scaled = ip, frs = fr;
        for (int k = 0; k < p; k++) scaled = scaled * 10 % m;
        for (int k = f; k < p; k++) frs = frs * 10 % m; /* the fraction scaled to p places */
        int want = (f == 0 || (fraction && f <= p)) && (scaled + frs) % m == 0;
        cr_expect_eq(matches(&d, s), want, "m %u p %d fraction %d on %s", m, p, fraction, s);
        accepted += want;
    }
    cr_expect_gt(accepted, 0, "m %u p %d: some accepted", m, p);
    cr_expect(matches(&d, "0") && !matches(&d, "") && !matches(&d, "01") && !matches(&d, "1.") && !matches(&d, "+0"));
    check_costs(&d);
    rdfa_free(&d);
}

Test(regex_dfa, multiples) {
    check_multiple(1, 0, 0);
    check_multiple(7, 0, 0);
    check_multiple(12, 0, 1);
    check_multiple(1, 2, 1);  /* 0.01 */
    check_multiple(5, 2, 1);  /* 0.05 */
    check_multiple(25, 1, 1); /* 2.5 */
    check_multiple(5, 1, 0);  /* integers that are multiples of 0.5: all */
    check_multiple(3, 4, 0);  /* integers, multiples of 0.0003: multiples of 3 */
    check_multiple(797, 3, 1);
    rdfa d;
    ms_err e = {{0}};
    cr_expect_eq(rdfa_multiple_of(5000, 0, 0, &d, &e), -1, "over the state limit");
    cr_expect(strstr(e.msg, "states"), "%s", e.msg);
    cr_expect_eq(rdfa_multiple_of(0, 0, 0, &d, &e), -1);
}

/* The intersection accepts what both accept: integer ranges with multiples. */
Test(regex_dfa, intersections) {
    rdfa d, m;
    ms_err e = {{0}};
    cr_assert_eq(rdfa_int_range(-100, 250, &d, &e), 0);
    cr_assert_eq(rdfa_multiple_of(7, 0, 0, &m, &e), 0);
    cr_assert_eq(rdfa_intersect(&d, &m, &e), 0, "%s", e.msg);
    for (long long v = -400; v <= 400; v++) {
        char s[32];
        snprintf(s, sizeof s, "%lld", v);
        cr_expect_eq(matches(&d, s), v >= -100 && v <= 250 && v % 7 == 0, "%s", s);
    }
    check_costs(&d);
    rdfa_free(&d);
    cr_assert_eq(rdfa_int_range(1, 6, &d, &e), 0);
    cr_expect_eq(rdfa_intersect(&d, &m, &e), -1, "no multiple of 7 in [1, 6]");
    cr_expect(matches(&d, "3"), "d unchanged on failure");
    rdfa_free(&d);
    rdfa_free(&m);
    cr_assert_eq(rdfa_compile("[a-c]+", 0, &d, &e), 0);
    cr_assert_eq(rdfa_compile("(ab)*a?", 0, &m, &e), 0);
    cr_assert_eq(rdfa_intersect(&d, &m, &e), 0, "%s", e.msg);
    cr_expect(matches(&d, "aba") && matches(&d, "a") && !matches(&d, "") && !matches(&d, "abb") && !matches(&d, "c"));
    check_costs(&d);
    rdfa_free(&d);
    rdfa_free(&m);
}
