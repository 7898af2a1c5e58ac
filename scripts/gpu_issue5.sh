#!/bin/bash
# The GPU runs behind docs/results-speed.md (issue #5), on the device machine after
# ../shared/device/pack + unpack (../shared/device/README.md), in two back-to-back calls:
#   bash scripts/gpu_issue5.sh train   # PaDeLLM, AutoRegStruct, AutoRegAug: full fine-tunes, in parallel
#   bash scripts/gpu_issue5.sh bench   # test F1 of each, the benchmark, the 7B-shaped latency run
# Needs the base GGUF in $BASE and the converted corpus in $DATA (conll03_train.padellm.jsonl,
# conll03_dev.spacy, conll03_test.spacy, conll03_test.padellm.jsonl). Results under $OUT/i5.
set -uo pipefail
phase=$1; shift || true
DATA=${DATA:-/tmp/data}
OUT=${OUT:-/tmp/out}
BASE=${BASE:-/tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf}
MINUTES=${MINUTES:-6.5}
mkdir -p "$OUT/i5" /tmp/runs
train() {
  local name=$1; shift
  python -m spacy_padellm train configs/conll03.cfg --no-progress \
    --paths.base_model "$BASE" --paths.train "$DATA/conll03_train.padellm.jsonl" \
    --paths.dev "$DATA/conll03_dev.spacy" --paths.output "/tmp/runs/$name" \
    --training.method full --training.lr 2e-4 --training.epochs 3 --training.max_minutes "$MINUTES" \
    --training.log_every 50 "$@" > "$OUT/i5/$name.train.log" 2>&1
  echo "$name: exit $?"
  cp "/tmp/runs/$name/history.json" "$OUT/i5/$name.history.json" 2>/dev/null
  cp "/tmp/runs/$name/summary.json" "$OUT/i5/$name.summary.json" 2>/dev/null
}
if [[ $phase == train ]]; then
  train padellm_full --training.batch_size 128 --training.eval_every 500 &
  train autoreg_struct --data.protocol autoreg_struct --training.batch_size 32 --training.eval_every 500 &
  train autoreg_aug --data.protocol autoreg_aug --training.batch_size 32 --training.eval_every 500 &
  wait
  tail -n 3 "$OUT"/i5/*.train.log
elif [[ $phase == bench ]]; then
  for name in padellm_full autoreg_struct autoreg_aug; do
    [[ -d /tmp/runs/$name/best ]] || { echo "no model for $name"; continue; }
    timeout 120 python -m spacy_padellm evaluate "/tmp/runs/$name/best" "$DATA/conll03_test.spacy" --device cuda \
      --batch-size 512 --no-progress --output "$OUT/i5/$name.test.json" 2>&1 | tail -n 4
  done
  P=/tmp/runs/padellm_full/best
  [[ -d $P ]] || P=padellm:conll03-smollm2-135m
  compare=()
  for name in autoreg_struct autoreg_aug; do
    [[ -d /tmp/runs/$name/best ]] && compare+=(--compare "$name=/tmp/runs/$name/best")
  done
  timeout ${BENCH_S:-300} python -m spacy_padellm benchmark "$P" "$DATA/conll03_test.spacy" --device cuda \
    --max-docs ${BENCH_DOCS:-1000} --latency-docs 150 --reference-docs 25 --batch-sizes 256,1024 --warmup 5 \
    "${compare[@]}" --no-progress --output "$OUT/i5/bench_h100.json" 2>&1 | tail -n 30
  for shape in smollm2-135m llama2-7b; do
    timeout 100 python benchmarks/paper_scale.py "$DATA/conll03_test.padellm.jsonl" "$BASE" "$OUT/i5" --docs 150 \
      --warmup 15 --shape $shape 2>&1 | grep -v "it/s\]" | tail -n 8
  done
fi
