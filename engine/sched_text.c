/* engine/sched_text.c — see sched_text.h. */
#include "engine/sched_text.h"

#include <stdlib.h>
#include <string.h>

int sched_text_init(sched_text *t, const tokenizer *tok, const sched_text_opts *o, ms_err *err) {
    memset(t, 0, sizeof *t);
    detok_init(&t->d, tok, o->skip_special);
    t->include_stop = o->include_stop;
    t->min_tokens = o->min_tokens;
    t->stop = calloc((size_t)(o->n_stop > 0 ? o->n_stop : 1), sizeof *t->stop);
    if (!t->stop) return ms_err_set(err, "out of memory");
    for (int i = 0; i < o->n_stop; i++) {
        if (!o->stop[i] || !*o->stop[i]) continue; /* an empty stop string matches nothing */
        if (!(t->stop[t->n_stop++] = strdup(o->stop[i]))) return ms_err_set(err, "out of memory");
    }
    return 0;
}

void sched_text_free(sched_text *t) {
    if (!t->stop) return; /* never initialised */
    detok_free(&t->d);
    for (int i = 0; i < t->n_stop; i++) free(t->stop[i]);
    free(t->stop);
    free(t->pending);
    memset(t, 0, sizeof *t);
}

static int pending_add(sched_text *t, const char *s, size_t n) {
    if (t->pending_len + n + 1 > t->pending_cap) {
        size_t cap = (t->pending_len + n + 1) * 2;
        char *g = realloc(t->pending, cap);
        if (!g) return -1;
        t->pending = g;
        t->pending_cap = cap;
    }
    memcpy(t->pending + t->pending_len, s, n);
    t->pending_len += n;
    t->pending[t->pending_len] = '\0';
    return 0;
}

/* Removes and returns the first n pending bytes. */
static char *pending_take(sched_text *t, size_t n, size_t *len) {
    char *out = malloc(n + 1);
    if (!out) return NULL;
    memcpy(out, t->pending, n);
    out[n] = '\0';
    memmove(t->pending, t->pending + n, t->pending_len - n);
    t->pending_len -= n;
    if (t->pending) t->pending[t->pending_len] = '\0';
    *len = n;
    return out;
}

/* Earliest match of any stop string in pending, or -1; *end: where the text
 * to emit ends (before the match, or after it with include_stop). */
static long first_stop(const sched_text *t, size_t *end) {
    long best = -1;
    for (int i = 0; i < t->n_stop; i++) {
        const char *hit = memmem(t->pending, t->pending_len, t->stop[i], strlen(t->stop[i]));
        if (hit && (best < 0 || hit - t->pending < best)) {
            best = hit - t->pending;
            *end = (size_t)best + (t->include_stop ? strlen(t->stop[i]) : 0);
        }
    }
    return best;
}

/* Length of the longest suffix of pending that is a proper prefix of a stop string. */
static size_t held_suffix(const sched_text *t) {
    size_t best = 0;
    for (int i = 0; i < t->n_stop; i++) {
        size_t sl = strlen(t->stop[i]);
        size_t max = sl - 1 < t->pending_len ? sl - 1 : t->pending_len;
        for (size_t k = max; k > best; k--)
            if (memcmp(t->pending + t->pending_len - k, t->stop[i], k) == 0) { best = k; break; }
    }
    return best;
}

char *sched_text_push(sched_text *t, int32_t token, size_t *len, int *stopped) {
    *stopped = 0;
    *len = 0;
    size_t n = 0;
    const char *piece = t->stopped ? "" : detok_push(&t->d, token, &n);
    if (!piece || pending_add(t, piece, n) != 0) return NULL;
    if (++t->n_pushed < t->min_tokens) return pending_take(t, t->pending_len, len); /* no stop string yet */
    size_t end = 0;
    if (first_stop(t, &end) >= 0) {
        *stopped = t->stopped = 1;
        char *out = pending_take(t, end, len);
        t->pending_len = 0; /* the stop string and anything after it are dropped */
        return out;
    }
    return pending_take(t, t->pending_len - held_suffix(t), len);
}

char *sched_text_flush(sched_text *t, size_t *len) {
    size_t n = 0;
    const char *rest = t->stopped ? "" : detok_flush(&t->d, &n);
    if (!rest || pending_add(t, rest, n) != 0) return NULL;
    if (t->n_pushed < t->min_tokens) return pending_take(t, t->pending_len, len);
    size_t end = 0; /* the last bytes may complete a stop string */
    return pending_take(t, first_stop(t, &end) >= 0 ? end : t->pending_len, len);
}
