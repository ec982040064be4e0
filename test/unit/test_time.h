/* test/unit/test_time.h — wall-clock helpers shared by the unit tests that
 * bound or provoke waits: a monotonic clock in milliseconds and a sleep. */
#ifndef MS_TEST_TIME_H
#define MS_TEST_TIME_H

#include <time.h>

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#endif
