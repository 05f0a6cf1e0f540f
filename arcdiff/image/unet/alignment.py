"""Class alignment: does a sample drawn for a requested class (or prompt) show that class?

For every class, ``eval.alignment_per_class`` samples start from noise of a seed of that class
alone (``alignment_noise``), so no two classes share a starting noise: with one fixed noise for
every class, a model that ignores its condition draws the same picture in every row, and a
classifier that happens to like that picture can hide it. The run's metric classifier
(metrics.py, trained on the run's own training images) labels each decoded sample; accuracy is
reported per class and overall, with the guidance and sampler used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from arcdiff.image.unet import plots
from arcdiff.image.unet.metrics import FeatureClassifier, classifier_for_run, embed
from arcdiff.image.unet.run import Run, load_data, to_model_range
from arcdiff.image.unet.sample import Sampler, draw

SEED_STRIDE = 1_000_003  # class c's noise seed: seed + (c + 1) * SEED_STRIDE


def class_seed(seed: int, c: int) -> int:
    return seed + (c + 1) * SEED_STRIDE


def alignment_noise(shape: tuple[int, ...], per_class: int, num_classes: int, seed: int) -> Tensor:
    """(num_classes * per_class, *shape) starting noise, class by class, each from its own seed."""
    return torch.cat(
        [
            torch.randn(
                per_class, *shape, generator=torch.Generator().manual_seed(class_seed(seed, c))
            )
            for c in range(num_classes)
        ]
    )


def metric_classifier(run: Run, out_dir: Path) -> FeatureClassifier:
    """The run's metric classifier (out_dir/classifier.pt), trained on its pixel images once."""
    train = load_data(run.cfg, "train")
    return classifier_for_run(
        out_dir / "classifier.pt",
        to_model_range(train.images),
        torch.from_numpy(train.labels),
        train.num_classes,
        steps=run.cfg.eval.classifier_steps,
        seed=run.cfg.train.seed,
    )


@torch.no_grad()
def class_alignment(
    run: Run,
    classifier: FeatureClassifier,
    how: Sampler,
    *,
    guidance_scale: float,
    per_class: int,
    seed: int,
    figure: Path | None = None,
) -> dict[str, Any]:
    """Accuracy of the classifier on samples of each requested class (see the module doc)."""
    k = run.ema.num_classes
    if not k:
        raise ValueError("class alignment needs a class- or text-conditioned model")
    noise = alignment_noise(run.shape, per_class, k, seed)
    labels = torch.arange(k).repeat_interleave(per_class)
    images = draw(run, noise, labels, how, guidance_scale=guidance_scale, seed=seed).cpu()
    _, preds = embed(classifier, images)
    hits = (preds == labels).float().view(k, per_class)  # (K, per_class)
    if figure is not None:
        shown = images.view(k, per_class, *images.shape[1:])[:, :8]
        rows = [
            (f"{name} ({hits[c].mean().item():.2f})", shown[c].numpy())
            for c, name in enumerate(run.class_names)
        ]
        plots.image_grid(
            figure,
            rows,
            title=f"class alignment: a noise seed per class, guidance {guidance_scale:g}",
        )
    return {
        "per_class": {name: hits[c].mean().item() for c, name in enumerate(run.class_names)},
        "overall": hits.mean().item(),
        "samples_per_class": per_class,
        "guidance_scale": guidance_scale,
        "sampler": f"{how.sampler} {how.num_steps}",
        "noise_seeds": [class_seed(seed, c) for c in range(k)],
        "predicted_counts": np.bincount(preds.numpy(), minlength=k).tolist(),
    }


def run_alignment(
    run: Run, classifier: FeatureClassifier, *, figure: Path | None = None
) -> dict[str, Any]:
    """class_alignment at the run's sampler, eval.alignment_guidance (default: the sample
    section's guidance) and eval.alignment_per_class samples per class."""
    s, e = run.cfg.sample, run.cfg.eval
    return class_alignment(
        run,
        classifier,
        Sampler(s.sampler, s.num_steps, s.eta, s.spacing),
        guidance_scale=s.guidance_scale if e.alignment_guidance is None else e.alignment_guidance,
        per_class=e.alignment_per_class,
        seed=s.seed,
        figure=figure,
    )
