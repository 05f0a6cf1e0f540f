"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from arcdiff.errors import ConfigError


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (a ConfigError if torch does not know it), else cuda, mps, cpu."""
    if name:
        try:
            return torch.device(name)
        except RuntimeError:
            raise ConfigError(
                f"--device {name!r}: not a device (expected cpu, cuda, cuda:N or mps)"
            ) from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
