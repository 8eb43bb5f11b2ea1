#!/usr/bin/env bash
# install-pi.sh: sets up one Raspberry Pi (Raspberry Pi OS / Debian, aarch64)
# as an expert node or as the coordinator: apt packages, build, install the
# programs, a user `st`, CURVE keys in /etc/st, the systemd unit.
#
#   sudo deploy/install-pi.sh node [--mem 1G]          # on each node board
#   sudo deploy/install-pi.sh coordinator --model FILE [--http 0.0.0.0:8080]
#
# Keys: each node prints its public key; put "tcp://HOST:5555 KEY" lines in
# the coordinator's /etc/st/cluster. The coordinator prints its public key;
# put it into each node's /etc/st/allow. Then `systemctl restart` both sides.
set -euo pipefail
die() { echo "install-pi: $*" >&2; exit 2; }
ROLE=${1:-}; shift || true
MEM=1G MODEL="" HTTP=0.0.0.0:8080
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) MEM=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --http) HTTP=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ "$ROLE" = node ] || [ "$ROLE" = coordinator ] || die "usage: install-pi.sh node|coordinator [options]"
[ "$(id -u)" = 0 ] || die "run as root (sudo)"
SRC=$(cd "$(dirname "$0")/.." && pwd)

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config libpcre2-dev libcjson-dev libzmq3-dev libsodium-dev \
  libprotobuf-c-dev protobuf-c-compiler libmicrohttpd-dev libedit-dev libcurl4-openssl-dev
cmake -S "$SRC" -B "$SRC/build/release" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_TESTS=OFF
ninja -C "$SRC/build/release" st-node st-coordinator st-run st-keygen st-chat
install -m 0755 "$SRC"/build/release/{st-node,st-coordinator,st-run,st-keygen,st-chat} /usr/local/bin/

id st >/dev/null 2>&1 || useradd -r -m -d /var/lib/st -s /usr/sbin/nologin st
install -d -o st -g st -m 0750 /etc/st /var/lib/st /var/lib/st/store /var/lib/st/state /var/lib/st/models
if [ "$ROLE" = node ]; then
  [ -f /etc/st/node.key ] || (cd /etc/st && st-keygen node >/dev/null)
  touch /etc/st/allow
  chown st:st /etc/st/node.key /etc/st/node.pub /etc/st/allow
  echo "ST_NODE_MEM=$MEM" > /etc/default/st-node
  install -m 0644 "$SRC/deploy/systemd/st-node.service" /etc/systemd/system/
  systemctl daemon-reload
  systemctl enable st-node
  echo "node public key (for the coordinator's /etc/st/cluster: tcp://$(hostname -I | cut -d' ' -f1):5555 KEY):"
  cat /etc/st/node.pub
  echo "next: add the coordinator's public key to /etc/st/allow, then: systemctl start st-node"
else
  [ -n "$MODEL" ] || die "coordinator: --model FILE (the GGUF) is required"
  [ -f /etc/st/coordinator.key ] || (cd /etc/st && st-keygen coordinator >/dev/null)
  touch /etc/st/cluster
  chown st:st /etc/st/coordinator.key /etc/st/coordinator.pub /etc/st/cluster
  KEY=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  [ -f /etc/default/st-coordinator ] || printf 'ST_MODEL=%s\nST_HTTP=%s\nST_API_KEY=%s\n' "$MODEL" "$HTTP" "$KEY" \
    > /etc/default/st-coordinator
  chmod 0600 /etc/default/st-coordinator
  install -m 0644 "$SRC/deploy/systemd/st-coordinator.service" /etc/systemd/system/
  systemctl daemon-reload
  systemctl enable st-coordinator
  echo "coordinator public key (into each node's /etc/st/allow):"
  cat /etc/st/coordinator.pub
  echo "next: one line per node in /etc/st/cluster ('tcp://HOST:5555 NODE_KEY'), then: systemctl start st-coordinator"
  echo "API key: see ST_API_KEY in /etc/default/st-coordinator (st-chat --url http://THIS_HOST:8080 --api-key KEY)"
fi
