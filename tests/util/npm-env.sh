# npm-env.sh: sourced by the tests that run node with tests/package.json's
# packages (http-env.sh, tests/browser/cluster): installs them once into a
# cache and exports $ST_NPM_DIR; skips (exit 77) without node and npm, or
# when the registry is unreachable. Needs $SRC (the source tree).
ST_NPM_DIR=${ST_NPM_HTTP_DIR:-$HOME/.cache/st-cluster/npm-http}
export ST_NPM_DIR

command -v node >/dev/null && command -v npm >/dev/null || { echo "skip: node/npm not installed"; exit 77; }
mkdir -p "$ST_NPM_DIR"
if ! cmp -s "$SRC/tests/package.json" "$ST_NPM_DIR/package.json" || [ ! -d "$ST_NPM_DIR/node_modules/openai" ] ||
   [ ! -d "$ST_NPM_DIR/node_modules/playwright-core" ]; then
  cp "$SRC/tests/package.json" "$ST_NPM_DIR/package.json"
  if ! (cd "$ST_NPM_DIR" && timeout 300 npm install --no-audit --no-fund --loglevel=error --ignore-scripts >/dev/null 2>&1); then
    echo "skip: npm install of tests/package.json failed (registry unreachable?)"
    exit 77
  fi
fi
