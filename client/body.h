/* body: the HTTP exchange st-chat and st-ctl share with the coordinator's
 * server: one request (headers, timeouts, the API key, the message when the
 * server cannot be reached) and a libcurl callback that gathers an answer. */
#ifndef ST_CLIENT_BODY_H
#define ST_CLIENT_BODY_H

#include <curl/curl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

/* Who asks, and where. */
typedef struct {
    const char *prog;            /* "st-ctl": starts the message when the server cannot be reached */
    const char *hint;            /* that message's second line: what to check */
    bool mid_line;               /* the program's output may stand mid-line: the message starts a new one */
    const char *url, *api_key;   /* the server (no trailing '/'); api_key NULL: none */
    volatile sig_atomic_t *stop; /* NULL, or Ctrl-C presses not yet handled: the transfer ends once not 0 */
} st_client_t;

/* GET (body NULL) or POST of the JSON body to path; the answer goes to
 * write(..., arg) (libcurl's write callback). The HTTP status; 0 when *stop
 * ended the transfer; -1 after saying on stderr why the server could not be
 * reached. */
long st_client_request(const st_client_t *c, const char *path, const char *body, curl_write_callback write, void *arg);

/* CURLOPT_WRITEFUNCTION: appends the n * size bytes at p to the
 * NUL-terminated malloc'd string *(char **)arg (NULL: empty); 0 (libcurl
 * then stops) when memory runs out. The caller frees it. */
size_t st_client_body_cb(char *p, size_t size, size_t n, void *arg);

#endif
