#!/usr/bin/env bash
# install-pi.sh: sets up one Raspberry Pi (Raspberry Pi OS / Debian, aarch64)
# as an expert node or as the coordinator: apt packages, build, install the
# programs, a user `st`, CURVE keys in /etc/st, the systemd unit. Run it again
# (after a `git pull`) to upgrade: the settings in /etc/default/st-* are kept,
# options given on the command line replace theirs, and the running services
# are restarted on the new programs, the node before the coordinator.
#
#   sudo deploy/install-pi.sh coordinator --model FILE [--http 0.0.0.0:8080]
#   sudo deploy/install-pi.sh node --code CODE [--join tcp://HOST:5556] [--mem 1.5G] [--listen tcp://*:5555]
#
# Keys: the coordinator listens for pairings (st-coordinator --pair) and
# prints a code in its log; a node installed with --code CODE finds it on the
# LAN (or at --join's address), proves the code, and the two exchange their
# keys (/etc/st/cluster on the coordinator, /etc/st/allow on the node). The
# manual way still works: each node prints its "tcp://HOST:5555 KEY" line.
set -euo pipefail
die() { echo "install-pi: $*" >&2; exit 2; }
usage() {
  cat <<'EOF'
usage: sudo deploy/install-pi.sh node [--code CODE [--join URL]] [--mem SIZE] [--listen URL]
       sudo deploy/install-pi.sh coordinator --model FILE [--http HOST:PORT] [--pair URL]

Installs (or upgrades) st-node or st-coordinator as a systemd service.
  --mem SIZE       node: RAM the node may use (first install: 1G; kept on upgrade)
  --listen URL     node: endpoint to bind (first install: tcp://*:5555; kept on upgrade)
  --code CODE      node: pair with the coordinator by the code it printed (journalctl -u
                   st-coordinator | grep 'pairing code'); found on the LAN by broadcast
  --join URL       node: the coordinator's pairing address instead (tcp://HOST:5556)
  --pair URL       coordinator: where boards pair (first install: tcp://*:5556; 'off': none)
  --model FILE     coordinator: the GGUF, readable by user st outside /home (required
                   on the first install; kept on upgrade)
  --http HOST:PORT coordinator: where the API listens (first install: 0.0.0.0:8080)
Settings live in /etc/default/st-node and /etc/default/st-coordinator.
EOF
}
ROLE=${1:-}; shift || true
MEM="" MODEL="" HTTP="" LISTEN="" CODE="" JOIN="" PAIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mem|--model|--http|--listen|--code|--join|--pair) [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in --mem) MEM=$2 ;; --model) MODEL=$2 ;; --http) HTTP=$2 ;; --listen) LISTEN=$2 ;;
        --code) CODE=$2 ;; --join) JOIN=$2 ;; --pair) PAIR=$2 ;; esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$ROLE" in node|coordinator) ;; -h|--help) usage; exit 0 ;; *) usage >&2; exit 2 ;; esac
[ "$ROLE" = node ] || [ -z "$MEM$LISTEN$CODE$JOIN" ] || die "--mem, --listen, --code and --join are node options"
[ "$ROLE" = coordinator ] || [ -z "$MODEL$HTTP$PAIR" ] || die "--model, --http and --pair are coordinator options"
[ -z "$JOIN" ] || [ -n "$CODE" ] || die "--join goes with --code CODE"
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
ninja -C "$BUILD" st-node st-coordinator st-run st-keygen st-chat st-ctl
install -d "$BIN"
install -m 0755 "$BUILD"/{st-node,st-coordinator,st-run,st-keygen,st-chat,st-ctl} "$BIN/"
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
  # pairing: st-node --join [URL] --code CODE; once paired (a key in /etc/st/allow) it pairs no more
  [ -z "$CODE" ] || set_setting "$conf" ST_NODE_JOIN "--join ${JOIN:+$JOIN }--code $CODE"
  install -D -m 0644 "$SRC/deploy/systemd/st-node.service" "$UNITS/st-node.service"
  systemctl daemon-reload
  systemctl enable st-node
  # the address the default route leaves from: what the coordinator reaches
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  [ -n "$ip" ] || ip=$(hostname -I | cut -d' ' -f1)
  port=$(get_setting "$conf" ST_NODE_LISTEN); port=${port##*:}
  echo "settings ($conf): $(tr '\n' ' ' < "$conf")"
  if [ -n "$(get_setting "$conf" ST_NODE_JOIN)" ]; then
    echo "next: sudo systemctl start st-node (it pairs with the coordinator by the code, then serves)"
  elif [ ! -s "$KEYS/allow" ]; then
    echo "next: sudo deploy/install-pi.sh node --code CODE (the code the coordinator printed), or by hand:"
    echo "the coordinator's public key into /etc/st/allow, and this node's line into its /etc/st/cluster:"
  fi
  echo "tcp://$ip:$port $(cat "$KEYS/node.pub")"
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
  # pairing: --pair URL or off; an upgrade keeps what is set (off included)
  if [ -z "$PAIR" ] && grep -q '^ST_PAIR_ARGS=' "$conf"; then PAIR_ARGS=$(get_setting "$conf" ST_PAIR_ARGS)
  elif [ "$PAIR" = off ]; then PAIR_ARGS=""
  else PAIR_ARGS="--pair ${PAIR:-tcp://*:5556}"; fi
  set_setting "$conf" ST_PAIR_ARGS "$PAIR_ARGS"
  chmod 0600 "$conf"
  install -D -m 0644 "$SRC/deploy/systemd/st-coordinator.service" "$UNITS/st-coordinator.service"
  systemctl daemon-reload
  systemctl enable st-coordinator
  echo "coordinator public key (for pairing by hand, into each node's /etc/st/allow):"
  cat "$KEYS/coordinator.pub"
  echo "settings: $conf (ST_MODEL=$MODEL, ST_HTTP=${HTTP:-0.0.0.0:8080}; the API key is ST_API_KEY there)"
  if [ -n "$(get_setting "$conf" ST_PAIR_ARGS)" ]; then
    echo "next: sudo systemctl start st-coordinator; its pairing code: journalctl -u st-coordinator | grep 'pairing code'"
    echo "then on each node: sudo deploy/install-pi.sh node --code CODE"
  else
    grep -q '^[^#]' "$KEYS/cluster" ||
      echo "next: one line per node in /etc/st/cluster ('tcp://HOST:5555 NODE_KEY'), then: sudo systemctl start st-coordinator"
  fi
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
