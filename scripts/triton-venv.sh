#!/usr/bin/env bash
# Makes (once) and prints the cached venv of the Open Inference Protocol tests: Triton's
# Python clients (tritonclient, gRPC and HTTP) and perf_analyzer, from PyPI.
#
# tritonclient 2.41.0 is the last release whose wheel carries the perf_analyzer binary (the
# PyPI `perf-analyzer` package reachable here is an empty placeholder), and its pins let
# grpcio and protobuf come from Debian (python3-grpcio, python3-protobuf: system site
# packages). perf_analyzer needs libb64 (Debian libb64-0d, scripts/install-deps.sh) and
# libcudart.so.12, which the nvidia-cuda-runtime-cu12 wheel provides; no GPU is used.
# Usage: scripts/triton-venv.sh  -> prints the venv's directory on stdout.
set -euo pipefail
venv="${XDG_CACHE_HOME:-$HOME/.cache}/normserve/triton-venv"
requirements=("tritonclient[grpc,http]==2.41.0" "nvidia-cuda-runtime-cu12==12.9.79")
stamp="$venv/.normserve-requirements"
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  echo "triton-venv: pip install ${requirements[*]} into $venv" >&2
  "$venv/bin/pip" install -q "${requirements[@]}" >&2
  echo "${requirements[*]}" >"$stamp"
fi
echo "$venv"
