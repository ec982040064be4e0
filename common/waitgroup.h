/* common/waitgroup.h — waiting for n worker threads whose work can block
 * forever: ncclCommInitRank returns only once every rank of the world has
 * joined, so a rank that failed before joining, or a node that died, would
 * hold the others (and a plain pthread_join) for good.
 *
 * Each worker reports once: a result (success) or an error. The waiter waits
 * until every worker succeeded, one failed, or a deadline passed, whichever
 * comes first. Workers still running when it gives up are left behind (start
 * them detached): the waitgroup is reference counted and lives until the last
 * report, and a result reported after the waiter left is dropped unused (a
 * leak the caller accepts: it is failing anyway, typically on its way out).
 *
 * Thread-safe. A worker that never started must be reported by the waiter
 * (waitgroup_report with an error such as "cannot start a thread"), or its
 * reference keeps the waitgroup alive. */
#ifndef MS_WAITGROUP_H
#define MS_WAITGROUP_H

#include "common/err.h"

typedef struct waitgroup waitgroup;

/* n workers (n >= 1); NULL when out of memory. */
waitgroup *waitgroup_create(int n);

/* Worker i, exactly once: result (non-NULL) on success, or NULL and error.
 * Drops the worker's reference: g may be freed before this returns. */
void waitgroup_report(waitgroup *g, int i, void *result, const char *error);

/* 0 when every worker reported success within timeout_ms; -1 with err when
 * one failed ("worker i: its error", the first to report) or at the deadline
 * ("k of n did not finish within T s"). Call once. */
int waitgroup_wait(waitgroup *g, int timeout_ms, ms_err *err);

/* Worker i's result; valid after waitgroup_wait returned 0. */
void *waitgroup_result(const waitgroup *g, int i);

/* Drops the waiter's reference (after waitgroup_wait and the results). */
void waitgroup_release(waitgroup *g);

#endif
