/* common/rendezvous.h — multi-node startup over plain TCP: node 0 hands one
 * blob (e.g. the 128-byte NCCL unique id) to every other node before the
 * collectives exist.
 *
 * Node 0 listens on 0.0.0.0:master_port (IPv4, SO_REUSEADDR), waits for nodes
 * 1..nnodes-1 to connect and say hello (magic, protocol version, nnodes,
 * node_rank, blob_len, then their own entry), then sends every node the table
 * of all entries (rendezvous_run: the blob_len bytes at `blob`);
 * each node acknowledges; node 0 returns 0 when all have. Other nodes connect
 * to master_addr:master_port (retrying until the deadline, since node 0 may
 * start later), send hello, receive the blob into `blob`, ack and return 0.
 * nnodes == 1 returns 0 at once. Every wait (connect, accept, recv, send) is a
 * poll() on the time left, so nothing runs past timeout_ms (the one exception
 * is resolving master_addr, which the resolver bounds). Errors return -1 with
 * err set, each naming what failed: on node 0 a timeout names the missing node
 * ranks ("rendezvous: node(s) 2, 3 of 4 did not join within 5.0 s (listening
 * on 0.0.0.0:29500)"); a node that cannot reach node 0 names the address and
 * port; an nnodes / blob size / protocol version mismatch, a duplicate or
 * out-of-range node_rank fail node 0 naming the node, and node 0 tells the
 * nodes that already joined (they fail with its reason instead of waiting); a
 * port in use names the port. A stray connection (wrong magic, garbage, early
 * close, silence) is closed without a log and node 0 keeps waiting. A node
 * that joined and then disconnects before the blob is sent is forgotten and
 * may join again. Blocking; thread-safe (no shared state). */
#ifndef MS_RENDEZVOUS_H
#define MS_RENDEZVOUS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct rendezvous_cfg {
    const char *master_addr; /* host name or IP of node 0 (unused on node 0) */
    int master_port;         /* TCP port node 0 listens on, 1..65535 */
    int nnodes, node_rank;   /* 0 <= node_rank < nnodes */
    int timeout_ms;          /* overall deadline for everyone to join (<= 0: 300000) */
} rendezvous_cfg;

/* What rendezvous_exchange hands every node about node r. */
typedef struct rendezvous_node {
    uint32_t ipv4;         /* node r's IPv4 address (network order) as node 0 saw it; for node 0 the
                            * address this node reached it at (0 on node 0 itself, or over IPv6) */
    unsigned char *entry;  /* node r's blob_len bytes (malloc'd) */
} rendezvous_node;

/* Every node contributes blob_len bytes (`mine`; the same blob_len everywhere);
 * on success every node gets out[nnodes]: each node's entry and address
 * (free with rendezvous_nodes_free). Same protocol, errors and deadline as
 * rendezvous_run (the hello carries the entry, node 0's reply the table). */
int rendezvous_exchange(const rendezvous_cfg *cfg, const void *mine, size_t blob_len, rendezvous_node *out,
                        ms_err *err);
void rendezvous_nodes_free(rendezvous_node *nodes, int n);

/* Node 0 sends blob[0..blob_len); the others receive into it (same blob_len
 * everywhere): rendezvous_exchange where only node 0's entry is used. */
int rendezvous_run(const rendezvous_cfg *cfg, void *blob, size_t blob_len, ms_err *err);

#endif
