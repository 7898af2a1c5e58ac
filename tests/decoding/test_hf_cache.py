"""The KV cache handed to and read back from a transformers forward pass under either argument name."""

from spacy_padellm.decoding.hf_cache import cache_kwargs, returned_cache


class NewStyle:
    def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs):
        return {"cache": cache}


class OldStyle:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs):
        return {"past_key_values": past_key_values}


def test_the_argument_the_forward_names():
    cache = object()
    assert cache_kwargs(NewStyle(), cache) == {"cache": cache}
    assert cache_kwargs(OldStyle(), cache) == {"past_key_values": cache}


def test_the_cache_returned_under_either_name_else_the_one_given():
    given, returned = object(), object()
    assert returned_cache({"cache": returned}, given) is returned
    assert returned_cache({"past_key_values": returned}, given) is returned
    assert returned_cache({"last_hidden_state": None}, given) is given
