/* common/presets.c — lookup in the generated preset table (see presets.h). */
#include "common/presets.h"

#include <string.h>

const model_preset *model_preset_find(const char *name) {
    for (const model_preset *p = model_presets; p->name; p++)
        if (strcmp(p->name, name) == 0) return p;
    return NULL;
}
