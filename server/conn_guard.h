/* server/conn_guard.h — a deadline for receiving a request head.
 *
 * libmicrohttpd's idle timeout restarts with every byte, so a client that
 * drips its headers one byte a second ("slowloris") holds a connection
 * forever and enough of them exhaust --max-connections. The guard gives every
 * connection header_timeout_s seconds to complete its request head, counted
 * from when it was opened or from the end of its previous response
 * (keep-alive); a reaper thread shuts down (shutdown(2), both directions) the
 * sockets that miss it, which makes MHD close them through its normal path.
 *
 * Callers: server/http.c from MHD's notify-connection callback (opened,
 * closed), the access handler's first call (headers_done) and the request
 * completed callback (rearm). All functions are thread-safe. A connection is
 * identified by an opaque key (its MHD_Connection pointer); its fd is only
 * touched between opened and closed, under the guard's lock. */
#ifndef MS_CONN_GUARD_H
#define MS_CONN_GUARD_H

typedef struct conn_guard conn_guard;

/* header_timeout_s <= 0 disables the guard (the functions then do nothing). NULL if out of memory. */
conn_guard *conn_guard_start(int header_timeout_s);
void conn_guard_stop(conn_guard *g);

void conn_guard_opened(conn_guard *g, const void *key, int fd);
void conn_guard_headers_done(conn_guard *g, const void *key);
void conn_guard_rearm(conn_guard *g, const void *key);
void conn_guard_closed(conn_guard *g, const void *key);

/* Connections shut down for missing the deadline so far. */
unsigned long conn_guard_reaped(conn_guard *g);

#endif
