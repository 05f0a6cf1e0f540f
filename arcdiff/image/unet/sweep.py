"""Sampler sweep: DDIM with 10 .. 1000 steps and DDPM, wall time and sample quality each.

Every setting starts from the same noise and labels (classes in turn), so differences are the
sampler's. Quality is measured in the feature space of a classifier arcdiff trains on the run's
own training images (see metrics.py): Inception weights are not available offline. A latent
run's samples are decoded to pixels before they are scored. A conditional run also gets its
class alignment (alignment.py: a noise seed per class) at the run's sampler and guidance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from arcdiff.image.unet import plots
from arcdiff.image.unet.alignment import metric_classifier, run_alignment
from arcdiff.image.unet.diagnostics import image_shape
from arcdiff.image.unet.metrics import FeatureClassifier, embed, frechet_distance, sample_quality
from arcdiff.image.unet.run import Run, load_data, to_model_range
from arcdiff.image.unet.sample import Sampler, draw
from arcdiff.runs.paths import write_json

Progress = Callable[[str, int, int], None]
METRIC_NOTE = (
    "quality in the 64-d feature space of a small CNN classifier trained by arcdiff on the same "
    "training images (no Inception weights offline): not comparable with published FID"
)


def sweep_settings(run: Run) -> list[tuple[str, Sampler, float]]:
    """(kind, sampler, guidance): the steps sweep, then the guidance sweep at the run's sampler."""
    e, s = run.cfg.eval, run.cfg.sample
    settings = [
        ("steps", Sampler("ddim", n, 0.0, "trailing"), e.guidance_scale) for n in e.sweep_steps
    ]
    if e.sweep_ddpm:
        ddpm = Sampler("ddpm", run.diffusion.num_timesteps, 0.0, "trailing")
        settings.append(("steps", ddpm, e.guidance_scale))
    if run.ema.num_classes:
        how = Sampler(s.sampler, s.num_steps, s.eta, s.spacing)
        settings += [("guidance", how, g) for g in e.sweep_guidance]
    return settings


def train_subset_frechet(
    real_feats: torch.Tensor, real_labels: torch.Tensor, labels: torch.Tensor, *, seed: int
) -> float:
    """Frechet distance to all training images of a random training subset with the samples'
    class counts: what samples drawn from the training distribution itself would score.

    Class counts matter: the features cluster by class, so a plain random subset of 300 digits
    scores 0.4-1.2 on the demo only through its class proportions (0.08-0.12 when balanced).
    """
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c, count in enumerate(torch.bincount(labels, minlength=int(real_labels.max()) + 1)):
        members = torch.nonzero(real_labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[: int(count)]])
    subset = real_feats[torch.cat(picks)]
    return frechet_distance(real_feats.double().numpy(), subset.double().numpy())


def _sweep_row(
    run: Run,
    out_dir: Path,
    classifier: FeatureClassifier,
    real_feats: Tensor,
    noise: Tensor,
    labels: Tensor | None,
    kind: str,
    how: Sampler,
    scale: float,
) -> dict[str, Any]:
    """Sample with one setting, time and score it, save its grid in sweep/."""
    cfg = run.cfg
    label = f"{how.sampler} {how.num_steps}, guidance {scale:g}"
    wall, cpu = time.perf_counter(), time.process_time()
    samples = draw(run, noise, labels, how, guidance_scale=scale, seed=cfg.sample.seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    quality = sample_quality(classifier, real_feats, samples, labels, k=cfg.eval.knn_k)
    plots.image_grid(
        out_dir / "sweep" / f"{how.sampler}{how.num_steps}_g{scale:g}.png",
        [(f"#{j * 10}-", row.numpy()) for j, row in enumerate(samples[:40].split(10))],
        title=label,
    )
    return {
        "sweep": kind,
        "setting": label,
        "sampler": how.sampler,
        "num_steps": how.num_steps,
        "guidance_scale": scale,
        "wall_s": wall,
        "cpu_s": cpu,
        **quality.to_dict(),
    }


def run_sweep(
    run: Run,
    out_dir: Path,
    *,
    num_samples: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Sample with every setting, score each, write sweep.json, sweep.png and sweep/*.png."""
    cfg = run.cfg
    n = num_samples or cfg.eval.num_samples
    train, test = load_data(cfg, "train"), load_data(cfg, "test")
    train_x, train_y = to_model_range(train.images), torch.from_numpy(train.labels)
    test_x, test_y = to_model_range(test.images), torch.from_numpy(test.labels)

    def report(description: str, done: int, total: int) -> None:
        if progress is not None:
            progress(description, done, total)

    report("metric classifier", 0, 1)
    classifier = metric_classifier(run, out_dir)
    report("metric classifier", 1, 1)
    real_feats, _ = embed(classifier, train_x)
    test_feats, test_pred = embed(classifier, test_x)
    held_out = sample_quality(classifier, real_feats, test_x, test_y, k=cfg.eval.knn_k)
    reference = {
        "frechet_distance": held_out.frechet,
        "precision": held_out.precision,
        "recall": held_out.recall,
        "note": f"{len(test_x)} held-out test images vs the {len(train_x)} training images",
        "classifier_test_accuracy": (test_pred == test_y).float().mean().item(),
    }

    gen = torch.Generator().manual_seed(cfg.sample.seed + 100)
    noise = torch.randn(n, *image_shape(run), generator=gen)
    labels = torch.arange(n) % run.ema.num_classes if run.ema.num_classes else None
    if labels is None:  # unconditional samples: a subset of any classes
        classes, counts = torch.zeros_like(train_y), torch.zeros(n, dtype=torch.long)
    else:
        classes, counts = train_y, labels
    reference["frechet_distance_train_subset"] = train_subset_frechet(
        real_feats, classes, counts, seed=0
    )
    rows = []
    (out_dir / "sweep").mkdir(parents=True, exist_ok=True)
    settings = sweep_settings(run)
    report("sweep", 0, len(settings))
    for i, (kind, how, scale) in enumerate(settings):
        rows.append(
            _sweep_row(run, out_dir, classifier, real_feats, noise, labels, kind, how, scale)
        )
        report("sweep", i + 1, len(settings))
    alignment = None
    if run.ema.num_classes:
        report("class alignment", 0, 1)
        alignment = run_alignment(run, classifier)
        report("class alignment", 1, 1)
    result = {
        "num_samples": n,
        "threads": torch.get_num_threads(),
        "metric": METRIC_NOTE,
        "reference": reference,
        "rows": rows,
        "class_alignment": alignment,
    }
    write_json(out_dir / "sweep.json", result)
    plots.sweep_plot(out_dir / "sweep.png", rows, metric_note=METRIC_NOTE)
    return result
