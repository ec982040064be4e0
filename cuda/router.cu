/* cuda/router.cu — the MoE router on the device; the reference is cpu_router
 * (cpu/router.c), whose semantics this copies step for step:
 *   s = sigmoid(logits) | softmax(logits); choice = s + bias; with n_group > 1
 *   the topk_group best groups (score: top-1, or sum of top-2 choices) stay and
 *   the others' choices become -inf; idx = top_k largest choices in descending
 *   order, ties to the lower expert id; w = s[idx], / (Σw + 1e-20) if
 *   renormalize, × scale.
 * One thread per token, sequential loops over experts in the CPU's order, so the
 * selection is the same: every float operation is the CPU's operation with the
 * same rounding (explicit __f*_rn intrinsics, so nothing is fused into an FMA),
 * and exp is evaluated in double and rounded to float, which agrees with glibc's
 * expf (0.502 ulp) except for rare 1-ulp differences in a score (weights then
 * differ by an ulp; a selection could only change on a near-tie within an ulp).
 * Per-token arrays live in shared memory (9·E bytes, E ≤ ROUTER_MAX_EXPERTS, so
 * 64 tokens per block up to E = 72 and 8 per block at E = 512); the router is a
 * few microseconds of work per token and this is not a hot path.
 * Outputs idx [n, top_k] and w [n, top_k] are device memory. The bias may be
 * device memory (a placed weight) or host memory (copied per call). */
#include "cuda/cuda_internal.cuh"

#define ROUTER_MAX_EXPERTS 512
#define ROUTER_MAX_GROUPS 64
#define ROUTER_SMEM_BYTES (40 * 1024) /* per block, under the 48 KiB default */

__device__ __forceinline__ float exp_rounded(float x) { return (float)exp((double)x); }

/* Index of the largest v[i] with !taken[i]; ties -> lowest; -1 if all taken. */
__device__ int argmax_free(const float *v, const unsigned char *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

struct router_args {
    int E, K, G, topk_group, sigmoid, group_sum_top2, renormalize;
    float scale;
    const float *bias; /* device or NULL */
};

/* Per-token work arrays in dynamic shared memory: s[E], choice[E], gscore[G]
 * (floats), then taken[E], keep[G] (bytes); `stride` bytes per thread. Local
 * arrays would make the driver reserve their size for every resident thread
 * of the GPU (over a gigabyte for 512 experts). */
__global__ void k_router(router_args a, const float *logits, int n, int32_t *idx, float *w, int stride) {
    extern __shared__ __align__(16) unsigned char router_smem[];
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const int E = a.E, K = a.K;
    float *s = (float *)(router_smem + (size_t)threadIdx.x * stride);
    float *choice = s + E, *gscore = choice + E;
    unsigned char *taken = (unsigned char *)(gscore + (a.G > 1 ? a.G : 0));
    unsigned char *keep = taken + E;
    const float *l = logits + (int64_t)t * E;

    /* scores */
    if (a.sigmoid) {
        for (int e = 0; e < E; e++) s[e] = __fdiv_rn(1.0f, __fadd_rn(1.0f, exp_rounded(-l[e])));
    } else {
        float m = -INFINITY, sum = 0.0f;
        for (int e = 0; e < E; e++) m = l[e] > m ? l[e] : m;
        for (int e = 0; e < E; e++) {
            s[e] = exp_rounded(__fsub_rn(l[e], m));
            sum = __fadd_rn(sum, s[e]);
        }
        for (int e = 0; e < E; e++) s[e] = __fdiv_rn(s[e], sum);
    }
    for (int e = 0; e < E; e++) {
        choice[e] = __fadd_rn(s[e], a.bias ? a.bias[e] : 0.0f);
        taken[e] = 0;
    }

    /* group limit */
    if (a.G > 1) {
        const int G = a.G, per = E / G;
        for (int g = 0; g < G; g++) {
            const float *c = choice + g * per;
            float top1 = -INFINITY, top2 = -INFINITY;
            for (int e = 0; e < per; e++) {
                if (c[e] > top1) { top2 = top1; top1 = c[e]; }
                else if (c[e] > top2) top2 = c[e];
            }
            gscore[g] = a.group_sum_top2 ? __fadd_rn(top1, top2) : top1;
            keep[g] = 0;
        }
        for (int k = 0; k < a.topk_group; k++) keep[argmax_free(gscore, keep, G)] = 1;
        for (int g = 0; g < G; g++)
            if (!keep[g])
                for (int e = 0; e < per; e++) choice[g * per + e] = -INFINITY;
    }

    /* top-k in selection order */
    float sum = 0.0f;
    for (int k = 0; k < K; k++) {
        const int e = argmax_free(choice, taken, E);
        taken[e] = 1;
        idx[(int64_t)t * K + k] = e;
        w[(int64_t)t * K + k] = s[e];
        sum = __fadd_rn(sum, s[e]);
    }
    const float norm = a.renormalize ? __fdiv_rn(1.0f, __fadd_rn(sum, 1e-20f)) : 1.0f;
    const float ns = __fmul_rn(norm, a.scale);
    for (int k = 0; k < K; k++) w[(int64_t)t * K + k] = __fmul_rn(w[(int64_t)t * K + k], ns);
}

/* Whether p is host memory the device cannot read directly (then it is copied). */
static int is_plain_host(const void *p) {
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, p) != cudaSuccess) {
        cudaGetLastError();
        return 1;
    }
    return at.type == cudaMemoryTypeUnregistered;
}

void cuda_router(backend *be, const router_params *rp, const float *logits, int n, int32_t *idx, float *w) {
    if (n <= 0) return;
    const int E = rp->n_experts, K = rp->top_k, G = rp->n_group;
    CUDA_REQUIRE(E >= 1 && E <= ROUTER_MAX_EXPERTS, "router: %d experts (at most %d)", E, ROUTER_MAX_EXPERTS);
    CUDA_REQUIRE(K >= 1 && K <= E, "router: top_k %d of %d experts", K, E);
    if (G > 1)
        CUDA_REQUIRE(G <= ROUTER_MAX_GROUPS && E % G == 0 && rp->topk_group >= 0 && rp->topk_group <= G,
                     "router: %d groups, topk_group %d, %d experts", G, rp->topk_group, E);
    router_args a = {E, K, G, rp->topk_group, rp->sigmoid, rp->group_sum_top2, rp->renormalize, rp->scale, rp->bias};
    if (rp->bias && is_plain_host(rp->bias))
        a.bias = (const float *)cuda_upload_scratch(be, SCR_F32, rp->bias, (size_t)E * sizeof(float));
    const int groups = G > 1 ? G : 0;
    const int stride = (int)(((size_t)(2 * E + groups) * sizeof(float) + (size_t)(E + groups) + 15) / 16 * 16);
    int threads = (int)(ROUTER_SMEM_BYTES / stride);
    if (threads > 64) threads = 64;
    CUDA_REQUIRE(threads >= 1, "router: %d experts need %d bytes of shared memory per token", E, stride);
    k_router<<<cuda_blocks_for(n, (unsigned)threads), threads, (size_t)threads * stride, cuda_stream(be)>>>(
        a, logits, n, idx, w, stride);
    CUDA_LAUNCHED(be);
}
