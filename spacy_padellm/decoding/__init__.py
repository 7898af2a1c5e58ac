"""Decoding (no spaCy): one ``DecodeSettings`` for every setting (``settings``), what a decoder is given and
returns (``types``), the engines (``tree/`` on the static forward ``static_lm``, ``dynamic``), the no-cache
oracle (``plain``), the paper's reference implementation (``reference``), the levers as every engine reads them
(``levers``), the levers' constraints (``constraints``) and the choice between them (``factory``)."""
