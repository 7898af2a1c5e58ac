#!/bin/bash
# The GPU run behind docs/results-conll03.md: train on CoNLL03, keep the best dev model, score it on
# test. Runs on the device machine after ../shared/device/pack + unpack (see ../shared/device/README.md):
#   bash scripts/gpu_conll03.sh RUN_NAME [--section.key value ...]
# Needs: /tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf and the converted corpus in $DATA
# (default /tmp/data: conll03_train.padellm.jsonl, conll03_dev.spacy, conll03_test.spacy).
set -euo pipefail
name=$1; shift
DATA=${DATA:-/tmp/data}
OUT=${OUT:-/tmp/out}
BASE=${BASE:-/tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf}
work=/tmp/runs/$name
mkdir -p "$work" "$OUT"
python -m spacy_padellm train configs/conll03.cfg --no-progress \
  --paths.base_model "$BASE" --paths.train "$DATA/conll03_train.padellm.jsonl" \
  --paths.dev "$DATA/conll03_dev.spacy" --paths.output "$work" "$@" 2>&1 | grep -v "it/s\]" | tee "$OUT/$name.train.log"
cp "$work/history.json" "$OUT/$name.history.json"
cp "$work/summary.json" "$OUT/$name.summary.json"
python -m spacy_padellm evaluate "$work/best" "$DATA/conll03_test.spacy" --device cuda --batch-size 256 \
  --no-progress --output "$OUT/$name.test.json" | tee -a "$OUT/$name.train.log"
