#!/bin/bash
# Old against new code on one device machine (timings are comparable only within one loan): the benchmark's
# padellm method (batch-1 latency over 150 docs, nlp.pipe at 2048 docs per call), alternating the code under
# .ab/old (an earlier commit's spacy_padellm, e.g. `git archive ca46f4e spacy_padellm ':!spacy_padellm/models'`)
# and this tree, ROUNDS times; both read the model folder of this tree. Results under $OUT/ab.
#   bash scripts/gpu_ab.sh      (after the device's unpack calls, with .gpu and .ab carried)
set -uo pipefail
source scripts/gpu_env.sh ab  # each run below sets its own PYTHONPATH (the old or the new code)
M=$PWD/spacy_padellm/models/conll03-smollm2-135m  # a path both versions resolve alike
D=$DATA/conll03_test.spacy
# MODE=bench: the benchmark (above); MODE=anatomy: scripts/gpu_anatomy.py's batch-1 step timers and
# scripts/gpu_pipe_profile.py's nlp.pipe timings (3 runs at 2048 docs per call) instead
for i in $(seq ${ROUNDS:-2}); do
  for v in old new; do
    [[ $v == old ]] && P=/tmp/site:$PWD/.ab/old || P=/tmp/site:$PWD
    echo "== $v $i"
    if [[ ${MODE:-bench} == anatomy ]]; then
      (cd /tmp && PYTHONPATH=$P timeout ${RUN_S:-150} python "$OLDPWD/scripts/gpu_anatomy.py" "$M" "$D" "$OUT/ab/anatomy_$v$i.json" \
        --no-throughput 2>&1 | grep -E "^  [a-z]" | head -n 20)
      (cd /tmp && PYTHONPATH=$P timeout ${RUN_S:-150} python "$OLDPWD/scripts/gpu_pipe_profile.py" "$M" "$D" \
        "$OUT/ab/pipe_$v$i.json" --top 0 2>&1 | grep -E "^\{")
      continue
    fi
    # from /tmp: python -m puts the working directory first on sys.path
    (cd /tmp && PYTHONPATH=$P timeout ${RUN_S:-200} python -m spacy_padellm benchmark "$M" "$D" --device cuda \
      --latency-docs 150 --batch-sizes 2048 --warmup 100 --methods padellm --no-progress \
      --output "$OUT/ab/$v$i.json" 2>&1 | grep -E "^\| padellm |^\| 2048 ")
  done
done
