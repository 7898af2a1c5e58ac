"""The decoding levers as the engines read them: one frozen ``Levers`` per decoder (no torch, no spaCy).

The levers are settings (``DecodeSettings``): ``constrain_mentions``, ``count_bias``, ``dedupe_mentions`` with
``dedupe_rounds`` and ``dedupe_min_prob``; with them go the options of the mention trie (``trie_options``, for
``constraints.MentionTrie.build``). The dynamic, tree and plain decoders each hold one ``Levers`` and read it at
every decode; a live decoder's levers change by replacing it (``decoder.levers = decoder.levers.replace(...)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .counts import build_trie
from .settings import CountBias, DecodeSettings, SettingsError

__all__ = ["Levers", "RECORDED", "recorded_levers"]

# the levers a model folder may record as its own choice (``levers`` in padellm.json), for settings left null
RECORDED = ("constrain_mentions", "dedupe_mentions")


def recorded_levers(meta: Mapping[str, Any], settings: DecodeSettings) -> Dict[str, bool]:
    """The levers of ``RECORDED`` that ``settings`` leave null, as a model folder's metadata ``meta`` records them
    (``levers`` in its padellm.json: the settings the model was chosen with on dev data), off where it records
    none. A record that is not an object of those levers -> true/false is a ``ValueError``."""
    recorded = meta.get("levers") or {}
    if not isinstance(recorded, dict):
        raise ValueError(f"'levers' must be an object of lever -> true/false, got {recorded!r}")
    for key, value in recorded.items():
        if key not in RECORDED or not isinstance(value, bool):
            raise ValueError(f"'levers': {key!r}: {value!r}; it records {' and '.join(RECORDED)}, each true or false")
    return {key: recorded.get(key, False) for key in RECORDED if getattr(settings, key) is None}


@dataclass(frozen=True)
class Levers:
    """The decoding levers of one decoder (each field the ``DecodeSettings`` key of its name) and the options
    of its mention tries. Build with ``Levers.of(settings, trie_options)``."""

    constrain_mentions: bool
    count_bias: CountBias
    dedupe_mentions: bool
    dedupe_rounds: int
    dedupe_min_prob: float
    trie_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def setting_keys(cls) -> Tuple[str, ...]:
        """The ``DecodeSettings`` keys a ``Levers`` holds."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "trie_options")

    @classmethod
    def of(cls, settings: DecodeSettings, trie_options: Optional[Mapping[str, Any]] = None) -> "Levers":
        """The levers of ``settings``, with ``trie_options`` for the mention tries."""
        values = {key: getattr(settings, key) for key in cls.setting_keys()}
        for key in RECORDED:  # null: the model folder's choice, which a component resolves; here, off
            values[key] = bool(values[key])
        return cls(**values, trie_options=dict(trie_options or {}))

    def settings(self) -> Dict[str, Any]:
        """The levers as ``DecodeSettings`` keys and values (what ``of`` reads)."""
        return {key: getattr(self, key) for key in self.setting_keys()}

    def replace(self, **changes: Any) -> "Levers":
        """A copy with ``changes`` (lever keys, checked as settings are)."""
        others = [key for key in changes if key not in self.setting_keys()]
        if others:
            raise SettingsError(f"'{others[0]}' is not a decoding lever (levers: {', '.join(self.setting_keys())})")
        return Levers.of(DecodeSettings().replace(**{**self.settings(), **changes}), self.trie_options)

    @property
    def on(self) -> List[str]:
        """The levers that are on (a count bias is on when any of its values is non-zero)."""
        bias = self.count_bias
        biases = bias.values() if isinstance(bias, dict) else [bias]
        flags = (("constrain_mentions", self.constrain_mentions), ("count_bias", any(b != 0.0 for b in biases)),
                 ("dedupe_mentions", self.dedupe_mentions))
        return [name for name, value in flags if value]

    def trie(self, text: str, encoder, exclude: Sequence[str] = ()):
        """The mention trie of ``text`` less the strings ``exclude`` (a ``constraints.MentionTrie``)."""
        options = dict(self.trie_options, exclude=exclude) if exclude else self.trie_options
        return build_trie(text, encoder, options)
