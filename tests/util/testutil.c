/* Test helpers (see testutil.h). */
#include "testutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *st_test_model_dir(void) {
    static char dir[1024];
    const char *env = getenv("ST_MODEL_CACHE");
    if (env && *env)
        snprintf(dir, sizeof dir, "%s", env);
    else
        snprintf(dir, sizeof dir, "%s/.cache/st-models", getenv("HOME") ? getenv("HOME") : "/tmp");
    return dir;
}

static int s_mkdirs(const char *path) {
    char tmp[2048];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", path) >= sizeof tmp) return -1;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

int st_test_system(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *st_test_model(const char *const *args, char *path, size_t cap) {
    /* name: synth-<fnv1a of the args>.gguf */
    uint64_t h = 1469598103934665603ull;
    char argstr[4096] = "";
    size_t used = 0;
    for (int i = 0; args[i]; i++) {
        for (const char *p = args[i]; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0x1f) * 1099511628211ull;
        used += (size_t)snprintf(argstr + used, sizeof argstr - used, " '%s'", args[i]);
        if (used >= sizeof argstr) return NULL;
    }
    const char *dir = st_test_model_dir();
    char sub[1100];
    snprintf(sub, sizeof sub, "%s/test", dir);
    if (s_mkdirs(sub)) {
        fprintf(stderr, "cannot create %s\n", sub);
        return NULL;
    }
    snprintf(path, cap, "%s/synth-%016llx.gguf", sub, (unsigned long long)h);
    if (access(path, R_OK) == 0) return path;
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int rc = st_test_system("'%s/st-synth' --quiet --out '%s'%s", ST_BINARY_DIR, tmp, argstr);
    if (rc != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "st-synth%s failed (exit %d)\n", argstr, rc);
        unlink(tmp);
        return NULL;
    }
    return path;
}

char *st_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len) *len = (size_t)n;
    }
    return buf;
}

cJSON *st_test_read_json(const char *path) {
    char *s = st_test_read_file(path, NULL);
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    free(s);
    return j;
}

const char *st_test_llama_quantize(void) {
    static char path[1024];
    const char *bin = getenv("LLAMA_BIN"), *home = getenv("HOME") ? getenv("HOME") : "/root";
    if (bin && *bin)
        snprintf(path, sizeof path, "%s/llama-quantize", bin);
    else
        snprintf(path, sizeof path, "%s/.cache/st-oracle/llama.cpp/build/bin/llama-quantize", home);
    return access(path, X_OK) == 0 ? path : NULL;
}

bool st_test_quantized_model(const char *const *args, const char *type, char *path, size_t cap) {
    const char *lq = st_test_llama_quantize();
    if (!lq) return false;
    char base[1024];
    if (!st_test_model(args, base, sizeof base)) {
        fprintf(stderr, "st-synth failed\n");
        abort();
    }
    snprintf(path, cap, "%s.%s.gguf", base, type);
    if (access(path, R_OK) == 0) return true;
    if (st_test_system("'%s' '%s' '%s.tmp' %s > /dev/null 2>&1 && mv '%s.tmp' '%s'", lq, base, path, type, path,
                       path)) {
        fprintf(stderr, "llama-quantize %s failed for %s\n", type, base);
        abort();
    }
    return true;
}
