"""The fast PaDeLLM decoder: each document's decoding as a tree of branches in one static KV cache row.

For each document, PaDeLLM counts the mentions of every label, then decodes every (label, k) mention, all in
parallel. Here a document's text is written once in its row of the cache; every label is a branch that sees
the text and its own tokens only, and every (label, k) mention a branch of its label's count. All branches of
all documents in a batch advance together, one forward pass per step, and guesses (the terminator after a
count digit, drafts of counts and of mentions copied from the text) go in the same passes as branches of
their own, verified by the model's own predictions: the output is exactly greedy decoding's, in few passes.

* ``batch.py``: ``TreeBatch``, branches, cache columns and attention rows of one batch; one pass laid out;
* ``decoder.py``: ``TreeDecoder``, the passes of a batch: counts, then mentions, with speculation;
* ``drafts.py``: what is guessed (count, span and mention drafts; prompt lookup) and how it is laid down;
* ``scheduler.py``: batches cut from a call and kept in flight on KV caches of their own;
* ``generate.py``: plain greedy generation on the same engine (``TreeDecoder.generate``);
* ``levers.py``: the decoding levers of one batch (count bias, mention constraint, de-duplication);
* ``steering.py``: how the levers change a pass's choices on the device.
"""

from .batch import TreeBatch
from .decoder import TreeDecoder

__all__ = ["TreeBatch", "TreeDecoder"]
