#!/usr/bin/env bash
# Makes the bundled demo repository models/repository with random weights: deen
# (transformer_mt, RMSNorm) and enlm (transformer_lm, LayerNorm). Their tokenizers are
# trained on the Ding DE-EN dictionary of Debian's trans-de-en package, annotations removed.
# Usage: scripts/make-demo-models.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
ding=/usr/share/trans/de-en
if [ ! -f "$ding" ]; then
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  ${sudo:-} apt-get install -y -qq trans-de-en >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# "DE :: EN" lines; drop {..} [..] (..) annotations and keep the first sub-entry of each side.
grep -v '^#' "$ding" | sed -E 's/\{[^}]*\}|\[[^]]*\]|\([^)]*\)//g' |
  awk -F' :: ' 'NF == 2 { split($1, de, " [|] "); split($2, en, " [|] ");
                          gsub(/ +/, " ", de[1]); gsub(/ +/, " ", en[1]);
                          print de[1] > "'"$work"'/de.txt"; print en[1] > "'"$work"'/en.txt" }'
rm -rf models/repository/deen models/repository/enlm
"$build/models/normserve-model" init --config models/configs/deen-demo.json \
  --out models/repository/deen/1 --source-text "$work/de.txt" --target-text "$work/en.txt" \
  --vocab-size 2000 --seed 1 --dtype f16
"$build/models/normserve-model" init --config models/configs/enlm-demo.json \
  --out models/repository/enlm/1 --target-text "$work/en.txt" --vocab-size 2000 --seed 2 --dtype f16
du -sh models/repository/*
