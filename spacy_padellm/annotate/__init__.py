"""Bulk annotation of corpora with a pipeline, in this process or on Ray Data (the ``annotate`` command,
:mod:`spacy_padellm.cli.annotate`).

Importing this package registers ``doc._.padellm_error``, the error of a doc that could not be annotated.
"""

from .outputs import doc_to_record, write_shard
from .pipe import ERROR_ATTR, annotate_docs, load_annotation_pipeline
from .shards import InputError, Shard, count_docs, find_shards, read_shard

__all__ = ["ERROR_ATTR", "InputError", "Shard", "find_shards", "read_shard", "count_docs", "annotate_docs",
           "load_annotation_pipeline", "doc_to_record", "write_shard"]
