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

/* llama-quantize from the oracle's tools ($LLAMA_BIN, else
 * ~/.cache/st-oracle/llama.cpp/build/bin), or NULL where it is absent (users
 * without ../shared: callers skip). */
const char *st_test_llama_quantize(void);

/* Path of `st-synth ARGS...` requantized by llama-quantize to type ("Q4_K_M",
 * "Q4_1"...), made once and cached beside the synthetic model. false when
 * llama-quantize is absent (skip the test); asserts when a step fails. */
bool st_test_quantized_model(const char *const *synth_args, const char *type, char *path, size_t cap);

/* Whole file as a NUL-terminated malloc'd buffer (NULL if unreadable). */
char *st_test_read_file(const char *path, size_t *len);
/* Parsed JSON file (NULL if unreadable or malformed). */
cJSON *st_test_read_json(const char *path);

/* Runs a shell command, returns its exit status (-1 if it could not run). */
int st_test_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
