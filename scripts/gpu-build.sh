#!/usr/bin/env bash
# Builds normserve's CUDA configuration into build-gpu/ (or $BUILD_DIR): the models library with
# the CUDA norm kernels, normserved, the clients (normserve, normserve-bench), the tools
# (normserve-model, normserve-normbench, normserve-train) and the GPU tests, against a CUDA
# LibTorch 2.x, for sm_80 and sm_90 (README "GPU"). It builds; scripts/gpu-check.sh runs.
#
# Where LibTorch comes from:
#   (default)     the torch of $PYTHON (default python3), as on a GPU machine with PyTorch.
#   --pypi-torch  PyPI's torch wheel (CUDA 13) in a venv cached under ~/.cache/normserve/,
#                 made with Debian's /usr/bin/python3: what CI compiles against, on a machine
#                 with the CUDA toolkit and no GPU. The wheel is installed without its nvidia-*
#                 wheels (several GB): the toolkit in /usr/local/cuda has the same sonames
#                 (cudart, cuBLAS, cuDNN, NCCL, ...), and only the three libraries that it lacks
#                 come from their own wheels (cuFile, 1 MB; cuSPARSELt and NVSHMEM, 306 MB
#                 together), so that every library the binaries need is found at link time and
#                 they start here. The toolkit's NCCL and cuBLAS are older than the wheel's:
#                 the few newer symbols that LibTorch itself refers to are left unresolved
#                 (-Wl,--allow-shlib-undefined; normserve's own references must resolve).
# Where the Debian packages come from (gRPC, protobuf, prometheus-cpp, SentencePiece, ...):
#   the system when pkg-config finds them (install-deps.sh), else .debs unpacked with
#   `dpkg -x` into .deps/prefix (ignored by git; nothing is installed system-wide). A GPU
#   machine without network gets them in two steps:
#     1. on a Debian 12 machine with apt:  scripts/gpu-build.sh fetch   (into .deps/debs/)
#     2. on the GPU machine, .deps/ copied or carried beside the sources: scripts/gpu-check.sh
#
# Usage: scripts/gpu-build.sh [fetch] [--pypi-torch] [--arch "80;90"]
# Environment: PYTHON, TORCH_CMAKE_PREFIX_PATH (instead of asking PyTorch, e.g. an unpacked
# LibTorch's share/cmake), BUILD_DIR, CUDA_HOME (default /usr/local/cuda, if nvcc is not on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps="$root/.deps"
debs="$deps/debs"
prefix="$deps/prefix"
# The packages of install-deps.sh that the build needs, with their dependencies (fetch adds
# these recursively, less what any Linux with a C++ compiler has).
packages=(libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
          prometheus-cpp-dev libcpp-httplib-dev nlohmann-json3-dev libsentencepiece-dev
          libsentencepiece0 libgtest-dev pkgconf)
base_packages='^(libc6|libc6-dev|libc-dev-bin|libgcc-s1|gcc-.*|g\+\+.*|cpp.*|libstdc\+\+.*|linux-libc-dev|libcrypt.*|libnsl.*|libtirpc.*|debconf|dpkg|perl.*|tar|libselinux1|libzstd1|liblzma5|libbz2-1.0|zlib1g|libgomp1|libatomic1|libquadmath0|binutils.*|libisl23|libmpc3|libmpfr6|libgmp10|libcc1-0|libitm1|liblsan0|libasan8|libtsan2|libubsan1|libhwasan0|libctf.*|libbinutils|libgprofng0|libjansson4|libsframe.*|libpcre.*|libaudit.*|libcap.*|libacl1|libattr1|libmd0|libdb5.3|libsemanage.*|libsepol.*|base-files|mawk|libcom-err2|libkeyutils1|libkrb5.*|libk5crypto3|libgssapi.*|sensible-utils|libexpat1)$'
torch_version=2.15.0
# The libraries libtorch_cuda.so needs that CUDA 13.0's toolkit does not ship, in the
# versions torch 2.15.0's metadata asks for.
torch_extra_wheels=(nvidia-cufile==1.17.1.22 nvidia-cusparselt-cu13==0.8.1
                    nvidia-nvshmem-cu13==3.7.2)

log() { echo "gpu-build: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "fetch" ]]; then
  command -v apt-get >/dev/null || die "fetch needs apt-get (a Debian 12 machine)"
  mkdir -p "$debs"
  closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
              --no-breaks --no-replaces --no-enhances "${packages[@]}" |
            grep -E '^[a-z0-9]' | sort -u | grep -vE "$base_packages")
  # _apt cannot write into most work trees; download as the caller.
  # shellcheck disable=SC2086
  (cd "$debs" && apt-get download -o APT::Sandbox::User=root $closure) ||
    die "apt-get download failed (run apt-get update once)"
  log "fetched $(ls "$debs" | wc -l) packages ($(du -sh "$debs" | cut -f1)) into $debs"
  exit 0
fi

pypi_torch=0; arch="80;90"
while (($#)); do
  case "$1" in
    --pypi-torch) pypi_torch=1 ;;
    --arch) arch=$2; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

# ---- Debian packages: the system's, or the .debs unpacked into .deps/prefix -----------------
cmake_prefix=()
if pkg-config --exists grpc++ sentencepiece 2>/dev/null; then
  log "Debian packages: the system's"
else
  shopt -s nullglob
  deb_files=("$debs"/*.deb)
  ((${#deb_files[@]})) ||
    die "the system lacks gRPC or SentencePiece and $debs has no .debs: run 'scripts/gpu-build.sh fetch' on a Debian 12 machine and copy .deps/ here"
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
  export PATH="$prefix/usr/bin:$PATH"
  command -v pkg-config >/dev/null || ln -sf pkgconf "$prefix/usr/bin/pkg-config"
  pkg-config --exists grpc++ sentencepiece || die "pkg-config does not find the unpacked packages"
  cmake_prefix=("$prefix/usr" "$libdir/cmake")
  log "Debian packages: unpacked in $prefix"
fi

# ---- LibTorch --------------------------------------------------------------------------------
if ((pypi_torch)); then
  cache="$HOME/.cache/normserve/torch-cuda"
  venv="$cache/venv-$torch_version"
  if [[ ! -f "$venv/.complete" ]]; then
    log "making $venv: torch $torch_version and ${torch_extra_wheels[*]} from PyPI, no other dependency"
    rm -rf "$venv"
    # Downloads are kept in $cache/wheels: a broken install does not download again.
    /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: -d "$cache/wheels" \
      "torch==$torch_version" "${torch_extra_wheels[@]}"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --no-deps --no-index --no-compile --find-links "$cache/wheels" \
      "torch==$torch_version" "${torch_extra_wheels[@]}"
    touch "$venv/.complete"
  fi
  # torch.utils.cmake_prefix_path, found without importing torch: the import would load the
  # nvidia-* wheels left out here.
  torch_prefix=$("$venv/bin/python" -c \
    'import importlib.util, os; print(os.path.join(importlib.util.find_spec("torch").submodule_search_locations[0], "share", "cmake"))')
elif [[ -n "${TORCH_CMAKE_PREFIX_PATH:-}" ]]; then
  torch_prefix=$TORCH_CMAKE_PREFIX_PATH
else
  python=${PYTHON:-python3}
  torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)') ||
    die "$python cannot import torch (use --pypi-torch or set TORCH_CMAKE_PREFIX_PATH)"
  "$python" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' ||
    die "$python's PyTorch has no CUDA: its LibTorch cannot run models on a GPU"
  log "torch $("$python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
fi
[[ -f "$torch_prefix/Torch/TorchConfig.cmake" ]] || die "no Torch/TorchConfig.cmake in $torch_prefix"

nvcc=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
[[ -x "$nvcc" ]] || die "nvcc not found (set CUDA_HOME)"
log "nvcc: $("$nvcc" --version | tail -1)"

# ---- Build -------------------------------------------------------------------------------------
build=${BUILD_DIR:-build-gpu}
targets="normserved normserve normserve-bench normserve-model normserve-normbench normserve-train
         gpu_norm_tests"
prefix_path=$(IFS=';'; echo "$torch_prefix${cmake_prefix[*]:+;${cmake_prefix[*]}}")
link_flags=""
if ((pypi_torch)); then
  # The toolkit's NCCL (and cuBLAS) are older than the wheel's: libtorch_cuda.so refers to a few
  # newer functions of theirs (ncclSignal, ...). Those references inside LibTorch are left to
  # the libraries of a GPU machine; every reference of normserve's own code must still resolve.
  # They bind lazily, so the binaries still start here.
  link_flags="-Wl,--allow-shlib-undefined"
fi
BUILD_DIR=$build BUILD_TARGETS=$(echo $targets) scripts/build.sh \
  -DCMAKE_EXE_LINKER_FLAGS="$link_flags" \
  -DCMAKE_PREFIX_PATH="$prefix_path" \
  -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DNORMSERVE_BUILD_SERVER=ON
grep -rq 'NORMSERVE_TORCH_CUDA=1' "$build/models/CMakeFiles/normserve_models.dir/" ||
  die "$build has no CUDA norm op: CMake found no CUDA LibTorch or no nvcc"
# Every library the binaries need must resolve, or they cannot start anywhere.
missing=$(ldd "$build/server/normserved" | grep 'not found' || true)
[[ -z "$missing" ]] || die "normserved needs libraries that are not found: $(echo $missing)"
# What running the binaries needs besides their RPATHs (scripts/gpu-check.sh sources it).
echo "export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >"$build/run-env.sh"
log "built $(echo $targets) in $build (CUDA architectures $arch)"
