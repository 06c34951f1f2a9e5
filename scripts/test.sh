#!/usr/bin/env bash
# README command 2: the same set-up, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
echo "==> building"
cargo build --workspace --bins
echo "==> testing"
PANOPTES_MODELS_DIR="$(pwd)/models" cargo test --workspace --no-fail-fast
echo "==> all tests passed in $(( $(date +%s) - start ))s"
