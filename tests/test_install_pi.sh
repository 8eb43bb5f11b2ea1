#!/usr/bin/env bash
# shellcheck disable=SC2016 # the stubs' scripts are single-quoted on purpose: they expand when they run
# deploy/install-pi.sh as an upgrade path, in a scratch root (ST_INSTALL_ROOT) with the system's
# tools stubbed on PATH: apt-get, cmake and ninja do nothing but record that they ran (ninja
# "builds" programs that print a version), systemctl records its calls and reports the units
# this test says are running, id/useradd/runuser/chown act as if user st existed.
# Checks: a re-run keeps the settings (--mem, --model, the API key) and an option given again
# replaces its own; the running services are restarted, st-node before st-coordinator; a model
# under /home (hidden by ProtectHome) is refused before anything is installed or built; the
# node prints its line for the cluster file with the default route's source address.
#   tests/test_install_pi.sh SOURCE_DIR
set -euo pipefail
SRC=${1:?usage: test_install_pi.sh SOURCE_DIR}
T=$(mktemp -d /tmp/st-test-install-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$T/stub" "$T/root" "$T/build"
stub() { printf '#!/usr/bin/env bash\n%s\n' "$2" > "$T/stub/$1"; chmod +x "$T/stub/$1"; }
stub apt-get 'echo "apt-get $*" >> "$T/calls"'
stub cmake 'echo "cmake $*" >> "$T/calls"'
# the programs the build makes: --version like ours; st-keygen writes NAME.key and NAME.pub
stub ninja 'echo "ninja $*" >> "$T/calls"
for p in st-node st-coordinator st-run st-chat st-ctl; do
  printf "#!/bin/sh\necho \"$p 9.8.7 (git test)\"\n" > "$T/build/$p"; chmod +x "$T/build/$p"
done
printf "#!/bin/sh\necho secret > \"\$1.key\"; echo \"PUBKEY-\$1\" > \"\$1.pub\"\n" > "$T/build/st-keygen"
chmod +x "$T/build/st-keygen"'
stub systemctl 'echo "systemctl $*" >> "$T/calls"
if [ "$1" = is-active ]; then [ -f "$T/active-${!#}" ]; fi'
stub id 'if [ "${1:-}" = -u ]; then echo 0; else exit 0; fi'
stub useradd 'echo "useradd $*" >> "$T/calls"'
stub chown ':'
stub runuser 'while [ "$1" != -- ]; do shift; done; shift; "$@"'
stub ip 'echo "1.1.1.1 via 10.0.0.1 dev eth0 src 10.0.0.7 uid 0"'
# install: as coreutils', without -o/-g (there is no user st here)
stub install 'a=(); while [ $# -gt 0 ]; do case "$1" in -o|-g) shift 2 ;; *) a+=("$1"); shift ;; esac; done
exec /usr/bin/install "${a[@]}"'
sed -i "s|\\\$T|$T|g" "$T"/stub/*

run() { # install-pi.sh ARGS: its output in $T/out, its status returned
  : > "$T/calls"
  PATH="$T/stub:$PATH" ST_INSTALL_ROOT="$T/root" ST_INSTALL_BUILD="$T/build" \
    bash "$SRC/deploy/install-pi.sh" "$@" > "$T/out" 2>&1
}
setting() { sed -n "s/^$2=//p" "$T/root/etc/default/$1"; }

# a node, first install, then a re-run without options while it runs, then a new --mem
run node --mem 1.5G || fail "first node install: $(cat "$T/out")"
[ "$(setting st-node ST_NODE_MEM)" = 1.5G ] || fail "ST_NODE_MEM after install: $(setting st-node ST_NODE_MEM)"
[ "$(setting st-node ST_NODE_LISTEN)" = 'tcp://*:5555' ] || fail "ST_NODE_LISTEN: $(setting st-node ST_NODE_LISTEN)"
grep -qx "tcp://10.0.0.7:5555 PUBKEY-node" "$T/out" || fail "no cluster-file line with the route's address: $(cat "$T/out")"
[ -x "$T/root/usr/local/bin/st-node" ] || fail "st-node not installed"
[ -f "$T/root/etc/systemd/system/st-node.service" ] || fail "unit not installed"
touch "$T/active-st-node"
run node || fail "node re-run: $(cat "$T/out")"
[ "$(setting st-node ST_NODE_MEM)" = 1.5G ] || fail "a re-run reset --mem to $(setting st-node ST_NODE_MEM)"
grep -qx "systemctl restart st-node" "$T/calls" || fail "the running node was not restarted: $(cat "$T/calls")"
run node --mem 2G --listen 'tcp://*:5600' || fail "node --mem 2G: $(cat "$T/out")"
[ "$(setting st-node ST_NODE_MEM)" = 2G ] || fail "--mem 2G gave $(setting st-node ST_NODE_MEM)"
grep -qx "tcp://10.0.0.7:5600 PUBKEY-node" "$T/out" || fail "the line does not follow --listen: $(cat "$T/out")"
[ "$(grep -c '^ST_NODE_MEM=' "$T/root/etc/default/st-node")" = 1 ] || fail "ST_NODE_MEM twice"
# pairing: --code (discovery) or --join URL --code; the unit passes ST_NODE_JOIN to st-node
[ -z "$(setting st-node ST_NODE_JOIN)" ] || fail "pairing set without --code"
run node --code abcde-23456 || fail "node --code: $(cat "$T/out")"
[ "$(setting st-node ST_NODE_JOIN)" = "--join --code abcde-23456" ] || fail "ST_NODE_JOIN: $(setting st-node ST_NODE_JOIN)"
grep -q "it pairs with the coordinator" "$T/out" || fail "no pairing step told: $(cat "$T/out")"
run node --join 'tcp://10.0.0.2:5556' --code ABCDE-23456 || fail "node --join: $(cat "$T/out")"
[ "$(setting st-node ST_NODE_JOIN)" = "--join tcp://10.0.0.2:5556 --code ABCDE-23456" ] ||
  fail "ST_NODE_JOIN with --join: $(setting st-node ST_NODE_JOIN)"
run node --join 'tcp://10.0.0.2:5556' && fail "--join without --code was accepted"
grep -q '\$ST_NODE_JOIN' "$T/root/etc/systemd/system/st-node.service" || fail "the unit does not pass ST_NODE_JOIN"

# a coordinator: a model under /home is refused before anything is installed
run coordinator --model /home/pi/model.gguf && fail "a model under /home was accepted"
grep -q "ProtectHome" "$T/out" || fail "the refusal does not say why: $(cat "$T/out")"
! grep -q "^apt-get\|^ninja" "$T/calls" || fail "it built before refusing the model: $(cat "$T/calls")"
run coordinator --model "$T/none.gguf" && fail "a missing model was accepted"
grep -q "no such file" "$T/out" || fail "missing model: $(cat "$T/out")"
models=$T/root/var/lib/st/models
touch "$models/a.gguf" "$models/b.gguf"
run coordinator --model "$models/a.gguf" || fail "coordinator install: $(cat "$T/out")"
key=$(setting st-coordinator ST_API_KEY)
[ ${#key} -ge 16 ] || fail "no API key written: '$key'"
[ "$(setting st-coordinator ST_HTTP)" = 0.0.0.0:8080 ] || fail "ST_HTTP: $(setting st-coordinator ST_HTTP)"
[ "$(setting st-coordinator ST_PAIR_ARGS)" = '--pair tcp://*:5556' ] || fail "ST_PAIR_ARGS: $(setting st-coordinator ST_PAIR_ARGS)"
grep -q "pairing code" "$T/out" || fail "the coordinator install does not say where the code is: $(cat "$T/out")"
# a re-run keeps the model, a new --model replaces it; the API key stays; both services restart in order
touch "$T/active-st-coordinator"
run coordinator || fail "coordinator re-run: $(cat "$T/out")"
[ "$(setting st-coordinator ST_MODEL)" = "$models/a.gguf" ] || fail "a re-run lost the model"
run coordinator --model "$models/b.gguf" --http 127.0.0.1:8081 || fail "new --model: $(cat "$T/out")"
[ "$(setting st-coordinator ST_MODEL)" = "$models/b.gguf" ] || fail "a new --model was ignored"
[ "$(setting st-coordinator ST_HTTP)" = 127.0.0.1:8081 ] || fail "a new --http was ignored"
[ "$(setting st-coordinator ST_API_KEY)" = "$key" ] || fail "the API key changed on a re-run"
[ "$(setting st-coordinator ST_PAIR_ARGS)" = '--pair tcp://*:5556' ] || fail "a re-run lost ST_PAIR_ARGS"
run coordinator --pair off || fail "--pair off: $(cat "$T/out")"
[ -z "$(setting st-coordinator ST_PAIR_ARGS)" ] || fail "--pair off left $(setting st-coordinator ST_PAIR_ARGS)"
run coordinator || fail "coordinator re-run after --pair off"
[ -z "$(setting st-coordinator ST_PAIR_ARGS)" ] || fail "a re-run turned pairing back on"
order=$(grep "^systemctl restart" "$T/calls" | tr '\n' ' ')
[ "$order" = "systemctl restart st-node systemctl restart st-coordinator " ] || fail "restart order: $order"
echo "install-pi: settings kept and replaced, restarts in order, /home refused before building, pairing settings"
