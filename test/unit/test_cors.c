/* test/unit/test_cors.c — server/cors: the origin policy, the preflight's
 * allowed headers, and the startup check of --allowed-origins. The expected
 * values are the CORS rules of server/cors.h, written out by hand. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "server/cors.h"

Test(cors, none_by_default_any_with_star) {
    cr_expect_null(cors_allow_origin(NULL, "https://a.example"), "no policy: no CORS");
    cr_expect_null(cors_allow_origin("", "https://a.example"), "'' turns CORS off");
    cr_expect_str_eq(cors_allow_origin("*", "http://localhost:3000"), "*");
    cr_expect_str_eq(cors_allow_origin("https://b.example,*", "https://a.example"), "*");
    cr_expect_null(cors_allow_origin("*", NULL), "no Origin header: no CORS header");
    cr_expect_null(cors_allow_origin("*", ""));
}

Test(cors, listed_origins_exactly) {
    const char *policy = "https://a.example, http://localhost:3000 ,https://c.example:8443";
    const char *o = "http://localhost:3000";
    cr_expect_eq(cors_allow_origin(policy, o), o, "a listed origin is echoed");
    cr_expect_str_eq(cors_allow_origin(policy, "https://a.example"), "https://a.example");
    cr_expect_str_eq(cors_allow_origin(policy, "https://c.example:8443"), "https://c.example:8443");
    cr_expect_null(cors_allow_origin(policy, "https://a.example.evil"), "no prefix matches");
    cr_expect_null(cors_allow_origin(policy, "https://a.exampl"));
    cr_expect_null(cors_allow_origin(policy, "http://localhost:300"));
    cr_expect_null(cors_allow_origin(policy, "https://c.example"), "the port is part of the origin");
    cr_expect_null(cors_allow_origin("", "https://a.example"), "'' turns CORS off");
    char longo[CORS_MAX_ORIGIN + 2];
    memset(longo, 'a', sizeof longo - 1);
    longo[sizeof longo - 1] = 0;
    cr_expect_null(cors_allow_origin("*", longo), "an over-long Origin is never allowed");
}

Test(cors, preflight_headers) {
    cr_expect_str_eq(cors_allow_headers(NULL), CORS_DEFAULT_HEADERS);
    cr_expect_str_eq(cors_allow_headers(""), CORS_DEFAULT_HEADERS);
    cr_expect_str_eq(cors_allow_headers("authorization,content-type,x-stainless-os"), "authorization,content-type,x-stainless-os");
    cr_expect_str_eq(cors_allow_headers("Authorization, Content-Type"), "Authorization, Content-Type");
    cr_expect_str_eq(cors_allow_headers("a\r\nSet-Cookie: x"), CORS_DEFAULT_HEADERS, "no header injection");
    cr_expect_str_eq(cors_allow_headers("a;b"), CORS_DEFAULT_HEADERS);
    char big[600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_expect_str_eq(cors_allow_headers(big), CORS_DEFAULT_HEADERS);
}

/* Parses arg and expects the normalized policy want. */
static void expect_policy(const char *arg, const char *want) {
    ms_err e = {{0}};
    char *p = NULL;
    cr_assert_eq(cors_policy_parse(arg, &p, &e), 0, "'%s': %s", arg ? arg : "(null)", e.msg);
    cr_expect_str_eq(p, want, "'%s'", arg ? arg : "(null)");
    free(p);
}

Test(cors, policy_parse) {
    expect_policy(NULL, "");
    expect_policy("", "");
    expect_policy("*", "*");
    expect_policy(" https://a.example ,http://localhost:3000", "https://a.example,http://localhost:3000");
    expect_policy("[\"*\"]", "*");
    expect_policy("[\"https://a.example\", \"http://[::1]:8080\"]", "https://a.example,http://[::1]:8080");
    expect_policy("[]", "");
    const char *bad[] = {"a.example", "https://a.example/", "https://a.example/path", "https://", "://x", "https://a b",
                         "https://a.example,", ",https://a.example", "**", "1http://a", "ht tp://a",
                         "[\"https://a,b\"]", "[1]", "[\"x\"]", "[\"*\"", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ms_err e = {{0}};
        char *p = (char *)1;
        cr_expect_eq(cors_policy_parse(bad[i], &p, &e), -1, "accepted '%s'", bad[i]);
        cr_expect_null(p, "'%s': policy left set", bad[i]);
        cr_expect(strstr(e.msg, "--allowed-origins"), "'%s': message '%s'", bad[i], e.msg);
    }
}
