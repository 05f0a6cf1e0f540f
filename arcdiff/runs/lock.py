"""One writer per run directory: an OS file lock on ``RUN/.lock`` held for a command's life.

``fcntl.flock`` belongs to the open file, so the kernel releases it when the process ends in
any way (return, exception, Ctrl-C, kill -9); a stale ``.lock`` file never blocks anyone. The
file holds the holder's pid and command while it is held, which a refused second writer
names; it is emptied on release. Under torchrun
only rank 0 takes the lock (the other ranks write nothing). A process that already holds a
run's lock takes it again for free, so ``pipeline`` can train, evaluate and report under one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from arcdiff.errors import OutputError

LOCK = ".lock"

_held: dict[Path, int] = {}  # run directory -> how many nested holds this process has


def _holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    pid, _, command = text.partition(" ")
    return f"pid {pid}: arcdiff {command}" if pid else "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str) -> Iterator[None]:
    """Hold ``run_dir``'s lock while the block runs (creating ``run_dir`` if need be).

    A second writer is an OutputError naming the holder; a folder that cannot be created or
    written is an OutputError too, raised here, before any work."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"{run_dir}: cannot create the run directory ({e.strerror or e})"
        ) from None
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(
            f"{run_dir}: cannot write into the run directory ({e.strerror or e})"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"{run_dir} is in use by another writer ({_holder(fd)}); wait for it to end "
                "or choose another run directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            os.ftruncate(fd, 0)  # an idle run's .lock is empty: reading a run changes no byte
    finally:
        os.close(fd)  # closing the file releases the lock
