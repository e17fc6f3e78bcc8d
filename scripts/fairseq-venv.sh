#!/usr/bin/env bash
# Makes (once) and prints the cached venv of the fairseq parity test
# (tests/parity/fairseq_parity_test.py) and of scripts/import-fairseq.py: fairseq from PyPI
# on Debian's python3.11 and its python3-torch 1.13 (system site packages).
#
# What was measured here (Debian 12, Python 3.11):
# - fairseq 0.12.2, the last release, installs but cannot be imported on Python 3.11:
#   "ValueError: mutable default <class 'fairseq.dataclass.configs.CommonConfig'> for field
#   common is not allowed: use default_factory".
# - fairseq-fixed 0.12.3.1, a fork of the same code "now supporting Python 3.11+", imports
#   and builds, saves and runs transformer and transformer_lm models. It is used here.
# - Both are source distributions whose build compiles C++ extensions with torch's
#   cpp_extension, which fails against Debian's CPU-only torch ("torch.version.cuda" is
#   None while /usr/local/cuda exists). The extensions (BLEU, batching helpers, edit
#   distance) serve training and evaluation only; READTHEDOCS=1 is setup.py's own switch to
#   skip them, and nothing they provide is used by model building, saving or forward passes.
# - pip's resolver would replace Debian's numpy 1.24 (which torch 1.13 was built against)
#   with numpy 2.x for scikit-learn; the constraint keeps the system's numpy.
# fairseq-fixed's own torch and torchaudio requirements are not installed (--no-deps): torch
# is Debian's, and torchaudio serves only the speech tasks.
# Usage: scripts/fairseq-venv.sh  -> prints the venv's directory on stdout.
set -euo pipefail
venv="${XDG_CACHE_HOME:-$HOME/.cache}/normserve/fairseq-venv"
python=/usr/bin/python3.11
fairseq="fairseq-fixed==0.12.3.1"
dependencies=("hydra-core==1.3.2" "omegaconf==2.3.0" "bitarray==3.12.3" "sacrebleu==2.6.0"
  "regex==2026.11.19" "tqdm==4.70.1" "scikit-learn==1.9.1" "Cython==3.3.1")
stamp="$venv/.normserve-requirements"
wanted="$fairseq ${dependencies[*]}"
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  echo "$venv"
  exit 0
fi
if ! "$python" -c 'import torch, sentencepiece' 2>/dev/null; then
  echo "fairseq-venv: $python needs Debian's python3-torch and python3-sentencepiece" \
    "(scripts/install-deps.sh)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --system-site-packages "$venv" >&2
fi
constraints="$venv/.numpy-constraint"
"$python" -c 'import numpy; print("numpy==" + numpy.__version__)' >"$constraints"
echo "fairseq-venv: pip install $wanted into $venv" >&2
"$venv/bin/pip" install -q -c "$constraints" "${dependencies[@]}" >&2
READTHEDOCS=1 "$venv/bin/pip" install -q --no-deps --no-build-isolation "$fairseq" >&2
"$venv/bin/python" -c 'import fairseq.models.transformer, fairseq.models.transformer_lm' >&2
echo "$wanted" >"$stamp"
echo "$venv"
