"""The ``python -m spacy_padellm`` subcommands, one module each (dispatched by ``spacy_padellm.__main__``)."""
