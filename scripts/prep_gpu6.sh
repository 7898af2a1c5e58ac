#!/bin/bash
# Prepare the data of issue #6 for scripts/gpu_issue6.sh: convert GENIA and the four Chinese sets with
# `python -m spacy_padellm convert` and copy what the GPU run reads into .gpu6/ (git-ignored, carried).
#
#   bash scripts/prep_gpu6.sh [DATA_DIR]        # DATA_DIR holds padellm/{genia,weibo,...}; default ../shared/data
#
# The PaDeLLM-NER authors' processed sets are public: https://github.com/GeorgeLuImmortal/PaDeLLM_NER (ner_data).
# GENIA has no train split here: its dev split is split in two, the first 90% for training
# (genia_dev90) and the last 10% for model selection (genia_dev10), the same split as `spacy project run
# genia-split`. The converted corpora also stay in corpus/{genia,weibo,resume,youku,ecommerce}/, where the
# project.yml commands expect them. MSRA (test split only) is left out: no training split, and its labels
# (PER LOC ORG) match none of the four trained label sets.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
DATA=${1:-${DATA:-../shared/data}}
OUTDIR=.gpu6
grep -qx '/.gpu6/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu6/' >> .git/info/exclude; }
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"

# GENIA: the 90/10 split of dev (lines split on "\n" only), then nested conversion into doc.spans["sc"].
mkdir -p corpus/genia
python -c "import sys; src, a, b = sys.argv[1:4]; lines = [l for l in open(src, encoding='utf-8', newline='').read().split('\n') if l.strip()]; n = len(lines) - len(lines) // 10; open(a, 'w', encoding='utf-8', newline='').write('\n'.join(lines[:n]) + '\n'); open(b, 'w', encoding='utf-8', newline='').write('\n'.join(lines[n:]) + '\n'); print(f'{src}: {n} lines -> {a}, {len(lines) - n} -> {b}')" \
  "$DATA/padellm/genia/genia_dev.jsonl" corpus/genia/genia_dev90.jsonl corpus/genia/genia_dev10.jsonl
python -m spacy_padellm convert corpus/genia/genia_dev90.jsonl corpus/genia/genia_dev10.jsonl \
  "$DATA/padellm/genia/genia_test.jsonl" corpus/genia --lang en --spans-key sc --no-progress 2>&1 | grep -v Warning
cp corpus/genia/genia_dev90.padellm.jsonl corpus/genia/genia_dev10.spacy corpus/genia/genia_test.spacy \
  corpus/genia/genia_dev90.labels.json "$OUTDIR/"

# Chinese: character offsets, spacy.blank("zh") (character segmentation), flat spans in doc.ents.
for ds in weibo resume youku ecommerce; do
  python -m spacy_padellm convert "$DATA/padellm/$ds/${ds}_train.jsonl" "$DATA/padellm/$ds/${ds}_dev.jsonl" \
    "$DATA/padellm/$ds/${ds}_test.jsonl" "corpus/$ds" --lang zh --no-progress 2>&1 | grep -v Warning
  cp "corpus/$ds/${ds}_train.padellm.jsonl" "corpus/$ds/${ds}_dev.spacy" "corpus/$ds/${ds}_test.spacy" \
    "corpus/$ds/${ds}_train.labels.json" "$OUTDIR/"
done

(cd "$OUTDIR" && sha256sum * > SHA256SUMS)
size=$(du -sk "$OUTDIR" | cut -f1)
echo "$OUTDIR: $(ls "$OUTDIR" | wc -l) files, $((size / 1024)) MiB ($size KiB)"
if ((size > 60 * 1024)); then echo "error: $OUTDIR is over 60 MiB; it will not fit one carry" >&2; exit 1; fi
echo "carry: [\".gpu6\"]   run: bash scripts/gpu_issue6.sh   (after ../shared/device/pack and its unpack calls)"
