/* engine/weight.h — a view of one weight matrix in its checkpoint dtype.
 *
 * A weight is never upcast as a whole: FP8 e4m3 values are dequantised per
 * 128x128 block inside the kernels (value * scale[row/128][col/128], where
 * `scale` is the checkpoint's `weight_scale_inv`), BF16/F16/F32 are read as they
 * are. A view may cover a band of rows of a larger matrix (`row0`): logical row r
 * is physical row row0 + r, which matters for FP8 because the block scale is
 * chosen by the physical row. Views do not own memory (the checkpoint's mmap or a
 * backend buffer does). */
#ifndef MS_WEIGHT_H
#define MS_WEIGHT_H

#include <stdint.h>

#include "common/dtype.h"

typedef struct weight {
    dtype_t dtype;
    int64_t rows, cols;    /* logical shape [rows, cols] = [out_features, in_features] */
    const void *data;      /* physical row 0 (not row0); row-major, `cols` elements per row */
    const float *scale;    /* F8_E4M3 only: [ceil(phys_rows/128), ceil(cols/128)] */
    int64_t row0;          /* first physical row of this view */
} weight;

/* ceil(cols / 128): number of scale columns of an FP8 weight. */
static inline int64_t weight_scale_cols(const weight *w) { return (w->cols + 127) / 128; }

/* A view of rows [r0, r0+n) of w. */
static inline weight weight_rows(const weight *w, int64_t r0, int64_t n) {
    weight v = *w;
    v.row0 = w->row0 + r0;
    v.rows = n;
    return v;
}

/* Element (r, c) of the logical view, dequantised to float (slow; tests and references). */
float weight_get(const weight *w, int64_t r, int64_t c);

#endif
