/* Test helpers shared by the Criterion suites: synthetic models generated on
 * demand with st-synth (cached), JSON golden files, file reading. */
#ifndef ST_TESTUTIL_H
#define ST_TESTUTIL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* Directory for generated test models: $ST_MODEL_CACHE or ~/.cache/st-models. */
const char *st_test_model_dir(void);

/* Path of a model made by `st-synth ARGS...` (NULL-terminated argv without
 * --out), generating it first if the cache lacks it. The file name is derived
 * from the arguments. Returns a static buffer per call (copy it), or NULL when
 * st-synth failed (the reason is printed). */
const char *st_test_model(const char *const *synth_args, char *path, size_t cap);

/* Whole file as a NUL-terminated malloc'd buffer (NULL if unreadable). */
char *st_test_read_file(const char *path, size_t *len);
/* Parsed JSON file (NULL if unreadable or malformed). */
cJSON *st_test_read_json(const char *path);

/* What goes before one of our programs in a shell command: "" natively, the
 * quoted emulator and a space when a cross-built test runs under one
 * (ST_TEST_EMULATOR, set by tests/CMakeLists.txt; see util/emulated_exec.c). */
const char *st_test_run_prefix(void);

/* Runs a shell command, returns its exit status (-1 if it could not run). */
int st_test_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
