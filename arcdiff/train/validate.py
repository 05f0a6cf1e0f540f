"""Validation on held-out demonstration pairs: loss and cell accuracy per noise bucket."""

from __future__ import annotations

import numpy as np
import torch

from arcdiff.config import Config
from arcdiff.data.dataset import Batch
from arcdiff.data.encode import PAD
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.model.denoiser import Denoiser
from arcdiff.runs.device import seeded_generator
from arcdiff.train.step import diffusion_loss, to_device

NUM_NOISE_BUCKETS = 5


@torch.no_grad()
def validate(
    model: Denoiser, batch: Batch, diffusion: DiscreteDiffusion, cfg: Config, device: torch.device
) -> dict[str, float]:
    """Loss and cell accuracy on held-out pairs, per noise bucket (fixed noise, deterministic)."""
    model.eval()
    gen = seeded_generator(device, 1234)
    batch = to_device(batch, device)
    x0, valid = batch.outputs, batch.outputs != PAD
    n, t_max = len(batch), diffusion.num_timesteps
    out: dict[str, float] = {}
    losses, accs = [], []
    for k in range(NUM_NOISE_BUCKETS):
        lo, hi = k * t_max // NUM_NOISE_BUCKETS, (k + 1) * t_max // NUM_NOISE_BUCKETS
        steps = torch.randint(lo, max(hi, lo + 1), (n,), generator=gen, device=device)
        loss, _, pred = diffusion_loss(
            model,
            batch,
            diffusion,
            steps,
            gen,
            cfg.diffusion.size_loss_weight,
            model.self_condition,
        )
        correct = (pred.logits.argmax(-1) == x0) & valid
        acc = (correct.sum() / valid.sum()).item()
        out[f"val_loss_b{k}"], out[f"val_acc_b{k}"] = loss.item(), acc
        losses.append(loss.item())
        accs.append(acc)
    out["val_loss"], out["val_acc"] = float(np.mean(losses)), float(np.mean(accs))
    return out


def closing_estimate(step_s: float, n_val: int, cfg: Config) -> float:
    """Seconds the closing validation will take, before one has been timed: five forward
    passes over the held-out pairs (two with self-conditioning), each costing about half a
    training step per example (a forward is a third of forward + backward, but validation
    runs on whole canvases where training crops to size buckets: 0.43 measured on toiny_aa1,
    NOTES.md "Runs survive interruption")."""
    passes = NUM_NOISE_BUCKETS * (2 if cfg.model.self_condition else 1)
    return passes * step_s * n_val / cfg.train.batch_size / 2
