"""Held-out tasks: the benchmark split of a source and the tasks a training run never sees.

``SOURCE@unseen`` and ``SOURCE@seen`` name the two halves of a source's small tasks (every
demonstration grid and test input at most ``SPLIT_SIDE`` wide; test outputs are not looked at):
sorted by id, every second task is unseen, starting with the second. ``aa1:eval@unseen`` is the
39 of the 78 small ARC-AGI-1 evaluation tasks that a base run for ``arcdiff solve`` is trained
without, ``aa1:eval@seen`` the other 39.

``data.exclude_ids`` keeps tasks out of training entirely (no demonstration, test input,
self-supervised grid or validation pair of theirs reaches the stream); each entry is a task id
or a source, whose every task is kept out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from arcdiff.errors import DataError

SPLIT_SIDE = 10
PARTS = ("seen", "unseen")


def split_part(selector: str) -> tuple[str, str | None]:
    """``'aa1:eval@unseen'`` -> ``('aa1:eval', 'unseen')``; a selector without a part -> None."""
    source, at, part = selector.rpartition("@")
    if not at or part not in PARTS:
        return selector, None
    if not source:
        raise DataError(f"{selector}: names a part but no source (e.g. aa1:eval@{part})")
    return source, part


def part_ids(small_ids: Iterable[str], part: str) -> list[str]:
    """The ids of ``part`` among a source's small tasks: sorted, every second one unseen."""
    ordered = sorted(small_ids)
    return ordered[1::2] if part == "unseen" else ordered[0::2]


def is_source(entry: str) -> bool:
    """A ``data.exclude_ids`` entry names a source (not one task id): a selector or a path."""
    return any(mark in entry for mark in (":", "/", "@")) or entry.endswith(".json")


def excluded_ids(entries: Sequence[str]) -> set[str]:
    """Every task id that ``data.exclude_ids`` keeps out of training."""
    from arcdiff.data.tasks import load_tasks  # tasks.py reads this module's split

    ids: set[str] = set()
    for entry in entries:
        if is_source(entry):
            ids |= set(load_tasks(entry).ids)  # every task of the source, whatever its size
        else:
            ids.add(entry)
    return ids
