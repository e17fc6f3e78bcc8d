# syntax=docker/dockerfile:1
#
# normserve images. Two targets:
#   docker build --target cpu  -t normserve:cpu  .   Debian bookworm-slim, Debian's LibTorch 1.13 (CPU)
#   docker build --target cuda -t normserve:cuda .   CUDA 13 runtime, official CUDA LibTorch 2.x
# A plain `docker build .` builds the last stage, `cpu`.
#
# Both run normserved as a non-root user (uid 10001) with the model repository at /models
# (the bundled demo repository unless a volume is mounted there), gRPC on 50051 and
# Prometheus metrics on 9464, and check their health with the project's own CLI.

ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG CUDA_VERSION=13.0.0
ARG CUDA_UBUNTU=ubuntu24.04

# ---------------------------------------------------------------------------------------------
# cpu-build: the same Debian packages the project builds with everywhere (scripts/install-deps.sh)
# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS cpu-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY scripts/install-deps.sh /tmp/install-deps.sh
# Downloaded packages stay in a cache mount, so a changed package list fetches only what is new
# (the official image's docker-clean hook would delete them).
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
    && bash /tmp/install-deps.sh --no-image-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# scripts/build.sh: the same flags and ccache settings as every other build of the project,
# so objects compiled outside the image are reused. CCACHE_DIR points elsewhere when the
# builder mounts its own cache there (scripts/build-image.sh); the base directory makes the
# cached paths relative to /src. The build tree is not kept: each changed source would
# otherwise leave a layer of objects behind in the builder's cache.
ARG CCACHE_DIR=/root/.cache/ccache
RUN --mount=type=cache,target=/root/.cache/ccache \
    CCACHE_BASEDIR=/src scripts/build.sh -DNORMSERVE_BUILD_TESTS=OFF -DNORMSERVE_ENABLE_CUDA=OFF \
    && cmake --install build --prefix /opt/normserve --strip \
    && rm -rf build

# ---------------------------------------------------------------------------------------------
# cuda-build: NVIDIA CUDA 13 devel + an official CUDA LibTorch; the rest from the distribution
# ---------------------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_UBUNTU} AS cuda-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# LibTorch builds for CUDA 13 are published per PyTorch release as <base>/cu130/...zip.
ARG LIBTORCH_VERSION=2.9.0
ARG LIBTORCH_CUDA=cu130
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/${LIBTORCH_CUDA}/libtorch-shared-with-deps-${LIBTORCH_VERSION}%2B${LIBTORCH_CUDA}.zip
# The distribution's release (pinned by the base image tag) fixes the package versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
         ca-certificates curl unzip cmake g++ make pkg-config \
         libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
         prometheus-cpp-dev libcpp-httplib-dev nlohmann-json3-dev libsentencepiece-dev libcli11-dev \
         sentencepiece \
    && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL --retry 3 -o /tmp/libtorch.zip "${LIBTORCH_URL}" \
    && unzip -q /tmp/libtorch.zip -d /opt \
    && rm /tmp/libtorch.zip
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DNORMSERVE_BUILD_TESTS=OFF \
          -DNORMSERVE_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80;90" \
          -DCMAKE_PREFIX_PATH=/opt/libtorch \
    && cmake --build build -j"$(nproc)" \
    && cmake --install build --prefix /opt/normserve --strip
# Collect the distribution libraries the binaries need (gRPC, protobuf, prometheus-cpp,
# cpp-httplib, SentencePiece and what they pull in), so the runtime stage needs no -dev packages.
# LibTorch's own libraries and the CUDA toolkit's are provided separately.
RUN mkdir -p /opt/normserve/lib \
    && LD_LIBRARY_PATH=/opt/libtorch/lib ldd /opt/normserve/bin/* /opt/normserve/lib/libnormserve_spm.so \
       | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
       | grep -vE '^/(opt/libtorch|usr/local/cuda)' \
       | grep -vE '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux-x86-64)\.so' \
       | xargs -r cp -L -t /opt/normserve/lib \
    && mkdir -p /opt/libtorch-runtime \
    && cp -a /opt/libtorch/lib /opt/libtorch-runtime/lib \
    && rm -f /opt/libtorch-runtime/lib/*.a

# ---------------------------------------------------------------------------------------------
# cuda: CUDA runtime image + LibTorch's shared libraries + normserve
# ---------------------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_UBUNTU} AS cuda
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 normserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
         --shell /usr/sbin/nologin normserve
COPY --from=cuda-build /opt/libtorch-runtime/lib /opt/libtorch/lib
COPY --from=cuda-build /opt/normserve/bin /usr/local/bin
COPY --from=cuda-build /opt/normserve/lib /opt/normserve/lib
ENV LD_LIBRARY_PATH=/opt/normserve/lib:/opt/libtorch/lib \
    NORMSERVE_SPM_SHIM=/opt/normserve/lib/libnormserve_spm.so \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Fail the build, not the first start, when a library is missing.
# libcuda.so.1 comes from the host driver at run time (NVIDIA container toolkit).
RUN missing="$(ldd /usr/local/bin/normserved /usr/local/bin/normserve "$NORMSERVE_SPM_SHIM" | grep -F 'not found' | grep -vF 'libcuda.so' || true)"; \
    if [ -n "$missing" ]; then echo "$missing" >&2; exit 1; fi
COPY --chown=root:root models/repository /models
VOLUME ["/models"]
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["normserve", "--server", "127.0.0.1:50051", "--timeout", "3", "health"]
ENTRYPOINT ["normserved"]
CMD ["--model-repository", "/models", "--grpc-address", "0.0.0.0:50051", \
     "--metrics-address", "0.0.0.0:9464", "--device", "cuda"]

# ---------------------------------------------------------------------------------------------
# cpu (default): bookworm-slim with only the runtime libraries of the build packages
# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Runtime halves of scripts/install-deps.sh's -dev packages, with BLIS as LibTorch's BLAS
# (DESIGN.md section 2). Versions are fixed by the Debian release (bookworm) that the base
# image pins.
# hadolint ignore=DL3008
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
         libblis4-openmp libtorch1.13 libgrpc++1.51 libprotobuf32 \
         libprometheus-cpp-core1.0 libcpp-httplib0.11 libsentencepiece0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 normserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
         --shell /usr/sbin/nologin normserve
COPY --from=cpu-build /opt/normserve/bin /usr/local/bin
# The SentencePiece shim that the binaries dlopen from ../lib (models/text/spm_api.h).
COPY --from=cpu-build /opt/normserve/lib/libnormserve_spm.so /usr/local/lib/
RUN ! ldd /usr/local/bin/normserved /usr/local/bin/normserve /usr/local/lib/libnormserve_spm.so \
      | grep -F "not found"
COPY --chown=root:root models/repository /models
VOLUME ["/models"]
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["normserve", "--server", "127.0.0.1:50051", "--timeout", "3", "health"]
ENTRYPOINT ["normserved"]
CMD ["--model-repository", "/models", "--grpc-address", "0.0.0.0:50051", \
     "--metrics-address", "0.0.0.0:9464"]
