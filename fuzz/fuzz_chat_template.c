/* fuzz/fuzz_chat_template.c — chat_template_render on arbitrary JSON.
 *
 * Byte 0 sets the options (bit 0 add_generation_prompt, bit 1 strip_reasoning,
 * bit 2 continue_final_message, bit 5 thinking, (byte >> 3) % 4 the variant:
 * V3, R1, V3.1, V3);
 * the rest is parsed with jansson (NUL bytes in strings allowed, as the server
 * parses request bodies) and, whatever it is — array, object, scalar — handed to
 * the renderer. Properties (common/chat_template.h): failure fills a message and
 * leaves the output NULL; success gives a NUL-terminated string of the length
 * reported that starts with CHAT_TEMPLATE_BOS and, with add_generation_prompt
 * (V3), ends with "<｜Assistant｜>" or "<｜tool▁outputs▁end｜>"; continuing the
 * final message, it ends with that message's content when it is a string.
 * chat_template_render_opens_think gives 0 or 1 for the same input. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/chat_template.h"
#include "fuzz/fuzz_util.h"

static int ends_with(const char *s, size_t len, const char *suffix) {
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    json_t *messages = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!messages) return 0;
    static const chat_template_variant variants[4] = {CHAT_TEMPLATE_V3, CHAT_TEMPLATE_R1, CHAT_TEMPLATE_V31,
                                                      CHAT_TEMPLATE_V3};
    chat_template_opts opts = {.add_generation_prompt = data[0] & 1, .strip_reasoning = (data[0] >> 1) & 1,
                               .continue_final_message = (data[0] >> 2) & 1, .variant = variants[(data[0] >> 3) & 3],
                               .thinking = (data[0] >> 5) & 1};
    if (opts.variant != CHAT_TEMPLATE_V3) opts.strip_reasoning = false; /* a V3-only option */
    int think = chat_template_render_opens_think(messages, &opts);
    FUZZ_CHECK(think == 0 || think == 1, "opens_think = %d", think);
    char *text = (char *)"sentinel";
    size_t len = 0;
    ms_err err = {{0}};
    if (chat_template_render(messages, &opts, &text, &len, &err) == 0) {
        FUZZ_CHECK(text && text[len] == 0, "result not NUL-terminated");
        FUZZ_CHECK(ends_with(CHAT_TEMPLATE_BOS, strlen(CHAT_TEMPLATE_BOS), CHAT_TEMPLATE_BOS) &&
                       len >= strlen(CHAT_TEMPLATE_BOS) &&
                       memcmp(text, CHAT_TEMPLATE_BOS, strlen(CHAT_TEMPLATE_BOS)) == 0,
                   "result does not start with BOS");
        if (opts.add_generation_prompt && opts.variant == CHAT_TEMPLATE_V3)
            FUZZ_CHECK(ends_with(text, len, "<｜Assistant｜>") || ends_with(text, len, "<｜tool▁outputs▁end｜>"),
                       "generation prompt missing");
        const json_t *last = json_object_get(json_array_get(messages, json_array_size(messages) - 1), "content");
        if (opts.continue_final_message && json_is_string(last))
            FUZZ_CHECK(len >= json_string_length(last) &&
                           !memcmp(text + len - json_string_length(last), json_string_value(last), json_string_length(last)),
                       "a continued render does not end with the final content");
        free(text);
    } else {
        FUZZ_CHECK(text == NULL, "failed render left output %p", (void *)text);
        FUZZ_CHECK(err.msg[0], "render failed without a message");
    }
    json_decref(messages);
    return 0;
}
