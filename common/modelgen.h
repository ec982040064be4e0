/* common/modelgen.h — the deterministic checkpoint generator (golden SPEC §2–§4.7).
 *
 * Turns a config.json text and a gen.json text into a Hugging Face checkpoint
 * directory whose every byte matches the golden kit's reference generator:
 * the tensor inventory of SPEC §3 (V3 with q_lora and FP8 quantization_config,
 * V2 with q_lora_rank null, MTP layers), FNV-1a-seeded splitmix64 float32
 * masters (§4.1–4.3), stored as BF16 (§4.4), F32 (§4.5) or F8_E4M3 with
 * 128x128 block scales (§4.6), in two safetensors shards plus
 * model.safetensors.index.json (§4.7).
 *
 * Layers:
 *   - primitives (fnv1a64, splitmix64, master values, FP8 band quantisation):
 *     pure functions, thread-safe, used by the tests against SPEC §9;
 *   - modelgen_plan: the parsed inventory (names, dtypes, shapes, shards,
 *     offsets), owned by the caller (modelgen_plan_free);
 *   - modelgen_write: streams one tensor at a time to disk, generating values
 *     on a thread pool, into "<out>.tmp-XXXXXX" renamed to <out> at the end, so
 *     an interrupted run never leaves a directory that looks complete.
 *
 * Called by `mlaserve mkmodel` (server/cmd_mkmodel.c) and the unit tests.
 * Errors: functions return -1 and fill ms_err naming the file/tensor/key. */
#ifndef MS_MODELGEN_H
#define MS_MODELGEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/dtype.h"
#include "common/err.h"

/* ---- SPEC §4.1–4.6 primitives ------------------------------------------ */

#define MODELGEN_GOLDEN_GAMMA 0x9e3779b97f4a7c15ULL
#define MODELGEN_FP8_BLOCK 128

/* FNV-1a 64 over n bytes (SPEC §4.1). */
uint64_t modelgen_fnv1a64(const void *bytes, size_t n);
/* state0 = fnv1a64(seed_name) ^ global_seed. */
uint64_t modelgen_state0(const char *seed_name, uint64_t global_seed);
/* splitmix64: advances *state and returns the next output (SPEC §4.2). */
uint64_t modelgen_splitmix64(uint64_t *state);
/* r_i: the (i+1)-th output from state0, in O(1). */
uint64_t modelgen_random_at(uint64_t state0, uint64_t i);
/* float32 master value from one random word (SPEC §4.3). */
float modelgen_master(uint64_t r, double amp, int64_t off);
/* out[j] = master of element first+j, j < n. */
void modelgen_masters(uint64_t state0, double amp, int64_t off, uint64_t first, size_t n, float *out);
/* Block scale from a block's amax (SPEC §4.6): amax/448 in float32, 1 if amax == 0. */
float modelgen_fp8_scale(float amax);
/* e4m3_encode of SPEC §4.6 done on the float's bits; returns exactly what
 * e4m3_from_f32 (common/dtype.h) returns, about 10x faster. */
uint8_t modelgen_e4m3(float x);
/* Quantises one band of rows <= 128 of a [rows, cols] row-major float32
 * matrix: q gets rows*cols e4m3 codes, scales gets ceil(cols/128) values. */
void modelgen_fp8_band(const float *w, size_t rows, size_t cols, uint8_t *q, float *scales);

/* ---- SPEC §3 inventory --------------------------------------------------- */

typedef enum {
    MODELGEN_EMBED = 0,
    MODELGEN_LINEAR,
    MODELGEN_ATTN_B,
    MODELGEN_ROUTER,
    MODELGEN_BIAS,
    MODELGEN_NORM,
    MODELGEN_HEAD,
    MODELGEN_CLASS_COUNT,
    MODELGEN_SCALE = -1 /* weight_scale_inv: derived, not random */
} modelgen_class;

/* "embed", "linear", ... (gen.json spelling); "scale" for MODELGEN_SCALE. */
const char *modelgen_class_name(modelgen_class c);

#define MODELGEN_NAME_MAX 128
#define MODELGEN_SHARDS 2

typedef struct modelgen_tensor {
    char name[MODELGEN_NAME_MAX];
    char seed_name[MODELGEN_NAME_MAX]; /* name hashed for the seed (MTP copies differ) */
    dtype_t dtype;
    int ndim;          /* 1 or 2 */
    uint64_t shape[2];
    modelgen_class value_class;
    int shard;         /* 0 or 1 (SPEC §4.7) */
    uint64_t nbytes;
    uint64_t offset;   /* begin within its shard's data section */
    int scale_index;   /* FP8 weight: index of its weight_scale_inv, else -1 */
} modelgen_tensor;

typedef struct modelgen_class_params {
    double amp;
    int64_t off;
} modelgen_class_params;

typedef struct modelgen_plan {
    uint64_t seed;
    modelgen_class_params classes[MODELGEN_CLASS_COUNT];
    modelgen_tensor *tensors; /* SPEC §3 canonical order, scales right after their weight */
    size_t n_tensors;
    char **tokenizer_files;   /* gen.json tokenizer_files */
    size_t n_tokenizer_files;
    uint64_t total_bytes;     /* sum of all tensor data bytes */
} modelgen_plan;

/* Parses config.json and gen.json texts and lays out the shards. */
int modelgen_plan_init(modelgen_plan *plan, const char *config_json, const char *gen_json, ms_err *err);
void modelgen_plan_free(modelgen_plan *plan);
/* Index of the tensor called name, or -1. */
int modelgen_plan_find(const modelgen_plan *plan, const char *name);
/* "model-00001-of-00002.safetensors" for shard 0. */
const char *modelgen_shard_file(int shard);

/* ---- writing a checkpoint ------------------------------------------------ */

typedef struct modelgen_opts {
    const char *config_json;            /* written byte-exact as config.json */
    const char *gen_json;               /* generator parameters (SPEC §4) */
    const char *generation_config_json; /* NULL: no generation_config.json */
    const char *tokenizer_dir;          /* holds gen.json's tokenizer_files */
    const char *out_dir;                /* must not exist, or be an empty directory */
    int n_threads;                      /* <= 0: one per CPU */
    FILE *progress;                     /* NULL: silent; else a line updated in place */
} modelgen_opts;

int modelgen_write(const modelgen_opts *opts, ms_err *err);

#endif
