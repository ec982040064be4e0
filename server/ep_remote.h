/* server/ep_remote.h — sequences on other nodes: node 0's HTTP front hands
 * new sequences to the data-parallel ranks of worker nodes that run `serve`
 * (engine/sched.h sched_remote), and their events come back.
 *
 * One TCP connection per worker node, opened by node 0 to the control port the
 * worker announced at the rendezvous (server/ep_launch.h). Messages are a
 * 4-byte big-endian length and a JSON object: node 0 sends "submit" (the
 * request: prompt ids, limits, sampling, stop strings, logprob options) and
 * "cancel"; the worker answers each submit with "ack" (accepted, or refused
 * with its reason and whether it was for want of room), and node 0's submit
 * waits for it, so a worker's full queue is a 429 on node 0 as a local one
 * is, and a request a worker cannot take is refused before any reply is
 * sent. Then the worker sends "event" (one per stream event, floats as their
 * bit patterns, text as hex so any bytes survive) and, every 50 ms, "stats"
 * (its ranks' counters and the rows its experts ran: node 0 picks ranks and
 * fills /metrics, per-expert counts included, from them; node 0
 * also counts a submission at once so a burst spreads over the ranks).
 *
 * Failure: a connection that closes or breaks ends that node's remote streams
 * with an error naming the node; the world's collectives fail too, so the
 * server stops as for any failed rank. Requests with a constraint (structured
 * outputs, forced tool calls) stay on node 0 (engine/sched.c).
 *
 * Threads: node 0 has one reader thread per worker; the worker has its main
 * loop (reads node 0's messages, sends stats) and one thread per sequence that
 * forwards its events. */
#ifndef MS_EP_REMOTE_H
#define MS_EP_REMOTE_H

#include <stdint.h>

#include "common/err.h"
#include "engine/sched.h"

typedef struct ep_remote ep_remote;

/* Node 0: connects to every worker node n with control_port[n] != 0 (node n's
 * ranks are n * ranks_per_node ..; nodes with port 0 hold experts only) and
 * attaches them to front (sched_set_remote). NULL with err on failure. */
ep_remote *ep_remote_open(sched *front, int nnodes, int ranks_per_node, const uint32_t *node_ipv4,
                          const uint16_t *control_port, int timeout_ms, ms_err *err);
/* Ends every remote stream still open (cancelled), closes the connections.
 * Call before sched_free(front). */
void ep_remote_close(ep_remote *r);

/* Worker: a listening socket for node 0's connection (port for the rendezvous). */
int ep_remote_listen(uint16_t *port, ms_err *err);
/* Worker: accepts node 0 on listen_fd (within timeout_ms), then runs node 0's
 * requests on front's ranks until node 0 closes the connection: 0, or -1 with
 * err. Closes listen_fd. */
int ep_remote_serve(int listen_fd, sched *front, int timeout_ms, ms_err *err);

#endif
