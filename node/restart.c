/* restart: st-node re-executes itself when it aborts (see restart.h).
 *
 * Everything the handler needs (path, argv, envp, its message) is built
 * beforehand, so the handler itself only calls clock_gettime, write and
 * execve, all async-signal-safe. When it returns (execve failed, or a
 * second abort right after a restart), glibc's abort() goes on and the
 * process ends with SIGABRT as before.
 */
#include "restart.h"

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "st_log.h"

#define RESTART_ENV "ST_NODE_RESTARTS"
#define RESTART_MIN_MS 1000 /* a restarted process that aborts sooner is left to die */

extern char **environ;

static int g_count;
static char g_exe[PATH_MAX];
static char **g_argv, **g_envp;
static char g_env_count[64], g_msg[512];
static size_t g_msg_len;
static struct timespec g_armed;

int st_restart_count(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    const char *v = getenv(RESTART_ENV);
    g_count = v ? atoi(v) : 0;
    if (g_count < 0) g_count = 0;
    return g_count;
}

static void s_say(const char *s) {
    ssize_t r = write(STDERR_FILENO, s, strlen(s));
    (void)r;
}

static void s_on_abort(int sig) {
    (void)sig;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    const long long ms = (now.tv_sec - g_armed.tv_sec) * 1000LL + (now.tv_nsec - g_armed.tv_nsec) / 1000000;
    if (g_count > 0 && ms < RESTART_MIN_MS) {
        s_say("st-node: error: aborted again within a second of a restart: exiting\n");
        return;
    }
    ssize_t r = write(STDERR_FILENO, g_msg, g_msg_len);
    (void)r;
    execve(g_exe, g_argv, g_envp);
    s_say("st-node: error: cannot execute st-node again: exiting\n");
}

int st_restart_arm(int argc, char **argv, const char *endpoint) {
    const ssize_t n = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
    if (n <= 0 || (size_t)n >= sizeof g_exe - 1) return st_fail(ST_EIO, "cannot find this program (/proc/self/exe)");
    g_exe[n] = '\0';
    /* argv with --listen naming the bound address (appended when it was the default) */
    char *listen = strdup(endpoint);
    g_argv = calloc((size_t)argc + 3, sizeof *g_argv);
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    g_envp = calloc(n_env + 2, sizeof *g_envp);
    if (!listen || !g_argv || !g_envp) {
        free(listen), free(g_argv), free(g_envp);
        g_argv = g_envp = NULL;
        return st_fail(ST_ENOMEM, "restart arguments");
    }
    int j = 0;
    bool have_listen = false;
    for (int i = 0; i < argc; i++) {
        g_argv[j++] = argv[i];
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            g_argv[j++] = listen;
            have_listen = true;
            i++;
        }
    }
    if (!have_listen) g_argv[j++] = "--listen", g_argv[j++] = listen;
    g_argv[j] = NULL;
    /* the environment with the count plus one */
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], RESTART_ENV "=", sizeof RESTART_ENV)) g_envp[k++] = environ[i];
    snprintf(g_env_count, sizeof g_env_count, RESTART_ENV "=%d", g_count + 1);
    g_envp[k++] = g_env_count;
    g_envp[k] = NULL;
    g_msg_len =
        (size_t)snprintf(g_msg, sizeof g_msg, "st-node: warn: aborted: restarting (%s --listen %s)\n", g_exe, endpoint);
    if (g_msg_len >= sizeof g_msg) g_msg_len = sizeof g_msg - 1;
    clock_gettime(CLOCK_MONOTONIC, &g_armed);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_abort;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGABRT, &sa, NULL)) return st_fail(ST_EIO, "sigaction(SIGABRT)");
    return 0;
}
