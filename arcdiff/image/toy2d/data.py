"""The 2D toy datasets of tiny-diffusion / the AI-Scientist 2d_diffusion template, reproduced.

Same formulas, seeds and order of random draws as the baseline (``datasets.py`` there), so the
100,000 points are the same up to float32 rounding: moons follow scikit-learn's ``make_moons``
(random_state 42, noise 0.03), line / circle / dino use ``np.random.default_rng(42)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arcdiff.errors import DataError

DATASETS: tuple[str, ...] = ("circle", "dino", "line", "moons")
DATASAURUS_ENV = "ARCDIFF_DATASAURUS"
DATASAURUS_DEFAULT = Path("data/DatasaurusDozen.tsv")
DATASAURUS_URL = (
    "https://raw.githubusercontent.com/tanelp/tiny-diffusion/master/static/DatasaurusDozen.tsv"
)
SEED = 42


def moons(n: int) -> np.ndarray:
    """scikit-learn make_moons(n, random_state=42, noise=0.03), shifted and stretched."""
    rs = np.random.RandomState(SEED)
    n_out = n // 2
    n_in = n - n_out
    x = np.append(np.cos(np.linspace(0, np.pi, n_out)), 1 - np.cos(np.linspace(0, np.pi, n_in)))
    y = np.append(
        np.sin(np.linspace(0, np.pi, n_out)), 1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5
    )
    points = np.stack([x, y], axis=1)
    order = np.arange(n)
    rs.shuffle(order)  # sklearn.utils.shuffle draws from the same RandomState first
    points = points[order] + rs.normal(scale=0.03, size=(n, 2))
    points[:, 0] = (points[:, 0] + 0.3) * 2 - 1
    points[:, 1] = (points[:, 1] + 0.3) * 3 - 1
    return points.astype(np.float32)


def line(n: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-0.5, 0.5, n)
    y = rng.uniform(-1, 1, n)
    return (np.stack([x, y], axis=1) * 4).astype(np.float32)


def circle(n: int) -> np.ndarray:
    """Points on a ring of radius 3 at directions of a 0.2-spaced grid, jittered by <= 0.09."""
    rng = np.random.default_rng(SEED)
    x = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    y = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    norm = np.sqrt(x**2 + y**2) + 1e-10
    x, y = x / norm, y / norm
    theta = 2 * np.pi * rng.uniform(0, 1, n)
    r = rng.uniform(0, 0.03, n)
    x, y = x + r * np.cos(theta), y + r * np.sin(theta)
    return (np.stack([x, y], axis=1) * 3).astype(np.float32)


def datasaurus_path(path: str | Path | None = None) -> Path:
    """The Datasaurus Dozen TSV: the argument, else $ARCDIFF_DATASAURUS, else data/."""
    chosen = Path(path or os.environ.get(DATASAURUS_ENV) or DATASAURUS_DEFAULT)
    if not chosen.is_file():
        raise DataError(
            f"Datasaurus Dozen TSV not found at {chosen}: the dino dataset needs it; download "
            f"{DATASAURUS_URL} and pass --dino-tsv PATH or set {DATASAURUS_ENV}=PATH"
        )
    return chosen


def read_dino(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the rows whose first column is ``dino``, in file order."""
    xs, ys = [], []
    with path.open() as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["dataset", "x", "y"]:
            raise DataError(f"{path}: expected columns dataset, x, y; found {header}")
        for lineno, row in enumerate(f, start=2):
            fields = row.rstrip("\n").split("\t")
            if fields[0] != "dino":
                continue
            try:
                xs.append(float(fields[1]))
                ys.append(float(fields[2]))
            except (IndexError, ValueError):
                raise DataError(f"{path}:{lineno}: malformed row {row.strip()!r}") from None
    if not xs:
        raise DataError(f"{path}: no rows with dataset 'dino'")
    return np.array(xs), np.array(ys)


def dino(n: int, path: str | Path | None = None) -> np.ndarray:
    px, py = read_dino(datasaurus_path(path))
    rng = np.random.default_rng(SEED)
    ix = rng.integers(0, len(px), n)
    x = px[ix] + rng.normal(size=n) * 0.15
    y = py[ix] + rng.normal(size=n) * 0.15
    x = (x / 54 - 1) * 4
    y = (y / 48 - 1) * 4
    return np.stack([x, y], axis=1).astype(np.float32)


def get_dataset(name: str, n: int = 100_000, *, dino_tsv: str | Path | None = None) -> np.ndarray:
    """(n, 2) float32 points of a toy dataset."""
    if name == "dino":
        return dino(n, dino_tsv)
    makers = {"circle": circle, "line": line, "moons": moons}
    if name not in makers:
        raise DataError(f"unknown toy dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return makers[name](n)
