#!/usr/bin/env bash
# Bounded libFuzzer runs of the parsers of untrusted bytes, built with clang (ASan + UBSan)
# apart from the main build.
#   run_smoke.sh build OUT_DIR               builds every target into OUT_DIR
#   run_smoke.sh build_kserve OUT_DIR        only the kserve_* targets
#   run_smoke.sh run OUT_DIR TARGET RUNS     runs TARGET for RUNS inputs from its seeds
# A crash, a sanitizer report, a timeout (-timeout=2 s per input) or running out of memory
# fails the run; libFuzzer writes the input to OUT_DIR/artifacts/. corpus/<target>/
# regression_* once failed a target; each must pass from then on.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mode="$1"
out="$2"
targets=(safetensors config_json model_json spm_model request_text auth names kserve_bytes
  kserve_json)

build() {
  local flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined -I"$root")
  local spm_flags spm_libs
  spm_flags=$(pkg-config --cflags sentencepiece)
  spm_libs=$(pkg-config --libs sentencepiece)
  mkdir -p "$out"
  # Each in the background: two cores build two at a time.
  clang++ "${flags[@]}" "$here/safetensors_fuzz.cc" "$root/models/io/safetensors.cc" \
    -o "$out/safetensors_fuzz" &
  clang++ "${flags[@]}" "$here/config_json_fuzz.cc" "$root/models/io/model_config.cc" \
    "$root/models/io/text_file.cc" \
    "$root/models/norm/norm_config.cc" -o "$out/config_json_fuzz" &
  wait
  clang++ "${flags[@]}" "$here/model_json_fuzz.cc" "$root/server/model_json.cc" \
    "$root/server/names.cc" "$root/models/io/confined_path.cc" "$root/models/text/utf8.cc" \
    -o "$out/model_json_fuzz" &
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" $spm_flags "$here/spm_model_fuzz.cc" "$root/models/text/spm_shim.cc" \
    $spm_libs -o "$out/spm_model_fuzz" &
  wait
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" $spm_flags \
    -DNORMSERVE_FUZZ_SPM="\"$root/models/repository/deen/1/source.spm\"" \
    "$here/request_text_fuzz.cc" "$root/models/text/utf8.cc" "$root/models/text/spm_shim.cc" \
    $spm_libs -o "$out/request_text_fuzz" &
  clang++ "${flags[@]}" "$here/auth_fuzz.cc" "$root/server/auth.cc" "$root/server/log.cc" \
    "$root/models/text/utf8.cc" -o "$out/auth_fuzz" &
  wait
  clang++ "${flags[@]}" "$here/names_fuzz.cc" "$root/server/names.cc" "$root/models/text/utf8.cc" \
    -o "$out/names_fuzz" &
  wait
  build_kserve
}

# The Open Inference Protocol's converters, with their messages generated here by protoc.
build_kserve() {
  local gen="$out/gen" grpc_flags grpc_libs
  grpc_flags=$(pkg-config --cflags grpc++ protobuf)
  grpc_libs=$(pkg-config --libs grpc++ protobuf)
  local flags=(-std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined
    -I"$root" -I"$gen")
  mkdir -p "$gen"
  protoc --proto_path="$root/proto" --cpp_out="$gen" inference/grpc_service.proto \
    normserve/v1/normserve.proto
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" -fsanitize=fuzzer-no-link $grpc_flags -c \
    "$gen/inference/grpc_service.pb.cc" -o "$out/grpc_service.pb.o" &
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" -fsanitize=fuzzer-no-link $grpc_flags -c \
    "$gen/normserve/v1/normserve.pb.cc" -o "$out/normserve.pb.o" &
  wait
  local converters=("$root/server/kserve_tensors.cc" "$root/server/names.cc"
    "$root/models/text/utf8.cc" "$out/grpc_service.pb.o" "$out/normserve.pb.o")
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" -fsanitize=fuzzer $grpc_flags "$here/kserve_bytes_fuzz.cc" \
    "${converters[@]}" $grpc_libs -o "$out/kserve_bytes_fuzz" &
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" -fsanitize=fuzzer $grpc_flags "$here/kserve_json_fuzz.cc" \
    "$root/server/kserve_json.cc" "${converters[@]}" $grpc_libs -o "$out/kserve_json_fuzz" &
  wait
}

run() {
  local target="$1" runs="$2" options=()
  case "$target" in
    safetensors) options=(-max_len=4096 -dict="$here/safetensors.dict") ;;
    config_json) options=(-max_len=4096 -dict="$here/config_json.dict") ;;
    model_json) options=(-max_len=1024 -dict="$here/model_json.dict") ;;
    spm_model) options=(-max_len=4096) ;;
    # 4096 bytes: within the request byte limit the server is getting; full length from the
    # start (-len_control=0), since long inputs are the ones that could be slow.
    request_text) options=(-max_len=4096 -len_control=0 -dict="$here/request_text.dict") ;;
    auth) options=(-max_len=4096 -dict="$here/auth.dict") ;;
    names) options=(-max_len=20000) ;;
    kserve_bytes) options=(-max_len=4096) ;;
    kserve_json) options=(-max_len=4096 -dict="$here/kserve_json.dict") ;;
    *) echo "unknown target '$target'; one of: ${targets[*]}" >&2 && exit 2 ;;
  esac
  mkdir -p "$out/corpus/$target" "$out/artifacts"
  "$out/${target}_fuzz" -runs="$runs" -seed=1 -timeout=2 -rss_limit_mb=2048 \
    -artifact_prefix="$out/artifacts/$target-" -print_final_stats=1 "${options[@]}" \
    "$out/corpus/$target" "$here/corpus/$target"
}

case "$mode" in
  build) build ;;
  build_kserve) build_kserve ;;
  run) run "$3" "$4" ;;
  *) echo "usage: run_smoke.sh build|build_kserve OUT_DIR | run OUT_DIR TARGET RUNS" >&2 && exit 2 ;;
esac
