"""Invertible augmentations of ARC grids: a dihedral transform and a colour permutation.

The 8 elements of the dihedral group D4 are written as three bits applied in order:
transpose, then flip rows (up-down), then flip columns (left-right). Ids 0-3 are the rotations
by 0, 90, 180 and 270 degrees counter-clockwise (as ``np.rot90``), 4-7 the reflections.
A colour permutation ``perm`` maps colour ``c`` to ``perm[c]``; by default colour 0 (the usual
background) stays fixed. Spatial and colour parts commute, so an Augmentation is the pair.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from arcdiff.data.encode import PAD
from arcdiff.data.tasks import NUM_COLOURS, Grid

DIHEDRAL_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_ud",
    "transpose",
    "anti_transpose",
)
# (transpose, flip rows, flip columns) per dihedral id
DIHEDRAL_BITS = np.array(
    [
        (0, 0, 0),  # identity
        (1, 1, 0),  # rot90 (counter-clockwise)
        (0, 1, 1),  # rot180
        (1, 0, 1),  # rot270
        (0, 0, 1),  # flip_lr
        (0, 1, 0),  # flip_ud
        (1, 0, 0),  # transpose
        (1, 1, 1),  # anti_transpose
    ],
    dtype=bool,
)


def dihedral(grid: np.ndarray, d: int) -> np.ndarray:
    """Apply dihedral transform ``d`` (0..7) to the last two axes of ``grid``."""
    transpose, flip_rows, flip_cols = DIHEDRAL_BITS[d]
    out = np.swapaxes(grid, -1, -2) if transpose else grid
    if flip_rows:
        out = out[..., ::-1, :]
    if flip_cols:
        out = out[..., :, ::-1]
    return out


def _cayley_table() -> np.ndarray:
    """compose[a, b] = the id of 'apply a, then b', found by transforming a probe grid."""
    probe = np.arange(6).reshape(2, 3)
    images = [dihedral(probe, d) for d in range(8)]
    table = np.empty((8, 8), dtype=np.int64)
    for a in range(8):
        for b in range(8):
            target = dihedral(images[a], b)
            (match,) = [
                d
                for d in range(8)
                if images[d].shape == target.shape and (images[d] == target).all()
            ]
            table[a, b] = match
    return table


DIHEDRAL_COMPOSE = _cayley_table()
DIHEDRAL_INVERSE = np.array([int(np.flatnonzero(DIHEDRAL_COMPOSE[d] == 0)[0]) for d in range(8)])


@dataclass(frozen=True, eq=False)
class Augmentation:
    """A dihedral id (0..7) and a colour permutation (``colours[c]`` is the new colour of c)."""

    dihedral: int
    colours: np.ndarray  # (10,) permutation of 0..9

    def __post_init__(self) -> None:
        if not 0 <= self.dihedral < 8:
            raise ValueError(f"dihedral id must be in 0..7, got {self.dihedral}")
        colours = np.asarray(self.colours, dtype=np.uint8)
        if sorted(colours.tolist()) != list(range(NUM_COLOURS)):
            raise ValueError(f"colours must be a permutation of 0..9, got {colours.tolist()}")
        object.__setattr__(self, "colours", colours)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Augmentation)
            and self.dihedral == other.dihedral
            and bool((self.colours == other.colours).all())
        )

    def __hash__(self) -> int:
        return hash((self.dihedral, self.colours.tobytes()))

    def __repr__(self) -> str:
        return f"Augmentation({DIHEDRAL_NAMES[self.dihedral]}, colours={self.colours.tolist()})"

    @classmethod
    def identity(cls) -> Augmentation:
        return cls(0, np.arange(NUM_COLOURS))

    def apply(self, grid: Grid) -> Grid:
        return np.ascontiguousarray(self.colours[dihedral(grid, self.dihedral)])

    def inverse(self) -> Augmentation:
        return Augmentation(int(DIHEDRAL_INVERSE[self.dihedral]), np.argsort(self.colours))

    def then(self, other: Augmentation) -> Augmentation:
        """The augmentation equal to applying ``self`` and then ``other``."""
        return compose(self, other)


def compose(first: Augmentation, second: Augmentation) -> Augmentation:
    """The augmentation equal to applying ``first`` and then ``second``."""
    return Augmentation(
        int(DIHEDRAL_COMPOSE[first.dihedral, second.dihedral]), second.colours[first.colours]
    )


def sample_colour_perms(
    rng: np.random.Generator, n: int, *, permute_background: bool = False
) -> np.ndarray:
    """(n, 10) random colour permutations; colour 0 stays fixed unless ``permute_background``."""
    start = 0 if permute_background else 1
    perms = np.tile(np.arange(NUM_COLOURS, dtype=np.uint8), (n, 1))
    order = np.argsort(rng.random((n, NUM_COLOURS - start)), axis=1)
    perms[:, start:] = order.astype(np.uint8) + start
    return perms


def sample_augmentations(
    rng: np.random.Generator, n: int, *, permute_background: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(dihedral ids (n,), colour permutations (n, 10)), deterministic for the generator state."""
    dihedrals = rng.integers(0, 8, size=n)
    return dihedrals, sample_colour_perms(rng, n, permute_background=permute_background)


def sample_augmentation(
    rng: np.random.Generator, *, permute_background: bool = False
) -> Augmentation:
    dihedrals, perms = sample_augmentations(rng, 1, permute_background=permute_background)
    return Augmentation(int(dihedrals[0]), perms[0])


# ---------------------------------------------------------------------------------------------
# batched augmentation of encoded canvases (the training hot path)


@functools.lru_cache(maxsize=4)
def _canvas_index_table(max_size: int) -> np.ndarray:
    """table[d, h-1, w-1] = flat source index (S*S,) of every cell of the transformed canvas.

    A transformed (h', w') grid sits top-left again; cells outside it point at index S*S,
    which the gather fills with PAD.
    """
    s = max_size
    d, h, w = np.meshgrid(np.arange(8), np.arange(1, s + 1), np.arange(1, s + 1), indexing="ij")
    t, u, l = (DIHEDRAL_BITS[d][..., k][..., None, None] for k in range(3))  # (8, S, S, 1, 1)
    h, w = h[..., None, None], w[..., None, None]
    h_new, w_new = np.where(t, w, h), np.where(t, h, w)
    i, j = np.arange(s)[:, None], np.arange(s)[None, :]
    i1 = np.where(u, h_new - 1 - i, i)
    j1 = np.where(l, w_new - 1 - j, j)
    src = np.where(t, j1 * s + i1, i1 * s + j1)
    inside = (i < h_new) & (j < w_new)
    return np.where(inside, src, s * s).reshape(8, s, s, s * s).astype(np.int16)


def augment_canvases(
    tokens: np.ndarray, sizes: np.ndarray, dihedrals: np.ndarray, colours: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a batch of PAD canvases at once.

    tokens (B, S, S) uint8, sizes (B, 2) as (h, w), dihedrals (B,), colours (B, 10)
    -> augmented tokens (B, S, S) uint8 with each grid top-left again, and their sizes (B, 2).
    Equal to ``Augmentation(d, c).apply`` on every grid, without a Python loop over examples.
    """
    b, s, _ = tokens.shape
    index = _canvas_index_table(s)[dihedrals, sizes[:, 0] - 1, sizes[:, 1] - 1]  # (B, S*S)
    flat = np.concatenate([tokens.reshape(b, s * s), np.full((b, 1), PAD, np.uint8)], axis=1)
    moved = np.take_along_axis(flat, index, axis=1)  # (B, S*S)
    lut = np.concatenate([colours.astype(np.uint8), np.full((b, 1), PAD, np.uint8)], axis=1)
    recoloured = np.take_along_axis(lut, moved.astype(np.intp), axis=1)  # (B, S*S)
    new_sizes = np.where(DIHEDRAL_BITS[dihedrals, 0][:, None], sizes[:, ::-1], sizes)
    return recoloured.reshape(b, s, s), new_sizes
