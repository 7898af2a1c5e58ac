"""The ``padellm_ner`` spaCy component (``component``), its config (``config``), what it decodes with
(``model_spec``), how a batch of docs is decoded and written (``doc_decoding``, ``output``), scoring
(``scoring``) and loading a pipeline for a job (``load``)."""
