"""Numbers as the report writes them: percentages, fixed decimals, durations, solved marks.

A value that is missing, not a number or not finite is written "—".
"""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if finite(value) else "—"


def num(value: Any, fmt: str = "{:.4f}") -> str:
    return fmt.format(value) if finite(value) else "—"


def duration(seconds: Any) -> str:
    if not finite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def mark(pass2: Any) -> str:
    """✓ solved, ◐ partly (some test inputs), ✗ not, ? not scored."""
    if not finite(pass2):
        return "?"
    return "✓" if pass2 == 1.0 else "◐" if pass2 > 0 else "✗"
