/* test/unit/test_loader.c — checkpoint loader errors: each corruption of a
 * generated tiny-v3 checkpoint must fail model_load with a message naming the
 * file and/or tensor, never crash (reference: hand-made corruptions of the
 * checkpoint that scripts/run-tests.sh generates into $MLASERVE_TEST_MODELS).
 * run-tests.sh also runs this binary under valgrind to catch leaks on the error
 * paths. Unchanged files are symlinked into a scratch directory; changed ones
 * are copied and patched. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/safetensors.h"
#include "cpu/backend_cpu.h"
#include "engine/model.h"

static const char *files[] = {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                              "model.safetensors.index.json", NULL};

static char src_dir[1024], dst_dir[1024];

static void setup(void) {
    const char *models = getenv("MLASERVE_TEST_MODELS");
    snprintf(src_dir, sizeof src_dir, "%s/tiny-v3", models && *models ? models : "build/models");
    snprintf(dst_dir, sizeof dst_dir, "/tmp/mlaserve-loader-XXXXXX");
    cr_assert(mkdtemp(dst_dir), "mkdtemp");
    for (int i = 0; files[i]; i++) {
        char s[2048], d[2048];
        snprintf(s, sizeof s, "%s/%s", src_dir, files[i]);
        snprintf(d, sizeof d, "%s/%s", dst_dir, files[i]);
        cr_assert_eq(symlink(s, d), 0, "symlink %s", s);
    }
}

static void teardown(void) {
    for (int i = 0; files[i]; i++) {
        char d[2048];
        snprintf(d, sizeof d, "%s/%s", dst_dir, files[i]);
        unlink(d);
    }
    rmdir(dst_dir);
}

/* Replaces the symlink to `name` by a private copy of its first `keep` bytes (-1: all). */
static void copy_file(const char *name, long keep) {
    char s[2048], d[2048];
    snprintf(s, sizeof s, "%s/%s", src_dir, name);
    snprintf(d, sizeof d, "%s/%s", dst_dir, name);
    unlink(d);
    FILE *in = fopen(s, "rb"), *out = fopen(d, "wb");
    cr_assert(in && out);
    static char buf[1 << 20];
    size_t n;
    long left = keep < 0 ? -1 : keep;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0 && left != 0) {
        if (left >= 0 && (long)n > left) n = (size_t)left;
        fwrite(buf, 1, n, out);
        if (left > 0) left -= (long)n;
    }
    fclose(in);
    fclose(out);
}

/* Replaces the first occurrence of `from` by `to` (same length) within the first `limit` bytes. */
static void patch_file(const char *name, const char *from, const char *to, long limit) {
    cr_assert_eq(strlen(from), strlen(to));
    copy_file(name, -1);
    char d[2048];
    snprintf(d, sizeof d, "%s/%s", dst_dir, name);
    FILE *f = fopen(d, "r+b");
    cr_assert(f);
    char *buf = malloc((size_t)limit);
    size_t n = fread(buf, 1, (size_t)limit, f);
    char *hit = memmem(buf, n, from, strlen(from));
    cr_assert(hit, "%s: \"%s\" not found", name, from);
    fseek(f, hit - buf, SEEK_SET);
    fwrite(to, 1, strlen(to), f);
    fclose(f);
    free(buf);
}

/* model_load must fail and its message contain every one of the needles. */
static void expect_load_error(const char *needle1, const char *needle2) {
    ms_err err = {{0}};
    backend *be = backend_cpu_create(1, &err);
    cr_assert(be);
    model *m = model_load(dst_dir, be, &err);
    cr_expect_null(m, "load should have failed");
    model_free(m);
    backend_cpu_free(be);
    cr_expect(strstr(err.msg, needle1), "message \"%s\" lacks \"%s\"", err.msg, needle1);
    if (needle2) cr_expect(strstr(err.msg, needle2), "message \"%s\" lacks \"%s\"", err.msg, needle2);
}

TestSuite(loader, .init = setup, .fini = teardown);

Test(loader, intact_copy_loads) {
    ms_err err = {{0}};
    backend *be = backend_cpu_create(1, &err);
    model *m = model_load(dst_dir, be, &err);
    cr_assert(m, "%s", err.msg);
    cr_expect(m->has_mtp, "the MTP layer is mapped and kept");
    model_free(m);
    backend_cpu_free(be);
}

Test(loader, truncated_shard) {
    copy_file("model-00002-of-00002.safetensors", 1000000);
    expect_load_error("model-00002-of-00002.safetensors", "truncated");
}

Test(loader, shard_shorter_than_header) {
    copy_file("model-00001-of-00002.safetensors", 100);
    expect_load_error("model-00001-of-00002.safetensors", "header");
}

Test(loader, corrupted_header_json) {
    patch_file("model-00001-of-00002.safetensors", "\"dtype\":", "\"dtype\"!", 1 << 16);
    expect_load_error("model-00001-of-00002.safetensors", "bad header JSON");
}

Test(loader, unsupported_dtype) {
    patch_file("model-00001-of-00002.safetensors", "\"dtype\":\"BF16\"", "\"dtype\":\"BX16\"", 1 << 16);
    expect_load_error("unsupported dtype BX16", "model-00001-of-00002.safetensors");
}

Test(loader, data_offsets_past_end) {
    /* Shape/offset mismatch: a tensor claims more bytes than its shape implies. */
    patch_file("model-00001-of-00002.safetensors", "\"shape\":[256]", "\"shape\":[257]", 1 << 16);
    expect_load_error("do not match shape", "model-00001-of-00002.safetensors");
}

Test(loader, missing_tensor) {
    const char *from = "model.layers.0.self_attn.o_proj.weight\"", *to = "model.layers.0.self_attn.x_proj.weight\"";
    patch_file("model-00001-of-00002.safetensors", from, to, 1 << 16);
    patch_file("model.safetensors.index.json", from, to, 1 << 20);
    expect_load_error("model.layers.0.self_attn.o_proj.weight", "missing");
}

Test(loader, index_names_absent_tensor) {
    patch_file("model.safetensors.index.json", "model.layers.0.self_attn.o_proj.weight\"",
               "model.layers.0.self_attn.x_proj.weight\"", 1 << 20);
    expect_load_error("model.layers.0.self_attn.x_proj.weight", "missing");
}

Test(loader, wrong_shape_for_config) {
    patch_file("config.json", "\"intermediate_size\": 512", "\"intermediate_size\": 511", 1 << 16);
    expect_load_error("model.layers.0.mlp.gate_proj.weight", "[511, 256]");
}

Test(loader, unsupported_architecture) {
    patch_file("config.json", "DeepseekV3ForCausalLM", "DeepseekV9ForCausalLM", 1 << 16);
    expect_load_error("unsupported architecture DeepseekV9ForCausalLM", "config.json");
}

Test(loader, missing_shard) {
    char d[2048];
    snprintf(d, sizeof d, "%s/model-00002-of-00002.safetensors", dst_dir);
    unlink(d);
    expect_load_error("model-00002-of-00002.safetensors", "cannot open");
}

Test(loader, not_a_model_dir) {
    ms_err err = {{0}};
    backend *be = backend_cpu_create(1, &err);
    cr_expect_null(model_load("/nonexistent-dir", be, &err));
    backend_cpu_free(be);
    cr_expect(strstr(err.msg, "/nonexistent-dir/config.json"), "%s", err.msg);
}
