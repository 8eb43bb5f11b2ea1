/* version: the one definition of the version string (see version.h). The
 * values come from the build directory's generated/version_def.h, which only
 * this file includes, so a new commit recompiles this file alone. */
#include "version.h"

#include <stdio.h>

#include "version_def.h"

const char *st_version(void) {
    return ST_VERSION_GIT[0] ? ST_VERSION_RELEASE " (git " ST_VERSION_GIT ")" : ST_VERSION_RELEASE;
}

const char *st_version_release(void) { return ST_VERSION_RELEASE; }

void st_version_print(const char *prog) {
    printf("%s %s\n", prog, st_version());
    fflush(stdout);
}
