/* body: the HTTP exchange st-chat and st-ctl share with the coordinator's
 * server: one request (headers, timeouts, the API key, the message when the
 * server cannot be reached) and a libcurl callback that gathers an answer.
 *
 * The server is on the LAN and may be broken or hostile: nothing it sends is
 * kept without a bound. ST_CLIENT_MAX_BODY caps a whole answer gathered here,
 * and st-chat applies it to one SSE event and to the text of a streamed
 * answer; past it the request fails with a message that names the URL and
 * the limit. */
#ifndef ST_CLIENT_BODY_H
#define ST_CLIENT_BODY_H

#include <curl/curl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

/* The largest answer taken from a server: 16 MiB, some 50 times the largest
 * legitimate one (/health of 64 nodes, a non-streamed answer filling a 32K
 * context; the README has the measures), and small beside a board's RAM. */
#define ST_CLIENT_MAX_BODY ((size_t)16 << 20)

/* Who asks, and where. */
typedef struct {
    const char *prog;            /* "st-ctl": starts the message when the server cannot be reached */
    const char *hint;            /* that message's second line: what to check */
    bool mid_line;               /* the program's output may stand mid-line: the message starts a new one */
    const char *url, *api_key;   /* the server (no trailing '/'); api_key NULL: none */
    volatile sig_atomic_t *stop; /* NULL, or Ctrl-C presses not yet handled: the transfer ends once not 0 */
} st_client_t;

/* An answer gathered by st_client_body_cb. */
typedef struct {
    char *data;   /* NUL-terminated, malloc'd (NULL: nothing came); the caller frees it */
    size_t len;   /* bytes in data */
    size_t cap;   /* bytes allocated */
    bool too_big; /* refused: more than ST_CLIENT_MAX_BODY came */
    bool no_mem;  /* refused: out of memory */
} st_client_body_t;

/* GET (body NULL) or POST of the JSON body to path; the answer goes to
 * write(..., arg) (libcurl's write callback). The HTTP status; 0 when *stop
 * ended the transfer; -1 after saying on stderr why the server could not be
 * reached or, with st_client_body_cb, why its answer was refused. -2 when
 * another write callback returned short: its caller says why. */
long st_client_request(const st_client_t *c, const char *path, const char *body, curl_write_callback write, void *arg);

/* Appends the n bytes at p to b (kept NUL-terminated, grown by doubling):
 * 0, or -1 with nothing added and too_big set past ST_CLIENT_MAX_BODY, or
 * no_mem set when memory runs out. */
int st_client_body_add(st_client_body_t *b, const char *p, size_t n);

/* CURLOPT_WRITEFUNCTION for an st_client_body_t *arg: st_client_body_add of
 * the n * size bytes at p; returns short (libcurl then stops) when refused. */
size_t st_client_body_cb(char *p, size_t size, size_t n, void *arg);

/* Says on stderr that what ("the answer", "one SSE event"...) of c->url +
 * path passed ST_CLIENT_MAX_BODY, and that it was refused. */
void st_client_too_big(const st_client_t *c, const char *path, const char *what);

#endif
