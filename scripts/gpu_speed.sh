#!/bin/bash
# The speed runs of issue #5 (sessions 6 and 7), on the device machine after ../shared/device/pack and its unpack
# calls, with .gpu (CoNLL03 train/dev/test, see docs/results-speed.md) carried; results under $OUT/$SESSION
# (SESSION: s8 unless set; scripts/gpu_session6.sh runs this with s6):
#
#   bash scripts/gpu_speed.sh anatomy  # where a batch-1 sentence's time goes, and nlp.pipe with 1 and the decoder's
#                                      # own number of batches in flight (scripts/gpu_anatomy.py)
#   bash scripts/gpu_speed.sh train    # AutoRegStruct: full fine-tune of the base on CoNLL03 train, 3.5 minutes
#                                      # (scripts/gpu_struct.sh: session 3's command)
#   bash scripts/gpu_speed.sh bench    # padellm, padellm_nospan, padellm_nodraft and the trained AutoRegStruct
#                                      # (with and without prompt-lookup drafts), whole test set, in one process
#   bash scripts/gpu_speed.sh profile  # where nlp.pipe's host time goes at 2048 docs per call
#                                      # (scripts/gpu_pipe_profile.py)
#   VARIANTS='[{}, {"span_drafts": 6}]' bash scripts/gpu_speed.sh variants
#                                      # batch-1 latency of decoder variants, interleaved doc by doc
#                                      # (scripts/gpu_variants.py, LAT_DOCS docs: 300 unless set)
set -uo pipefail
phase=$1
S=${SESSION:-s8}
source scripts/gpu_env.sh "$S"  # the tokenizer's parallelism is left at its default (on), as a user has it
[[ -z ${VARIANTS:-} ]] && VARIANTS='[{}]'
if [[ $phase == anatomy ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  timeout ${ANATOMY_S:-300} python scripts/gpu_anatomy.py "$M" "$DATA/conll03_test.spacy" "$OUT/$S/anatomy${TAG:-}.json" \
    --variants "$VARIANTS" --rows "${ROWS:-256}" ${ANATOMY_ARGS:-} 2>&1 \
    | grep -v -E "Ignoring|it/s\]|warn" | tail -n 40
  echo "$(el) done"
elif [[ $phase == variants ]]; then
  timeout ${VARIANTS_S:-300} python scripts/gpu_variants.py "$M" "$DATA/conll03_test.spacy" "$OUT/$S/variants${TAG:-}.json" \
    --variants "$VARIANTS" --latency-docs ${LAT_DOCS:-300} 2>&1 | grep -v -E "Ignoring|it/s\]|warn" | tail -n 20
  echo "$(el) done"
elif [[ $phase == train ]]; then
  struct_train "$OUT/$S" conll03_${S}_autoreg_struct
elif [[ $phase == bench ]]; then
  struct_compare
  timeout ${BENCH_S:-500} python -m spacy_padellm "${BENCH[@]}" --methods ${METHODS:-padellm,padellm_nospan,padellm_nodraft} "${compare[@]}" \
    --output "$OUT/$S/bench_h100_$S${TAG:-}.json" 2>&1 | grep -v Ignoring | tail -n 30
  echo "$(el) done"
elif [[ $phase == profile ]]; then
  timeout ${PROFILE_S:-200} python scripts/gpu_pipe_profile.py "$M" "$DATA/conll03_test.spacy" \
    "$OUT/$S/pipe_profile${TAG:-}.json" --top ${TOP:-60} 2>&1 | grep -v -E "Ignoring|it/s\]|warn" | head -n ${LINES:-80}
  echo "$(el) done"
fi
