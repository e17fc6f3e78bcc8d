#!/usr/bin/env bash
# Builds the models library, the GPU norm tests and the norm benchmark on a GPU machine that has
# only the CUDA toolkit (nvcc), CMake, a C++ compiler and PyTorch (its CUDA LibTorch), then runs
# gpu_norm_tests, norm_kernel_tests and `normserve-normbench --device cuda` (docs/kernels.md).
#
# The few Debian packages the build needs besides LibTorch (nlohmann-json3-dev,
# libsentencepiece-dev and libsentencepiece0, libgtest-dev, and pkgconf if the machine has no
# pkg-config) are brought as .debs and unpacked with `dpkg -x` into a prefix under .deps/
# (ignored by git): nothing is installed system-wide.
#
# Two steps, because the GPU machine may reach no package registry:
#   1. On a Debian 12 machine with apt (e.g. the development machine):
#        scripts/gpu-build.sh fetch        # apt-get download into .deps/debs/
#   2. On the GPU machine, with .deps/ copied (or carried) next to the sources:
#        scripts/gpu-build.sh [--quick] [--no-bench] [--no-tests] [--arch 90] [--configure-only]
#                             [-- BENCH_ARGS...]
#      Builds into build-gpu/ (or $BUILD_DIR) with -DNORMSERVE_BUILD_SERVER=OFF. Results go to
#      results/normbench-<host>-cuda.{csv,md} and, when $OUT is set, are copied there with the
#      test logs.
#
# Environment: PYTHON (default python3: the one with torch), TORCH_CMAKE_PREFIX_PATH (instead of
# asking PyTorch, e.g. for an unpacked LibTorch), BUILD_DIR, JOBS (default: cores), CUDA_HOME
# (default /usr/local/cuda, used when nvcc is not on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps="$root/.deps"
debs="$deps/debs"
prefix="$deps/prefix"
packages=(nlohmann-json3-dev libsentencepiece-dev libsentencepiece0 libgtest-dev
          pkgconf pkgconf-bin libpkgconf3)

log() { echo "gpu-build: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "fetch" ]]; then
  command -v apt-get >/dev/null || die "fetch needs apt-get (a Debian 12 machine)"
  mkdir -p "$debs"
  # _apt cannot write into most work trees; download as the caller.
  (cd "$debs" && apt-get download -o APT::Sandbox::User=root "${packages[@]}") ||
    { log "apt-get download failed: running apt-get update once and retrying";
      apt-get update -qq && (cd "$debs" && apt-get download -o APT::Sandbox::User=root "${packages[@]}"); }
  ls -l "$debs"
  log "fetched ${#packages[@]} packages into $debs; now run scripts/gpu-build.sh on the GPU machine"
  exit 0
fi

quick=0; bench=1; tests=1; arch=90; configure_only=0; bench_args=()
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --no-bench) bench=0 ;;
    --no-tests) tests=0 ;;
    --arch) arch=$2; shift ;;
    --configure-only) configure_only=1 ;;
    --) shift; bench_args=("$@"); break ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

# ---- Unpack the .debs into the prefix ------------------------------------------------------
shopt -s nullglob
deb_files=("$debs"/*.deb)
((${#deb_files[@]})) || die "no .debs in $debs: run 'scripts/gpu-build.sh fetch' on a Debian machine and copy .deps/ here"
command -v dpkg >/dev/null || die "dpkg not found: unpack the .debs in $debs with 'ar x' + tar by hand"
# Unpacked once per location (the .pc files hold absolute paths) and per set of .debs.
if [[ "$(cat "$prefix/.unpacked" 2>/dev/null)" != "$prefix" ||
      "$(ls -t "$debs"/*.deb | head -1)" -nt "$prefix/.unpacked" ]]; then
  rm -rf "$prefix"
  mkdir -p "$prefix"
  for f in "${deb_files[@]}"; do dpkg -x "$f" "$prefix"; done
  # The .pc files say prefix=/usr: point them at the unpacked tree.
  for pc in "$prefix"/usr/lib/*/pkgconfig/*.pc "$prefix"/usr/share/pkgconfig/*.pc; do
    sed -i "s|^prefix=/usr\$|prefix=$prefix/usr|" "$pc"
  done
  echo "$prefix" >"$prefix/.unpacked"
fi
multiarch=$(ls "$prefix/usr/lib" | grep -- '-linux-gnu$' | head -1)
libdir="$prefix/usr/lib/$multiarch"
export PKG_CONFIG_PATH="$libdir/pkgconfig:$prefix/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$libdir${LIBRARY_PATH:+:$LIBRARY_PATH}"
pkg_config=$(command -v pkg-config || true)
[[ -n "$pkg_config" ]] || pkg_config="$prefix/usr/bin/pkgconf"
[[ -x "$pkg_config" ]] || die "no pkg-config and no unpacked pkgconf"
"$pkg_config" --exists sentencepiece || die "pkg-config does not find the unpacked sentencepiece"

# ---- Toolchain -----------------------------------------------------------------------------
python=${PYTHON:-python3}
if [[ -n "${TORCH_CMAKE_PREFIX_PATH:-}" ]]; then
  torch_prefix=$TORCH_CMAKE_PREFIX_PATH  # e.g. an unpacked LibTorch zip: <libtorch>/share/cmake
else
  torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)') ||
    die "$python cannot import torch (or set TORCH_CMAKE_PREFIX_PATH)"
  "$python" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' ||
    die "this PyTorch has no CUDA: its LibTorch cannot run the model on the GPU"
  log "torch $("$python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
fi
nvcc=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
[[ -x "$nvcc" ]] || die "nvcc not found (set CUDA_HOME)"
build=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-$(nproc)}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
log "nvcc: $("$nvcc" --version | tail -1)"
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true; fi

cmake -S . -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DNORMSERVE_BUILD_SERVER=OFF \
  -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$libdir/cmake" \
  -DPKG_CONFIG_EXECUTABLE="$pkg_config" \
  -Dnlohmann_json_DIR="$prefix/usr/share/cmake/nlohmann_json" \
  -DGTest_DIR="$libdir/cmake/GTest"
((configure_only)) && { log "configured $build"; exit 0; }
cmake --build "$build" -j "$jobs" --target normserve_models normserve-normbench gpu_norm_tests \
  norm_kernel_tests

out=${OUT:-}
status=0
if ((tests)); then
  log "running gpu_norm_tests"
  "$build/tests/gpu/gpu_norm_tests" 2>&1 | tee "$build/gpu_norm_tests.log" | tail -40 ||
    status=1
  grep -q 'PASSED' "$build/gpu_norm_tests.log" && ! grep -q 'FAILED' "$build/gpu_norm_tests.log" ||
    status=1
  if grep -q '^\[  SKIPPED \]' "$build/gpu_norm_tests.log" &&
     ! grep -q '^\[       OK \] AllVariants' "$build/gpu_norm_tests.log"; then
    log "warning: the GPU tests skipped: no CUDA device visible"
  fi
  log "running norm_kernel_tests (CPU kernels, as a check of this toolchain)"
  "$build/tests/kernels/norm_kernel_tests" 2>&1 | tee "$build/norm_kernel_tests.log" | tail -3 ||
    status=1
fi
if ((bench)); then
  args=(--device cuda)
  ((quick)) && args+=(--quick)
  log "running normserve-normbench ${args[*]} ${bench_args[*]}"
  "$build/models/normserve-normbench" "${args[@]}" "${bench_args[@]}" | tee "$build/normbench.log" |
    tail -60 || status=1
fi
if [[ -n "$out" ]]; then
  mkdir -p "$out"
  cp -f "$build"/*.log "$out"/ 2>/dev/null || true
  cp -f results/normbench-*-cuda.* "$out"/ 2>/dev/null || true
fi
exit $status
