#include "body.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CURLOPT_XFERINFOFUNCTION, also called while waiting: a non-zero count stops the transfer */
static int s_progress_cb(void *arg, curl_off_t a, curl_off_t b, curl_off_t d, curl_off_t e) {
    (void)a, (void)b, (void)d, (void)e;
    return *(volatile sig_atomic_t *)arg > 0;
}

long st_client_request(const st_client_t *c, const char *path, const char *body, curl_write_callback write, void *arg) {
    CURL *h = curl_easy_init();
    if (!h) return -1;
    char url[1024], auth[600], err[CURL_ERROR_SIZE] = "";
    snprintf(url, sizeof url, "%s%s", c->url, path);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (c->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, arg);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
                     5L); /* an answer itself may take minutes (st-ctl's pushes): no timeout */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    if (c->stop) {
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, s_progress_cb);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c->stop);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = -1;
    const st_client_body_t *gathered = write == st_client_body_cb ? arg : NULL;
    if (c->stop && *c->stop && (rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_WRITE_ERROR)) {
        status = 0; /* stopped by Ctrl-C: the caller says so */
    } else if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    } else if (rc == CURLE_WRITE_ERROR && gathered && gathered->too_big) {
        st_client_too_big(c, path, "the answer");
    } else if (rc == CURLE_WRITE_ERROR && gathered && gathered->no_mem) {
        fprintf(stderr, "%s%s: out of memory for the answer of %s\n", c->mid_line ? "\n" : "", c->prog, url);
    } else if (rc == CURLE_WRITE_ERROR) {
        status = -2; /* the caller's write callback refused: the caller says why */
    } else {
        fprintf(stderr, "%s%s: cannot reach the coordinator at %s: %s\n  %s\n", c->mid_line ? "\n" : "", c->prog,
                c->url, *err ? err : curl_easy_strerror(rc), c->hint);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return status;
}

void st_client_too_big(const st_client_t *c, const char *path, const char *what) {
    fprintf(stderr,
            "%s%s: %s of %s%s passed %zu MiB, more than any answer of an st-coordinator: refused (a broken or hostile "
            "server?)\n",
            c->mid_line ? "\n" : "", c->prog, what, c->url, path, ST_CLIENT_MAX_BODY >> 20);
}

int st_client_body_add(st_client_body_t *b, const char *p, size_t n) {
    if (n > ST_CLIENT_MAX_BODY - b->len) {
        b->too_big = true;
        return -1;
    }
    if (b->len + n + 1 > b->cap) { /* doubled: an answer of n bytes is copied O(n) times, not O(n^2) */
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        if (cap > ST_CLIENT_MAX_BODY + 1) cap = ST_CLIENT_MAX_BODY + 1;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->no_mem = true;
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

size_t st_client_body_cb(char *p, size_t size, size_t n, void *arg) {
    const size_t add = size * n; /* libcurl: size is 1, n at most CURL_MAX_WRITE_SIZE */
    return st_client_body_add(arg, p, add) ? 0 : add;
}
