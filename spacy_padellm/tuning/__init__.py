"""Decoding settings chosen on dev data: per-label count biases (``bias_choice``) from per-label span counts
(``span_counts``), measured for each lever variant with the model loaded once (``search``)."""
