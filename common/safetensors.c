/* common/safetensors.c — see safetensors.h.
 *
 * File format: u64 little-endian header length N, N bytes of JSON
 * {"NAME": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data section; offsets are relative to the data section. */
#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20) /* the format's own limit is 100 MB */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_map(st_file *f, const char *path, ms_err *err) {
    f->path = strdup(path);
    if (!f->path) return ms_err_set(err, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ms_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return ms_err_set(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        return ms_err_set(err, "%s: truncated: %zu bytes, not even a header length", path, f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return ms_err_set(err, "%s: mmap failed: %s", path, strerror(errno));
    }
    return 0;
}

static int tensor_cmp(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

typedef struct { size_t begin, end; const char *name; } span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Parses one header entry into t. */
static int parse_entry(const char *path, const char *name, json_t *v, const uint8_t *data,
                       size_t data_size, st_tensor *t, ms_err *err) {
    if (!json_is_object(v)) return ms_err_set(err, "%s: tensor %s: header entry is not an object", path, name);
    const char *dt = json_string_value(json_object_get(v, "dtype"));
    json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
    if (!dt || !json_is_array(shape) || !json_is_array(offs) || json_array_size(offs) != 2)
        return ms_err_set(err, "%s: tensor %s: header entry needs dtype, shape and data_offsets[2]", path, name);
    if (dtype_parse(dt, &t->dtype) != 0)
        return ms_err_set(err, "%s: tensor %s: unsupported dtype %s (supported: F32, BF16, F16, F8_E4M3)",
                          path, name, dt);
    if (json_array_size(shape) > ST_MAX_DIMS)
        return ms_err_set(err, "%s: tensor %s: too many dimensions", path, name);
    t->n_dims = (int)json_array_size(shape);
    uint64_t count = 1;
    for (int i = 0; i < t->n_dims; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ms_err_set(err, "%s: tensor %s: bad shape", path, name);
        t->shape[i] = json_integer_value(d);
        if (t->shape[i] && count > UINT64_MAX / (uint64_t)t->shape[i])
            return ms_err_set(err, "%s: tensor %s: shape overflows", path, name);
        count *= (uint64_t)t->shape[i];
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return ms_err_set(err, "%s: tensor %s: bad data_offsets", path, name);
    size_t begin = (size_t)json_integer_value(b), end = (size_t)json_integer_value(e);
    if (end > data_size)
        return ms_err_set(err, "%s: tensor %s: data [%zu, %zu) runs past the end of the file (%zu data bytes): "
                          "truncated shard?", path, name, begin, end, data_size);
    if (count > SIZE_MAX / dtype_size(t->dtype) || end - begin != count * dtype_size(t->dtype))
        return ms_err_set(err, "%s: tensor %s: %zu data bytes do not match shape x %s", path, name, end - begin,
                          dtype_name(t->dtype));
    t->name = strdup(name);
    if (!t->name) return ms_err_set(err, "out of memory");
    t->data = data + begin;
    t->nbytes = end - begin;
    return 0;
}

static int check_overlaps(const char *path, const st_tensor *ts, size_t n, const uint8_t *data, ms_err *err) {
    span *s = malloc((n ? n : 1) * sizeof *s);
    if (!s) return ms_err_set(err, "out of memory");
    for (size_t i = 0; i < n; i++)
        s[i] = (span){(size_t)((const uint8_t *)ts[i].data - data),
                      (size_t)((const uint8_t *)ts[i].data - data) + ts[i].nbytes, ts[i].name};
    qsort(s, n, sizeof *s, span_cmp);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++)
        if (s[i].begin < s[i - 1].end)
            rc = ms_err_set(err, "%s: tensors %s and %s overlap", path, s[i - 1].name, s[i].name);
    free(s);
    return rc;
}

/* Parses the header of file index fi and appends its tensors to st. */
static int load_header(safetensors *st, int fi, ms_err *err) {
    st_file *f = &st->files[fi];
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > ST_MAX_HEADER || hlen > f->size - 8)
        return ms_err_set(err, "%s: header length %llu exceeds the file (%zu bytes): truncated or not a "
                          "safetensors file", f->path, (unsigned long long)hlen, f->size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)hlen, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return ms_err_set(err, "%s: bad header JSON: %s (at byte %d)", f->path, root ? "not an object" : jerr.text,
                          jerr.position);
    }
    const uint8_t *data = (const uint8_t *)f->map + 8 + hlen;
    size_t data_size = f->size - 8 - (size_t)hlen;
    size_t first = st->n_tensors, n_new = json_object_size(root);
    st_tensor *grown = realloc(st->tensors, (st->n_tensors + n_new + 1) * sizeof *grown);
    if (!grown) { json_decref(root); return ms_err_set(err, "out of memory"); }
    st->tensors = grown;
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        if ((rc = parse_entry(f->path, key, v, data, data_size, t, err)) != 0) break;
        t->file = fi;
        st->n_tensors++;
    }
    json_decref(root);
    if (rc == 0) rc = check_overlaps(f->path, st->tensors + first, st->n_tensors - first, data, err);
    return rc;
}

static int add_file(safetensors *st, const char *path, ms_err *err) {
    st_file *grown = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *grown);
    if (!grown) return ms_err_set(err, "out of memory");
    st->files = grown;
    memset(&st->files[st->n_files], 0, sizeof(st_file));
    st->n_files++;
    if (file_map(&st->files[st->n_files - 1], path, err) != 0) return -1;
    return load_header(st, st->n_files - 1, err);
}

static int sort_and_check_unique(safetensors *st, ms_err *err) {
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, tensor_cmp);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0)
            return ms_err_set(err, "tensor %s appears in both %s and %s", st->tensors[i].name,
                              st->files[st->tensors[i - 1].file].path, st->files[st->tensors[i].file].path);
    return 0;
}

safetensors *safetensors_open_file(const char *path, ms_err *err) {
    safetensors *st = calloc(1, sizeof *st);
    if (!st) { ms_err_set(err, "out of memory"); return NULL; }
    if (add_file(st, path, err) != 0 || sort_and_check_unique(st, err) != 0) {
        safetensors_close(st);
        return NULL;
    }
    return st;
}

/* Adds every shard named in the index's weight_map (each once, in order of appearance). */
static int open_index_shards(safetensors *st, const char *dir, json_t *wmap, ms_err *err) {
    const char *key;
    json_t *v;
    json_object_foreach(wmap, key, v) {
        const char *fname = json_string_value(v);
        if (!fname || strchr(fname, '/'))
            return ms_err_set(err, "%s/model.safetensors.index.json: weight_map[%s] is not a file name", dir, key);
        char *path = path_join(dir, fname);
        if (!path) return ms_err_set(err, "out of memory");
        int seen = 0;
        for (int i = 0; i < st->n_files && !seen; i++) seen = strcmp(st->files[i].path, path) == 0;
        int rc = seen ? 0 : add_file(st, path, err);
        free(path);
        if (rc != 0) return rc;
    }
    return 0;
}

/* Every tensor the index names must be in the shard it names. */
static int check_index(const safetensors *st, const char *dir, json_t *wmap, ms_err *err) {
    const char *key;
    json_t *v;
    json_object_foreach(wmap, key, v) {
        const st_tensor *t = safetensors_find(st, key);
        const char *want = json_string_value(v);
        if (!t) return ms_err_set(err, "%s/%s: tensor %s listed in the index is missing", dir, want, key);
        const char *have = strrchr(st->files[t->file].path, '/');
        if (strcmp(have ? have + 1 : st->files[t->file].path, want) != 0)
            return ms_err_set(err, "tensor %s: index says %s but it is in %s", key, want, st->files[t->file].path);
    }
    return 0;
}

safetensors *safetensors_open_dir(const char *dir, ms_err *err) {
    char *index_path = path_join(dir, "model.safetensors.index.json");
    if (!index_path) { ms_err_set(err, "out of memory"); return NULL; }
    if (access(index_path, F_OK) != 0) {
        free(index_path);
        char *single = path_join(dir, "model.safetensors");
        if (!single) { ms_err_set(err, "out of memory"); return NULL; }
        if (access(single, F_OK) != 0) {
            ms_err_set(err, "%s: no model.safetensors.index.json or model.safetensors", dir);
            free(single);
            return NULL;
        }
        safetensors *st = safetensors_open_file(single, err);
        free(single);
        return st;
    }
    json_error_t jerr;
    json_t *index = json_load_file(index_path, 0, &jerr);
    json_t *wmap = index ? json_object_get(index, "weight_map") : NULL;
    safetensors *st = NULL;
    if (!index) {
        ms_err_set(err, "%s: bad JSON: %s (line %d)", index_path, jerr.text, jerr.line);
    } else if (!json_is_object(wmap)) {
        ms_err_set(err, "%s: no weight_map object", index_path);
    } else if ((st = calloc(1, sizeof *st)) == NULL) {
        ms_err_set(err, "out of memory");
    } else if (open_index_shards(st, dir, wmap, err) != 0 || sort_and_check_unique(st, err) != 0 ||
               check_index(st, dir, wmap, err) != 0) {
        safetensors_close(st);
        st = NULL;
    }
    json_decref(index);
    free(index_path);
    return st;
}

void safetensors_close(safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files);
    free(st);
}

const st_tensor *safetensors_find(const safetensors *st, const char *name) {
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

const char *safetensors_file_of(const safetensors *st, const st_tensor *t) { return st->files[t->file].path; }
