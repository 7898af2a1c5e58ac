"""The two autoregressive baselines of the PaDeLLM-NER paper (AutoRegStruct, AutoRegAug): their text
protocols (``templates``), training targets (``targets``), output parsers (``parse``) and decoding
(``decoder``). Other packages import from here, not from the modules inside.

Both write every entity of a text in **one** output sequence, so their latency grows with the number
of entities; PaDeLLM exists to avoid that. They are trained with the project's own ``train`` command
(``[data] protocol = "autoreg_struct"`` or ``"autoreg_aug"``) and decoded by ``padellm_ner`` with
``decoding = "autoreg_struct"`` / ``"autoreg_aug"``.
"""

from .decoder import (AutoRegDecoder, AutoRegEncoder, AutoRegResult, GenerateFn, LocatedMention,
                      hf_greedy_generate)
from .parse import ParsedOutput, parse_aug, parse_struct
from .targets import Sentence, aug_target, group_records, locate_mentions, struct_target
from .templates import AUTOREG_PROTOCOLS, AUTOREG_TEMPLATES, PROTOCOLS, AutoRegTemplate, get_autoreg_template

__all__ = ["AUTOREG_PROTOCOLS", "AUTOREG_TEMPLATES", "AutoRegDecoder", "AutoRegEncoder", "AutoRegResult",
           "AutoRegTemplate", "GenerateFn", "LocatedMention", "ParsedOutput", "PROTOCOLS", "Sentence",
           "aug_target", "get_autoreg_template", "group_records", "hf_greedy_generate", "locate_mentions",
           "parse_aug", "parse_struct", "struct_target"]
