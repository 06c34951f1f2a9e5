#!/usr/bin/env bash
# README command 1: install, build, start a local cluster (1 coordinator + 2
# workers), analyse a sample video made from photos, print what was found, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> building (first build takes several minutes)"
cargo build --workspace --bins
cargo xtask sample
cargo xtask demo "$@"
