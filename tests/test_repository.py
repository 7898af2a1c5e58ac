"""Repository hygiene: what is tracked by git speaks of the product, not of how its work was organised.

* no tracked text file names work periods, machine lending or ticket numbers (the words matched by
  ``WORDS``); library names that hold one (pytest's widest fixture scope, requests' connection pool) are
  allowed;
* ``docs/results`` keeps a small, curated set of files;
* ``scripts/`` holds only the scripts a user needs (``ALLOWED_SCRIPTS``).

The checks read ``git ls-files``; without git, or outside a git checkout (an sdist), they are skipped.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The words, built from pieces so that this file does not hold them itself.
S, L, I = "sess" + "ion", "lo" + "an", "iss" + "ue"
WORDS = re.compile(rf"\b{S}s?\b|\b{L}s?\b|{I} ?#?[0-9]", re.IGNORECASE)
# library names that hold the first word: pytest's widest fixture scope, requests' connection pool
LIBRARY_NAMES = re.compile(rf"""scope\s*=\s*["']{S}["']|requests\.{S.capitalize()}\(\)""")
BINARY_SUFFIXES = {".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".spacy",
                   ".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".svg", ".pdf"}
BINARY_NAMES = {"tokenizer.json"}  # a vocabulary: any word may be in it
MAX_TEXT_BYTES = 2_000_000  # larger files are data, not prose
MAX_RESULT_FILES = 25
ALLOWED_SCRIPTS = {"setup.sh", "fetch_base.py"}


def tracked_files():
    if shutil.which("git") is None:
        pytest.skip("git is not available")
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError:
        pytest.skip(f"{REPO} is not a git checkout")
    return [p for p in out.decode("utf8").split("\0") if p]


def text_of(path: str):
    """The file's text, or None for binary and large data files (and files deleted in the worktree)."""
    full = REPO / path
    if full.suffix.lower() in BINARY_SUFFIXES or full.name in BINARY_NAMES or not full.is_file():
        return None
    if full.stat().st_size > MAX_TEXT_BYTES:
        return None
    data = full.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf8")
    except UnicodeDecodeError:
        return None


def offending_lines(text: str):
    for number, line in enumerate(text.splitlines(), 1):
        for match in WORDS.finditer(LIBRARY_NAMES.sub("", line)):
            yield number, match.group(0), line.strip()


def test_the_word_check_itself():
    hits = lambda text: [m for _, m, _ in offending_lines(text)]  # noqa: E731
    assert hits(f'@pytest.fixture(scope="{S}")') == []
    assert hits(f"scope='{S}'") == []
    assert hits(f"see {S} 3 and {S}s, {S.title()}") == [S, S + "s", S.title()]
    assert hits(f"a {L}, two {L}s") == [L, L + "s"]
    assert hits(f"{I.title()} #6, {I}6, {I} 7") == [f"{I.title()} #6", f"{I}6", f"{I} 7"]
    assert hits(f"ob{S}s, {L}ed, {I}s, the {I} is, re{L}s, {S}_id, pre{L}") == []


def test_tracked_text_does_not_name_work_organisation():
    found = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        found.extend(f"{path}:{number}: {word!r} in {line[:120]!r}" for number, word, line in offending_lines(text))
    assert not found, f"{len(found)} line(s):\n" + "\n".join(found)


def test_tracked_paths_do_not_name_work_organisation():
    found = [path for path in tracked_files() if WORDS.search(path)]
    assert not found, "\n".join(found)


def test_docs_results_is_small():
    results = [p for p in tracked_files() if p.startswith("docs/results/")]
    assert len(results) <= MAX_RESULT_FILES, f"docs/results holds {len(results)} files (at most {MAX_RESULT_FILES})"


def test_scripts_holds_only_the_allowed_files():
    extra = sorted(p for p in tracked_files()
                   if p.startswith("scripts/") and p[len("scripts/"):] not in ALLOWED_SCRIPTS)
    assert not extra, f"scripts/ may hold only {sorted(ALLOWED_SCRIPTS)}; also found:\n" + "\n".join(extra)
