#!/usr/bin/env bash
# Builds the Dockerfile's `cpu` target into the local container storage without a Docker
# daemon: Debian's buildah, with chroot isolation (no runtime, no network namespace).
#
#   scripts/build-image.sh [IMAGE]          IMAGE defaults to normserve:cpu
#
# The base image that the Dockerfile names (ARG DEBIAN_IMAGE, debian:bookworm-slim) comes from
# no registry here: the first run makes it with debootstrap from Debian's own archive (the
# apt sources of the official image, documentation trimmed the same way) and commits it under
# that name; later runs reuse it. The build then caches what it can:
#   - every layer (--layers): an unchanged package list or source tree skips its step;
#   - downloaded packages (the Dockerfile's cache mount on /var/cache/apt);
#   - compiled objects: this machine's ccache is mounted into the build (CCACHE_DIR build
#     argument), so sources that scripts/build.sh compiled here come from the cache.
# Needs root, buildah and debootstrap (scripts/install-deps.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-normserve:cpu}

base=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' Dockerfile)
[ -n "$base" ] || { echo "build-image: no ARG DEBIAN_IMAGE in Dockerfile" >&2; exit 1; }
# Docker's name for it, so that FROM finds it without a registry search.
case "$base" in */*) qualified_base=$base ;; *) qualified_base=docker.io/library/$base ;; esac

make_base() {
  local suite=${base#*:}
  suite=${suite%-slim}
  local work rootfs container
  work=$(mktemp -d "${TMPDIR:-/tmp}/normserve-base.XXXXXX")
  rootfs=$work/rootfs
  echo "build-image: debootstrap $suite (minbase) for $qualified_base"
  debootstrap --variant=minbase "$suite" "$rootfs" http://deb.debian.org/debian \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  # As the official slim image: its apt sources (updates and security too), no package
  # lists or downloaded packages, dpkg leaves out documentation, man pages and locales and
  # skips fsync (a failed build step is discarded whole), apt fetches no translations.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/unsafe-io"
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/no-languages"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  container=$(buildah from scratch)
  cp -a "$rootfs/." "$(buildah mount "$container")/"
  buildah umount "$container" >/dev/null
  buildah config --cmd bash --label "org.opencontainers.image.description=debootstrap \
--variant=minbase $suite, made by scripts/build-image.sh" "$container"
  buildah commit --quiet --rm "$container" "$qualified_base" >/dev/null
  rm -rf "$work"
}

buildah inspect --type image "$qualified_base" >/dev/null 2>&1 || make_base

ccache_dir=${CCACHE_DIR:-$(ccache -k cache_dir 2>/dev/null || echo "$HOME/.cache/ccache")}
mkdir -p "$ccache_dir"
# --format docker keeps the HEALTHCHECK (the OCI format has none).
buildah bud --isolation chroot --layers --pull=never --format docker --target cpu \
  --volume "$ccache_dir:/ccache" --build-arg CCACHE_DIR=/ccache \
  --tag "$image" .
