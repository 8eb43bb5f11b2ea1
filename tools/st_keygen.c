/* st-keygen: makes a CURVE key pair for st-coordinator or st-node. */
#include <stdio.h>
#include <string.h>

#include "curve.h"
#include "version.h"

int main(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: st-keygen NAME\n"
               "\n"
               "Writes a CURVE key pair for the cluster's ZeroMQ transport: NAME.key (the secret key,\n"
               "mode 0600; never overwritten) and NAME.pub (the public key), one Z85 key each.\n"
               "Prints the public key. Give NAME.pub to the other side: a node's goes into the\n"
               "coordinator's --cluster file, the coordinator's into each node's --allow file.\n"
               "\n"
               "  --version    print the version and exit\n"
               "  -h, --help   this help\n");
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        st_version_print("st-keygen");
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-' || !argv[1][0]) {
        fprintf(stderr, "usage: st-keygen NAME   (see st-keygen --help)\n");
        return 2;
    }
    char pub[ST_CURVE_Z85_LEN + 1];
    if (st_curve_keygen(argv[1], pub) < 0) return 1;
    printf("%s\n", pub);
    fprintf(stderr, "st-keygen: wrote %s.key (secret, mode 0600) and %s.pub\n", argv[1], argv[1]);
    return 0;
}
