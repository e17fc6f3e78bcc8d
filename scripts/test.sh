#!/usr/bin/env bash
# Runs every test: installs what is missing, builds (the CPU build, then the CUDA build that
# CI can only compile), then runs the CTest suites (unit, integration, end-to-end, deploy
# checks with a live Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# The CUDA configuration (issue 16): everything again, against PyPI's CUDA LibTorch 2.x with the
# CUDA kernels for sm_80 and sm_90; no GPU here, so it is compiled and linked, and its
# normserved must start and say that no device is present (README "GPU").
cuda_started=$SECONDS
BUILD_DIR=build-gpu scripts/gpu-build.sh --pypi-torch
/usr/bin/python3 tests/e2e/no_device_e2e_test.py build-gpu/server/normserved models/repository \
  "no CUDA device is present"
build-gpu/tests/gpu/gpu_norm_tests --gtest_brief=1
echo "test.sh: the CUDA build and its checks took $((SECONDS - cuda_started)) s"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j 2
