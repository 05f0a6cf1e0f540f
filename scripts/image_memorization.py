"""Do the digits samples copy training images? Nearest-training-image distances vs held-out.

Regenerates the sweep's DDIM-50 (guidance 1) samples (same noise and labels as `arcdiff image
sweep`), then compares, in pixel space and in the metric classifier's feature space, the distance
from each sample to its nearest training image with the same distance for the held-out images.
Usage: python scripts/image_memorization.py outputs/image_digits
"""

import sys
from pathlib import Path

import torch

from arcdiff.image.unet.diagnostics import image_shape
from arcdiff.image.unet.metrics import classifier_for_run, embed
from arcdiff.image.unet.run import load_data, load_run, to_model_range
from arcdiff.image.unet.sample import Sampler, draw

torch.set_num_threads(1)
run_dir = Path(sys.argv[1])
run = load_run(run_dir)
cfg = run.cfg
n = cfg.eval.num_samples
train, test = load_data(cfg, "train"), load_data(cfg, "test")
train_x, test_x = to_model_range(train.images), to_model_range(test.images)
noise = torch.randn(
    n, *image_shape(run), generator=torch.Generator().manual_seed(cfg.sample.seed + 100)
)
labels = torch.arange(n) % run.ema.num_classes
how = Sampler("ddim", 50, 0.0, "trailing")
samples = draw(run, noise, labels, how, seed=cfg.sample.seed)  # decoded in a latent run
classifier = classifier_for_run(
    run_dir / "classifier.pt",
    train_x,
    torch.from_numpy(train.labels),
    train.num_classes,
    steps=1,
    seed=0,
)


def nearest(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.flatten(1), b.flatten(1)).min(dim=1).values


for space, (s, t, tr) in {
    "pixels (RMS per pixel)": (samples, test_x, train_x),
    "classifier features": (
        embed(classifier, samples)[0],
        embed(classifier, test_x)[0],
        embed(classifier, train_x)[0],
    ),
}.items():
    scale = (s[0].numel() ** 0.5) if space.startswith("pixels") else 1.0
    ds, dt = nearest(s, tr) / scale, nearest(t, tr) / scale
    print(
        f"{space}: nearest training image, median (10th pct): samples {ds.median():.4f} "
        f"({ds.quantile(0.1):.4f}), held-out {dt.median():.4f} ({dt.quantile(0.1):.4f}); "
        f"share of samples closer than the closest held-out image: "
        f"{(ds < dt.min()).float().mean():.3f}"
    )

from arcdiff.image.unet.sweep import train_subset_frechet  # noqa: E402

train_feats = embed(classifier, train_x)[0]
train_y = torch.from_numpy(train.labels)
unlabelled = torch.zeros(n, dtype=torch.long)
for seed in range(3):
    balanced = train_subset_frechet(train_feats, train_y, labels, seed=seed)
    any_class = train_subset_frechet(train_feats, torch.zeros_like(train_y), unlabelled, seed=seed)
    print(
        f"seed {seed}: FD to all {len(train_x)} training images of {n} of them, "
        f"class-balanced like the samples: {balanced:.3f}; any classes: {any_class:.3f}"
    )
