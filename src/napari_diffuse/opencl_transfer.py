"""Host-device copies for the OpenCL engine: direct, or through pinned staging buffers.

A pageable copy runs at a fraction of the bus speed on a device with its own memory (the
driver copies through its own staging area, on one thread). :class:`Staging` instead
keeps page-locked (pinned) buffers mapped for its lifetime: while the device copies one
chunk, host threads copy the next one into (or out of) another. Each :class:`Transfers`
owns one command queue, so uploads, downloads and kernels can overlap on separate queues
(the stack pipeline of :meth:`napari_diffuse.opencl_engine.Engine.solve_planes`).
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import numpy as np
import pyopencl as cl

__all__ = ["Staging", "Transfers"]


class Staging:
    """Pinned host buffers and a thread pool to fill and drain them."""

    CHUNK = 32 << 20
    BUFFERS = 3

    def __init__(self, context, queue):
        self.queue = queue
        self.chunk = chunk = self.CHUNK
        self.buffers = [cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR,
                                  chunk) for _ in range(self.BUFFERS)]
        # pinned host views of the buffers, mapped for the object's lifetime
        self.views = [cl.enqueue_map_buffer(queue, b, cl.map_flags.READ | cl.map_flags.WRITE, 0,
                                            (chunk,), np.uint8)[0] for b in self.buffers]
        workers = min(8, os.cpu_count() or 1)
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, "napari-diffuse-staging")
        self.workers = workers

    def _copy(self, dst: np.ndarray, src: np.ndarray) -> None:
        """``dst[:] = src`` for 1-D byte arrays, on several threads."""
        if src.size < (1 << 20) or self.workers == 1:
            np.copyto(dst, src)
            return
        bounds = np.linspace(0, src.size, self.workers + 1).astype(int)
        list(self.pool.map(lambda a, b: np.copyto(dst[a:b], src[a:b]), bounds[:-1], bounds[1:]))

    def upload(self, buffer, host: np.ndarray, offset: int = 0) -> None:
        """Enqueue ``host``'s bytes into ``buffer`` at ``offset``; returns once the last
        chunk is enqueued (its copy may still run: wait on the queue)."""
        data = host.reshape(-1).view(np.uint8)
        n = self.BUFFERS
        pending: list = [None] * n
        for i, start in enumerate(range(0, data.size, self.chunk)):
            part = data[start:start + self.chunk]
            if pending[i % n] is not None:
                pending[i % n].wait()
            stage = self.views[i % n][:part.size]
            self._copy(stage, part)
            pending[i % n] = cl.enqueue_copy(self.queue, buffer, stage,
                                             dst_offset=offset + start, is_blocking=False)

    def download(self, host: np.ndarray, buffer, wait_for=None) -> None:
        """Copy ``buffer`` into ``host`` (after ``wait_for``); returns when ``host`` holds it."""
        data = host.reshape(-1).view(np.uint8)
        starts = list(range(0, data.size, self.chunk))
        n = self.BUFFERS

        def fetch(i: int):
            size = min(self.chunk, data.size - starts[i])
            return cl.enqueue_copy(self.queue, self.views[i % n][:size], buffer,
                                   src_offset=starts[i], is_blocking=False,
                                   wait_for=wait_for if i < n else None)

        pending = [fetch(i) for i in range(min(n, len(starts)))]
        for i, start in enumerate(starts):
            pending[i % n].wait()
            part = data[start:start + self.chunk]
            self._copy(part, self.views[i % n][:part.size])
            if i + n < len(starts):
                pending[i % n] = fetch(i + n)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


class Transfers:
    """Uploads and downloads on one queue, staged where the device has its own memory.

    ``record(kind, event_or_seconds)``, if given, receives each copy's timing: a profiled
    event for a direct copy, host-side seconds for a staged one (several commands).
    """

    def __init__(self, context, queue, staged: bool):
        self.queue = queue
        self.staging = Staging(context, queue) if staged else None

    def upload(self, buffer, host: np.ndarray, record=None) -> cl.Event:
        """Start copying ``host`` into ``buffer``; return an event that completes with it.
        ``host`` must stay alive and unchanged until then."""
        if self.staging is None:
            event = cl.enqueue_copy(self.queue, buffer, host, is_blocking=False)
            if record is not None:
                record("upload", event)
            return event
        start = time.perf_counter()
        self.staging.upload(buffer, host)
        event = cl.enqueue_marker(self.queue)
        if record is not None:
            event.wait()  # time the copy alone
            record("upload", time.perf_counter() - start)
        return event

    def download(self, host: np.ndarray, buffer, wait_for=None, record=None) -> None:
        """Copy ``buffer`` into ``host``, after the events ``wait_for``; blocking."""
        if self.staging is None:
            event = cl.enqueue_copy(self.queue, host, buffer, wait_for=wait_for)
            if record is not None:
                record("download", event)
            return
        if record is not None and wait_for:
            cl.wait_for_events(wait_for)  # time the copy alone
        start = time.perf_counter()
        self.staging.download(host, buffer, wait_for=wait_for)
        if record is not None:
            record("download", time.perf_counter() - start)

    def close(self) -> None:
        if self.staging is not None:
            self.staging.close()
