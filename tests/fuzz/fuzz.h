/* fuzz: the entry points shared by the libFuzzer harnesses (built with clang
 * by bench/fuzz) and the corpus replay driver (replay.c, built with the
 * normal compiler and run under ASan/UBSan in the test suite). Each
 * fuzz_<target>.c defines both functions; LLVMFuzzerInitialize may do
 * nothing. */
#ifndef ST_FUZZ_H
#define ST_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
