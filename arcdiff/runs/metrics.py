"""The writer of ``RUN/metrics.jsonl``: one JSON object a line, read back by
:func:`arcdiff.runs.paths.read_metrics`. Every writer of a run (the trainer, adaptation, the
image track) appends through it, so the file reads the same whoever wrote it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from arcdiff.errors import OutputError
from arcdiff.runs.paths import METRICS


def plain(value: Any) -> Any:
    """Tensors and numpy scalars -> floats; non-finite floats stay readable as strings."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """Appends rows to ``run_dir/metrics.jsonl``.

    Each row is written by its own open-append-close, so a row is whole in the file (the OS's
    page cache) once :meth:`append` returns, and a killed run loses at most the line it was
    writing, which the reader leaves out; rows are not fsynced (one a step would cost more
    than the row is worth). ``rows`` counts the rows this writer has put in the file."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / METRICS
        self.rows = 0

    def restart(self, keep: Sequence[bytes] = ()) -> None:
        """Start the file afresh holding the lines ``keep`` (through a temporary file renamed
        into place, so a failure leaves the old file as it was)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_bytes(b"".join(line + b"\n" for line in keep))
            tmp.replace(self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{self.path}: cannot write the metrics ({e.strerror})") from None
        self.rows = len(keep)

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append ``row`` as one line; returns it as written (plain JSON values)."""
        row = {key: plain(value) for key, value in row.items()}
        try:
            with open(self.path, "ab") as f:
                f.write(orjson.dumps(row) + b"\n")
        except OSError as e:
            raise OutputError(f"{self.path}: cannot append metrics ({e.strerror})") from None
        self.rows += 1
        return row
