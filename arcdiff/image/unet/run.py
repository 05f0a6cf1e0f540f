"""What an image run is: its data, its U-Net's arguments, its checkpoint layout, ``load_run``.

A run's model works in *model space*: pixels in [-1, 1], or the scaled latents of a VAE
(``latent`` section). Its classes are embedded by a learned table, or by a frozen table of
prompt embeddings read through cross-attention (``model.text_conditional``). A checkpoint holds
the U-Net's arguments, the prompt table and the VAE, so ``load_run`` rebuilds everything needed
to sample and decode from the file alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from arcdiff.errors import CheckpointError
from arcdiff.image.gaussian import GaussianDiffusion
from arcdiff.image.unet.config import ImageConfig, image_config_from_dict
from arcdiff.image.unet.data import ImageSet, load_images
from arcdiff.image.unet.latent import LatentSpace
from arcdiff.image.unet.model import UNet
from arcdiff.image.unet.text import ContextTable
from arcdiff.runs.checkpoint import (
    checkpoint_state,
    first_difference,
    load_checkpoint,
    load_state_strict,
)
from arcdiff.runs.device import cuda_rng_state
from arcdiff.runs.paths import checkpoint_path, select_device

CHECKPOINT_KIND = "arcdiff.image.unet"
# train fields that may change on --resume; everything else must match the checkpoint
RESUMABLE_TRAIN_FIELDS = ("steps", "save_every", "log_every", "threads", "device")
RESUME_SECTIONS = ("data", "model", "diffusion", "train", "text", "latent")


def load_data(cfg: ImageConfig, split: str = "train") -> ImageSet:
    d = cfg.data
    limit = d.limit if split == "train" else None
    return load_images(d.dataset, root=d.root, split=split, image_size=d.image_size, limit=limit)


def to_model_range(images: np.ndarray) -> Tensor:
    """[0, 1] numpy images -> [-1, 1] tensor."""
    return torch.from_numpy(images) * 2 - 1


def model_args(
    cfg: ImageConfig, *, channels: int, image_size: int, num_classes: int
) -> dict[str, Any]:
    """The U-Net's constructor arguments: the model section plus what the data decides
    (channels and side: the images', or the latents' in a latent run)."""
    m = cfg.model
    args = {
        "in_channels": channels,
        "image_size": image_size,
        "base_channels": m.base_channels,
        "channel_mults": list(m.channel_mults),
        "num_res_blocks": m.num_res_blocks,
        "attention_resolutions": list(m.attention_resolutions),
        "num_heads": m.num_heads,
        "groups": m.groups,
        "dropout": m.dropout,
        "num_classes": num_classes if m.class_conditional else 0,
    }
    if m.text_conditional:  # absent otherwise: label runs keep their arguments
        args["text_conditional"] = True
        args["cross_attention_resolutions"] = list(m.cross_attention_resolutions)
    return args


def build_unet(args: dict[str, Any], context: ContextTable | None) -> UNet:
    """The U-Net of ``args``; a text-conditioned one gets the table (and refuses to build
    without it)."""
    if context is None:
        return UNet(**args)
    return UNet(**args, context_tokens=context.tokens, context_mask=context.mask)


def make_diffusion(cfg: ImageConfig) -> GaussianDiffusion:
    d = cfg.diffusion
    return GaussianDiffusion(
        num_timesteps=d.num_timesteps,
        schedule=d.schedule,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        prediction=d.prediction,
        zero_terminal_snr=d.zero_terminal_snr,
        clip_x0=d.clip_x0,
    )


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch intra-op threads set to ``n`` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Run:
    """A trained (or loaded) image model with everything needed to sample from it."""

    cfg: ImageConfig
    model: UNet
    ema: UNet
    diffusion: GaussianDiffusion
    class_names: list[str]
    step: int
    context: ContextTable | None = None  # the prompt table of a text-conditioned model
    latent: LatentSpace | None = None  # the VAE of a latent model

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one sample in model space (the starting noise's)."""
        return (self.ema.in_channels, self.ema.image_size, self.ema.image_size)

    @property
    def clamp(self) -> float | None:
        """Range samples end in: images [-1, 1]; latents unclamped (decoding clamps)."""
        return 1.0 if self.latent is None else None

    def to_model_space(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] -> what the U-Net denoises (the same images, or latents)."""
        return images if self.latent is None else self.latent.encode(images).to(images.device)

    def to_pixels(self, x: Tensor) -> Tensor:
        """Samples in model space (..., C, H, W) -> images in [-1, 1] (..., C', H', W'), decoded
        in a latent run; leading axes (a chain's steps, a batch) are kept."""
        if self.latent is None:
            return x
        images = self.latent.decode(x.flatten(0, -4))  # (N, C', H', W')
        return images.view(*x.shape[:-3], *images.shape[1:])


def image_checkpoint(
    run: Run, optimizer: torch.optim.Optimizer, gen: torch.Generator, args: dict[str, Any]
) -> dict[str, Any]:
    """runs/checkpoint.py's layout plus the image track's kind, optimizer, RNGs and classes,
    and the prompt table and the VAE when the run has them."""
    extra: dict[str, Any] = {}
    if run.context is not None:
        extra["text_context"] = run.context.to_dict()
    if run.latent is not None:
        extra["latent"] = run.latent.to_dict()
    return checkpoint_state(
        model=run.model,
        ema=run.ema,
        config=run.cfg.to_dict(),
        step=run.step,
        model_args=args,
        kind=CHECKPOINT_KIND,
        optimizer=optimizer.state_dict(),
        rng={
            "batches": gen.get_state(),
            "torch": torch.get_rng_state(),
            **cuda_rng_state(next(run.model.parameters()).device),  # dropout on CUDA
        },
        class_names=run.class_names,
        **extra,
    )


def check_image_checkpoint(state: dict[str, Any], where: str) -> None:
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{where}: not an image U-Net checkpoint (kind {state.get('kind')!r}); "
            "arcdiff image commands read runs written by `arcdiff image train`"
        )


def check_resumable(state: dict[str, Any], cfg: ImageConfig, where: str) -> None:
    # the saved config read back through today's dataclasses: fields added since are defaults
    saved = image_config_from_dict(state["config"], where).to_dict()
    now = cfg.to_dict()
    for section in RESUME_SECTIONS:
        a, b = dict(saved[section]), dict(now[section])
        if section == "train":
            for key in RESUMABLE_TRAIN_FIELDS:
                a.pop(key, None)
                b.pop(key, None)
        diff = first_difference(a, b, f"{section}.")
        if diff:
            raise CheckpointError(f"{where}: config differs from the checkpoint's: {diff}")


def parts_of(state: dict[str, Any], where: str) -> tuple[ContextTable | None, LatentSpace | None]:
    """The prompt table and latent space a checkpoint carries (None where it has none)."""
    context = None
    if state["model_args"].get("text_conditional"):
        if "text_context" not in state:
            raise CheckpointError(f"{where}: a text-conditioned model without its prompt table")
        context = ContextTable.from_dict(state["text_context"], where)
    latent = LatentSpace.from_dict(state["latent"], where) if "latent" in state else None
    return context, latent


def load_run(run_dir: Path, *, checkpoint: str = "final", device: str | None = None) -> Run:
    """Rebuild model, EMA, diffusion (and prompt table, VAE) from a run's checkpoint.

    They go to ``device``, else the run's train.device, else CUDA when there is one.
    """
    path = checkpoint_path(run_dir, checkpoint)
    if checkpoint == "final" and not path.is_file():
        path = checkpoint_path(run_dir, "last")
    state = load_checkpoint(path)
    check_image_checkpoint(state, str(path))
    cfg = image_config_from_dict(state["config"], str(path))
    context, latent = parts_of(state, str(path))
    model = build_unet(state["model_args"], context)
    ema = build_unet(state["model_args"], context)
    load_state_strict(model, state["model"], f"{path} (model)")
    load_state_strict(ema, state["ema"], f"{path} (ema)")
    target = select_device(device or cfg.train.device)
    if latent is not None:
        latent.vae.to(target)
    return Run(
        cfg,
        model.to(target).eval(),
        ema.to(target).eval(),
        make_diffusion(cfg).to(target),
        state["class_names"],
        state["step"],
        context,
        latent,
    )
