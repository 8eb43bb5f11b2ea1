/* curve: CURVE key files (see curve.h). The secret key passes through stack
 * buffers that are wiped (sodium_memzero) before return; it is written with
 * O_EXCL and mode 0600 from the start, never chmod-ed after the fact. */
#include "curve.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "st_log.h"

bool st_curve_valid_z85(const char *s) {
    uint8_t bin[ST_CURVE_KEY_BYTES];
    if (!s || strlen(s) != ST_CURVE_Z85_LEN) return false;
    return zmq_z85_decode(bin, s) != NULL;
}

static int s_write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int st_curve_keygen(const char *base, char public_z85[ST_CURVE_Z85_LEN + 1]) {
    char pub[ST_CURVE_Z85_LEN + 1], sec[ST_CURVE_Z85_LEN + 1], path[4096], line[ST_CURVE_Z85_LEN + 2];
    if (snprintf(path, sizeof path, "%s.key", base) >= (int)sizeof path) return st_fail(ST_EINVAL, "path too long");
    if (zmq_curve_keypair(pub, sec) != 0)
        return st_fail(ST_EIO, "zmq_curve_keypair: %s (libzmq without CURVE?)", zmq_strerror(zmq_errno()));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        sodium_memzero(sec, sizeof sec);
        if (errno == EEXIST) return st_fail(ST_EINVAL, "%s exists: not overwritten", path);
        return st_fail(ST_EIO, "cannot create %s: %s", path, strerror(errno));
    }
    snprintf(line, sizeof line, "%s\n", sec);
    int rc = s_write_all(fd, line, strlen(line)) || fsync(fd) ? -1 : 0;
    sodium_memzero(sec, sizeof sec);
    sodium_memzero(line, sizeof line);
    if (close(fd) || rc) {
        unlink(path);
        return st_fail(ST_EIO, "cannot write %s", path);
    }
    snprintf(path, sizeof path, "%s.pub", base);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    snprintf(line, sizeof line, "%s\n", pub);
    if (fd < 0 || s_write_all(fd, line, strlen(line)) || close(fd)) {
        if (fd >= 0) close(fd);
        return st_fail(ST_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    if (public_z85) memcpy(public_z85, pub, sizeof pub);
    return 0;
}

int st_curve_load_secret(const char *path, char secret_z85[ST_CURVE_Z85_LEN + 1],
                         char public_z85[ST_CURVE_Z85_LEN + 1]) {
    FILE *f = fopen(path, "re");
    if (!f) return st_fail(ST_EIO, "cannot read the key file %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 077))
        st_log(ST_LOG_WARN, "%s can be read by other users (mode %03o): chmod 600 it", path,
               (unsigned)(sb.st_mode & 0777));
    char line[128] = "";
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, " \t\r\n")] = '\0';
    ok = ok && strlen(line) == ST_CURVE_Z85_LEN && zmq_curve_public(public_z85, line) == 0;
    if (ok) memcpy(secret_z85, line, ST_CURVE_Z85_LEN + 1);
    sodium_memzero(line, sizeof line);
    if (!ok) return st_fail(ST_EFORMAT, "%s does not hold a Z85 CURVE secret key (make one with st-keygen)", path);
    return 0;
}

int st_curve_load_allow(const char *path, uint8_t (*keys)[ST_CURVE_KEY_BYTES], int cap) {
    FILE *f = fopen(path, "re");
    if (!f) return st_fail(ST_EIO, "cannot read the allow list %s: %s", path, strerror(errno));
    char *line = NULL; /* any length: a long comment read in pieces would leave a piece as a "key" */
    size_t line_cap = 0;
    int n = 0, lineno = 0, rc = 0;
    while (!rc && getline(&line, &line_cap, f) > 0) {
        lineno++;
        const char *p = line + strspn(line, " \t");
        /* '#' is a Z85 character: a line is a comment when its first word is not a key */
        size_t len = strcspn(p, " \t\r\n");
        if (len == 0 || (*p == '#' && len != ST_CURVE_Z85_LEN)) continue;
        char key[ST_CURVE_Z85_LEN + 1];
        if (len != ST_CURVE_Z85_LEN) {
            rc = st_fail(ST_EFORMAT, "%s:%d: not a Z85 public key (%zu characters, want %d)", path, lineno, len,
                         ST_CURVE_Z85_LEN);
            break;
        }
        memcpy(key, p, len);
        key[len] = '\0';
        if (n >= cap)
            rc = st_fail(ST_ERANGE, "%s: more than %d keys", path, cap);
        else if (!zmq_z85_decode(keys[n], key))
            rc = st_fail(ST_EFORMAT, "%s:%d: not a Z85 public key", path, lineno);
        else
            n++;
    }
    free(line);
    fclose(f);
    if (rc) return rc;
    if (n == 0) return st_fail(ST_EFORMAT, "%s lists no key: the node would accept nobody", path);
    return n;
}
