"""Where the GPU time of one StaticLM pass goes, per shape (no spaCy, no model download: random SmolLM2 shape).

For each (rows B, places T, cache columns S, real tokens N) shape: the time of a CUDA-graph replay (StaticLM.run,
inputs staged as in decoding), and a torch.profiler breakdown of the same pass run eagerly, by kernel.

    python scripts/gpu_pass_profile.py OUT.json
"""

import json
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

pkg = types.ModuleType("spacy_padellm")  # the engine modules without the spaCy component
pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "spacy_padellm")]
sys.modules["spacy_padellm"] = pkg

import numpy as np  # noqa: E402
import torch  # noqa: E402

from spacy_padellm.decoding.static_lm import StaticLM  # noqa: E402

SHAPES = [  # (B, T, S, N real tokens, M outputs)
    (1, 64, 128, 60, 4),      # batch 1, pass 1 (prefix + labels)
    (1, 256, 256, 170, 24),   # batch 1, pass 1 with count drafts
    (1, 32, 256, 30, 30),     # batch 1, mention pass with drafts
    (1, 1, 128, 1, 1),        # one token (autoregressive step)
    (256, 64, 128, 256 * 50, 1024),  # throughput: prefill pass of 256 docs
    (256, 8, 256, 256 * 5, 1024),    # throughput: count/tag pass
    (256, 16, 256, 1500, 1024),      # throughput: a packed pass (uneven rows)
    (256, 2, 256, 400, 400),         # throughput: late mention pass
]


def inputs(lm, B, T, S, N, M, rng):
    tokens = rng.integers(0, 49152, (B, T)).astype(np.int64)
    positions = np.tile(np.arange(S - T, S), (B, 1)).astype(np.int64)
    slots = np.full((B, T), lm.trash_col, dtype=np.int64)
    flat = np.sort(rng.choice(B * T, size=N, replace=False))
    slots.flat[flat] = (S - T + flat % T)
    mask = np.zeros((B, T, S), dtype=bool)
    mask[:, :, : S - T] = rng.random((B, T, S - T)) < 0.6
    mask[..., 0] = True
    for t in range(T):
        mask[:, t, S - T + t] = True
    outputs = np.sort(rng.choice(flat, size=min(M, N), replace=False))
    return tokens, positions, slots, mask, outputs


def main():
    out_path = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pass_profile.json")
    rng = np.random.default_rng(0)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "shapes": []}
    graphs = StaticLM.random(hidden=576, layers=30, n_heads=9, n_kv_heads=3, intermediate=1536, vocab=49152)
    eager = StaticLM(graphs.cfg, graphs.embed, graphs.layers, graphs.norm, graphs.lm_head, graphs.cos, graphs.sin,
                     cuda_graphs=False)
    for B, T, S, N, M in SHAPES:
        row = {"B": B, "T": T, "S": S, "N": N, "M": M}
        args = inputs(graphs, B, T, S, N, M, rng)
        for lm in (graphs, eager):
            lm.reserve(B, S)
        for _ in range(3):
            graphs.run(*args)
        torch.cuda.synchronize()
        reps = 50
        t0 = time.perf_counter()
        for _ in range(reps):
            graphs.run(*args)
        row["replay_ms"] = round((time.perf_counter() - t0) / reps * 1000, 3)
        row["packed"] = bool(graphs.last_shape[0])
        for _ in range(2):
            eager.run(*args)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            eager.run(*args)
        row["eager_ms"] = round((time.perf_counter() - t0) / 10 * 1000, 3)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                eager.run(*args)
            torch.cuda.synchronize()
        by = defaultdict(lambda: [0.0, 0])
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                by[e.name][0] += e.device_time / 5
                by[e.name][1] += 1
        total = sum(v[0] for v in by.values())
        row["kernels_per_pass"] = sum(v[1] for v in by.values()) // 5
        row["gpu_us_per_pass"] = round(total, 1)
        row["top"] = [{"kernel": k[:90], "us": round(v[0], 1), "calls": v[1] // 5}
                      for k, v in sorted(by.items(), key=lambda kv: -kv[1][0])[:10]]
        report["shapes"].append(row)
        print(f"B{B} T{T} S{S} N{N} M{M}: replay {row['replay_ms']} ms, eager {row['eager_ms']} ms, "
              f"kernels {row['kernels_per_pass']}, GPU {row['gpu_us_per_pass']} us, packed {row['packed']}")
        for t in row["top"][:6]:
            print(f"    {t['us']:9.1f} us {t['calls']:4d}x  {t['kernel']}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
