/* common/presets.h — model presets compiled into the binary.
 *
 * Each preset is the exact bytes of a configs/presets/NAME/ config.json,
 * gen.json (generator parameters, SPEC §4) and optional generation_config.json,
 * so `mlaserve mkmodel --preset NAME` needs no files outside the binary.
 * The table is generated at build time by scripts/embed-presets.sh. Read-only. */
#ifndef MS_PRESETS_H
#define MS_PRESETS_H

typedef struct model_preset {
    const char *name;
    const char *config_json;
    const char *gen_json;
    const char *generation_config_json; /* NULL if the preset has none */
} model_preset;

/* Terminated by an entry with name == NULL. */
extern const model_preset model_presets[];

/* Returns the preset called name, or NULL. */
const model_preset *model_preset_find(const char *name);

#endif
