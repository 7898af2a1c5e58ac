"""``pass_layout``: a pass's shape buckets, padding to them, and the packed layout on its real tokens (numpy only)."""

import numpy as np

from spacy_padellm.decoding.pass_layout import (bucket, dense_inputs, fine_bucket, out_bucket, packed_inputs,
                                                pad_step, padded_shape, round_up, step_bucket)


def test_buckets():
    assert [bucket(n) for n in (0, 1, 2, 3, 5, 64, 65)] == [1, 1, 2, 4, 8, 64, 128]
    assert bucket(3, 64) == 64 and round_up(0, 8) == 8 and round_up(17, 8) == 24
    # powers of two up to 256, then multiples of 128
    assert [fine_bucket(n) for n in (3, 256, 257, 359, 385, 512, 513)] == [4, 256, 384, 384, 512, 512, 640]
    # one row: at most its places (a finer T), unless it wants more outputs than places
    assert out_bucket(300, 1, 384) == 384 and out_bucket(5, 1, 384) == 8 and out_bucket(400, 1, 384) == 512
    assert out_bucket(300, 2, 256) == 512


def test_step_buckets_divide_each_doubling():
    # one step: powers of two; four: quarters of the power of two below
    assert [step_bucket(n, 1, 8) for n in (1, 9, 100, 1500)] == [8, 16, 128, 2048]
    assert [step_bucket(n, 4) for n in (1, 3, 8, 9, 64, 65, 100, 113, 1475, 2049)] == \
        [1, 4, 8, 10, 64, 80, 112, 128, 1536, 2560]
    assert [step_bucket(n, 4, 8) for n in (1, 8, 9)] == [8, 8, 10]
    assert [step_bucket(n, 3) for n in (65, 87, 109, 128)] == [86, 108, 128, 128]  # never past the power of two
    assert step_bucket(9, 16, 8) == 16  # a doubling of fewer than 16 numbers: the power of two
    for steps in (1, 2, 3, 4, 5, 8):
        for n in range(1, 2100):
            b = step_bucket(n, steps)
            assert n <= b <= bucket(n) and (b <= n * (1 + 1 / steps) or b == bucket(n))
        assert len({step_bucket(n, steps) for n in range(1025, 2049)}) == steps  # steps buckets a doubling
    # outputs too, still capped by one row's places
    assert out_bucket(65, 2, 64, steps=4) == 80 and out_bucket(300, 1, 320, steps=4) == 320


def test_padded_shape_keeps_columns_within_the_cache():
    assert padded_shape(3, 5, 70, 2, cols=1024) == (4, 8, 128, 2)
    assert padded_shape(1, 359, 500, 300, cols=256) == (1, 384, 256, 384)


def test_pad_step_writes_padding_to_the_trash_column_attending_to_column_0():
    tokens = np.array([[5, 6]])
    mask = np.array([[[True, False, False], [True, True, False]]])
    t, p, s, m, o = pad_step(tokens, np.array([[0, 1]]), np.array([[0, 1]]), mask, np.array([[1]]), 2, 4, 8, 2,
                             trash=63)
    assert t.shape == p.shape == s.shape == (2, 4) and m.shape == (2, 4, 8) and o.shape == (2, 2)
    assert t[0, :2].tolist() == [5, 6] and s[0, :2].tolist() == [0, 1] and o[0, 0] == 1
    assert (s[0, 2:] == 63).all() and (s[1] == 63).all()
    assert (m[0, :2, :3] == mask[0]).all() and not m[0, :2, 3:].any()
    padding = np.ones((2, 4), dtype=bool)
    padding[0, :2] = False
    assert (m[padding] == np.eye(8, dtype=bool)[0]).all()  # column 0 only: no empty attention row


def test_packed_inputs_put_the_real_tokens_first_and_point_outputs_at_them():
    B, T, trash = 2, 4, 99
    tokens = np.arange(10, 18).reshape(B, T)
    positions = np.arange(8).reshape(B, T)
    slots = np.full(B * T, trash)
    real = np.array([1, 2, 6])
    slots[real] = [3, 4, 5]
    arrays, outs = packed_inputs(tokens, positions, slots, real, np.array([6, 2]), L=4, trash=trash)
    tok, pos, slot, rows, places, gathers = arrays
    assert tok.tolist() == [11, 12, 16, 0] and pos.tolist() == [1, 2, 6, 0]
    assert slot.tolist() == [3, 4, 5, trash] and rows.tolist() == [0, 0, 1, 0]
    assert places.tolist() == [1, 2, 6, B * T] and gathers.tolist() == [1, 2, 6, 0]
    assert outs.tolist() == [2, 1]  # each output as the index of its token among the packed ones


def test_dense_inputs_are_every_place_in_order():
    tokens = np.arange(6).reshape(2, 3)
    tok, pos, slot, rows, places, gathers = dense_inputs(tokens, tokens + 1, np.arange(6))
    assert tok.tolist() == list(range(6)) and rows.tolist() == [0, 0, 0, 1, 1, 1]
    assert places is None and gathers is None
