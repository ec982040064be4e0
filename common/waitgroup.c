/* common/waitgroup.c — see waitgroup.h. */
#include "common/waitgroup.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct waitgroup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, refs, ok, failed_index; /* failed_index: the first worker that failed, or -1 */
    char error[512];
    void **results; /* [n] */
};

waitgroup *waitgroup_create(int n) {
    waitgroup *g = n >= 1 ? calloc(1, sizeof *g) : NULL;
    if (!g || !(g->results = calloc((size_t)n, sizeof *g->results))) {
        free(g);
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->n = n;
    g->refs = n + 1; /* every worker and the waiter */
    g->failed_index = -1;
    return g;
}

static void unref_locked(waitgroup *g) { /* unlocks g->mu; frees g with the last reference */
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (!last) return;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->results);
    free(g);
}

void waitgroup_report(waitgroup *g, int i, void *result, const char *error) {
    pthread_mutex_lock(&g->mu);
    if (result) {
        g->results[i] = result;
        g->ok++;
    } else if (g->failed_index < 0) {
        g->failed_index = i;
        snprintf(g->error, sizeof g->error, "%s", error ? error : "failed");
    }
    pthread_cond_broadcast(&g->cv);
    unref_locked(g);
}

int waitgroup_wait(waitgroup *g, int timeout_ms, ms_err *err) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&g->mu);
    int timed_out = 0;
    while (g->ok < g->n && g->failed_index < 0 && !timed_out)
        timed_out = pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT;
    int rc = 0;
    if (g->failed_index >= 0) rc = ms_err_set(err, "worker %d: %s", g->failed_index, g->error);
    else if (g->ok < g->n)
        rc = ms_err_set(err, "%d of %d did not finish within %.1f s", g->n - g->ok, g->n, timeout_ms / 1000.0);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void *waitgroup_result(const waitgroup *g, int i) { return g->results[i]; }

void waitgroup_release(waitgroup *g) {
    pthread_mutex_lock(&g->mu);
    unref_locked(g);
}
