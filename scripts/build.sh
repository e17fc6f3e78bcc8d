#!/usr/bin/env bash
# Configures and builds normserve into build/ (or $BUILD_DIR). Extra arguments go to cmake;
# $BUILD_TARGETS, when set, names the targets to build (default: all).
# ccache, when installed, caches compiled objects between builds and checkouts: a source that
# includes LibTorch takes ~25 s to compile on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
launcher=()
if command -v ccache >/dev/null 2>&1; then
  # Paths below the checkout's parent are hashed relative to the build directory, so that
  # two checkouts of the same tree share their objects.
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(cd .. && pwd)}"
  # The models library precompiles the ATen header; ccache caches sources that use it only
  # when told that the precompiled header's defines and timestamps may be trusted.
  export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@" >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j "$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
