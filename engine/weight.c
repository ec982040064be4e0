/* engine/weight.c — see weight.h. */
#include "engine/weight.h"

float weight_get(const weight *w, int64_t r, int64_t c) {
    int64_t pr = w->row0 + r;
    size_t i = (size_t)(pr * w->cols + c);
    switch (w->dtype) {
    case DTYPE_F32: return ((const float *)w->data)[i];
    case DTYPE_BF16: return bf16_to_f32(((const uint16_t *)w->data)[i]);
    case DTYPE_F16: return f16_to_f32(((const uint16_t *)w->data)[i]);
    case DTYPE_F8_E4M3: {
        float s = w->scale[(pr / 128) * weight_scale_cols(w) + c / 128];
        return e4m3_table()[((const uint8_t *)w->data)[i]] * s;
    }
    default: return 0.0f;
    }
}
