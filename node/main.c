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
#include <zmq.h>

#include "curve.h"
#include "join.h"
#include "node.h"
#include "pake.h"
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
            "       st-node --listen URL --mem SIZE --store DIR --join [tcp://HOST:PORT] --code CODE [options]\n"
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
            "  --join [URL]   pair with the coordinator first (its st-coordinator --pair URL; without URL,\n"
            "                 found by UDP broadcast on the LAN), proving --code CODE; the coordinator's key\n"
            "                 goes into the allow file (default DIR/allow), this node's key and address into\n"
            "                 its cluster file. Already paired (the allow file holds a key): no pairing again.\n"
            "                 --listen needs a fixed port (the coordinator's cluster file names it)\n"
            "  --code CODE    the pairing code st-coordinator printed (\"pairing code: ...\")\n"
            "  --advertise URL  the address the coordinator is to reach this node at, e.g. tcp://pi-3.local:5555\n"
            "                 (default: --listen, a wildcard host replaced by the address it pairs from)\n"
            "  --join-timeout S  give up pairing after S seconds (default 600)\n"
            "  --discovery-port N  UDP port of the coordinator's discovery (default %d)\n"
            "  --insecure     plain TCP, no encryption or authentication (logs a warning)\n"
            "  --version      print the version and exit\n"
            "  -h, --help     this help\n"
            "\n"
            "Exit status: 0 stopped, 1 failed, 2 bad options, 3 the pairing code was refused.\n"
            "If it aborts (libzmq 4.3.4 can, on what a peer sends), st-node executes itself again:\n"
            "the same pid and address, the store verified again, \"restarted after an abort\" logged.\n",
            st_cpu_count(), ST_PAKE_DISCOVERY_PORT);
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
    const char *key_file = NULL, *allow_file = NULL, *join_url = NULL, *code = NULL, *advertise = NULL;
    bool have_mem = false, join = false;
    long join_timeout = 600, discovery_port = ST_PAKE_DISCOVERY_PORT;
    char listen[512], allow_path[4096];
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
        } else if (!strcmp(a, "--join")) { /* its address is optional: discovered without it */
            join = true;
            if (v && v[0] != '-') {
                if (strncmp(v, "tcp://", 6)) return s_bad("--join %s: want tcp://HOST:PORT (st-coordinator --pair)", v);
                join_url = v;
                i++;
            }
            continue;
        }
        static const char *with_value[] = {"--listen",    "--store",         "--id",    "--mem",
                                           "-t",          "--threads",       "--batch", "--key",
                                           "--allow",     "--max-models",    "--code",  "--join-timeout",
                                           "--advertise", "--discovery-port"};
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
        else if (!strcmp(a, "--code"))
            code = v;
        else if (!strcmp(a, "--advertise")) {
            if (strncmp(v, "tcp://", 6) || strlen(v) > ST_PAKE_MAX_ENDPOINT)
                return s_bad("--advertise %s: want tcp://HOST:PORT", v);
            advertise = v;
        } else if (!strcmp(a, "--join-timeout")) {
            if (!st_parse_int(v, 1, 86400 * 7, &join_timeout)) return s_bad("--join-timeout %s: want seconds", v);
        } else if (!strcmp(a, "--discovery-port")) {
            if (!st_parse_int(v, 1, 65535, &discovery_port)) return s_bad("--discovery-port %s: want 1..65535", v);
        } else if (!strcmp(a, "--mem")) {
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
    if (join && (o.insecure || !code)) return s_bad("%s", "--join takes --code CODE, and not --insecure");
    if ((code || advertise) && !join) return s_bad("%s", "--code and --advertise are for --join");
    char norm[ST_PAKE_CODE_LEN + 1];
    if (code && st_pake_code_normalize(code, norm) < 0)
        return s_bad("--code %s: want the 10 characters st-coordinator printed (e.g. ABCDE-FGHJK)", code);
    if (join && strstr(o.listen, ":*"))
        return s_bad("--listen %s: --join needs a fixed port (the coordinator's cluster file names it)", o.listen);
    if (!allow_file && !o.insecure) { /* DIR/allow: where pairing writes, used when it is there */
        if (snprintf(allow_path, sizeof allow_path, "%s/allow", o.store_dir) >= (int)sizeof allow_path)
            return s_bad("%s", "--store path too long");
        if (join || access(allow_path, F_OK) == 0) allow_file = allow_path;
    }
    static uint8_t allow[ST_CURVE_MAX_ALLOW][ST_CURVE_KEY_BYTES];
    if (o.insecure) {
        if (allow_file || key_file) return s_bad("%s", "--insecure takes no --key or --allow (plain TCP has no keys)");
        st_log(ST_LOG_WARN,
               "--insecure: traffic is neither encrypted nor authenticated; anyone who can reach %s "
               "can use this node",
               o.listen);
    } else {
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
        if (join && st_join_paired(allow_file)) {
            st_log(ST_LOG_INFO, "already paired (%s holds a coordinator key): serving; remove it to pair again",
                   allow_file);
        } else if (join) {
            uint8_t node_key[32];
            char host[65] = "";
            zmq_z85_decode(node_key, pub);
            if (!o.id) gethostname(host, sizeof host - 1); /* the id st-node reports anyway */
            st_join_opts_t jo = {.url = join_url,
                                 .code = code,
                                 .endpoint = advertise ? advertise : o.listen,
                                 .id = o.id ? o.id : host,
                                 .node_key = node_key,
                                 .allow_file = allow_file,
                                 .discovery_port = (int)discovery_port,
                                 .timeout_s = (int)join_timeout};
            int rc = st_join(&jo);
            if (rc < 0) return rc == ST_EAUTH ? 3 : 1; /* 3: refused, so that a service does not retry it */
        }
        if (!allow_file)
            return s_bad("%s",
                         "refusing to start without --allow FILE (the coordinator public keys to accept, one\n"
                         "         Z85 key per line, e.g. its st-keygen NAME.pub); pass --insecure to serve plain\n"
                         "         TCP to anyone on a network you trust");
        int n_allow = st_curve_load_allow(allow_file, allow, ST_CURVE_MAX_ALLOW);
        if (n_allow < 0) return 1;
        o.allow = (const uint8_t(*)[32])allow;
        o.n_allow = n_allow;
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
