#!/usr/bin/env bash
# install-pi.sh: sets up one Raspberry Pi (Raspberry Pi OS / Debian, aarch64)
# as an expert node or as the coordinator: apt packages, build, install the
# programs, a user `st`, CURVE keys in /etc/st, the systemd unit. Run it again
# (after a `git pull`) to upgrade: the settings in /etc/default/st-* are kept,
# options given on the command line replace theirs, and the running services
# are restarted on the new programs, the node before the coordinator.
#
#   sudo deploy/install-pi.sh node [--mem 1.5G] [--listen tcp://*:5555]
#   sudo deploy/install-pi.sh coordinator --model FILE [--http 0.0.0.0:8080]
#
# Keys: each node prints its public key; put "tcp://HOST:5555 KEY" lines in
# the coordinator's /etc/st/cluster. The coordinator prints its public key;
# put it into each node's /etc/st/allow. Then start both sides.
set -euo pipefail
die() { echo "install-pi: $*" >&2; exit 2; }
usage() {
  cat <<'EOF'
usage: sudo deploy/install-pi.sh node [--mem SIZE] [--listen URL]
       sudo deploy/install-pi.sh coordinator --model FILE [--http HOST:PORT]

Installs (or upgrades) st-node or st-coordinator as a systemd service.
  --mem SIZE       node: RAM the node may use (first install: 1G; kept on upgrade)
  --listen URL     node: endpoint to bind (first install: tcp://*:5555; kept on upgrade)
  --model FILE     coordinator: the GGUF, readable by user st outside /home (required
                   on the first install; kept on upgrade)
  --http HOST:PORT coordinator: where the API listens (first install: 0.0.0.0:8080)
Settings live in /etc/default/st-node and /etc/default/st-coordinator.
EOF
}
ROLE=${1:-}; shift || true
MEM="" MODEL="" HTTP="" LISTEN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mem|--model|--http|--listen) [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in --mem) MEM=$2 ;; --model) MODEL=$2 ;; --http) HTTP=$2 ;; --listen) LISTEN=$2 ;; esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$ROLE" in node|coordinator) ;; -h|--help) usage; exit 0 ;; *) usage >&2; exit 2 ;; esac
[ "$ROLE" = node ] || [ -z "$MEM$LISTEN" ] || die "--mem and --listen are node options"
[ "$ROLE" = coordinator ] || [ -z "$MODEL$HTTP" ] || die "--model and --http are coordinator options"
[ "$(id -u)" = 0 ] || die "run as root (sudo)"
SRC=$(cd "$(dirname "$0")/.." && pwd)
# where things go; ST_INSTALL_ROOT and ST_INSTALL_BUILD exist for tests/test_install_pi.sh
R=${ST_INSTALL_ROOT:-}
KEYS=$R/etc/st DEFAULTS=$R/etc/default UNITS=$R/etc/systemd/system BIN=$R/usr/local/bin STATE=$R/var/lib/st
BUILD=${ST_INSTALL_BUILD:-$SRC/build/release}

# KEY's value in the settings file FILE ("" when absent)
get_setting() { if [ -f "$1" ]; then sed -n "s/^$2=//p" "$1" | tail -n 1; fi; }
# sets KEY=VALUE in FILE, keeping its other lines
set_setting() {
  local file=$1 key=$2 value=$3
  touch "$file"
  grep -v "^$key=" "$file" > "$file.tmp" || true
  printf '%s=%s\n' "$key" "$value" >> "$file.tmp"
  mv "$file.tmp" "$file"
}

# The model must be readable by the service: the unit runs as user st with
# ProtectHome=yes, so /home, /root and /run/user do not exist for it.
check_model() {
  local model=$1
  case "$model" in
    /*) ;;
    *) die "--model $model: give an absolute path" ;;
  esac
  case "$model" in
    /home/*|/root/*|/run/user/*)
      die "--model $model: the service cannot see /home, /root or /run/user (ProtectHome=yes in
  st-coordinator.service); move the file: sudo mv '$model' /var/lib/st/models/ && sudo chown st: /var/lib/st/models/$(basename "$model")" ;;
  esac
  [ -f "$model" ] || die "--model $model: no such file"
  runuser -u st -- test -r "$model" ||
    die "--model $model: user st cannot read it (sudo chown st: '$model', and check the directories above it)"
}

id st >/dev/null 2>&1 || useradd -r -m -d /var/lib/st -s /usr/sbin/nologin st
install -d -o st -g st -m 0750 "$KEYS" "$STATE" "$STATE/store" "$STATE/state" "$STATE/models"
install -d "$DEFAULTS" "$UNITS"
if [ "$ROLE" = coordinator ]; then # before minutes of building: the model is where the service sees it
  [ -n "$MODEL" ] || MODEL=$(get_setting "$DEFAULTS/st-coordinator" ST_MODEL)
  [ -n "$MODEL" ] || die "coordinator: --model FILE (the GGUF) is required"
  check_model "$MODEL"
fi

echo "install-pi: installing packages (apt, needs the network) and building; a few minutes on a Pi" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git libpcre2-dev libcjson-dev libzmq3-dev libsodium-dev \
  libprotobuf-c-dev protobuf-c-compiler libmicrohttpd-dev libedit-dev libcurl4-openssl-dev
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_TESTS=OFF >/dev/null
ninja -C "$BUILD" st-node st-coordinator st-run st-keygen st-chat
install -d "$BIN"
install -m 0755 "$BUILD"/{st-node,st-coordinator,st-run,st-keygen,st-chat} "$BIN/"
echo "install-pi: installed $("$BIN/st-node" --version | cut -d' ' -f2-) in /usr/local/bin" >&2

if [ "$ROLE" = node ]; then
  conf=$DEFAULTS/st-node
  [ -f "$KEYS/node.key" ] || (cd "$KEYS" && "$BIN/st-keygen" node >/dev/null)
  touch "$KEYS/allow"
  chown st:st "$KEYS/node.key" "$KEYS/node.pub" "$KEYS/allow"
  [ -n "$MEM" ] || MEM=$(get_setting "$conf" ST_NODE_MEM)
  [ -n "$LISTEN" ] || LISTEN=$(get_setting "$conf" ST_NODE_LISTEN)
  set_setting "$conf" ST_NODE_MEM "${MEM:-1G}"
  set_setting "$conf" ST_NODE_LISTEN "${LISTEN:-tcp://*:5555}"
  install -D -m 0644 "$SRC/deploy/systemd/st-node.service" "$UNITS/st-node.service"
  systemctl daemon-reload
  systemctl enable st-node
  # the address the default route leaves from: what the coordinator reaches
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  [ -n "$ip" ] || ip=$(hostname -I | cut -d' ' -f1)
  port=$(get_setting "$conf" ST_NODE_LISTEN); port=${port##*:}
  echo "settings ($conf): $(tr '\n' ' ' < "$conf")"
  echo "this node's line for the coordinator's /etc/st/cluster:"
  echo "tcp://$ip:$port $(cat "$KEYS/node.pub")"
  if [ ! -s "$KEYS/allow" ]; then
    echo "next: put the coordinator's public key into /etc/st/allow, then: sudo systemctl start st-node"
  fi
else
  conf=$DEFAULTS/st-coordinator
  [ -n "$HTTP" ] || HTTP=$(get_setting "$conf" ST_HTTP)
  [ -f "$KEYS/coordinator.key" ] || (cd "$KEYS" && "$BIN/st-keygen" coordinator >/dev/null)
  touch "$KEYS/cluster"
  chown st:st "$KEYS/coordinator.key" "$KEYS/coordinator.pub" "$KEYS/cluster"
  KEY=$(get_setting "$conf" ST_API_KEY)
  [ -n "$KEY" ] || KEY=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  set_setting "$conf" ST_MODEL "$MODEL"
  set_setting "$conf" ST_HTTP "${HTTP:-0.0.0.0:8080}"
  set_setting "$conf" ST_API_KEY "$KEY"
  chmod 0600 "$conf"
  install -D -m 0644 "$SRC/deploy/systemd/st-coordinator.service" "$UNITS/st-coordinator.service"
  systemctl daemon-reload
  systemctl enable st-coordinator
  echo "coordinator public key (into each node's /etc/st/allow):"
  cat "$KEYS/coordinator.pub"
  echo "settings: $conf (ST_MODEL=$MODEL, ST_HTTP=${HTTP:-0.0.0.0:8080}; the API key is ST_API_KEY there)"
  grep -q '^[^#]' "$KEYS/cluster" ||
    echo "next: one line per node in /etc/st/cluster ('tcp://HOST:5555 NODE_KEY'), then: sudo systemctl start st-coordinator"
fi

# An upgrade: restart what runs on this board on the new programs, the node first (a
# coordinator on the same board then finds it serving at its HELLO).
for unit in st-node st-coordinator; do
  if systemctl is-active --quiet "$unit"; then
    echo "install-pi: restarting $unit on the new version" >&2
    systemctl restart "$unit"
  fi
done
echo "logs: journalctl -u st-$ROLE -f"
