"""The dock widget's background runner: one job at a time in a napari worker thread.

Shared by *Run*, *Calibrate* and the live preview (each owns a :class:`Runner`). A job is
``compute(job, progress)``, run in a worker thread; ``progress(done, total)`` moves the
dock's progress bar and a bar in napari's activity panel (with the time left), and raises
:class:`Cancelled` once :meth:`Runner.cancel` was called, which ends the worker with None.
Results, errors and warnings come back in the GUI thread; after :meth:`Runner.close` (the
viewer closed) none does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, create_worker
from napari.utils import progress as activity_progress
from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, Signal

__all__ = ["Cancelled", "Runner", "time_left"]


class Cancelled(Exception):
    """Raised from the progress callback once the job was cancelled."""


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (a queued signal)."""

    progressed = Signal(int, int)


def _cancellable(compute: Callable, job, progress: Callable[[int, int], None]):
    """The worker's task: ``compute(job, progress)``, or None when cancelled."""
    try:
        return compute(job, progress)
    except Cancelled:
        return None


def time_left(elapsed: float, done: int, total: int) -> str:
    """``"12 s left"`` from the pace so far (``""`` before the first step)."""
    if done <= 0 or total <= done:
        return ""
    seconds = elapsed / done * (total - done)
    return f"{seconds:.0f} s left" if seconds < 120 else f"{seconds / 60:.0f} min left"


class Runner:
    """Runs one job at a time in a worker thread, with progress and Cancel.

    Parameters
    ----------
    on_progress : callable
        ``on_progress(done, total, left)`` in the GUI thread; ``left`` is
        :func:`time_left`'s text.
    on_busy : callable
        ``on_busy(True)`` when a job starts, ``on_busy(False)`` when it has finished.
    on_error : callable
        ``on_error(busy_with, error)`` in the GUI thread when the job raised.
    activity : bool
        Also show a bar in napari's activity panel.
    """

    def __init__(self, *, on_progress: Callable[[int, int, str], None],
                 on_busy: Callable[[bool], None],
                 on_error: Callable[[str, BaseException], None], activity: bool = True):
        self._on_progress, self._on_busy, self._on_error = on_progress, on_busy, on_error
        self._activity = activity
        self._relay = _Relay()
        self._relay.progressed.connect(self._progressed)
        self._cancel = threading.Event()
        self._worker: FunctionWorker | None = None
        self._bar: Any = None
        self._started = 0.0
        self._returned = False
        self._closed = False  # the controls reported into are gone: report nothing more
        self.busy_with = ""  #: what the running job does ("" when idle)

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the job has finished (its results are in place)."""
        return self._worker is not None

    def start(self, compute: Callable, job, on_returned: Callable, *, busy_with: str,
              total: int) -> FunctionWorker:
        """Start ``compute(job, progress)`` in a worker thread.

        ``on_returned`` gets ``compute``'s result, or None when cancelled, in the GUI
        thread. Warnings raised in the worker become napari notifications.

        Raises
        ------
        RuntimeError
            If a job is already running (check :attr:`running` first).
        """
        if self._worker is not None:
            raise RuntimeError(f"{self.busy_with} is already running")
        self._cancel.clear()
        relay, cancel = self._relay, self._cancel

        def progress(done: int, total: int) -> None:
            relay.progressed.emit(done, total)
            if cancel.is_set():
                raise Cancelled

        def returned(result) -> None:
            self._returned = True  # a late progress report must not move the bar back
            if not self._closed:
                on_returned(result)

        worker = create_worker(  # connecting "errored" here stops the default re-raise
            _cancellable, compute, job, progress, _start_thread=False,
            _connect={"returned": returned,
                      "errored": lambda err: self._errored(busy_with, err),
                      "finished": self._finished,
                      "warned": lambda warning: show_warning(str(warning[0]))})
        self._worker, self.busy_with = worker, busy_with
        self._returned = False
        self._started = time.perf_counter()
        if self._activity:
            self._bar = activity_progress(total=max(1, total), desc=busy_with)
        self._on_busy(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report."""
        if self._worker is not None:
            self._cancel.set()

    def close(self) -> None:
        """Cancel the running job and call none of the callbacks again: the controls they
        report into are gone (the viewer closed). A result still coming back is dropped
        (a lazy run's store folder goes with its arrays)."""
        self._closed = True
        self.cancel()

    def _errored(self, busy_with: str, err: BaseException) -> None:
        if not self._closed:
            self._on_error(busy_with, err)

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called for the running job."""
        return self._cancel.is_set()

    def _progressed(self, done: int, total: int) -> None:
        if self._returned or self._worker is None or self._closed:
            return
        left = time_left(time.perf_counter() - self._started, done, total)
        self._on_progress(done, total, left)
        # last: updating napari's activity panel may process events (the job's end too)
        if self._bar is not None:  # napari's activity panel shows its own time left
            if self._bar.total != max(1, total):
                self._bar.total = max(1, total)
            step = min(done, total) - self._bar.n
            if step:
                self._bar.update(step)

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._worker, self.busy_with = None, ""
        if not self._closed:
            self._on_busy(False)
