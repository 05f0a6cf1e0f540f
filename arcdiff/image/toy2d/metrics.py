"""Sample-quality metric of the 2D toy suite: k-nearest-neighbour KL divergence estimate.

KL(p || q) from x ~ p (n points) and x' ~ q (m points), Wang, Kulkarni & Verdu 2009, eq. 5:

    D = d / n * sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))

rho_k(i): distance from x_i to its k-th nearest other point of x; nu_k(i): to its k-th nearest
point of x'. Max-norm distances and the result in bits, as the baseline's NPEET ``kldiv`` with
k = 5 (p = real data, q = generated samples).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree


def knn_kl_divergence(real: np.ndarray, generated: np.ndarray, *, k: int = 5) -> float:
    """kNN estimate of KL(real || generated) in bits; arrays of shape (n, d) and (m, d)."""
    real = np.asarray(real, dtype=np.float64).reshape(len(real), -1)
    generated = np.asarray(generated, dtype=np.float64).reshape(len(generated), -1)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"dimension mismatch: {real.shape[1]} vs {generated.shape[1]}")
    n, d = real.shape
    m = len(generated)
    if not k < min(n, m):
        raise ValueError(f"k = {k} needs more than k points on each side (got {n} and {m})")
    # k + 1 neighbours within `real` because each point is its own nearest neighbour
    rho = cKDTree(real).query(real, k=[k + 1], p=np.inf, workers=-1)[0][:, 0]  # (n,)
    nu = cKDTree(generated).query(real, k=[k], p=np.inf, workers=-1)[0][:, 0]  # (n,)
    nats = math.log(m) - math.log(n - 1) + d * (np.log(nu).mean() - np.log(rho).mean())
    return float(nats / math.log(2))


def gaussian_kl_bits(
    mu_p: np.ndarray, cov_p: np.ndarray, mu_q: np.ndarray, cov_q: np.ndarray
) -> float:
    """Closed-form KL(N(mu_p, cov_p) || N(mu_q, cov_q)) in bits."""
    d = len(mu_p)
    inv_q = np.linalg.inv(cov_q)
    diff = np.asarray(mu_q) - np.asarray(mu_p)
    nats = 0.5 * (
        np.trace(inv_q @ cov_p)
        + diff @ inv_q @ diff
        - d
        + np.log(np.linalg.det(cov_q) / np.linalg.det(cov_p))
    )
    return float(nats / math.log(2))
