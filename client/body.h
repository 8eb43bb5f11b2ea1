/* body: a libcurl write callback that gathers an HTTP answer's body, shared
 * by st-chat and st-ctl. */
#ifndef ST_CLIENT_BODY_H
#define ST_CLIENT_BODY_H

#include <stddef.h>

/* CURLOPT_WRITEFUNCTION: appends the n * size bytes at p to the
 * NUL-terminated malloc'd string *(char **)arg (NULL: empty); 0 (libcurl
 * then stops) when memory runs out. The caller frees it. */
size_t st_client_body_cb(char *p, size_t size, size_t n, void *arg);

#endif
