"""Sample quality without Inception: features of a small classifier trained on the same data.

Inception weights cannot be downloaded here, so FID proper is out of reach. Instead arcdiff
trains a small CNN classifier on the run's training images and measures, in its penultimate
(64-d) feature space:

- Frechet distance between real and generated features (the FID formula, Heusel et al. 2017,
  on other features: numbers are comparable only between runs that share the classifier);
- precision and recall of k-NN manifolds (Kynkaenniemi et al. 2019, k = 3);
- class accuracy: how often the classifier labels a class-conditional sample as its class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor, nn

from arcdiff.runs.checkpoint import load_checkpoint, load_state_strict, save_checkpoint

FEATURE_DIM = 64


class FeatureClassifier(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-mean-fc64 -> logits; images in [-1, 1]."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes

        def conv(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU())

        self.body = nn.Sequential(
            conv(in_channels, 32), conv(32, 32), nn.AvgPool2d(2), conv(32, 64), conv(64, 64)
        )
        self.features = nn.Sequential(nn.Linear(64, FEATURE_DIM), nn.SiLU())
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(self.body(x).mean(dim=(2, 3)))  # (B, FEATURE_DIM)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


def train_classifier(
    images: Tensor, labels: Tensor, num_classes: int, *, steps: int, seed: int = 0
) -> FeatureClassifier:
    """AdamW, one-cycle LR, batches of 128 shifted by up to 2 pixels (a cheap augmentation)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FeatureClassifier(in_channels=images.shape[1], num_classes=num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    for _ in range(steps):
        idx = torch.randint(0, len(images), (128,), generator=gen)
        dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
        x = torch.roll(images[idx], shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def embed(model: FeatureClassifier, images: Tensor, batch: int = 500) -> tuple[Tensor, Tensor]:
    """(features (N, FEATURE_DIM), predicted class (N,)) of images in [-1, 1]."""
    feats, preds = [], []
    for chunk in images.split(batch):
        f = model.embed(chunk)
        feats.append(f)
        preds.append(model.head(f).argmax(dim=1))
    return torch.cat(feats), torch.cat(preds)


def classifier_for_run(
    path: Path, images: Tensor, labels: Tensor, num_classes: int, *, steps: int, seed: int
) -> FeatureClassifier:
    """The run's metric classifier: loaded from ``path`` if there, else trained and saved."""
    if path.is_file():
        state = load_checkpoint(path)
        model = FeatureClassifier(**state["config"])
        load_state_strict(model, state["model"], str(path))
        return model.eval()
    model = train_classifier(images, labels, num_classes, steps=steps, seed=seed)
    config = {"in_channels": model.in_channels, "num_classes": num_classes}
    save_checkpoint(path, {"model": model.state_dict(), "config": config})
    return model


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of two (N, d) feature sets."""
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r = np.cov(real, rowvar=False)
    cov_f = np.cov(fake, rowvar=False)
    root = linalg.sqrtm(cov_r @ cov_f)
    if not np.isfinite(root).all():  # singular product: regularise as pytorch-fid does
        offset = np.eye(len(cov_r)) * 1e-6
        root = linalg.sqrtm((cov_r + offset) @ (cov_f + offset))
    root = np.real(root)
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r + cov_f - 2 * root))


def _radii(feats: Tensor, k: int) -> Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    d = torch.cdist(feats, feats)  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # k + 1: the point itself is at distance 0


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3) -> tuple[float, float]:
    """Share of fake points inside the real k-NN manifold, and of real inside the fake one."""
    r_real, r_fake = _radii(real, k), _radii(fake, k)
    d = torch.cdist(fake, real)  # (F, R)
    precision = (d <= r_real[None]).any(dim=1).float().mean().item()
    recall = (r_fake[None] >= d.T).any(dim=1).float().mean().item()
    return precision, recall


@dataclass(frozen=True)
class Quality:
    frechet: float
    precision: float
    recall: float
    class_accuracy: float | None  # None for unconditional samples

    def to_dict(self) -> dict[str, float | None]:
        return {
            "frechet_distance": self.frechet,
            "precision": self.precision,
            "recall": self.recall,
            "class_accuracy": self.class_accuracy,
        }


def sample_quality(
    classifier: FeatureClassifier,
    real_feats: Tensor,
    samples: Tensor,
    labels: Tensor | None,
    *,
    k: int,
) -> Quality:
    """Quality of ``samples`` (N, C, H, W) in [-1, 1] against precomputed real features."""
    feats, preds = embed(classifier, samples)
    precision, recall = precision_recall(real_feats, feats, k=k)
    accuracy = None if labels is None else (preds == labels).float().mean().item()
    return Quality(
        frechet_distance(real_feats.double().numpy(), feats.double().numpy()),
        precision,
        recall,
        accuracy,
    )
