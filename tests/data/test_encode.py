"""Grids on PAD canvases: round trips, masks, size targets and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from arcdiff.data.encode import (
    PAD,
    VOCAB_SIZE,
    canvas_size,
    decode_grids,
    encode_grids,
    grid_mask,
    size_targets,
)
from arcdiff.data.tasks import load_tasks
from arcdiff.errors import DataError


def random_grids(seed: int, n: int, max_side: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    edge = [(1, 1), (1, max_side), (max_side, 1), (max_side, max_side)]
    shapes = edge + [tuple(s) for s in rng.integers(1, max_side + 1, size=(n, 2))]
    return [rng.integers(0, 10, size=s, dtype=np.uint8) for s in shapes]


def test_pad_is_the_token_after_the_colours():
    assert PAD == 10 and VOCAB_SIZE == 11


@pytest.mark.parametrize("max_size", [30, 12])
def test_round_trip(max_size):
    grids = random_grids(max_size, 200, max_size)
    tokens, sizes = encode_grids(grids, max_size)
    assert tokens.shape == (len(grids), max_size, max_size) and tokens.dtype == np.uint8
    assert sizes.tolist() == [list(g.shape) for g in grids]
    decoded = decode_grids(tokens, sizes)
    assert len(decoded) == len(grids)
    for grid, back in zip(grids, decoded, strict=True):
        assert back.shape == grid.shape and back.dtype == np.uint8
        assert (back == grid).all()


def test_exact_small_canvas():
    tokens, sizes = encode_grids([np.array([[3, 0, 7]], dtype=np.uint8)], 4)
    assert sizes.tolist() == [[1, 3]]
    assert tokens[0].tolist() == [
        [3, 0, 7, 10],
        [10, 10, 10, 10],
        [10, 10, 10, 10],
        [10, 10, 10, 10],
    ]


def test_pad_exactly_outside_and_mask_exactly_inside():
    grids = random_grids(1, 100, 30)
    tokens, sizes = encode_grids(grids, 30)
    mask = grid_mask(sizes, 30)
    expected = np.zeros_like(mask)
    for b, (h, w) in enumerate(sizes.tolist()):
        expected[b, :h, :w] = True
    assert mask.dtype == bool
    assert (mask == expected).all()
    assert mask.sum(axis=(1, 2)).tolist() == [g.size for g in grids]
    assert (tokens[~mask] == PAD).all()
    assert (tokens[mask] < PAD).all()


def test_size_targets_and_canvas_size():
    grids = random_grids(2, 100, 30)
    tokens, sizes = encode_grids(grids, 30)
    assert (size_targets(sizes) == sizes - 1).all()
    assert size_targets(np.array([[1, 1], [30, 30], [4, 17]])).tolist() == [
        [0, 0],
        [29, 29],
        [3, 16],
    ]
    assert (canvas_size(tokens) == sizes).all()


def test_real_arc_grids_round_trip():
    tasks = load_tasks("aa1:train")
    grids = [g for task in tasks for g in task.grids()]
    tokens, sizes = encode_grids(grids, 30)
    assert (canvas_size(tokens) == sizes).all()
    for grid, back in zip(grids, decode_grids(tokens, sizes), strict=True):
        assert back.shape == grid.shape and (back == grid).all()


def test_empty_batch():
    tokens, sizes = encode_grids([], 30)
    assert tokens.shape == (0, 30, 30) and sizes.shape == (0, 2)
    assert decode_grids(tokens, sizes) == []


@pytest.mark.parametrize("shape", [(11, 3), (3, 11), (11, 11)])
def test_grid_larger_than_max_size_is_a_data_error(shape):
    grids = [np.zeros((10, 10), np.uint8), np.ones(shape, np.uint8)]
    with pytest.raises(DataError, match="does not fit the 10x10 canvas"):
        encode_grids(grids, 10)
    tokens, _ = encode_grids(grids[:1], 10)  # exactly max_size fits
    assert (tokens == 0).all()


def test_decoding_pad_inside_the_stated_size_raises():
    tokens, sizes = encode_grids([np.full((2, 3), 5, np.uint8)], 6)
    with pytest.raises(ValueError, match="PAD"):
        decode_grids(tokens, sizes + np.array([[0, 1]]))
    with pytest.raises(ValueError, match="PAD"):
        decode_grids(tokens, sizes + np.array([[1, 0]]))
    assert decode_grids(tokens, sizes - 1)[0].tolist() == [[5, 5]]
