#!/usr/bin/env bash
# Builds Tether's release artifact (one binary, target/release/tether, with the site
# precompressed inside) and serves it at http://127.0.0.1:3000 on the embedded store in ./data.
# Extra arguments go to the server (`tether --help` lists them).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/setup.sh"
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cd "$REPO_ROOT"
cargo leptos build --release --precompress
exec target/release/tether "$@"
