#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, then runs the CTest suites (unit,
# integration, end-to-end, deploy checks with a live Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j 2
