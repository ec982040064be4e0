/* test/tsan/criterion/criterion.h — a tiny in-process stand-in for Criterion,
 * used only to run Criterion test files under ThreadSanitizer.
 *
 * Why: Criterion cannot start under TSan (its inheritable arena cannot be
 * mapped inside TSan's address layout: "Could not initialize inheritable
 * arena: Resource temporarily unavailable", Snaipe/Criterion#274, open), and
 * it forks one worker per test, which TSan does not support after threads
 * exist. `make sanitize` compiles the same test/unit/test_*.c with
 * -Itest/tsan, so <criterion/criterion.h> resolves here, and links no
 * Criterion: every Test() registers itself (constructor) and main() runs them
 * one after another in this one process, where TSan sees every thread.
 *
 * Supported subset (a file using anything else fails to compile, on purpose):
 * Test(suite, name, .timeout = ...) (the timeout is ignored: TSan runs are
 * bounded by the caller), cr_assert / cr_expect (+ _eq, _null, _str_eq,
 * _float_eq), cr_skip_test, cr_log_error. A failed cr_assert ends the whole
 * run (exit 1, from any thread); a failed cr_expect marks the test failed and
 * goes on. Usage: BIN [--filter GLOB] [--exclude GLOB]... on "suite/name".
 * Not thread-safe to register tests after main() starts (nobody does). */
#ifndef MS_TSAN_CRITERION_SHIM_H
#define MS_TSAN_CRITERION_SHIM_H

#include <fnmatch.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct shim_test {
    const char *suite, *name;
    void (*fn)(void);
    double timeout;  /* accepted for source compatibility, ignored */
    int disabled;
};

#define SHIM_MAX_TESTS 512
static const struct shim_test *shim_tests[SHIM_MAX_TESTS];
static int shim_n_tests;
static int shim_failed;      /* the current test had a failed expectation */
static jmp_buf shim_skip_jmp;

static inline void shim_register(const struct shim_test *t) {
    if (shim_n_tests == SHIM_MAX_TESTS) { fprintf(stderr, "tsan shim: too many tests\n"); exit(2); }
    shim_tests[shim_n_tests++] = t;
}

#define Test(Suite, Name, ...)                                                              \
    static void Suite##_##Name##_impl(void);                                                \
    static const struct shim_test Suite##_##Name##_desc = {                                 \
        .suite = #Suite, .name = #Name, .fn = Suite##_##Name##_impl, __VA_ARGS__};          \
    __attribute__((constructor)) static void Suite##_##Name##_register(void) {              \
        shim_register(&Suite##_##Name##_desc);                                              \
    }                                                                                       \
    static void Suite##_##Name##_impl(void)

/* Reports a failed check; fatal ones end the run (from whichever thread). */
static inline void shim_fail(int fatal, const char *file, int line, const char *expr, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: %s failed: %s\n  ", file, line, fatal ? "assertion" : "expectation", expr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (fatal) {
        fprintf(stderr, "tsan shim: FAILED (fatal assertion)\n");
        fflush(stderr);
        exit(1);
    }
    __atomic_store_n(&shim_failed, 1, __ATOMIC_SEQ_CST);
}

/* The message format is optional, as in Criterion: " " + an absent one is " ". */
#define SHIM_CHECK(fatal, cond, expr, ...)                                                  \
    do {                                                                                    \
        if (!(cond)) shim_fail(fatal, __FILE__, __LINE__, expr, " " __VA_ARGS__);           \
    } while (0)

#define cr_assert(cond, ...) SHIM_CHECK(1, cond, #cond, __VA_ARGS__)
#define cr_expect(cond, ...) SHIM_CHECK(0, cond, #cond, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) SHIM_CHECK(1, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) SHIM_CHECK(0, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_null(a, ...) SHIM_CHECK(1, (a) == NULL, #a " == NULL", __VA_ARGS__)
#define cr_expect_null(a, ...) SHIM_CHECK(0, (a) == NULL, #a " == NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) SHIM_CHECK(1, strcmp((a), (b)) == 0, #a " == " #b, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) SHIM_CHECK(0, strcmp((a), (b)) == 0, #a " == " #b, __VA_ARGS__)
#define cr_assert_float_eq(a, b, eps, ...) \
    SHIM_CHECK(1, fabs((double)(a) - (double)(b)) <= (double)(eps), #a " ~= " #b, __VA_ARGS__)
#define cr_expect_float_eq(a, b, eps, ...) \
    SHIM_CHECK(0, fabs((double)(a) - (double)(b)) <= (double)(eps), #a " ~= " #b, __VA_ARGS__)
#define cr_log_error(...) (fprintf(stderr, "[ERR ] " __VA_ARGS__), fprintf(stderr, "\n"))
#define cr_log_info(...) (fprintf(stderr, "[----] " __VA_ARGS__), fprintf(stderr, "\n"))
#define cr_skip_test(...) (fprintf(stderr, "[SKIP] " __VA_ARGS__), fprintf(stderr, "\n"), longjmp(shim_skip_jmp, 1))

static inline int shim_selected(const struct shim_test *t, int argc, char **argv) {
    char id[256];
    snprintf(id, sizeof id, "%s/%s", t->suite, t->name);
    int keep = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--filter") == 0 && fnmatch(argv[i + 1], id, 0) != 0) keep = 0;
        else if (strcmp(argv[i], "--exclude") == 0 && fnmatch(argv[i + 1], id, 0) == 0) keep = 0;
    }
    return keep && !t->disabled;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i += 2)
        if ((strcmp(argv[i], "--filter") != 0 && strcmp(argv[i], "--exclude") != 0) || i + 1 >= argc) {
            fprintf(stderr, "usage: %s [--filter GLOB] [--exclude GLOB]...   (GLOB on suite/name)\n", argv[0]);
            return 2;
        }
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < shim_n_tests; i++) {
        const struct shim_test *t = shim_tests[i];
        if (!shim_selected(t, argc, argv)) continue;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        shim_failed = 0;
        int was_skipped = setjmp(shim_skip_jmp) != 0;
        if (!was_skipped) t->fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        const char *verdict = was_skipped ? "SKIP" : shim_failed ? "FAIL" : "PASS";
        fprintf(stderr, "[%s] %s::%s: (%.2fs)\n", verdict, t->suite, t->name, s);
        if (was_skipped) skipped++;
        else if (shim_failed) failed++;
        else passed++;
    }
    fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Skipped: %d\n", passed + failed,
            passed, failed, skipped);
    return failed ? 1 : 0;
}

#endif
