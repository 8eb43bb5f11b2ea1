# npm-env.sh: sourced by the tests that run node with tests/package.json's
# packages (http-env.sh, tests/browser/cluster): installs them once into a
# cache and exports $ST_NPM_DIR; skips (exit 77) without node and npm, or
# when the registry is unreachable. Needs $SRC (the source tree).
ST_NPM_DIR=${ST_NPM_HTTP_DIR:-$HOME/.cache/st-cluster/npm-http}
export ST_NPM_DIR

command -v node >/dev/null && command -v npm >/dev/null || { echo "skip: node/npm not installed"; exit 77; }
mkdir -p "$ST_NPM_DIR"
# ctest runs the tests that source this side by side: one installs while the others wait on the
# lock, and the copy of package.json that says "installed" is written only once npm has finished
exec 9> "$ST_NPM_DIR/.lock"
flock -w 600 9 || { echo "npm-env: $ST_NPM_DIR/.lock still held after 600 s"; exit 1; }
if ! cmp -s "$SRC/tests/package.json" "$ST_NPM_DIR/installed.json" || [ ! -d "$ST_NPM_DIR/node_modules/openai" ] ||
   [ ! -d "$ST_NPM_DIR/node_modules/playwright-core" ]; then
  rm -f "$ST_NPM_DIR/installed.json"
  cp "$SRC/tests/package.json" "$ST_NPM_DIR/package.json"
  if ! (cd "$ST_NPM_DIR" && timeout 300 npm install --no-audit --no-fund --loglevel=error --ignore-scripts >/dev/null 2>&1); then
    echo "skip: npm install of tests/package.json failed (registry unreachable?)"
    exit 77
  fi
  cp "$ST_NPM_DIR/package.json" "$ST_NPM_DIR/installed.json"
fi
exec 9>&-
