/* common/safetensors.h — read-only, memory-mapped safetensors checkpoints.
 *
 * safetensors_open_dir() maps every shard of a Hugging Face checkpoint
 * directory (model.safetensors.index.json + shards, or a single
 * model.safetensors) and validates each header: JSON well-formed, dtypes
 * supported (F32, BF16, F16, F8_E4M3), data_offsets inside the file, sizes
 * equal to shape x dtype, no two tensors overlapping, every index entry present
 * in the shard it names. Errors name the file and the tensor. Tensor data stays
 * in the page cache (no copy, no upcast). The returned object owns the mappings;
 * it is immutable after open and may be read from any thread. */
#ifndef MS_SAFETENSORS_H
#define MS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/err.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;
    dtype_t dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    const void *data;   /* inside the file's mapping */
    size_t nbytes;
    int file;           /* index into safetensors.files */
} st_tensor;

typedef struct st_file {
    char *path;
    void *map;
    size_t size;
} st_file;

typedef struct safetensors {
    st_file *files;
    int n_files;
    st_tensor *tensors;   /* sorted by name */
    size_t n_tensors;
} safetensors;

/* Opens the checkpoint in dir. Returns NULL and fills err on failure. */
safetensors *safetensors_open_dir(const char *dir, ms_err *err);
/* Opens one .safetensors file (tests, single-file checkpoints). */
safetensors *safetensors_open_file(const char *path, ms_err *err);
void safetensors_close(safetensors *st);

/* The tensor called name, or NULL. */
const st_tensor *safetensors_find(const safetensors *st, const char *name);

/* Path of the file holding t (for error messages). */
const char *safetensors_file_of(const safetensors *st, const st_tensor *t);

#endif
