"""spacy-padellm: fast LLM-based named entity recognition for spaCy (PaDeLLM-NER, NeurIPS 2024)."""

from .about import __version__
from .pipeline.component import PaDeLLMNER, make_padellm_ner
from .text.protocol import TEMPLATES, Template, get_template
from .pipeline.scoring import make_scorer, score_padellm

__all__ = ["__version__", "PaDeLLMNER", "make_padellm_ner", "Template", "TEMPLATES", "get_template",
           "make_scorer", "score_padellm"]
