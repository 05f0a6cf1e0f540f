"""Files of a run directory: atomic JSON writes that leave no half-written file behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def write_json(path: Path, payload: Any) -> None:
    """Write indented JSON through a temporary file renamed into place; a failed write (disk
    full, say) raises the OSError and leaves ``path`` as it was, with no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(
            orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
