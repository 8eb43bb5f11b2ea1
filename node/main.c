/* st-node: serves a share of a SmallThinker model's experts to a coordinator. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "parse.h"
#include "st_log.h"
#include "threadpool.h"

static volatile sig_atomic_t g_stop;

static void s_on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: st-node --listen URL --mem SIZE --store DIR --insecure [options]\n"
            "\n"
            "Serves experts of a SmallThinker model to st-coordinator over ZeroMQ.\n"
            "\n"
            "  --listen URL   endpoint to bind (default tcp://*:5555); tcp://127.0.0.1:* picks a\n"
            "                 free port. The bound endpoint is printed on stdout.\n"
            "  --mem SIZE     RAM the node may use, all included: 512M, 1.5G... (required)\n"
            "  --store DIR    expert store on disk, kept across restarts (required)\n"
            "  -t N           compute threads (default: all %d CPUs)\n"
            "  --batch N      tokens per internal compute step (default 64)\n"
            "  --id NAME      node id reported to the coordinator (default: host name)\n"
            "  --insecure     plain TCP, no encryption or authentication (required for now:\n"
            "                 CURVE with --key/--allow comes with the hardening work)\n"
            "  -h, --help     this help\n",
            st_cpu_count());
}

static int s_bad(const char *fmt, const char *arg) {
    fprintf(stderr, "st-node: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see st-node --help)\n");
    return 2;
}

int main(int argc, char **argv) {
    st_node_opts_t o = {.listen = "tcp://*:5555"};
    bool have_mem = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--insecure")) {
            o.insecure = true;
            continue;
        }
        static const char *with_value[] = {"--listen", "--store", "--id", "--mem", "-t", "--threads", "--batch"};
        bool known = false;
        for (size_t j = 0; j < sizeof with_value / sizeof with_value[0]; j++) known |= !strcmp(a, with_value[j]);
        if (!known) return s_bad("unknown option %s", a);
        if (!v) return s_bad("%s needs a value", a);
        i++;
        if (!strcmp(a, "--listen")) o.listen = v;
        else if (!strcmp(a, "--store")) o.store_dir = v;
        else if (!strcmp(a, "--id")) o.id = v;
        else if (!strcmp(a, "--mem")) {
            if (!st_parse_size(v, &o.mem) || o.mem < (16u << 20)) return s_bad("--mem %s: want a size of 16M or more", v);
            have_mem = true;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!st_parse_int(v, 1, 256, &x)) return s_bad("-t %s: want 1..256 threads", v);
            o.threads = (int)x;
        } else if (!strcmp(a, "--batch")) {
            if (!st_parse_int(v, 1, 4096, &x)) return s_bad("--batch %s: want 1..4096 tokens", v);
            o.batch = (int)x;
        }
    }
    if (!have_mem) return s_bad("%s", "--mem SIZE is required");
    if (!o.store_dir) return s_bad("%s", "--store DIR is required");
    if (!o.insecure) {
        fprintf(stderr, "st-node: encrypted transport (CURVE, with --key and --allow FILE) is not available yet;\n"
                        "         pass --insecure to serve over plain TCP on a network you trust\n");
        return 2;
    }
    st_log(ST_LOG_WARN, "--insecure: traffic is neither encrypted nor authenticated; anyone who can reach %s can use "
           "this node", o.listen);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    st_node_t *n = st_node_new(&o);
    if (!n) return 1;
    printf("listening on %s\n", st_node_endpoint(n));
    fflush(stdout);
    st_log(ST_LOG_INFO, "node %s: --mem %llu B, store %s, %d threads", o.id ? o.id : "(host name)",
           (unsigned long long)o.mem, o.store_dir, o.threads > 0 ? o.threads : st_cpu_count());
    int rc = st_node_run(n, &g_stop);
    st_node_destroy(&n);
    return rc ? 1 : 0;
}
