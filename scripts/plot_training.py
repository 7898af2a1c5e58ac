"""Plot training curves (loss and dev span F1 against step) from history JSON files written by `train`.

    python scripts/plot_training.py OUT.png NAME=HISTORY.json [NAME=HISTORY.json ...]
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, runs = sys.argv[1], [arg.split("=", 1) for arg in sys.argv[2:]]
fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
for name, path in runs:
    history = json.load(open(path))
    loss = [(h["step"], h["loss"]) for h in history if "loss" in h]
    dev = sorted({h["step"]: h.get("dev_f", h.get("dev_ents_f")) for h in history
                  if "dev_f" in h or "dev_ents_f" in h}.items())
    ax_loss.plot(*zip(*loss), label=name, alpha=0.8)
    ax_f1.plot(*zip(*dev), marker="o", label=name)
ax_loss.set(xlabel="optimizer step", ylabel="training loss (per target token)", yscale="log", title="loss")
ax_f1.set(xlabel="optimizer step", ylabel="dev span F1 (first 1000 dev docs)", title="dev F1 (two-step decoder)")
for ax in (ax_loss, ax_f1):
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
fig.savefig(out, dpi=120)
print(f"wrote {out}")
