#!/usr/bin/env bash
# The recipe of the bundled models and of the norm comparison in docs/reproduction.md.
#
#   scripts/train-models.sh [all|tokenizers|bundled|compare|seeds|evaluate|report]   (default: all)
#
# all = tokenizers, then two lanes side by side with one thread each (the bundled deen; the
# bundled enlm and the comparison runs), then evaluate and report. docs/reproduction.md states
# the stages' wall times on the 2-core VM. Outputs go to $RUNS (default runs/, not in git);
# `bundled` (deen, then enlm) ends by copying the two trained models into models/repository.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
runs=${RUNS:-runs}
train="$build/models/normserve-train"
vocab=4000
norms=(layernorm batchnorm powernorm rmsnorm prmsnorm)
mt_data=(--train-source data/deen/train.de --train-target data/deen/train.en
  --valid-source data/deen/valid.de --valid-target data/deen/valid.en)
lm_data=(--train-text data/enlm/train.txt --valid-text data/enlm/valid.txt)
common=(--threads 1 --no-progress --dropout 0.1 --label-smoothing 0.1 --clip 1.0)

# The Ding dictionary and Python's venv (for sacrebleu) come from Debian.
debian_packages() {
  local missing=()
  [ -f /usr/share/trans/de-en ] || missing+=(trans-de-en)
  python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  ${sudo:-} apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Tokenizers are trained once on the training splits and shared by every run, so that
# perplexities and token rates compare like with like.
tokenizers() {
  debian_packages
  [ -f data/deen/train-phrases.de ] || python3 scripts/prepare-data.py
  "$build/models/normserve-model" init --config models/configs/deen-demo.json \
    --out "$runs/tokenizers/deen" --source-text data/deen/train.de \
    --target-text data/deen/train.en --vocab-size $vocab
  "$build/models/normserve-model" init --config models/configs/enlm-demo.json \
    --out "$runs/tokenizers/enlm" --target-text data/enlm/train.txt --vocab-size $vocab
}
mt_spm=(--source-spm "$runs/tokenizers/deen/source.spm" --target-spm "$runs/tokenizers/deen/target.spm")
lm_spm=(--spm "$runs/tokenizers/enlm/lm.spm")

# deen: 6,400 updates on the whole training split, then 4,000 of fine-tuning on the
# phrase-weighted set (scripts/prepare-data.py), so that short phrases are not drowned by the
# single-word entries. deen-base is kept: the report sets it beside the fine-tuned model.
deen() {
  local base_steps=6400
  "$train" --config models/configs/deen-demo.json --out "$runs/bundled/deen-base" \
    "${mt_data[@]}" "${mt_spm[@]}" "${common[@]}" --max-tokens 2048 --steps $base_steps \
    --warmup 400 --lr 1e-3 --save-every 200 --validate-every 300 --average-last 4 --fp16
  "$train" --config models/configs/deen-demo.json --out "$runs/bundled/deen" \
    --train-source data/deen/train-phrases.de --train-target data/deen/train-phrases.en \
    --valid-source data/deen/valid.de --valid-target data/deen/valid.en "${mt_spm[@]}" \
    --init-from "$runs/bundled/deen-base/checkpoints/checkpoint_$base_steps.safetensors" \
    "${common[@]}" --max-tokens 2048 --steps 4000 --warmup 200 --lr 5e-4 --save-every 200 \
    --validate-every 400 --average-last 4 --fp16
}

enlm() {
  "$train" --config models/configs/enlm-demo.json --out "$runs/bundled/enlm" \
    "${lm_data[@]}" "${lm_spm[@]}" "${common[@]}" --max-tokens 2048 --steps 1200 \
    --warmup 300 --lr 1e-3 --save-every 200 --validate-every 250 --average-last 3 --fp16
}

install_bundled() {
  for model in deen enlm; do
    rm -rf "models/repository/$model/1"
    mkdir -p "models/repository/$model/1"
    cp "$runs/bundled/$model"/{config.json,model.safetensors,*.spm} "models/repository/$model/1/"
  done
}

bundled() {
  deen
  enlm
  install_bundled
}

# The config of one comparison run: the demo architecture with NORM at every site, except
# that BatchNorm and PowerNorm replace only the encoder's norms of the MT model, as in the
# PowerNorm paper's Transformer runs (batch statistics in a causal decoder see later tokens).
variant_config() {
  local base=$1 norm=$2 encoder_only=$3
  python3 - "$base" "$norm" "$encoder_only" <<'EOF'
import json, sys
base, norm, encoder_only = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
config = json.load(open(base))
spec = {"type": norm, "eps": 1e-5}
if norm == "prmsnorm":
    spec["p"] = 0.0625
if norm == "powernorm":
    spec["groups"] = config["attention_heads"]
if encoder_only and norm in ("batchnorm", "powernorm"):
    config["norm"] = {"default": {"type": "layernorm", "eps": 1e-5},
                      "encoder_self_attn": spec, "encoder_ffn": spec}
else:
    config["norm"] = {"default": spec}
print(json.dumps(config, indent=2))
EOF
}

# Same recipe and budget for every norm: 600 updates of <= 1536 tokens, warm-up 150.
# Usage: [variants="NORM..."] compare_task TASK BASE_CONFIG ENCODER_ONLY SEED FLAGS...
# Seed 1 goes to $runs/compare, another seed to $runs/compare-seed<N>.
compare_task() {
  local task=$1 base=$2 encoder_only=$3 seed=$4 dir=$runs/compare norm out
  shift 4
  [ "$seed" = 1 ] || dir=$runs/compare-seed$seed
  for norm in ${variants:-${norms[*]}}; do
    out="$dir/$task-$norm"
    mkdir -p "$out"
    variant_config "$base" "$norm" "$encoder_only" >"$out.json"
    "$train" --config "$out.json" --out "$out" "$@" "${common[@]}" --seed "$seed" \
      --max-tokens 1536 --steps 600 --warmup 150 --lr 1.5e-3 --save-every 100 \
      --validate-every 100 --average-last 2
  done
}

compare() {
  compare_task mt models/configs/deen-demo.json 1 1 "${mt_data[@]}" "${mt_spm[@]}"
  compare_task lm models/configs/enlm-demo.json 0 1 "${lm_data[@]}" "${lm_spm[@]}"
}

# A second seed for three LM variants: the seed-to-seed spread that the report sets beside
# the differences between variants.
seeds() {
  variants="layernorm rmsnorm powernorm" compare_task lm models/configs/enlm-demo.json 0 2 \
    "${lm_data[@]}" "${lm_spm[@]}"
}

# sacrebleu comes from PyPI into a virtual environment under $runs.
evaluate() {
  debian_packages
  if [ ! -x "$runs/venv/bin/python" ]; then
    python3 -m venv "$runs/venv"
    "$runs/venv/bin/pip" install -q sacrebleu==2.6.0
  fi
  "$runs/venv/bin/python" scripts/evaluate-models.py --runs "$runs" --build "$build"
}
report() { python3 scripts/reproduction-report.py --runs "$runs" --out docs/reproduction.md; }

stage=${1:-all}
case "$stage" in
  all)
    start=$(date +%s)
    tokenizers
    deen >"$runs/deen.out" 2>&1 &
    deen_pid=$!
    enlm >"$runs/enlm.out" 2>&1
    compare >"$runs/compare.out" 2>&1
    seeds >"$runs/seeds.out" 2>&1
    wait $deen_pid
    install_bundled
    evaluate
    report
    echo "recipe wall time: $(($(date +%s) - start)) s"
    ;;
  tokenizers | bundled | compare | seeds | evaluate | report) "$stage" ;;
  *)
    echo "usage: $0 [all|tokenizers|bundled|compare|seeds|evaluate|report]" >&2
    exit 2
    ;;
esac
