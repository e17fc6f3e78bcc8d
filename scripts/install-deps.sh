#!/usr/bin/env bash
# Installs the Debian packages normserve builds and tests with (DESIGN.md section 2).
# Idempotent: packages already present are skipped, so a warm machine pays nothing.
# --no-image-tools leaves out buildah and debootstrap (the image's own build stage needs neither).
set -euo pipefail

packages=(
  cmake g++ make pkg-config python3
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libtorch-dev prometheus-cpp-dev nlohmann-json3-dev libgtest-dev
  libsentencepiece-dev sentencepiece
  # Every binary's command line (header-only: nothing to install at run time).
  libcli11-dev
  # The metrics endpoint's HTTP server (with OpenSSL for HTTPS).
  libcpp-httplib-dev
  # Caches compiled objects between builds (scripts/build.sh).
  ccache
  # libFuzzer with ASan and UBSan for the fuzz tests of every parser of untrusted bytes.
  clang
  # The Python gRPC client of the end-to-end tests (run with Debian's /usr/bin/python3; the
  # stubs come from protoc and grpc_python_plugin of protobuf-compiler-grpc).
  python3-grpcio python3-protobuf
  # Makes the certificates of the TLS end-to-end test (and of docs/deploy.md).
  openssl
  # The cached venv of scripts/bench-ctranslate2.py (CTranslate2 from PyPI; ct2_bench_e2e).
  python3-venv
  # The reference side of the parity tests (tests/parity; scripts/reference-venv.sh and
  # scripts/fairseq-venv.sh): Debian's CPU torch 1.13 and SentencePiece, in venvs with
  # transformers and fairseq from PyPI (results/reference-venv-choice.md says why not PyPI's
  # torch).
  python3-torch python3-sentencepiece
  # perf_analyzer (from tritonclient's wheel in scripts/triton-venv.sh) links libb64.
  libb64-0d
  # BLIS, not OpenBLAS: on this project's small decoding-step matrices it was faster (deen,
  # one sentence at beam 4: 10 ms against 14-19 ms with OpenBLAS 0.3.21).
  libblis4-openmp
)
if [ "${1:-}" != "--no-image-tools" ]; then
  # Build and run the container image without a daemon (scripts/build-image.sh).
  packages+=(buildah debootstrap)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
echo "install-deps: all packages present"
