# AutoRegStruct on the device machine, sourced by scripts/gpu_env.sh (which sets BASE, DATA and el). The training
# command is session 3's (scripts/gpu_session3.sh): a full fine-tune of the base on CoNLL03 train, 3.5 minutes
# (MINUTES), so that every session's comparison trains the baseline the same way.

# struct_train DIR NAME: train into /tmp/runs/autoreg_struct, log and results under DIR as NAME.*, and save the
# pipelines /tmp/runs/autoreg_struct.pipeline (prompt-lookup drafts) and autoreg_struct_nodraft.pipeline.
struct_train() {
  local dir=$1 name=$2
  TOKENIZERS_PARALLELISM=false timeout 330 python -m spacy_padellm train configs/conll03.cfg --no-progress \
    --paths.base_model "$BASE" --paths.train "$DATA/conll03_train.padellm.jsonl" \
    --paths.dev "$DATA/conll03_dev.spacy" --paths.output /tmp/runs/autoreg_struct --paths.pipeline null \
    --data.protocol autoreg_struct --data.max_dev_docs 300 --training.method full --training.lr 2e-4 \
    --training.batch_size 32 --training.epochs 2 --training.max_minutes ${MINUTES:-3.5} --training.eval_every 100000 \
    --training.log_every 50 > "$dir/autoreg_struct.train.log" 2>&1
  echo "$(el) train exit $? $(tail -n 1 "$dir/autoreg_struct.train.log" | cut -c1-300)"
  cp /tmp/runs/autoreg_struct/history.json "$dir/$name.history.json"
  cp /tmp/runs/autoreg_struct/summary.json "$dir/$name.summary.json"
  python - <<'PY'
import spacy, spacy_padellm
for tag, config in (("", {}), ("_nodraft", {"draft_tokens": 0})):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": "/tmp/runs/autoreg_struct/best", **config})
    nlp.to_disk(f"/tmp/runs/autoreg_struct{tag}.pipeline")
PY
  ls /tmp/runs
}

# struct_compare: the benchmark's --compare arguments for the pipelines struct_train saved, in the array `compare`
struct_compare() {
  compare=()
  for tag in "" _nodraft; do
    [[ -d /tmp/runs/autoreg_struct$tag.pipeline ]] && compare+=(--compare "autoreg_struct$tag=/tmp/runs/autoreg_struct$tag.pipeline")
  done
}
