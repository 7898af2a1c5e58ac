#!/bin/bash
# Session 5's GPU runs (issue #5), on the device machine after ../shared/device/pack and its unpack calls, with
# .gpu (CoNLL03 train/dev/test, see docs/results-speed.md) carried; results under $OUT/s5:
#
#   bash scripts/gpu_session5.sh probe  # engine smoke test (graphs = eager with staged inputs), where a pass's GPU
#                                       # time goes per shape (scripts/gpu_pass_profile.py), benchmark of this code
#   bash scripts/gpu_session5.sh train  # AutoRegStruct: full fine-tune of the base on CoNLL03 train, 3.5 minutes
#                                       # (scripts/gpu_struct.sh: session 3's command)
#   bash scripts/gpu_session5.sh bench  # padellm, padellm_nospan, padellm_nodraft and the trained AutoRegStruct (with and without
#                                       # prompt-lookup drafts), whole test set, side by side in one process
#   bash scripts/gpu_session5.sh old    # the same padellm benchmark on the package of commit fe26b40 (session 4),
#                                       # unpacked into .old/ by: git archive fe26b40 spacy_padellm | tar -x -C .old
set -uo pipefail
phase=$1
source scripts/gpu_env.sh s5
export TOKENIZERS_PARALLELISM=false
if [[ $phase == probe ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  timeout 150 python scripts/gpu_engine_smoke.py "$OUT/s5" 2>&1 | grep -v Ignoring | grep -E "^[123]\.|graph_equals|ms_per_pass|smollm2" | head -20
  echo "$(el) pass profile"
  timeout 150 python scripts/gpu_pass_profile.py "$OUT/s5/pass_profile.json" 2>&1 | tail -n 60
  echo "$(el) benchmark"
  timeout 280 python -m spacy_padellm "${BENCH[@]}" --methods padellm,padellm_nodraft \
    --output "$OUT/s5/bench_h100_s5_probe.json" 2>&1 | grep -v Ignoring | tail -n 14
  echo "$(el) done"
elif [[ $phase == train ]]; then
  struct_train "$OUT/s5" conll03_s5_autoreg_struct
elif [[ $phase == bench ]]; then
  struct_compare
  timeout 500 python -m spacy_padellm "${BENCH[@]}" --methods padellm,padellm_nospan,padellm_nodraft "${compare[@]}" \
    --output "$OUT/s5/bench_h100_s5.json" 2>&1 | grep -v Ignoring | tail -n 30
  echo "$(el) done"
elif [[ $phase == old ]]; then
  cd .old && PYTHONPATH=/tmp/site:$PWD timeout 300 python -m spacy_padellm "${BENCH[@]}" --methods padellm,padellm_nodraft \
    --output "$OUT/s5/bench_h100_s5_old.json" 2>&1 | grep -v Ignoring | tail -n 14
fi
if [[ $phase == phases ]]; then  # captures and time per phase (scripts/gpu_phases.py), with and without span drafts
  timeout 200 python scripts/gpu_phases.py "$M" "$DATA/conll03_test.spacy" "$OUT/s5/phases.json" 2>&1 | grep -v Ignoring | tail -n 9
  timeout 120 python scripts/gpu_phases.py "$M" "$DATA/conll03_test.spacy" "$OUT/s5/phases_nodraft.json" --config '{"draft_tokens": 0}' 2>&1 | grep -v Ignoring | tail -n 9
fi
