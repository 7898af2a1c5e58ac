"""The paper's autoregressive baselines (AutoRegStruct, AutoRegAug): their training targets, output
parsers and decoder. Other packages import from here, not from the modules inside."""

from .autoreg import (AUTOREG_TEMPLATES, AutoRegDecoder, AutoRegEncoder, AutoRegResult, AutoRegTemplate,
                      LocatedMention, ParsedOutput, Sentence, aug_target, get_autoreg_template, group_records,
                      hf_greedy_generate, locate_mentions, parse_aug, parse_struct, struct_target)

__all__ = ["AUTOREG_TEMPLATES", "AutoRegDecoder", "AutoRegEncoder", "AutoRegResult", "AutoRegTemplate",
           "LocatedMention", "ParsedOutput", "Sentence", "aug_target", "get_autoreg_template", "group_records",
           "hf_greedy_generate", "locate_mentions", "parse_aug", "parse_struct", "struct_target"]
