"""A GGUF base written as a folder with its tokenizer files beside it, checked to use whole-word pieces.

transformers builds a GGUF file's tokenizer anew on every load, and versions differ: 5.17 reads Gemma 3's into a
tokenizer that splits English words into single characters, 5.25 into Gemma's byte-level BPE
(``tokenizer_check.py``). A folder holding the GGUF file and tokenizer files is a base whose tokenizer is those files
(``loading.resolve_model``), so a model trained from it, and every pipeline made from that model, segments text the
same way under any transformers version. ``write_base_folder`` writes such a folder with the tokenizer this
transformers reads, and refuses when that tokenizer splits words its own vocabulary holds whole.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Union

from .tokenizer_check import split_whole_words

__all__ = ["write_base_folder"]

PathLike = Union[str, os.PathLike]


def write_base_folder(gguf: PathLike, folder: PathLike, tokenizer=None, copy: bool = False,
                      allow_split_words: bool = False) -> Path:
    """Write ``folder``: the GGUF file ``gguf`` (a symbolic link to it, or a copy with ``copy``) and the files of
    ``tokenizer`` (default: the tokenizer transformers reads from ``gguf``). Raises ``ValueError`` when that
    tokenizer splits whole-word pieces of its vocabulary (nothing is written then), unless ``allow_split_words``
    (a tokenizer chosen on purpose for text where that does not matter, e.g. Chinese cut into characters)."""
    gguf, folder = Path(gguf).expanduser().resolve(), Path(folder).expanduser()
    if gguf.suffix != ".gguf" or not gguf.is_file():
        raise ValueError(f"{gguf} is not a .gguf file")
    given = tokenizer is not None
    if not given:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    split = [] if allow_split_words else split_whole_words(tokenizer)
    if split and given:
        raise ValueError(f"the tokenizer given splits words its vocabulary holds whole ({', '.join(split)}); "
                         "write it with allow_split_words (--allow-split-words) if that is meant")
    if split:
        import transformers

        raise ValueError(
            f"transformers {transformers.__version__} reads {gguf.name}'s tokenizer so that it splits words its "
            f"vocabulary holds whole ({', '.join(split)}); write the folder with a transformers version that reads "
            "it right (Gemma 3: 5.25 or newer), then train from the folder on any version")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / gguf.name
    if target.is_symlink() or target.exists():
        target.unlink()
    if copy:
        shutil.copyfile(gguf, target)
    else:
        target.symlink_to(gguf)
    tokenizer.save_pretrained(str(folder))
    return folder


def add_parser(sub) -> None:
    p = sub.add_parser("base-folder", help="write a GGUF base as a folder with the tokenizer files transformers "
                                           "reads for it (refused if they split whole words)")
    p.add_argument("gguf", help="the base's .gguf file")
    p.add_argument("folder", help="the folder to write")
    p.add_argument("--copy", action="store_true", help="copy the GGUF file instead of linking to it")
    p.add_argument("--tokenizer", default=None,
                   help="a tokenizer folder to write instead of the GGUF file's own (tokenizer.json or "
                        "tokenizer.json.gz), e.g. spacy_padellm/models/tokenizers/gemma3-270m")
    p.add_argument("--allow-split-words", action="store_true",
                   help="write a tokenizer that splits words its vocabulary holds whole (for text where that "
                        "does not matter: the gemma3-270m tokenizer cuts Chinese into characters)")
    p.set_defaults(func=run)


def run(args) -> int:
    tokenizer = None
    if args.tokenizer:
        if not (Path(args.tokenizer) / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"--tokenizer {args.tokenizer}: not a tokenizer folder (no tokenizer_config.json)")
        from transformers import AutoTokenizer

        from ..packed_tokenizer import unpacked

        tokenizer = AutoTokenizer.from_pretrained(str(unpacked(Path(args.tokenizer))))
    folder = write_base_folder(args.gguf, args.folder, tokenizer=tokenizer, copy=args.copy,
                               allow_split_words=args.allow_split_words)
    print(f"{folder}: {Path(args.gguf).name} and its tokenizer files (train with --paths.base_model {folder})")
    return 0
