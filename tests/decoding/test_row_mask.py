"""The attention mask as rows of a pass's tokens: laid out on the device it is the (B, T, S) mask built on the host."""

import numpy as np
import pytest
import torch

from spacy_padellm.decoding.row_mask import RowMask, unpack, upload


def _random_pass(rng, B=3, T=5, S=20):
    """A pass with chains of one to three tokens per row: places, what each token's branch sees, its chain, slots."""
    places, seen, chains, slots = [], [], [], []
    for b in range(B):
        t, col = 0, int(rng.integers(1, 6))
        while t < T - 1 and col < S - 3:
            n = int(min(rng.integers(1, 4), T - t, S - col))
            vis = rng.random(S) < 0.4
            vis[0] = True
            vis[col: col + n] = rng.random(n) < 0.7  # a forgotten column of its own chain comes back
            for i in range(n):
                places.append(b * T + t + i)
                seen.append(vis)
                chains.append((col, col + n))
                slots.append(col + i)
            t, col = t + n, col + n
    return (np.array(places), np.array(seen), (B, T, S), np.array(chains), np.array(slots))


def _want(places, seen, shape, chains, slots):
    B, T, S = shape
    mask = np.zeros((B * T, S), dtype=bool)
    mask[:, 0] = True
    for p, row, (c0, c1), s in zip(places, seen, chains, slots):
        mask[p] = row
        mask[p, c0: s + 1] = True
        mask[p, s + 1: c1] = False
    return mask.reshape(B, T, S)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("packed", [True, False])
def test_unpacked_on_the_device_is_the_host_mask(seed, packed):
    rng = np.random.default_rng(seed)
    places, seen, shape, chains, slots = _random_pass(rng, S=20 + seed)  # S not always a multiple of 8
    B, T, S = shape
    rm = RowMask(places, seen, shape, chains=chains, slots=slots)
    want = _want(places, seen, shape, chains, slots)
    assert (rm.dense() == want).all()
    L = len(places) + 3 if packed else B * T
    bits, ch = upload(rm, L, packed)
    assert bits.shape == (L, (S + 7) // 8)
    flat_slots = np.full(L, 99)
    if packed:
        flat_slots[: len(places)] = slots
        scatter = np.full(L, B * T)
        scatter[: len(places)] = places
        scatter = torch.from_numpy(scatter)
    else:
        flat_slots[places] = slots
        scatter = None
    got = unpack(torch.from_numpy(bits), torch.from_numpy(ch), torch.from_numpy(flat_slots), scatter, B, T, S)
    assert got.dtype == torch.bool and (got.numpy() == want).all()


def test_rows_of_a_dense_mask_and_errors():
    rng = np.random.default_rng(0)
    mask = rng.random((2, 3, 16)) < 0.5
    mask[..., 0] = True
    places = np.array([0, 2, 4])
    rm = RowMask.of(mask, places)
    dense = rm.dense().reshape(6, 16)
    assert (dense[places] == mask.reshape(6, 16)[places]).all()
    assert (dense[[1, 3, 5]] == np.eye(16, dtype=bool)[0]).all()  # other places: column 0 only
    assert rm.any_last() == bool(mask.reshape(6, 16)[places, -1].any())
    with pytest.raises(ValueError, match="rows"):
        RowMask(places, mask.reshape(6, 16)[:2], (2, 3, 16))
    with pytest.raises(ValueError, match="own cache column"):
        RowMask(places, mask.reshape(6, 16)[places], (2, 3, 16), chains=np.zeros((3, 2), dtype=np.int64))


@pytest.mark.parametrize("seed", range(8))
def test_any_last_is_the_last_column_of_the_mask(seed):
    rng = np.random.default_rng(seed)
    places, seen, shape, chains, slots = _random_pass(rng, S=12)
    seen[:, -1] = False
    for tok in range(len(places)):  # chains reaching the last column, seen or not from the branch
        if rng.random() < 0.3:
            chains[tok] = (slots[tok] - 1, shape[2])
    rm = RowMask(places, seen, shape, chains=chains, slots=slots)
    assert rm.any_last() == bool(rm.dense()[..., -1].reshape(-1)[places].any())
