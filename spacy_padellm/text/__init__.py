"""The text side of PaDeLLM, shared by training and decoding (no torch, no spaCy): the prompt protocol and its
encoder (``protocol``), mentions back to character spans (``align``), long documents as windows
(``windows``), and one label per span / overlap resolution (``overlaps``)."""
