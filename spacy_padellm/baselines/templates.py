"""The text pieces of the paper's two autoregressive protocols: the prompt templates (English and
Chinese), the AutoRegStruct separators and the AutoRegAug markup.

**AutoRegStruct** (``autoreg_struct``): one line per label that has mentions, labels in the fixed
order of the model's label list, mentions of a label in reading order, then EOS::

    prompt:  text:\\nJapan beat Syria in the Asian Cup .\\nentities:\\n
    target:  LOC: Japan; Syria\\nMISC: Asian Cup</s>

A text without entities has the empty target: just EOS. The Chinese template ("zh") writes
``文本：\\n{text}\\n实体：\\n`` and ``LOC：日本；叙利亚``.

**AutoRegAug** (``autoreg_aug``): the input rewritten with inline markup ``[ mention | LABEL ]``, then
EOS::

    prompt:  text:\\nJapan beat Syria in the Asian Cup .\\nannotated text:\\n
    target:  [ Japan | LOC ] beat [ Syria | LOC ] in the [ Asian Cup | MISC ] .</s>
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from typing import Any, Dict

__all__ = ["PROTOCOLS", "AUTOREG_PROTOCOLS", "OPEN", "MID", "CLOSE", "AutoRegTemplate", "AUTOREG_TEMPLATES",
           "get_autoreg_template"]

PROTOCOLS = ("padellm", "autoreg_struct", "autoreg_aug")
AUTOREG_PROTOCOLS = ("autoreg_struct", "autoreg_aug")

OPEN = "[ "  # before a mention
MID = " | "  # between the mention and its label
CLOSE = " ]"  # after the label


@dataclass(frozen=True)
class AutoRegTemplate:
    """The text pieces of the two autoregressive protocols.

    ``struct_prompt`` and ``aug_prompt`` hold ``{text}``; in AutoRegStruct output a line is
    ``LABEL + label_sep + mentions joined by mention_sep``, lines joined by newlines.
    """

    struct_prompt: str = "text:\n{text}\nentities:\n"
    aug_prompt: str = "text:\n{text}\nannotated text:\n"
    label_sep: str = ": "
    mention_sep: str = "; "

    def __post_init__(self) -> None:
        from ..text.protocol import TemplateError

        for name in ("struct_prompt", "aug_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TemplateError(f"Autoreg template piece '{name}' must be a string")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
            except ValueError as err:
                raise TemplateError(f"Autoreg template piece '{name}' is not a valid format string: {err}") from None
            if fields != {"text"}:
                raise TemplateError(f"Autoreg template piece '{name}' ({value!r}) must have the one slot {{text}}")
        for name in ("label_sep", "mention_sep"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise TemplateError(f"Autoreg template piece '{name}' must be a non-blank string without newlines")

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, str]) -> "AutoRegTemplate":
        from ..text.protocol import TemplateError

        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise TemplateError(f"Unknown autoreg template piece(s): {sorted(unknown)}; "
                                f"expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


AUTOREG_TEMPLATES: Dict[str, AutoRegTemplate] = {
    "en": AutoRegTemplate(),
    "zh": AutoRegTemplate(struct_prompt="文本：\n{text}\n实体：\n", aug_prompt="文本：\n{text}\n标注文本：\n",
                          label_sep="：", mention_sep="；"),
}


def get_autoreg_template(spec: Any) -> AutoRegTemplate:
    """An AutoRegTemplate from a name in AUTOREG_TEMPLATES ("en", "zh"), a dict of pieces, or itself."""
    from ..text.protocol import TemplateError

    if isinstance(spec, AutoRegTemplate):
        return spec
    if spec is None:
        return AUTOREG_TEMPLATES["en"]
    if isinstance(spec, str):
        if spec not in AUTOREG_TEMPLATES:
            raise TemplateError(f"Unknown autoreg template name {spec!r}; choose one of {sorted(AUTOREG_TEMPLATES)}")
        return AUTOREG_TEMPLATES[spec]
    if isinstance(spec, dict):
        return AutoRegTemplate.from_dict(dict(spec))
    raise TemplateError(f"Cannot build an autoreg template from {type(spec).__name__}")
