"""A stack's batches of planes kept moving to and from the OpenCL device.

:meth:`napari_diffuse.opencl_engine.Engine.solve_planes` computes a stack batch after batch on
the engine's queue. :class:`StackPipeline` moves the batches around that compute: batch ``g``
lives in device slot ``g % SLOTS``; while it computes, the next ``AHEAD`` batches upload and
the previous one downloads, each direction on its own queue and host thread. A slot is refilled
only once its last batch has been downloaded. Where a slot holds its planes back to back
(``packed``), a batch crosses the bus as one copy each way instead of one per plane.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence

import numpy as np
import pyopencl as cl

from .opencl_transfer import Transfers

__all__ = ["SLOTS", "StackPipeline"]

#: Device slots of a stack's batches: one computing, one uploading, one downloading.
SLOTS = 3
#: Batches whose uploads are started ahead of the one computing: the second of them waits
#: for the slot being downloaded.
AHEAD = SLOTS - 1


class StackPipeline:
    """Uploads ahead of and downloads behind the compute of a stack's batches.

    Parameters
    ----------
    planes : ndarray, shape (N, H, W, C)
        The stack.
    out : ndarray, shape (N, H, W, C)
        Where each plane's result is downloaded.
    groups : sequence of range
        The planes of each batch, in order.
    views : sequence of sequences of pyopencl.Buffer
        Per slot, the device region of each plane of a batch: what crosses the bus.
    transfers : (Transfers, Transfers)
        The uploads' and the downloads' transfers, each on its own queue.
    record : callable, optional
        Receives each copy's timing (:class:`~napari_diffuse.opencl_transfer.Transfers`).
    packed : sequence of pyopencl.Buffer, optional
        Per slot, one buffer holding a batch's planes back to back (the views without gaps
        between them): each batch then moves as one copy each way. On an H100, through
        ``diffuse()``, 32x2048x2048 stacks of *bloom* took 1.7-1.8 ms a plane against
        3.0-3.2 with a copy per plane (float32; uint16 1.3-1.5 against 2.4-2.7), *denoise:
        medium* 9.2-9.4 against 9.6 (``benchmarks/results/h100_packed_transfers_2026-12-07.log``).
    """

    def __init__(self, planes: np.ndarray, out: np.ndarray, groups: Sequence[range],
                 views: Sequence[Sequence], transfers: tuple[Transfers, Transfers],
                 record: Callable | None = None, packed: Sequence | None = None):
        self.planes, self.out, self.groups, self.views = planes, out, groups, views
        self.packed = packed
        self.up, self.down = transfers
        self.record = record
        self._uploads: dict[int, concurrent.futures.Future] = {}
        self._downloads: dict[int, concurrent.futures.Future] = {}
        self._host: dict[int, np.ndarray] = {}  # planes as uploaded, until downloaded
        self._upload_thread = concurrent.futures.ThreadPoolExecutor(1, "napari-diffuse-upload")
        self._download_thread = concurrent.futures.ThreadPoolExecutor(
            1, "napari-diffuse-download")

    def _prefetch(self, g: int) -> None:
        if g < len(self.groups) and g not in self._uploads:
            self._uploads[g] = self._upload_thread.submit(self._upload, g)

    def _upload(self, g: int) -> list[cl.Event]:
        before = self._downloads.get(g - SLOTS)
        if before is not None:
            before.result()  # the slot is free once its last batch is downloaded
        events = []
        for planes, buffer in self._copies(g):
            host = np.ascontiguousarray(self.planes[planes.start:planes.stop],
                                        dtype=self.out.dtype)
            self._host.update(zip(planes, host, strict=True))
            events.append(self.up.upload(buffer, host, record=self.record))
        return events

    def _copies(self, g: int) -> list[tuple[range, object]]:
        """Batch ``g``'s copies, each a range of planes and the device buffer they fill:
        the whole batch where the slot is ``packed``, else one per plane."""
        group, slot = self.groups[g], g % SLOTS
        if self.packed is not None:
            return [(group, self.packed[slot])]
        # the last batch may hold fewer planes than the slot has views
        return [(range(p, p + 1), view)
                for p, view in zip(group, self.views[slot], strict=False)]

    def uploaded(self, g: int) -> list[cl.Event]:
        """The events that complete batch ``g``'s uploads, once they are all enqueued; the
        uploads of the :data:`AHEAD` batches after it start (in order) on the upload
        thread."""
        for ahead in range(g, g + AHEAD + 1):
            self._prefetch(ahead)
        return self._uploads[g].result()

    def host_plane(self, p: int) -> np.ndarray:
        """Plane ``p`` as it was uploaded (contiguous, in ``out``'s dtype), kept until the
        plane has been downloaded."""
        return self._host[p]

    def download(self, g: int, done: cl.Event) -> None:
        """Download batch ``g`` into ``out`` once ``done`` completes, on the download
        thread."""
        self._downloads[g] = self._download_thread.submit(self._download, g, done)

    def _download(self, g: int, done: cl.Event) -> None:
        for planes, buffer in self._copies(g):
            self.down.download(self.out[planes.start:planes.stop], buffer, wait_for=[done],
                               record=self.record)
            for p in planes:
                self._host.pop(p, None)

    def finish(self) -> None:
        """Wait for every download; raise the first failure."""
        for g in range(len(self.groups)):
            self._downloads[g].result()

    def close(self) -> None:
        """Stop both threads, dropping the transfers not yet started."""
        self._upload_thread.shutdown(wait=True, cancel_futures=True)
        self._download_thread.shutdown(wait=True, cancel_futures=True)
