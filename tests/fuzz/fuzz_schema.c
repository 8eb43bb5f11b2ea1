/* fuzz_schema: any bytes as a JSON schema (st_schema_compile), then a walk
 * of the grammar an accepted schema gives, steered by the same bytes. At each
 * step the matcher must not be at a dead end (some byte is taken unless the
 * answer is finished), and some taken byte must bring the shortest completion
 * one byte closer, which is what the sampler's budget relies on. Must never
 * crash, leak, read outside the input or break those two rules (abort). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "schema.h"
#include "st_log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (!j) return 0;
    char err[256];
    st_grammar_t *g = st_schema_compile(j, err, sizeof err);
    cJSON_Delete(j);
    if (!g) return 0;
    static st_gstate_t s, t;
    st_gstate_init(&s, g);
    for (size_t step = 0; step < 2 * size + 64 && !st_gstate_finished(&s); step++) {
        int need = st_gstate_min_remaining(&s, g), n_ok = 0, closer = -1;
        unsigned char ok[256];
        for (int c = 0; c < 256; c++) {
            st_gstate_copy(&t, &s);
            if (!st_gstate_feed(&t, g, (unsigned char)c)) continue;
            ok[n_ok++] = (unsigned char)c;
            if (need > 0 && st_gstate_min_remaining(&t, g) == need - 1) closer = c;
        }
        if (n_ok == 0 && !st_gstate_complete(&s, g)) abort(); /* a dead end */
        if (need > 0 && closer < 0) abort();                  /* the shortest completion was miscounted */
        if (n_ok == 0) break;
        /* the input's bytes pick the way; past the input, the shortest one */
        unsigned char c = step < size ? ok[data[step] % n_ok] : (unsigned char)(closer >= 0 ? closer : ok[0]);
        if (!st_gstate_feed(&s, g, c)) abort();
    }
    st_grammar_destroy(&g);
    return 0;
}
