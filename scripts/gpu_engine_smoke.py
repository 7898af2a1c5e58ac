"""GPU check of the static engine without spaCy or a model download (runs on the bare device image).

1. StaticLM (fp32, CUDA graphs) against transformers' Llama forward on a random SmolLM2-shaped model:
   next-token argmax and log-probs.
2. CUDA-graph replay against eager StaticLM on random tree-shaped inputs over several shape buckets:
   identical outputs.
3. TreeDecoder.generate with graphs against transformers step-by-step greedy decoding.
4. Per-pass latency of the SmolLM2-135M shape (bf16) at batch 1, and of a LLaMA-2-7B shape.

    python scripts/gpu_engine_smoke.py OUT_DIR
"""

import json
import sys
import time
import types
from pathlib import Path

pkg = types.ModuleType("spacy_padellm")  # import the engine modules without the spaCy component
pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "spacy_padellm")]
sys.modules["spacy_padellm"] = pkg

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from spacy_padellm.decoding.static_lm import StaticLM  # noqa: E402
from spacy_padellm.decoding.tree import TreeBatch  # noqa: E402

out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/smoke")
out_dir.mkdir(parents=True, exist_ok=True)
report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
dev = torch.device("cuda")
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0,
                  tie_word_embeddings=True, rms_norm_eps=1e-5)
hf = LlamaForCausalLM(cfg).to(dev).eval()
for p in hf.parameters():
    p.data.normal_(0, 0.05)

# 1. logits against transformers
lm = StaticLM.from_hf(hf)
ids = torch.randint(0, 49152, (1, 40), device=dev)
with torch.no_grad():
    ref = torch.log_softmax(hf(ids).logits[0].float(), -1)
n = ids.shape[1]
lm.reserve(4, 256)
tok, lp = lm.step(ids.cpu().numpy(), np.arange(n)[None], np.arange(n)[None], np.tril(np.ones((n, n), bool))[None],
                  np.arange(n)[None])
report["hf_argmax_agree"] = float((tok[0] == ref.argmax(-1).cpu().numpy()).mean())
report["hf_max_logp_diff"] = float(np.abs(lp[0] - ref.max(-1).values.cpu().numpy()).max())
print("1.", report)

# 2. graphs vs eager on random tree-shaped batches
eager = StaticLM.from_hf(hf, cuda_graphs=False)
rng = np.random.default_rng(0)
same = []
for B, T, S in [(1, 1, 30), (3, 5, 60), (7, 2, 100), (16, 33, 120), (2, 1, 200)]:
    for m in (lm, eager):
        m.reserve(16, 256)
        m.k_cache.zero_()
        m.v_cache.zero_()
    toks = rng.integers(0, 49152, (B, S)).astype(np.int64)
    full = np.tril(np.ones((S, S), bool))
    mask = np.zeros((B, T, S), bool)
    mask[:, :, : S - T] = rng.random((B, T, S - T)) < 0.7
    mask[:, :, 0] = True
    for t in range(T):
        mask[:, t, S - T + t] = True
    outs = []
    for m in (lm, eager):  # fill a prefix of S-T columns, then a step of T tokens with a random tree mask
        m.step(toks[:, : S - T], np.tile(np.arange(S - T), (B, 1)), np.tile(np.arange(S - T), (B, 1)),
               np.tile(full[: S - T, : S - T][None], (B, 1, 1)), np.zeros((B, 1), np.int64))
        step_toks = toks[:, S - T:]
        outs.append(m.step(step_toks, np.tile(np.arange(S - T, S), (B, 1)), np.tile(np.arange(S - T, S), (B, 1)),
                           mask, np.tile(np.arange(T)[None], (B, 1))))
    same.append([bool((outs[0][0] == outs[1][0]).all()), float(np.abs(outs[0][1] - outs[1][1]).max())])
report["graph_equals_eager"] = same
print("2.", same)

# 3. generate with graphs vs transformers greedy
from spacy_padellm.decoding.tree import TreeDecoder  # noqa: E402


class _Enc:  # the bits of PromptEncoder that TreeDecoder reads
    class template:
        count_terminator = "\n"

    class tokenizer:
        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return "x"

    eos_id = 0

    @staticmethod
    def _encode(text):
        return [10]


tree = TreeDecoder(lm, _Enc(), speculate=False)
prompts = [list(rng.integers(1, 49152, n)) for n in (12, 30, 5)]
got = tree.generate(prompts, eos_id=0, max_new_tokens=12)
agree = []
for prompt, (gen, _, _) in zip(prompts, got):
    cur = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            t = int(hf(torch.tensor([cur], device=dev)).logits[0, -1].argmax())
            if t == 0:
                break
            cur.append(t)
    agree.append(gen == cur[len(prompt):])
report["generate_agree"] = agree
print("3.", agree)


# 4. latency per pass
def time_pass(model, B, T, S, reps=50):
    model.reserve(B, S + T)
    toks = np.ones((B, T), np.int64)
    pos = np.tile(np.arange(S, S + T), (B, 1))
    mask = np.zeros((B, T, S + T), bool)
    mask[:, :, :S] = True
    for t in range(T):
        mask[:, t, S + t] = True
    for _ in range(3):
        model.step(toks, pos, pos, mask, np.zeros((B, 1), np.int64))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        model.step(toks, pos, pos, mask, np.zeros((B, 1), np.int64))
    return (time.perf_counter() - t0) / reps * 1000


bf = StaticLM.from_hf(hf.to(torch.bfloat16))
lat = {}
for B, T, S in [(1, 1, 100), (1, 8, 100), (1, 64, 1), (64, 4, 150), (512, 4, 150)]:
    lat[f"smollm2 B{B} T{T} S{S}"] = round(time_pass(bf, B, T, S), 3)
del hf, lm, eager, bf
torch.cuda.empty_cache()
x = torch.empty(int(2e9), dtype=torch.uint8, device=dev)
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(10):
    x.clone()
torch.cuda.synchronize()
report["copy_bandwidth_GBps"] = round(2 * 2e9 * 10 / (time.perf_counter() - t0) / 1e9, 1)
del x
big = StaticLM.random(hidden=4096, layers=32, n_heads=32, n_kv_heads=32, intermediate=11008, vocab=32000)
report["llama7b_weight_GB"] = round(big.weight_bytes / 1e9, 2)
for B, T, S in [(1, 1, 100), (1, 8, 100), (1, 64, 1)]:
    lat[f"llama7b B{B} T{T} S{S}"] = round(time_pass(big, B, T, S, reps=20), 3)
report["ms_per_pass"] = lat
print("4.", json.dumps(report, indent=1))
(out_dir / "engine_smoke.json").write_text(json.dumps(report, indent=1))
