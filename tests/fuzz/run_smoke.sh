#!/usr/bin/env bash
# Builds the safetensors libFuzzer target with clang (ASan + UBSan) against the parser alone
# and runs it for a bounded number of inputs from the checked-in seeds.
#   run_smoke.sh OUT_DIR [RUNS]
# corpus/safetensors/regression_* once crashed the target; each must pass from then on.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$1"
runs="${2:-50000}"
mkdir -p "$out/corpus"
clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$root" "$here/safetensors_fuzz.cc" "$root/models/io/safetensors.cc" -o "$out/safetensors_fuzz"
"$out/safetensors_fuzz" -runs="$runs" -max_len=4096 -seed=1 -dict="$here/safetensors.dict" \
  "$out/corpus" "$here/corpus/safetensors"
