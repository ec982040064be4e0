/* test/unit/test_waitgroup.c — common/waitgroup.h: all workers succeed; one
 * fails while the others block (the waiter returns at once, naming it); the
 * deadline with workers still blocked; a worker that never started. Blocked
 * workers are released after the waiter gave up, so their late reports run
 * the freeing path (ASan/TSan builds check it). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/waitgroup.h"
#include "test/unit/test_time.h"

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;
static atomic_int finished;
static int values[8];

typedef struct {
    waitgroup *g;
    int i;
    int mode; /* 0: succeed after delay_ms, 1: fail after delay_ms, 2: block until the gate opens, then succeed */
    int delay_ms;
} job;

static void *worker(void *arg) {
    job j = *(job *)arg;
    free(arg);
    if (j.mode == 2) {
        pthread_mutex_lock(&gate_mu);
        while (!gate_open) pthread_cond_wait(&gate_cv, &gate_mu);
        pthread_mutex_unlock(&gate_mu);
    } else {
        sleep_ms(j.delay_ms);
    }
    if (j.mode == 1) waitgroup_report(j.g, j.i, NULL, "device 3 is out of memory");
    else waitgroup_report(j.g, j.i, &values[j.i], NULL);
    atomic_fetch_add(&finished, 1);
    return NULL;
}

static void start(waitgroup *g, int i, int mode, int delay_ms) {
    job *j = malloc(sizeof *j);
    cr_assert(j != NULL);
    *j = (job){g, i, mode, delay_ms};
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, worker, j) == 0);
    pthread_detach(t);
}

/* Each test starts with the gate shut and no worker finished (the TSan shim
 * runs every test in one process). */
static void reset(void) {
    gate_open = 0;
    atomic_store(&finished, 0);
}

static void open_gate_and_wait_for(int n) {
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    for (int k = 0; k < 500 && atomic_load(&finished) < n; k++) sleep_ms(10);
    cr_assert_eq(atomic_load(&finished), n, "the blocked workers did not finish after the gate opened");
}

Test(waitgroup, all_succeed) {
    reset();
    waitgroup *g = waitgroup_create(4);
    cr_assert(g != NULL);
    for (int i = 0; i < 4; i++) start(g, i, 0, 10 * i);
    ms_err err = {{0}};
    cr_assert_eq(waitgroup_wait(g, 10000, &err), 0, "%s", err.msg);
    for (int i = 0; i < 4; i++) cr_expect(waitgroup_result(g, i) == &values[i], "worker %d's result", i);
    waitgroup_release(g);
    open_gate_and_wait_for(4);
}

Test(waitgroup, a_failure_ends_the_wait_while_others_block) {
    reset();
    waitgroup *g = waitgroup_create(3);
    cr_assert(g != NULL);
    start(g, 0, 2, 0);
    start(g, 1, 1, 20);
    start(g, 2, 2, 0);
    ms_err err = {{0}};
    double t0 = now_ms();
    cr_assert_eq(waitgroup_wait(g, 10000, &err), -1);
    double took = now_ms() - t0;
    cr_expect(took < 5000, "the waiter waited %.0f ms for workers that cannot finish", took);
    cr_expect_str_eq(err.msg, "worker 1: device 3 is out of memory");
    waitgroup_release(g);
    open_gate_and_wait_for(3); /* late reports after the waiter left */
}

Test(waitgroup, the_deadline_names_how_many_are_missing) {
    reset();
    waitgroup *g = waitgroup_create(3);
    cr_assert(g != NULL);
    start(g, 0, 0, 0);
    start(g, 1, 2, 0);
    start(g, 2, 2, 0);
    ms_err err = {{0}};
    double t0 = now_ms();
    cr_assert_eq(waitgroup_wait(g, 200, &err), -1);
    double took = now_ms() - t0;
    cr_expect(took >= 190 && took < 5000, "the deadline of 200 ms came after %.0f ms", took);
    cr_expect_str_eq(err.msg, "2 of 3 did not finish within 0.2 s");
    waitgroup_release(g);
    open_gate_and_wait_for(3);
}

Test(waitgroup, a_worker_that_never_started_is_reported_by_the_waiter) {
    reset();
    waitgroup *g = waitgroup_create(2);
    cr_assert(g != NULL);
    start(g, 0, 0, 0);
    waitgroup_report(g, 1, NULL, "cannot start a thread");
    ms_err err = {{0}};
    cr_assert_eq(waitgroup_wait(g, 10000, &err), -1);
    cr_expect_str_eq(err.msg, "worker 1: cannot start a thread");
    waitgroup_release(g);
    open_gate_and_wait_for(1);
}
