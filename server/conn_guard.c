/* server/conn_guard.c — see conn_guard.h. A flat array of watched
 * connections (at most --max-connections, so linear scans are cheap) and one
 * reaper thread waking twice a second. */
#include "server/conn_guard.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define REAP_PERIOD_NS 500000000L

typedef struct watched {
    const void *key;
    int fd;
    int waiting_head;  /* 1 while the request head is not complete */
    double deadline_s;
} watched;

struct conn_guard {
    int timeout_s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int stopping;
    watched *w;
    int n, cap;
    unsigned long reaped;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int find(const conn_guard *g, const void *key) {
    for (int i = 0; i < g->n; i++)
        if (g->w[i].key == key) return i;
    return -1;
}

static void reap_expired(conn_guard *g) {
    double t = now_s();
    for (int i = 0; i < g->n; i++)
        if (g->w[i].waiting_head && t > g->w[i].deadline_s) {
            shutdown(g->w[i].fd, SHUT_RDWR); /* MHD sees EOF and closes it; closed() removes it */
            g->w[i].waiting_head = 0;
            g->reaped++;
        }
}

static void *reaper(void *arg) {
    conn_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += REAP_PERIOD_NS;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        reap_expired(g);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

conn_guard *conn_guard_start(int header_timeout_s) {
    conn_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->timeout_s = header_timeout_s;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (g->timeout_s > 0 && pthread_create(&g->thread, NULL, reaper, g) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return NULL;
    }
    return g;
}

void conn_guard_stop(conn_guard *g) {
    if (!g) return;
    if (g->timeout_s > 0) {
        pthread_mutex_lock(&g->mu);
        g->stopping = 1;
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->thread, NULL);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->w);
    free(g);
}

void conn_guard_opened(conn_guard *g, const void *key, int fd) {
    if (!g || g->timeout_s <= 0 || fd < 0) return;
    pthread_mutex_lock(&g->mu);
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 64;
        watched *w = realloc(g->w, (size_t)cap * sizeof *w);
        if (w) g->w = w, g->cap = cap;
    }
    if (g->n < g->cap) g->w[g->n++] = (watched){key, fd, 1, now_s() + g->timeout_s}; /* out of memory: unguarded */
    pthread_mutex_unlock(&g->mu);
}

static void set_waiting(conn_guard *g, const void *key, int waiting) {
    if (!g || g->timeout_s <= 0) return;
    pthread_mutex_lock(&g->mu);
    int i = find(g, key);
    if (i >= 0) g->w[i].waiting_head = waiting, g->w[i].deadline_s = now_s() + g->timeout_s;
    pthread_mutex_unlock(&g->mu);
}

void conn_guard_headers_done(conn_guard *g, const void *key) { set_waiting(g, key, 0); }
void conn_guard_rearm(conn_guard *g, const void *key) { set_waiting(g, key, 1); }

void conn_guard_closed(conn_guard *g, const void *key) {
    if (!g || g->timeout_s <= 0) return;
    pthread_mutex_lock(&g->mu);
    int i = find(g, key);
    if (i >= 0) g->w[i] = g->w[--g->n];
    pthread_mutex_unlock(&g->mu);
}

unsigned long conn_guard_reaped(conn_guard *g) {
    if (!g) return 0;
    pthread_mutex_lock(&g->mu);
    unsigned long n = g->reaped;
    pthread_mutex_unlock(&g->mu);
    return n;
}
