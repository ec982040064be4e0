/* cpu/comm_tcp.h — engine/comm.h over TCP, for expert parallelism across
 * processes and machines without GPUs (`--nnodes`): nnodes nodes, n_local ranks
 * (threads) per node, global rank = node_rank * n_local + local. Every pair of
 * ranks has one TCP connection (also two ranks of one node, over loopback), so a
 * rank's collectives touch only its own sockets.
 *
 * Setup, on every node: comm_tcp_node_open() listens on one ephemeral port per
 * local rank; the ports travel to the other nodes (common/rendezvous.h
 * rendezvous_exchange); comm_tcp_node_connect() then connects the mesh (rank g
 * connects to every rank below it, accepts every rank above it, and each side
 * checks the other's hello) within the timeout, naming the rank it could not
 * reach.
 *
 * Collectives: each message is a 16-byte header (magic, kind, length) and its
 * bytes; one poll() loop per call sends to and receives from every peer at once,
 * so no pair can deadlock on full socket buffers. all_reduce_sum gathers every
 * rank's buffer and sums in rank order from 0.0f, as cpu/comm_cpu.h does (the
 * same bits on every rank and as with CPU threads). Calls wait as long as peers
 * take (an idle worker waits in a collective until node 0 has work); TCP
 * keepalive notices a peer machine that vanished.
 *
 * Failure: abort(reason) marks the node failed ("rank G: reason"), wakes its
 * other ranks (a pipe in every poll) and sends an abort message to every peer;
 * a rank that learns of a failure (an abort message, a closed connection, its
 * node failed) fails its call with "expert-parallel group failed: ..." and
 * passes the abort on once, so every rank of every node stops instead of
 * waiting forever. A rank that has failed stays failed.
 *
 * Threads: each rank handle belongs to its rank's thread; abort may be called
 * from any thread. Free the node after its rank threads are joined. */
#ifndef MS_COMM_TCP_H
#define MS_COMM_TCP_H

#include <stdint.h>

#include "engine/comm.h"

typedef struct comm_tcp_node comm_tcp_node;

/* Listens on 0.0.0.0, one ephemeral port per local rank. */
comm_tcp_node *comm_tcp_node_open(int nnodes, int node_rank, int n_local, ms_err *err);
int comm_tcp_node_port(const comm_tcp_node *n, int local);

/* node_ipv4[nnodes]: each node's IPv4 (network order); this node's own entry is
 * not used (its ranks meet over 127.0.0.1). ports[nnodes * n_local]: every
 * global rank's listening port. Returns 0 when every connection is up and checked. */
int comm_tcp_node_connect(comm_tcp_node *n, const uint32_t *node_ipv4, const uint16_t *ports, int timeout_ms,
                          ms_err *err);

/* The handle of local rank `local` (its comm->rank is the global rank). */
comm *comm_tcp_node_rank(comm_tcp_node *n, int local);
void comm_tcp_node_free(comm_tcp_node *n);

/* The options every connection between nodes gets: TCP_NODELAY and keepalive
 * (30 s idle, 3 probes 10 s apart). */
void comm_tcp_tune(int fd);

#endif
