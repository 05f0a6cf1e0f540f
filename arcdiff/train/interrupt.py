"""SIGINT / SIGTERM during training: finish the step, save last.pt, exit 130 / 143.

The first signal only raises a flag that the loop reads between steps, so a checkpoint is never
cut short by Ctrl-C; a second signal while it is being handled restores the previous handler
and interrupts at once (the checkpoint save is atomic, so the older file stays loadable).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

from arcdiff.errors import ArcdiffError

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells do


class TrainingInterrupted(ArcdiffError):
    """Training stopped on a signal after saving last.pt; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """Context manager: while inside, SIGINT and SIGTERM set ``received`` instead of stopping.

    Handlers can only be installed from the main thread; elsewhere (a test runner's worker
    thread, say) the signals keep their usual meaning and ``received`` stays None."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # asked twice: stop now
            self._restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.received] if self.received is not None else 0
