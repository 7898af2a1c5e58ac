"""``python -m spacy_padellm settings``: every ``padellm_ner`` config key with its default and meaning."""

from __future__ import annotations

from ..pipeline.config import config_table


def add_parser(sub) -> None:
    p = sub.add_parser("settings", help="print the padellm_ner config keys, defaults and meanings (markdown)")
    p.set_defaults(func=run)


def run(args) -> int:
    print(config_table(), end="")
    return 0
