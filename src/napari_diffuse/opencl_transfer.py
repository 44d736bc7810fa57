"""Host-device copies for the OpenCL engine: direct, or through pinned staging buffers.

A pageable copy runs at a fraction of the bus speed on a device with its own memory (the
driver copies through its own staging area, on one thread). :class:`Staging` instead
keeps page-locked (pinned) slots mapped for its lifetime, and moves each chunk as one task
on a pool of host threads: into its slot and on to the device (upload), or from the device
into its slot and out (download). Several chunks are copied on the host while others cross
the bus, with no barrier between chunks. Each :class:`Transfers` owns one command queue, so
uploads, downloads and kernels can overlap on separate queues (the stack pipeline of
:meth:`napari_diffuse.opencl_engine.Engine.solve_planes`).
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import numpy as np
import pyopencl as cl

__all__ = ["Staging", "Transfers"]


class Staging:
    """Pinned host slots and a thread pool that moves chunks through them.

    On an H100 machine (PCIe 5, 16 cores; ``benchmarks/results/h100_transfers.log``), 384 MB
    took 17.5 ms up and 18.3 ms down in 8 MB chunks, one task each, against 25.3 and
    26.8 ms for 32 MB chunks each copied by all threads in turn (the bus alone: 7.2 ms,
    host copies alone: 13 ms).
    """

    CHUNK = 8 << 20  #: bytes per slot: the largest chunk
    MIN_CHUNK = 1 << 20  #: smaller transfers move in one chunk, on the calling thread
    SLOTS = 16

    def __init__(self, context, queue):
        self.queue = queue
        self.chunk = chunk = self.CHUNK
        self.buffers = [cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR,
                                  chunk) for _ in range(self.SLOTS)]
        # pinned host views of the buffers, mapped for the object's lifetime
        self.views = [cl.enqueue_map_buffer(queue, b, cl.map_flags.READ | cl.map_flags.WRITE, 0,
                                            (chunk,), np.uint8)[0] for b in self.buffers]
        self.workers = min(8, os.cpu_count() or 1)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, "napari-diffuse-staging")
        # each slot's last upload copy, which may still be reading it when upload returns,
        # and the slot the next upload starts at (the one its last chunks left longest ago)
        self.pending: list[cl.Event | None] = [None] * self.SLOTS
        self.next_slot = 0

    def _starts(self, size: int) -> range:
        """Where the chunks of a ``size``-byte transfer start: spread over the workers, at
        least :attr:`MIN_CHUNK` and at most a slot each."""
        chunk = min(self.chunk, max(self.MIN_CHUNK, -(-size // self.workers)))
        return range(0, size, chunk)

    def _run(self, task, count: int) -> list:
        """``task(i, earlier)`` for chunks ``0 .. count - 1``, ``earlier`` being the future
        of the chunk that used the same slot last in this call (None for the first ones):
        on the pool, or on this thread for a single chunk (no hand-over). Waits for every
        task, then raises the first error or returns their results."""
        if count == 1:
            return [task(0, None)]
        futures: list[concurrent.futures.Future] = []
        for i in range(count):
            earlier = futures[i - self.SLOTS] if i >= self.SLOTS else None
            futures.append(self.pool.submit(task, i, earlier))
        concurrent.futures.wait(futures)
        return [future.result() for future in futures]

    def upload(self, buffer, host: np.ndarray, offset: int = 0) -> None:
        """Enqueue ``host``'s bytes into ``buffer`` at ``offset``; returns once the last
        chunk is enqueued (its copy may still run: wait on the queue)."""
        data = host.reshape(-1).view(np.uint8)
        starts = self._starts(data.size)
        first = self.next_slot

        def chunk(i: int, earlier):
            slot = (first + i) % self.SLOTS
            last = earlier.result() if earlier is not None else self.pending[slot]
            if last is not None:
                last.wait()  # the slot's last chunk, of this call or an earlier one, has left it
            part = data[starts[i]:starts[i] + starts.step]
            stage = self.views[slot][:part.size]
            np.copyto(stage, part)
            return cl.enqueue_copy(self.queue, buffer, stage, dst_offset=offset + starts[i],
                                   is_blocking=False)

        events = self._run(chunk, len(starts))
        for i in range(max(0, len(events) - self.SLOTS), len(events)):
            self.pending[(first + i) % self.SLOTS] = events[i]
        self.next_slot = (first + len(events)) % self.SLOTS

    def download(self, host: np.ndarray, buffer, wait_for=None) -> None:
        """Copy ``buffer`` into ``host`` after ``wait_for``; returns when ``host`` holds it.

        The calling thread waits for ``wait_for`` once, before the chunks: chunks that
        each waited for it in their blocking copies made a 64-plane stack stream 3-4 %
        slower on an H100 (``benchmarks/results/h100_download_wait_2026-12-07.log``).
        """
        data = host.reshape(-1).view(np.uint8)
        starts = self._starts(data.size)

        def chunk(i: int, earlier):
            if earlier is not None:
                earlier.result()  # the slot's last chunk has been copied out
            part = data[starts[i]:starts[i] + starts.step]
            stage = self.views[i % self.SLOTS][:part.size]
            cl.enqueue_copy(self.queue, stage, buffer, src_offset=starts[i], is_blocking=True)
            np.copyto(part, stage)

        if wait_for:
            cl.wait_for_events(wait_for)
        self._run(chunk, len(starts))

    def close(self) -> None:
        """Stop the host copy threads (copies under way finish on their own)."""
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
        if wait_for:
            cl.wait_for_events(wait_for)  # before the clock: time the copy alone
        start = time.perf_counter()
        self.staging.download(host, buffer)
        if record is not None:
            record("download", time.perf_counter() - start)

    def close(self) -> None:
        """Stop the staging slots' host copy threads, if any."""
        if self.staging is not None:
            self.staging.close()
