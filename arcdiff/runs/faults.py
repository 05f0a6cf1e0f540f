"""Faults of the machine, not of the code: out of memory ends in a ResourceError that names
the setting to lower, instead of torch's traceback."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from arcdiff.errors import ResourceError

_OOM = ("can't allocate memory", "out of memory", "not enough memory")


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e).lower() for s in _OOM)


def _asked(e: BaseException) -> str:
    """'tried to allocate 652800000 bytes' -> ' asking for 0.65 GB' ('' when not said)."""
    found = re.search(r"allocate (\d+) bytes", str(e))
    if found:
        return f" asking for {int(found.group(1)) / 1e9:.2f} GB"
    found = re.search(r"allocate ([\d.]+ [KMG]iB)", str(e))
    return f" asking for {found.group(1)}" if found else ""


@contextlib.contextmanager
def out_of_memory_names(setting: str, value: int) -> Iterator[None]:
    """Turn out of memory inside the block (torch's allocators, numpy's MemoryError) into
    one line naming ``setting`` (e.g. ``train.batch_size``) and a smaller value to try."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not _is_oom(e):
            raise
        raise ResourceError(
            f"out of memory{_asked(e)} with {setting}={value}; lower it "
            f"(e.g. --set {setting}={max(1, value // 4)})"
        ) from None
