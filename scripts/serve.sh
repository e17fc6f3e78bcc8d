#!/usr/bin/env bash
# Quick start: installs the Debian packages that are missing, builds, and serves the bundled
# model repository (models/repository) on 0.0.0.0:50051, metrics on 127.0.0.1:9464. Extra
# arguments go to normserved (e.g. --threads 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/server/normserved --model-repository models/repository "$@"
