"""``python -m spacy_padellm annotate PIPELINE INPUT... OUTPUT_DIR``: annotate many documents, locally or on Ray.

PIPELINE is a spaCy pipeline folder (``config.cfg`` inside) or a PaDeLLM model folder, which is wrapped in
``spacy.blank(lang)`` + ``padellm_ner`` (see :func:`spacy_padellm.pipeline.load.load_pipeline`).

Inputs are *shards*: JSONL files (one JSON object a line, the text under ``--text-field``), plain text files
(one doc a line) or DocBin files, or folders holding them. Each input shard gives one output shard,
``OUTPUT_DIR/<name>.spacy`` (a DocBin with user data), and with ``--jsonl`` also ``OUTPUT_DIR/<name>.jsonl``
(character offsets, labels and probabilities). Every output file is written under a temporary name and
moved into place with ``os.replace``, the DocBin last: a shard whose DocBin exists is finished, so a re-run
skips it and a crash loses no finished shard.

Every input doc gets exactly one output doc, in input order, empty docs included. A doc that fails is kept,
unannotated, with its error message in ``doc._.padellm_error`` (a Doc extension stored in ``user_data``); a
batch that raises is retried one doc at a time so that only the failing docs are marked. The run ends with the
number of failed docs and exits non-zero if there are any, unless ``--allow-failures``.

An input record that cannot be read (malformed JSON, no text field, a text that is not a string or not
UTF-8, an unreadable DocBin) is skipped with a warning and listed in ``OUTPUT_DIR/<name>.rejects.jsonl``
(file, line, reason, the raw line), so every input line is in an output or a rejects file; with
``--on-error fail`` the first bad record of each file stops the run before anything is written.

Locally the docs go through ``nlp.pipe`` on the GPU if there is one. With ``--ray`` (or ``--ray-address``)
they go through Ray Data ``map_batches`` with one pipeline actor per GPU (or per CPU worker); the driver
writes the shards, so only the inputs and the pipeline need to be visible to the workers.

The pieces live in :mod:`spacy_padellm.annotate`: ``shards`` (inputs), ``outputs`` (writing and what a
re-run finds), ``pipe`` (the pipeline and failing docs), ``local`` and ``ray`` (the two runners).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from spacy.tokens import Doc

from ..annotate.local import run_local
from ..annotate.outputs import complete_jsonl, finished_failures, finished_rejects, write_shard
from ..annotate.pipe import ERROR_ATTR
from ..annotate.progress import Progress
from ..annotate.ray import RayMissing, import_ray, run_ray
from ..annotate.shards import FORMATS, MAX_REPORTED, ON_ERROR, Shard, count_docs, find_shards
from ..pipeline.load import parse_settings

Failure = Tuple[Shard, int, Optional[int], str]  # (shard, doc index, input line, error)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "annotate", help="annotate JSONL/text/DocBin shards with a pipeline, locally or on Ray",
        description="Annotate every doc of INPUT (JSONL, plain text one doc a line, or DocBin files, or folders "
                    "of them) with PIPELINE and write one DocBin per input shard to OUTPUT_DIR. Finished shards "
                    "are skipped on a re-run.")
    p.add_argument("pipeline", metavar="PIPELINE", help="spaCy pipeline folder or PaDeLLM model folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input file(s) or folder(s)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--input-format", choices=FORMATS, default=None,
                   help="read every input as this format (default: from the suffix; unknown suffixes are text)")
    p.add_argument("--on-error", choices=ON_ERROR, default="skip",
                   help="an unreadable input record (bad JSON, no text): skip it and list it in "
                        "OUTPUT_DIR/<name>.rejects.jsonl, or fail before anything is annotated (default: skip)")
    p.add_argument("--jsonl", action="store_true",
                   help="also write OUTPUT_DIR/<name>.jsonl: offsets, labels and probabilities per doc")
    p.add_argument("--batch-size", type=int, default=64, help="docs per nlp.pipe / Ray batch (default: 64)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 (default: the first GPU if there is one, on Ray the worker's)")
    p.add_argument("--gpu-id", type=int, default=None, help="local run: use this GPU, like spacy's --gpu-id")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even if some docs failed (they are written with doc._.padellm_error)")
    p.add_argument("--retry-failed", action="store_true",
                   help="annotate again the finished shards that hold failed docs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_items",
                   help="a decoding setting for padellm_ner (python -m spacy_padellm settings lists them); repeatable")
    p.add_argument("--no-progress", action="store_true")
    _add_ray_options(p)
    p.set_defaults(func=run)


def _add_ray_options(p) -> None:
    ray = p.add_argument_group("Ray Data (pip install \"ray[data]\")")
    ray.add_argument("--ray", action="store_true", help="run on Ray Data: a local Ray, or RAY_ADDRESS's cluster")
    ray.add_argument("--ray-address", default=None,
                     help="connect to this Ray cluster (implies --ray), e.g. auto or ray://head:10001")
    ray.add_argument("--num-workers", type=int, default=None,
                     help="pipeline actors (default: one per GPU; on CPU one per --cpus-per-worker, "
                          "one CPU left for reading)")
    ray.add_argument("--gpus-per-worker", type=float, default=None,
                     help="GPUs per actor (default: 1 if the cluster has GPUs, else 0); 0.5 puts two on a GPU")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per actor (default: 1)")
    ray.add_argument("--ray-progress", action="store_true", help="also show Ray Data's own progress bars")


def _check_options(args, use_ray: bool) -> Optional[int]:
    """An exit code if the options cannot work (2: Ray is missing); errors that stop the run raise."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    args.settings = parse_settings(args.set_items)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"OUTPUT_DIR {output_dir} is a file")
    if use_ray:
        try:
            import_ray()
        except RayMissing as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return None


def _plan(args) -> Tuple[List[Shard], List[Shard], List[Shard]]:
    """(all shards, those finished by earlier runs, those to annotate), the latter counted and checked,
    with what a killed run left of them removed; finished shards get the JSONL ``--jsonl`` asks for."""
    shards = find_shards(args.inputs, Path(args.output_dir), args.input_format)
    finished = [s for s in shards if s.done()]
    if args.retry_failed:
        finished = [s for s in finished if not finished_failures(s)]
    done_ids = {id(s) for s in finished}
    todo = [s for s in shards if id(s) not in done_ids]
    count_docs(todo, args.text_field, args.on_error)  # --on-error fail: bad input stops the run here
    _warn_rejects(todo)
    for shard in todo:
        shard.remove_temp_files()
    if args.jsonl:
        for shard in finished:
            if not shard.jsonl_out.exists():
                complete_jsonl(shard, args.text_field)
    return shards, finished, todo


def _warn_rejects(shards: Sequence[Shard]) -> None:
    """One warning per shard with rejected records: how many, the first, and where they are listed."""
    for shard in shards:
        if shard.rejects:
            print(f"warning: skipping {len(shard.rejects)} unreadable record(s) of {shard.path} (first: "
                  f"{shard.rejects[0].message()}); they will be listed in {shard.rejects_out}", file=sys.stderr)


def run(args) -> int:
    """The ``annotate`` command; returns the exit code (1 if docs failed and not ``--allow-failures``)."""
    use_ray = bool(args.ray or args.ray_address)
    code = _check_options(args, use_ray)
    if code is not None:
        return code
    shards, finished, todo = _plan(args)
    failed_before = sum(finished_failures(s) for s in finished)
    rejected = sum(finished_rejects(s) for s in finished) + sum(len(s.rejects) for s in todo)
    total = sum(s.n_docs for s in todo)
    print(f"{len(shards)} shard(s): {len(finished)} already done, {len(todo)} to annotate ({total} docs)",
          file=sys.stderr)

    failures: List[Failure] = []
    written: List[Shard] = []

    def on_shard(shard: Shard, docs: List[Doc], lines: List[Optional[int]], seconds: float) -> None:
        for index, line, error in write_shard(shard, docs, lines, jsonl=args.jsonl, seconds=seconds):
            failures.append((shard, index, line, error))
        written.append(shard)

    progress = Progress(total, disable=args.no_progress)
    try:
        if todo:
            (run_ray if use_ray else run_local)(args, todo, on_shard, progress)
    finally:
        progress.close()
    rejects = f"; {rejected} rejected input record(s) (OUTPUT_DIR/<name>.rejects.jsonl)" if rejected else ""
    print(f"annotated {total} docs in {progress.summary()}; {len(written)} shard(s) written to {Path(args.output_dir)}, "
          f"{len(finished)} already done; {len(failures) + failed_before} failed doc(s){rejects}")
    return _report_failures(failures, len(failures) + failed_before, args.allow_failures)


def _report_failures(failures: Sequence[Failure], n_failed: int, allow: bool) -> int:
    """List the first failed docs of this run; the exit code (1 if any doc failed, unless ``allow``)."""
    for shard, index, line, error in failures[:MAX_REPORTED]:
        where = f"line {line}" if line is not None else f"doc {index}"
        print(f"  failed: {shard.path} {where}: {error}", file=sys.stderr)
    if n_failed and not allow:
        print(f"error: {n_failed} doc(s) failed; they are in the output with doc._.{ERROR_ATTR} set "
              "(pass --allow-failures to accept them)", file=sys.stderr)
        return 1
    return 0
