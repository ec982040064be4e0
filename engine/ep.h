/* engine/ep.h — expert-parallel MoE: the routed experts of every MoE layer are
 * spread over the ranks of a comm world (engine/comm.h); attention, dense layers
 * and shared experts stay on the rank that owns the sequence (data parallel).
 *
 * Per MoE layer each rank routes its own tokens, then ep_moe():
 *   dispatch  every token goes once to each rank owning at least one of its
 *             top-k experts: K expert ids (-1 where another rank owns that slot;
 *             host memory) and the hidden row (D floats; backend memory);
 *   experts   each rank runs each of its experts once over all rows it received
 *             (rows in source-rank order, then token order);
 *   combine   each expert output row (D floats) goes back to the token's rank,
 *             which adds w_k · y_k into out in ascending expert order — exactly the
 *             single-rank order of engine/model.c, so a token whose experts see the
 *             same rows gets bitwise the same result as with one rank.
 * Bytes on the wire per token: dispatch (K*4 + D*4) per destination rank,
 * combine D*4 per routed expert on another rank (float32; see docs/expert-parallel.md).
 *
 * Every rank of the world calls ep_step_begin() once per model step and ep_moe()
 * once per MoE layer, with n = 0 when it has no tokens. Any failure is a world
 * failure: the rank calls ep_abort() so the others' collectives return -1
 * instead of waiting forever. Owned by one rank's engine thread.
 *
 * Test hook: MLASERVE_EP_FAULT=RANK:STEP makes rank RANK fail its STEP-th step
 * (1-based) with "injected fault" (test/cli/ep.sh). */
#ifndef MS_EP_H
#define MS_EP_H

#include <stdint.h>

#include "common/err.h"
#include "engine/backend.h"
#include "engine/comm.h"

typedef struct ep ep;

typedef struct ep_timing {
    double dispatch_s, expert_s, combine_s; /* wall time summed over calls */
    uint64_t calls;
} ep_timing;

/* y[m, D] = routed expert `expert` applied to x[m, D] (backend memory). */
typedef void (*ep_expert_fn)(void *ctx, int expert, const float *x, float *y, int m);

/* The rank owning expert e with contiguous slices: e * size / n_experts. */
int ep_default_owner(int expert, int n_experts, int size);

/* Checks a placement: every expert owned by a rank in [0, size); every rank
 * owns at least one expert (names the first offender). */
int ep_check_placement(const int32_t *owner, int n_experts, int size, ms_err *err);

/* owner: [n_experts] rank per expert (copied), or NULL for contiguous slices. */
ep *ep_create(comm *c, int n_experts, const int32_t *owner, ms_err *err);
void ep_free(ep *e, backend *be);

int ep_rank(const ep *e);
int ep_size(const ep *e);
int ep_owner(const ep *e, int expert);
comm *ep_comm(const ep *e);

/* Starts a model step with n local tokens: learns the world's token total
 * (sizes the exchange buffers). */
int ep_step_begin(ep *e, int n, ms_err *err);

/* The routed part of one MoE layer, collectively: x [n, D] (backend), idx/w
 * [n, K] host routing decisions; out [n, D] (backend) += Σ_k w · expert(x) in
 * ascending expert order per token. counts[e] += rows expert e ran here (only
 * experts this rank owns; added atomically so other threads may read them with
 * __atomic_load_n; counts may be NULL). */
int ep_moe(ep *e, backend *be, int n, int D, int K, const float *x, const int32_t *idx, const float *w, float *out,
           ep_expert_fn fn, void *fn_ctx, uint64_t *counts, ms_err *err);

/* Fails the world with reason (every rank's pending and later calls return -1). */
void ep_abort(ep *e, const char *reason);

/* Timing accumulated by ep_moe since creation. */
ep_timing ep_get_timing(const ep *e);

#endif
