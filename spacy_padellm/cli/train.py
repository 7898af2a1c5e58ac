"""``python -m spacy_padellm train CONFIG [--section.key value ...]``: fine-tune a base LM for padellm_ner."""

from __future__ import annotations

import json

from spacy.cli._util import parse_config_overrides

from ..training import load_settings, train


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="reformulated instruction tuning (LoRA or full)",
                       description="Train from a config file (see configs/); override any key as --section.key VALUE. "
                                   "--data.protocol picks what the model learns: padellm (default), or the "
                                   "paper's autoregressive baselines autoreg_struct and autoreg_aug.")
    p.add_argument("config", help="config file, e.g. configs/conll03.cfg")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args) -> int:
    overrides = parse_config_overrides(list(args.overrides))
    settings = load_settings(args.config, overrides)
    summary = train(settings, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0
