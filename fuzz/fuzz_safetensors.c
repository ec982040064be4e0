/* fuzz/fuzz_safetensors.c — the safetensors header parser on arbitrary files.
 *
 * The input is the whole file (u64 header length, JSON header, data section).
 * It goes through the real entry point, safetensors_open_file(), via an
 * in-memory file (memfd), so the mmap path is the production one. Properties
 * (common/safetensors.h): open either fails with a message, or every tensor it
 * returns lies inside the file, has nbytes == shape x dtype size, a name that
 * safetensors_find() finds, and no two tensors overlap. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/safetensors.h"
#include "fuzz/fuzz_util.h"

static void check_tensors(const safetensors *st, const uint8_t *file, size_t size) {
    FUZZ_CHECK(st->n_files == 1, "%d files", st->n_files);
    uint64_t hlen;
    memcpy(&hlen, file, 8);
    const uint8_t *map = st->files[0].map;
    FUZZ_CHECK(st->files[0].size == size, "mapped %zu of %zu bytes", st->files[0].size, size);
    for (size_t i = 0; i < st->n_tensors; i++) {
        const st_tensor *t = &st->tensors[i];
        size_t off = (size_t)((const uint8_t *)t->data - map);
        FUZZ_CHECK((const uint8_t *)t->data >= map + 8 + hlen && off + t->nbytes <= size,
                   "tensor %s [%zu,+%zu) outside the data section", t->name, off, t->nbytes);
        uint64_t count = 1;
        for (int d = 0; d < t->n_dims; d++) count *= (uint64_t)t->shape[d];
        FUZZ_CHECK(count * dtype_size(t->dtype) == t->nbytes, "tensor %s: size mismatch", t->name);
        FUZZ_CHECK(safetensors_find(st, t->name) == t, "tensor %s: not found by name", t->name);
        FUZZ_CHECK(strcmp(safetensors_file_of(st, t), st->files[0].path) == 0, "file_of");
        if (i > 0) {
            FUZZ_CHECK(strcmp(st->tensors[i - 1].name, t->name) < 0, "not sorted/unique: %s, %s",
                       st->tensors[i - 1].name, t->name);
        }
        for (size_t j = 0; j < i; j++) {
            const st_tensor *u = &st->tensors[j];
            const uint8_t *a = t->data, *b = u->data;
            FUZZ_CHECK(!t->nbytes || !u->nbytes || a + t->nbytes <= b || b + u->nbytes <= a,
                       "tensors %s and %s overlap", t->name, u->name);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
    if (fd < 0) { perror("memfd_create"); abort(); }
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) { perror("write"); abort(); }
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ms_err err = {{0}};
    safetensors *st = safetensors_open_file(path, &err);
    if (st) {
        check_tensors(st, data, size);
        safetensors_close(st);
    } else {
        FUZZ_CHECK(err.msg[0], "open failed without a message");
    }
    close(fd);
    return 0;
}
