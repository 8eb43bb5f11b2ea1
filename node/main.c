/* st-node: serves a share of a SmallThinker model's experts to a coordinator. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "curve.h"
#include "node.h"
#include "parse.h"
#include "restart.h"
#include "st_log.h"
#include "threadpool.h"
#include "version.h"

static volatile sig_atomic_t g_stop;

static void s_on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: st-node --listen URL --mem SIZE --store DIR [--key FILE] (--allow FILE | --insecure) [options]\n"
            "\n"
            "Serves experts of a SmallThinker model to st-coordinator over ZeroMQ.\n"
            "\n"
            "  --listen URL   endpoint to bind (default tcp://*:5555); tcp://127.0.0.1:* picks a\n"
            "                 free port, and HOST:PORT means tcp://HOST:PORT. The bound endpoint is\n"
            "                 printed on stdout, and the addresses of this machine's interfaces it serves on.\n"
            "  --mem SIZE     RAM the node may use, all included: 512M, 1.5G... (required)\n"
            "  --store DIR    expert store on disk, kept across restarts (required)\n"
            "  -t N           compute threads (default: all %d CPUs)\n"
            "  --batch N      tokens per internal compute step (default 64)\n"
            "  --max-models N model stores kept in DIR (default 8): a model's store is made at its\n"
            "                 first ASSIGN, after removing the least recently used ones that hold no\n"
            "                 expert; an ASSIGN that would need more is refused\n"
            "  --id NAME      node id reported to the coordinator (default: host name)\n"
            "  --key FILE     the node's CURVE secret key (default DIR/node.key, made on first start\n"
            "                 with DIR/node.pub; the public key is printed, for the coordinator's\n"
            "                 --cluster file)\n"
            "  --allow FILE   coordinator public keys this node accepts, one Z85 key per line (from\n"
            "                 st-keygen's NAME.pub); every other client is refused and logged\n"
            "  --insecure     plain TCP, no encryption or authentication (logs a warning)\n"
            "  --version      print the version and exit\n"
            "  -h, --help     this help\n"
            "\n"
            "If it aborts (libzmq 4.3.4 can, on what a peer sends), st-node executes itself again:\n"
            "the same pid and address, the store verified again, \"restarted after an abort\" logged.\n",
            st_cpu_count());
}

/* On a wildcard endpoint (tcp://0.0.0.0:PORT), logs the address of each interface, what a
 * coordinator's cluster file would name: "tcp://192.168.1.23:5555 (eth0)". */
static void s_log_interfaces(const char *endpoint) {
    const char *port = strrchr(endpoint, ':');
    if (!port || (strncmp(endpoint, "tcp://0.0.0.0:", 14) && strncmp(endpoint, "tcp://[::]:", 11))) return;
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return;
    for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &((const struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, sizeof ip);
        st_log(ST_LOG_INFO, "serving on tcp://%s%s (%s%s)", ip, port, i->ifa_name,
               (i->ifa_flags & IFF_LOOPBACK) ? ", this machine only" : "");
    }
    freeifaddrs(ifs);
}

static int s_bad(const char *fmt, const char *arg) {
    fprintf(stderr, "st-node: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see st-node --help)\n");
    return 2;
}

int main(int argc, char **argv) {
    const int restarts = st_restart_count(); /* first: it also unblocks the signals an abort left blocked */
    st_node_opts_t o = {.listen = "tcp://*:5555"};
    const char *key_file = NULL, *allow_file = NULL;
    bool have_mem = false;
    char listen[512];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            st_version_print("st-node");
            return 0;
        } else if (!strcmp(a, "--insecure")) {
            o.insecure = true;
            continue;
        }
        static const char *with_value[] = {"--listen",  "--store", "--id",  "--mem",   "-t",
                                           "--threads", "--batch", "--key", "--allow", "--max-models"};
        bool known = false;
        for (size_t j = 0; j < sizeof with_value / sizeof with_value[0]; j++) known |= !strcmp(a, with_value[j]);
        if (!known) return s_bad("unknown option %s", a);
        if (!v) return s_bad("%s needs a value", a);
        i++;
        if (!strcmp(a, "--listen")) {
            if (!strstr(v, "://")) { /* HOST:PORT, as --http takes it: ZeroMQ wants the transport */
                if (snprintf(listen, sizeof listen, "tcp://%s", v) >= (int)sizeof listen)
                    return s_bad("--listen %s: too long", v);
                v = listen;
            } else if (strncmp(v, "tcp://", 6)) {
                return s_bad("--listen %s: want tcp://HOST:PORT (or HOST:PORT)", v);
            }
            o.listen = v;
        } else if (!strcmp(a, "--store"))
            o.store_dir = v;
        else if (!strcmp(a, "--id"))
            o.id = v;
        else if (!strcmp(a, "--key"))
            key_file = v;
        else if (!strcmp(a, "--allow"))
            allow_file = v;
        else if (!strcmp(a, "--mem")) {
            if (!st_parse_size(v, &o.mem) || o.mem < (16u << 20))
                return s_bad("--mem %s: want a size of 16M or more", v);
            have_mem = true;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!st_parse_int(v, 1, 256, &x)) return s_bad("-t %s: want 1..256 threads", v);
            o.threads = (int)x;
        } else if (!strcmp(a, "--max-models")) {
            if (!st_parse_int(v, 1, 1000, &x)) return s_bad("--max-models %s: want 1..1000 models", v);
            o.max_models = (int)x;
        } else if (!strcmp(a, "--batch")) {
            if (!st_parse_int(v, 1, 4096, &x)) return s_bad("--batch %s: want 1..4096 tokens", v);
            o.batch = (int)x;
        }
    }
    if (!have_mem) return s_bad("%s", "--mem SIZE is required");
    if (!o.store_dir) return s_bad("%s", "--store DIR is required");
    static uint8_t allow[ST_CURVE_MAX_ALLOW][ST_CURVE_KEY_BYTES];
    if (o.insecure) {
        if (allow_file || key_file) return s_bad("%s", "--insecure takes no --key or --allow (plain TCP has no keys)");
        st_log(ST_LOG_WARN,
               "--insecure: traffic is neither encrypted nor authenticated; anyone who can reach %s "
               "can use this node",
               o.listen);
    } else {
        if (!allow_file)
            return s_bad("%s",
                         "refusing to start without --allow FILE (the coordinator public keys to accept, one\n"
                         "         Z85 key per line, e.g. its st-keygen NAME.pub); pass --insecure to serve plain\n"
                         "         TCP to anyone on a network you trust");
        int n_allow = st_curve_load_allow(allow_file, allow, ST_CURVE_MAX_ALLOW);
        if (n_allow < 0) return 1;
        o.allow = (const uint8_t(*)[32])allow;
        o.n_allow = n_allow;
        char path[4096], pub[ST_CURVE_Z85_LEN + 1];
        if (!key_file) { /* DIR/node.key, made on first start like an SSH host key */
            if (snprintf(path, sizeof path, "%s/node.key", o.store_dir) >= (int)sizeof path - 4)
                return s_bad("%s", "--store path too long");
            if (access(path, F_OK) != 0) {
                mkdir(o.store_dir, 0700);      /* the store would make it anyway */
                path[strlen(path) - 4] = '\0'; /* DIR/node */
                if (st_curve_keygen(path, pub) < 0) return 1;
                st_log(ST_LOG_INFO, "made a new node key pair: %s.key (secret) and %s.pub", path, path);
                strcat(path, ".key");
            }
            key_file = path;
        }
        if (st_curve_load_secret(key_file, o.secret_key, pub) < 0) return 1;
        printf("node public key %s\n", pub);
        st_log(ST_LOG_INFO, "CURVE: node public key %s (%s); %d coordinator key%s allowed", pub, key_file, n_allow,
               n_allow == 1 ? "" : "s");
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    st_node_t *n = st_node_new(&o);
    if (!n) return 1;
    st_restart_arm(argc, argv, st_node_endpoint(n)); /* on failure (logged) an abort ends the process */
    if (restarts)
        st_log(ST_LOG_WARN, "restarted after an abort (restart %d of this process): the store is verified again",
               restarts);
    printf("listening on %s\n", st_node_endpoint(n));
    fflush(stdout);
    s_log_interfaces(st_node_endpoint(n));
    st_log(ST_LOG_INFO, "node %s: --mem %llu B, store %s, %d threads", o.id ? o.id : "(host name)",
           (unsigned long long)o.mem, o.store_dir, o.threads > 0 ? o.threads : st_cpu_count());
    int rc = st_node_run(n, &g_stop);
    st_node_destroy(&n);
    return rc ? 1 : 0;
}
