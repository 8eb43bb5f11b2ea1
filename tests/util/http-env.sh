# http-env.sh: sourced by the tests that drive the HTTP API from node
# (tests/openai/run, tests/browser/run). Installs tests/package.json into a
# cache (skip, exit 77, when npm or the registry is not there), starts a
# local cluster with --http on a free loopback port and waits (deadline) for
# its "serving on URL" line; the cluster is stopped on exit.
#   usage: . http-env.sh BUILD_DIR  -> $ST_URL, $ST_NPM_DIR, $ST_MODEL
set -uo pipefail
BUILD=${1:?build dir}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$SRC/tests/util/npm-env.sh"

# the model: the tiny synthetic one the C tests use (st-synth --type f32)
ST_MODEL=$("$SRC/tests/util/tiny-model" "$BUILD") || exit 1

HTTP_TMP=$(mktemp -d /tmp/st-http-env.XXXXXX)
ST_BIN=$BUILD setsid "$SRC/deploy/local-cluster" -m "$ST_MODEL" -n "${ST_HTTP_NODES:-2}" --mem 256M \
  --http 127.0.0.1:0 -- -t 1 --state-dir "$HTTP_TMP" > "$HTTP_TMP/out" 2> "$HTTP_TMP/err" &
HTTP_PID=$!
http_env_stop() {
  kill -TERM "$HTTP_PID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$HTTP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$HTTP_PID" 2>/dev/null
  rm -rf "$HTTP_TMP"
}
trap http_env_stop EXIT
ST_URL=""
deadline=$(( $(date +%s) + 60 ))
while [ -z "$ST_URL" ]; do
  ST_URL=$(sed -n 's|^serving on \(http://[^ ]*\)/$|\1|p' "$HTTP_TMP/out" | head -n 1)
  [ -n "$ST_URL" ] && break
  if ! kill -0 "$HTTP_PID" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
    echo "the local cluster did not serve within 60 s:"; sed 's/^/  /' "$HTTP_TMP/err"; exit 1
  fi
  sleep 0.05
done
export ST_URL ST_MODEL
