/* version: the release and git revision every program reports (--version,
 * HELLO and INVENTORY, /health, /metrics). Defined once, in CMakeLists.txt's
 * project(VERSION) and `git describe` at configure time. */
#ifndef ST_VERSION_H
#define ST_VERSION_H

/* "0.4.0 (git abc1234)", or "0.4.0" when built outside a git checkout. Static. */
const char *st_version(void);

/* The release alone: "0.4.0". Static. */
const char *st_version_release(void);

/* Prints "PROG VERSION" as one line on stdout (what --version prints). */
void st_version_print(const char *prog);

#endif
