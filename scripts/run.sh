#!/usr/bin/env bash
# Builds Tether (release) and serves it at http://127.0.0.1:3000 on the embedded store in ./data.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/setup.sh"
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cd "$REPO_ROOT"
exec cargo leptos serve --release
