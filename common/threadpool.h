/* common/threadpool.h — a fixed pool of worker threads for data-parallel loops.
 *
 * threadpool_run(pool, n_tasks, fn, ctx) calls fn(ctx, task, thread_index) for
 * task = 0..n_tasks-1 spread over the pool's threads (the caller's thread takes
 * part as thread 0) and returns when all are done. Tasks are claimed with an
 * atomic counter, so uneven tasks balance. One run at a time per pool: the pool
 * is owned by one engine thread. A pool of 1 thread runs everything inline. */
#ifndef MS_THREADPOOL_H
#define MS_THREADPOOL_H

typedef struct threadpool threadpool;
typedef void (*threadpool_fn)(void *ctx, int task, int thread);

/* n_threads <= 0 means one per online CPU. Returns NULL on failure. */
threadpool *threadpool_create(int n_threads);
void threadpool_free(threadpool *pool);
int threadpool_size(const threadpool *pool);
void threadpool_run(threadpool *pool, int n_tasks, threadpool_fn fn, void *ctx);

#endif
