#!/usr/bin/env bash
# Makes (once) and prints the cached venv of the Hugging Face parity tests (issue #14): the
# reference side that builds small random Marian and Llama models with `transformers` and runs
# them (tests/parity/hf_*.py).
#
# torch is Debian's python3-torch (1.13, CPU) reached through --system-site-packages of
# Debian's own python3.11 (not a pyenv interpreter that may come first on PATH): PyPI's torch
# 2.x wheel needs several GB of CUDA wheels before it even imports on a CPU machine
# (results/reference-venv-choice.md has the measurements). transformers 4.40.2 is the newest
# release measured to work with torch 1.13; its own dependencies are pinned here so that every
# machine runs the same reference. SentencePiece (the slow Marian and Llama tokenizers), numpy
# and protobuf (LlamaTokenizer's non-legacy mode edits the model's normalizer spec) come from
# Debian too. The downloaded wheels stay in ~/.cache/normserve/reference-wheels, so a new venv
# installs offline from them.
# Idempotent: a venv whose stamp names the same pins is left as it is (about a second).
# Usage: scripts/reference-venv.sh  -> prints the versions on stderr, the venv's directory on
# stdout.
set -euo pipefail
cache="${XDG_CACHE_HOME:-$HOME/.cache}"
venv="$cache/normserve/reference-venv"
wheels="$cache/normserve/reference-wheels"
debian_packages=(python3.11 python3.11-venv python3-torch python3-sentencepiece python3-numpy
  python3-protobuf)
requirements=(
  "transformers==4.40.2" "tokenizers==0.19.1" "safetensors==0.4.3" "huggingface-hub==0.23.0"
  "regex==2024.4.28" "tqdm==4.66.4" "filelock==3.14.0" "packaging==24.0" "fsspec==2024.3.1"
  "typing-extensions==4.11.0"
)
stamp="$venv/.normserve-requirements"
wanted="${debian_packages[*]} ${requirements[*]}"

if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  missing=()
  for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "reference-venv: installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3.11 -m venv --system-site-packages "$venv" >&2
  fi
  # pip's own HTTP cache stays empty here (the index's answers are not cacheable), so the
  # wheels are kept in a folder of their own; PyPI is asked only for those not there yet.
  echo "reference-venv: pip install ${requirements[*]} into $venv" >&2
  install=("$venv/bin/pip" install -q --no-index --find-links "$wheels" "${requirements[@]}")
  if ! "${install[@]}" >/dev/null 2>&1; then
    "$venv/bin/pip" download -q --no-deps -d "$wheels" "${requirements[@]}" >&2
    "${install[@]}" >&2
  fi
  echo "$wanted" >"$stamp"
fi
# The versions from the packages' metadata: importing torch would take a second more.
"$venv/bin/python" - >&2 <<'EOF'
import importlib.metadata, sys
names = ["torch", "transformers", "tokenizers", "safetensors", "sentencepiece", "numpy", "protobuf"]
versions = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)
print(f"reference-venv: python {sys.version.split()[0]}, {versions}")
EOF
echo "$venv"
