/* common/threadpool.c — see threadpool.h.
 *
 * Decode issues hundreds of small runs per token, a few microseconds apart, so
 * the synchronisation is built for latency:
 *  - Workers spin on the run state for a while (SPIN_ROUNDS pause loops, about
 *    a millisecond) after each run before sleeping on a condition variable; the
 *    caller signals only when some worker is asleep.
 *  - A worker takes part in a run only if it *joins* it before the caller
 *    closes it. The caller closes the run as soon as it finds no task left to
 *    claim and then waits only for the workers that joined. A worker that was
 *    preempted (a busy machine) or asleep therefore never holds a run up: the
 *    caller does its share, and the late worker sees the run closed and goes
 *    back to waiting.
 *
 * The run state is one 64-bit atomic: generation (high 32 bits), a closed bit
 * and the number of workers that joined (low 31 bits). Joining is a CAS that
 * fails once the run is closed or a newer one has started, so the joined count
 * the caller reads when closing is final. Run fields (fn, ctx, n_tasks,
 * next_task, done) are written by the caller before it publishes the new
 * generation and are only touched by joined workers.
 *
 * Lost-wakeup freedom: a sleeping worker increments `sleepers` and re-reads the
 * state under the mutex before waiting; the caller publishes the state before
 * reading `sleepers` (both sequentially consistent), so either the worker sees
 * the new run or the caller sees the sleeper and broadcasts under the mutex. */
#include "common/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Pause loops a worker spins for a new run before sleeping (~1 ms on x86). */
#define SPIN_ROUNDS 20000
/* Pause loops the caller spins for joined workers before it starts yielding. */
#define WAIT_ROUNDS 4000

#define ST_GEN(s) ((uint32_t)((s) >> 32))
#define ST_CLOSED ((uint64_t)1 << 31)
#define ST_JOINED(s) ((int)((s) & 0x7fffffffu))

struct threadpool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    _Atomic uint64_t state; /* generation << 32 | closed << 31 | joined */
    atomic_int stopping;
    atomic_int sleepers;    /* workers blocked (or about to block) on `wake` */
    atomic_int done;        /* joined workers finished with the current run */
    threadpool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;
};

typedef struct { threadpool *pool; int index; } worker_arg;

static void run_tasks(threadpool *p, int thread) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, thread);
    }
}

/* Waits for a generation other than `seen` (or stop); returns the state seen. */
static uint64_t wait_run(threadpool *p, uint32_t seen) {
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
        if (ST_GEN(s) != seen || atomic_load_explicit(&p->stopping, memory_order_relaxed)) return s;
        CPU_RELAX();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    uint64_t s;
    while (ST_GEN(s = atomic_load(&p->state)) == seen && !atomic_load(&p->stopping))
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return s;
}

static void *worker_main(void *arg) {
    worker_arg a = *(worker_arg *)arg;
    free(arg);
    threadpool *p = a.pool;
    uint32_t seen = 0;
    for (;;) {
        uint64_t s = wait_run(p, seen);
        if (atomic_load(&p->stopping)) break;
        seen = ST_GEN(s);
        /* join unless the run is closed (or already superseded) */
        int joined = 0;
        while (ST_GEN(s) == seen && !(s & ST_CLOSED))
            if (atomic_compare_exchange_weak(&p->state, &s, s + 1)) { joined = 1; break; }
        if (!joined) continue;
        run_tasks(p, a.index);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
    return NULL;
}

threadpool *threadpool_create(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    threadpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) { threadpool_free(p); return NULL; }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) { p->n_threads = i; threadpool_free(p); return NULL; }
        a->pool = p;
        a->index = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, a) != 0) {
            free(a);
            p->n_threads = i;
            threadpool_free(p);
            return NULL;
        }
    }
    return p;
}

void threadpool_free(threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, 1);
    atomic_fetch_add(&p->state, (uint64_t)1 << 32);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads && p->threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    free(p->threads);
    free(p);
}

int threadpool_size(const threadpool *p) { return p ? p->n_threads : 1; }

void threadpool_run(threadpool *p, int n_tasks, threadpool_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    const uint32_t gen = ST_GEN(atomic_load(&p->state)) + 1;
    atomic_store(&p->state, (uint64_t)gen << 32); /* open, nobody joined; publishes the fields */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, 0);
    const int joined = ST_JOINED(atomic_fetch_or(&p->state, ST_CLOSED));
    for (int i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < joined; i++) {
        if (i < WAIT_ROUNDS) CPU_RELAX();
        else sched_yield();
    }
}
