/* Test helpers (see testutil.h). */
#include "testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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

const char *st_test_run_prefix(void) {
    static char prefix[1100];
    const char *emu = getenv("ST_TEST_EMULATOR");
    if (!emu || !*emu || strchr(emu, '\'')) return "";
    snprintf(prefix, sizeof prefix, "'%s' ", emu);
    return prefix;
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
    int rc = st_test_system("%s'%s/st-synth' --quiet --out '%s'%s", st_test_run_prefix(), ST_BINARY_DIR, tmp, argstr);
    if (rc != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "st-synth%s failed (exit %d)\n", argstr, rc);
        unlink(tmp);
        return NULL;
    }
    return path;
}

const char *st_test_tiny_model(void) {
    static char path[1024];
    cr_assert_not_null(st_test_model(ST_SYNTH("--type", "f32"), path, sizeof path), "st-synth failed");
    return path;
}

const char *st_test_cluster_model(void) {
    static char path[1024];
    cr_assert_not_null(st_test_model(ST_SYNTH("--type", "q4_0", "--hidden", "512", "--layers", "4", "--experts", "16",
                                              "--experts-used", "4", "--expert-ffn", "512", "--seed", "5"),
                                     path, sizeof path),
                       "st-synth failed");
    return path;
}

st_model_t *st_test_load_path(const char *path) {
    st_model_t *m = st_model_load(path);
    cr_assert_not_null(m, "cannot load %s", path);
    return m;
}

st_model_t *st_test_load(const char *const *args) {
    char path[1024];
    cr_assert_not_null(st_test_model(args, path, sizeof path), "st-synth failed");
    return st_test_load_path(path);
}

st_ctx_t *st_test_ctx(const st_model_t *m, int n_ctx, int n_batch) {
    st_ctx_params_t p = st_ctx_default_params();
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_threads = 2;
    st_ctx_t *c = st_ctx_new(m, &p);
    cr_assert_not_null(c, "no context of %d positions, batch %d", n_ctx, n_batch);
    return c;
}

cJSON *st_test_read_json(const char *path) {
    char *s = st_file_read(path, 0, NULL);
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    free(s);
    return j;
}

/* ---- processes ---------------------------------------------------------- */

#define MAX_CHILDREN 64
static pid_t s_children[MAX_CHILDREN]; /* spawned and not reaped yet (0: free slot) */

static void s_forget(pid_t pid) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] == pid) s_children[i] = 0;
}

pid_t st_test_spawn(const char *const *argv, int *out_fd, const char *log, int death_sig) {
    int out[2] = {-1, -1};
    if (out_fd) cr_assert_eq(pipe(out), 0);
    const pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork failed");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, death_sig);
        if (getppid() != parent) _exit(127); /* the test died before prctl */
        if (out_fd) {
            dup2(out[1], 1);
            close(out[0]);
            close(out[1]);
        }
        if (log) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) dup2(fd, 2), close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (out_fd) close(out[1]), *out_fd = out[0];
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (!s_children[i]) {
            s_children[i] = pid;
            break;
        }
    return pid;
}

int st_test_serving_port(int out_fd, int wait_ms, const char *log) {
    char buf[512] = "";
    size_t len = 0;
    const double deadline = st_now_ms() + wait_ms;
    const char *line;
    while (!(line = strstr(buf, "serving on ")) || !strchr(line, '\n')) {
        struct pollfd p = {out_fd, POLLIN, 0};
        int left = (int)(deadline - st_now_ms());
        cr_assert_gt(left, 0, "no 'serving on' line within %d ms (log %s)", wait_ms, log);
        cr_assert_geq(poll(&p, 1, left), 0);
        if (!(p.revents & (POLLIN | POLLHUP))) continue;
        ssize_t r = read(out_fd, buf + len, sizeof buf - 1 - len);
        cr_assert_gt(r, 0, "the server exited before serving (log %s)", log);
        len += (size_t)r;
        buf[len] = '\0';
    }
    close(out_fd);
    int port = 0;
    cr_assert_eq(sscanf(line, "serving on http://127.0.0.1:%d/", &port), 1, "said: %s", line);
    return port;
}

int st_test_wait(pid_t pid, int ms) {
    const double deadline = st_now_ms() + ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            s_forget(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0) { /* not our child (any more) */
            s_forget(pid);
            return -1;
        }
        if (st_now_ms() > deadline) return -1;
        poll(NULL, 0, 5); /* polling an exit status, bounded by the deadline */
    }
}

int st_test_stop(pid_t pid, int sig, int ms) {
    if (pid <= 0) return 0;
    kill(pid, sig);
    if (sig == SIGSTOP || sig == SIGTSTP) kill(pid, SIGCONT); /* a stopped child would not die */
    int st = st_test_wait(pid, ms);
    if (st < 0) {
        kill(pid, SIGKILL);
        st = st_test_wait(pid, 5000);
    }
    return st;
}

void st_test_kill_all(void) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] > 0) {
            kill(s_children[i], SIGCONT);
            st_test_stop(s_children[i], SIGTERM, 2000);
            s_children[i] = 0;
        }
}

/* ---- temporary directories --------------------------------------------------- */

#define MAX_TMPDIRS 32
static char s_tmpdirs[MAX_TMPDIRS][256]; /* made and not removed yet ("": free slot) */

/* Removes /tmp/st-test-*.pPID-XXXXXX whose PID is no longer a process. */
static void s_sweep_orphans(void) {
    DIR *d = opendir("/tmp");
    for (struct dirent *e; d && (e = readdir(d));) {
        const char *name = e->d_name, *p = strstr(name, ".p");
        if (strncmp(name, "st-test-", 8) != 0 || !p) continue;
        while (strstr(p + 1, ".p")) p = strstr(p + 1, ".p"); /* the last one */
        char *end;
        const long pid = strtol(p + 2, &end, 10);
        if (p[2] < '0' || p[2] > '9' || pid <= 0 || end[0] != '-' || strlen(end) != 7) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to ask) */
        st_test_system("rm -rf '/tmp/%s'", name);
    }
    if (d) closedir(d);
}

void st_test_tmpdir(char *out, size_t cap, const char *tag) {
    s_sweep_orphans();
    cr_assert_lt((size_t)snprintf(out, cap, "/tmp/st-test-%s.p%d-XXXXXX", tag, (int)getpid()), cap, "%s", tag);
    cr_assert_not_null(mkdtemp(out), "mkdtemp %s: %s", out, strerror(errno));
    for (int i = 0; i < MAX_TMPDIRS; i++)
        if (!s_tmpdirs[i][0]) {
            snprintf(s_tmpdirs[i], sizeof s_tmpdirs[i], "%s", out);
            return;
        }
}

void st_test_tmpdir_remove(const char *dir) {
    if (!dir || !dir[0]) return;
    st_test_system("rm -rf '%s'", dir);
    for (int i = 0; i < MAX_TMPDIRS; i++)
        if (!strcmp(s_tmpdirs[i], dir)) s_tmpdirs[i][0] = '\0';
}

void st_test_cleanup(void) {
    st_test_kill_all(); /* first: a node may still write into its store */
    for (int i = 0; i < MAX_TMPDIRS; i++)
        if (s_tmpdirs[i][0]) {
            st_test_system("rm -rf '%s'", s_tmpdirs[i]);
            s_tmpdirs[i][0] = '\0';
        }
}

int st_test_port_hold(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "bind: %s", strerror(errno));
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port); /* fd stays open (and bound) until the process exits */
}

int st_test_node_start(st_test_node_t *nd, const char *const *argv, const char *log, int ms) {
    memset(nd, 0, sizeof *nd);
    /* a wildcard loopback port becomes a held one (see testutil.h) */
    const char *args[64];
    char listen[64];
    int n = 0;
    for (; argv[n]; n++) {
        cr_assert_lt(n, 63, "too many arguments");
        args[n] = argv[n];
        if (n > 0 && !strcmp(argv[n - 1], "--listen") && !strcmp(argv[n], "tcp://127.0.0.1:*")) {
            snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", st_test_port_hold());
            args[n] = listen;
        }
    }
    args[n] = NULL;
    nd->pid = st_test_spawn(args, &nd->out, log, SIGTERM); /* SIGTERM: a wrapper passes it on */
    char buf[2048] = "";
    size_t len = 0;
    const double deadline = st_now_ms() + ms;
    const char *at;
    while (!(at = strstr(buf, "listening on ")) || !strchr(at, '\n')) {
        struct pollfd p = {nd->out, POLLIN, 0};
        int left = (int)(deadline - st_now_ms());
        cr_assert_gt(left, 0, "%s did not start within %d ms (log %s)", argv[0], ms, log ? log : "stderr");
        if (poll(&p, 1, left) <= 0) continue;
        ssize_t r = read(nd->out, buf + len, sizeof buf - 1 - len);
        if (r <= 0) { /* exited before listening */
            close(nd->out);
            int st = st_test_wait(nd->pid, 10000);
            memset(nd, 0, sizeof *nd);
            return st > 0 ? st : 128;
        }
        len += (size_t)r;
        buf[len] = '\0';
    }
    cr_assert_eq(sscanf(at, "listening on %127s", nd->url), 1, "%s said: %s", argv[0], buf);
    const char *k = strstr(buf, "node public key ");
    if (k) cr_assert_eq(sscanf(k, "node public key %40s", nd->pub), 1);
    return 0;
}

int st_test_node_stop(st_test_node_t *nd, int sig) {
    if (nd->pid <= 0) return 0;
    int st = st_test_stop(nd->pid, sig, 10000);
    close(nd->out);
    nd->pid = 0;
    nd->out = -1;
    return st;
}

bool st_test_file_has(const char *path, const char *text, int ms) {
    const double deadline = st_now_ms() + ms;
    for (;;) {
        char *s = st_file_read(path, 0, NULL);
        bool found = s && strstr(s, text);
        free(s);
        if (found || st_now_ms() > deadline) return found;
        poll(NULL, 0, 10); /* polling a file for a line, bounded by the deadline */
    }
}

long st_test_pushed(const char *err) {
    const char *p = err ? strstr(err, " pushed (") : NULL;
    long n = -1;
    if (!p || sscanf(p, " pushed (%ld shard bytes)", &n) != 1) return -1;
    return n;
}

unsigned long long st_test_head_by_replica(const char *err) {
    const char *p = strstr(err, "cluster: head draws from candidates: ");
    unsigned long long n = 0;
    cr_assert(p && (p = strstr(p, "; ")) && sscanf(p, "; %llu slices answered by a replica", &n) == 1,
              "no head replica count:\n%s", err);
    return n;
}

unsigned long long st_test_rejoins(const char *err, unsigned long long *bytes) {
    const char *p = strstr(err, " rejoins of nodes that were down (");
    unsigned long long n = 0;
    cr_assert_not_null(p, "no rejoin summary:\n%s", err);
    while (p > err && p[-1] != ' ') p--;
    cr_assert_eq(sscanf(p, "%llu rejoins of nodes that were down (%llu shard bytes", &n, bytes), 2);
    return n;
}

unsigned long long st_test_last_rt(const char *err, int k) {
    const char *last = NULL;
    for (const char *p = strstr(err, "stats: token "); p; p = strstr(p + 1, "stats: token ")) last = p;
    cr_assert_not_null(last, "no --stats lines");
    char key[32];
    snprintf(key, sizeof key, " node %d rt ", k);
    const char *p = strstr(last, key);
    unsigned long long rt = 0;
    cr_assert(p && sscanf(p + strlen(key), "%llu", &rt) == 1, "%.300s", last);
    return rt;
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
    /* written under a name of this process (the tests of a suite run in parallel, each may make it) and
     * renamed into place, as st_test_model does */
    if (st_test_system("'%s' '%s' '%s.tmp.%d' %s > /dev/null 2>&1 && mv -f '%s.tmp.%d' '%s'", lq, base, path,
                       (int)getpid(), type, path, (int)getpid(), path)) {
        fprintf(stderr, "llama-quantize %s failed for %s\n", type, base);
        abort();
    }
    return true;
}

size_t st_test_foreign_envelope(uint8_t *buf, uint32_t version, uint32_t type, uint32_t rid, const char *software) {
    size_t n = 0, len = strlen(software);
    cr_assert(version < 128 && type < 128 && rid < 128 && len < 128);
    buf[n++] = 0x08, buf[n++] = (uint8_t)version; /* field 1, varint */
    buf[n++] = 0x10, buf[n++] = (uint8_t)type;    /* field 2, varint */
    buf[n++] = 0x18, buf[n++] = (uint8_t)rid;     /* field 3, varint */
    buf[n++] = 0x22, buf[n++] = (uint8_t)len;     /* field 4, length-delimited */
    memcpy(buf + n, software, len);
    return n + len;
}
