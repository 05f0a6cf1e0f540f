"""Augmentations: exact inverses, the dihedral group D4, colour sampling, batched canvases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arcdiff.data.augment import (
    DIHEDRAL_BITS,
    DIHEDRAL_COMPOSE,
    DIHEDRAL_INVERSE,
    DIHEDRAL_NAMES,
    Augmentation,
    augment_canvases,
    compose,
    dihedral,
    sample_augmentation,
    sample_augmentations,
    sample_colour_perms,
)
from arcdiff.data.encode import encode_grids

SHAPES = [(1, 1), (1, 30), (30, 1), (7, 13), (30, 30)]
TRANSPOSING = [d for d in range(8) if DIHEDRAL_BITS[d][0]]
# element order of each id: rotations by 90 / 270 have order 4, rot180 and reflections order 2
EXPECTED_ORDER = {0: 1, 1: 4, 2: 2, 3: 4, 4: 2, 5: 2, 6: 2, 7: 2}

# a square grid with no symmetry at all, so all 8 of its images differ
ASYMMETRIC = np.arange(9, dtype=np.uint8).reshape(3, 3)


def colour_perms(*, permute_background: bool) -> st.SearchStrategy[np.ndarray]:
    if permute_background:
        return st.permutations(range(10)).map(np.array)
    return st.permutations(range(1, 10)).map(lambda p: np.array([0, *p]))


def grids(shape: tuple[int, int]) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.uint8, shape, elements=st.integers(0, 9))


def same_grid(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def random_grids(rng: np.random.Generator, n: int, max_side: int) -> list[np.ndarray]:
    shapes = rng.integers(1, max_side + 1, size=(n, 2))
    return [rng.integers(0, 10, size=tuple(s), dtype=np.uint8) for s in shapes]


# ---------------------------------------------------------------------------------------------
# inverse


@pytest.mark.parametrize("permute_background", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_inverse_undoes_every_augmentation(shape, permute_background):
    @settings(max_examples=40, deadline=None)
    @given(grid=grids(shape), perm=colour_perms(permute_background=permute_background))
    def check(grid, perm):
        for d in range(8):
            aug = Augmentation(d, perm)
            augmented = aug.apply(grid)
            expected_shape = shape[::-1] if d in TRANSPOSING else shape
            assert augmented.shape == expected_shape
            restored = aug.inverse().apply(augmented)
            assert restored.shape == grid.shape
            assert (restored == grid).all()
            assert compose(aug, aug.inverse()) == Augmentation.identity()

    check()


def test_inverse_of_exact_example():
    aug = Augmentation(1, np.array([0, 2, 3, 4, 5, 6, 7, 8, 9, 1]))  # rot90, c -> c + 1 (c > 0)
    grid = np.array([[1, 2, 0], [3, 4, 9]], dtype=np.uint8)
    augmented = aug.apply(grid)
    assert augmented.tolist() == [[0, 1], [3, 5], [2, 4]]
    assert aug.inverse().dihedral == 3
    assert aug.inverse().apply(augmented).tolist() == grid.tolist()


def test_invalid_augmentations_are_rejected():
    with pytest.raises(ValueError, match="dihedral"):
        Augmentation(8, np.arange(10))
    with pytest.raises(ValueError, match="permutation"):
        Augmentation(0, np.array([0, 0, 2, 3, 4, 5, 6, 7, 8, 9]))


# ---------------------------------------------------------------------------------------------
# the group D4


def test_ids_1_to_3_are_counter_clockwise_rotations():
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for k in (1, 2, 3):
        assert same_grid(dihedral(grid, k), np.rot90(grid, k))
    assert same_grid(dihedral(grid, 0), grid)


def test_reflections_match_their_names():
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = {
        "flip_lr": np.fliplr(grid),
        "flip_ud": np.flipud(grid),
        "transpose": grid.T,
        "anti_transpose": np.rot90(grid, 2).T,
    }
    for name, image in expected.items():
        assert same_grid(dihedral(grid, DIHEDRAL_NAMES.index(name)), image), name


def test_the_8_images_of_an_asymmetric_grid_are_distinct():
    images = {dihedral(ASYMMETRIC, d).tobytes() for d in range(8)}
    assert len(images) == 8


def test_composition_is_closed_and_matches_applying_in_turn():
    for a, b in itertools.product(range(8), repeat=2):
        c = int(DIHEDRAL_COMPOSE[a, b])
        assert 0 <= c < 8
        assert same_grid(dihedral(dihedral(ASYMMETRIC, a), b), dihedral(ASYMMETRIC, c))


def test_identity_and_inverses():
    for d in range(8):
        assert DIHEDRAL_COMPOSE[0, d] == d and DIHEDRAL_COMPOSE[d, 0] == d
        inv = int(DIHEDRAL_INVERSE[d])
        assert DIHEDRAL_COMPOSE[d, inv] == 0 and DIHEDRAL_COMPOSE[inv, d] == 0
        assert same_grid(dihedral(dihedral(ASYMMETRIC, d), inv), ASYMMETRIC)


def test_composition_is_associative():
    for a, b, c in itertools.product(range(8), repeat=3):
        left = DIHEDRAL_COMPOSE[DIHEDRAL_COMPOSE[a, b], c]
        right = DIHEDRAL_COMPOSE[a, DIHEDRAL_COMPOSE[b, c]]
        assert left == right, (a, b, c)


def test_every_row_of_the_cayley_table_is_a_permutation():
    for d in range(8):
        assert sorted(DIHEDRAL_COMPOSE[d].tolist()) == list(range(8))
        assert sorted(DIHEDRAL_COMPOSE[:, d].tolist()) == list(range(8))


def test_element_orders():
    orders = {}
    for d in range(8):
        image, k = dihedral(ASYMMETRIC, d), 1
        while not same_grid(image, ASYMMETRIC):
            image, k = dihedral(image, d), k + 1
            assert k <= 8
        orders[d] = k
    assert orders == EXPECTED_ORDER


@pytest.mark.parametrize("permute_background", [False, True])
def test_compose_equals_applying_in_turn_with_colours(permute_background):
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, size=(5, 8), dtype=np.uint8)
    perms = sample_colour_perms(rng, 64, permute_background=permute_background)
    for i, (a, b) in enumerate(itertools.product(range(8), repeat=2)):
        first, second = Augmentation(a, perms[i]), Augmentation(b, perms[-1 - i])
        both = compose(first, second)
        assert same_grid(both.apply(grid), second.apply(first.apply(grid)))
        assert first.then(second) == both


# ---------------------------------------------------------------------------------------------
# sampling


def test_default_perms_fix_background_and_are_permutations():
    perms = sample_colour_perms(np.random.default_rng(0), 2000)
    assert perms.shape == (2000, 10)
    assert (np.sort(perms, axis=1) == np.arange(10)).all()
    assert (perms[:, 0] == 0).all()
    # every non-background colour lands in every non-background slot
    for c in range(1, 10):
        assert set(perms[:, c].tolist()) == set(range(1, 10))


def test_permute_background_moves_colour_zero_uniformly():
    perms = sample_colour_perms(np.random.default_rng(0), 2000, permute_background=True)
    assert (np.sort(perms, axis=1) == np.arange(10)).all()
    counts = np.bincount(perms[:, 0], minlength=10)  # expected 200 each, sd ~13
    assert counts.min() > 130 and counts.max() < 270, counts


def test_sampled_dihedrals_cover_all_8_ids():
    dihedrals, perms = sample_augmentations(np.random.default_rng(0), 800)
    assert set(dihedrals.tolist()) == set(range(8))
    assert perms.shape == (800, 10)


@pytest.mark.parametrize("permute_background", [False, True])
def test_sampling_is_deterministic_for_a_seed(permute_background):
    def draw(seed):
        rng = np.random.default_rng(seed)
        return sample_augmentations(rng, 50, permute_background=permute_background)

    (d1, p1), (d2, p2), (d3, p3) = draw(7), draw(7), draw(8)
    assert (d1 == d2).all() and (p1 == p2).all()
    assert not ((d1 == d3).all() and (p1 == p3).all())
    assert sample_augmentation(np.random.default_rng(7)) == sample_augmentation(
        np.random.default_rng(7)
    )
    assert sample_augmentation(np.random.default_rng(7)) != sample_augmentation(
        np.random.default_rng(8)
    )


# ---------------------------------------------------------------------------------------------
# batched canvases


@pytest.mark.parametrize("permute_background", [False, True])
@pytest.mark.parametrize("max_size", [30, 10])
def test_augment_canvases_equals_apply_grid_by_grid(max_size, permute_background):
    rng = np.random.default_rng(max_size)
    edge = [(1, 1), (1, max_size), (max_size, 1), (max_size, max_size)]
    grids = [rng.integers(0, 10, size=s, dtype=np.uint8) for s in edge for _ in range(8)]
    grids += random_grids(rng, 224, max_size)
    n = len(grids)
    dihedrals = np.arange(n) % 8  # every id on every edge shape: each shape 8 times in a row
    colours = sample_colour_perms(rng, n, permute_background=permute_background)
    tokens, sizes = encode_grids(grids, max_size)
    before = tokens.copy()

    out, out_sizes = augment_canvases(tokens, sizes, dihedrals, colours)

    assert (tokens == before).all()  # input canvases untouched
    assert out.shape == (n, max_size, max_size) and out.dtype == np.uint8
    expected = [
        Augmentation(int(d), c).apply(g) for d, c, g in zip(dihedrals, colours, grids, strict=True)
    ]
    expected_tokens, expected_sizes = encode_grids(expected, max_size)
    assert (out_sizes == expected_sizes).all()
    assert (out == expected_tokens).all()  # values inside, PAD outside
    transposing = np.isin(dihedrals, TRANSPOSING)
    assert (out_sizes[transposing] == sizes[transposing][:, ::-1]).all()
    assert (out_sizes[~transposing] == sizes[~transposing]).all()
