"""How an OpenCL device runs the engine's host side: copies beside kernels, and deep queues.

Two measurements, each printing a table:

- ``overlap``: a long kernel alone, 512 MB copies alone (through
  :class:`~napari_diffuse.opencl_transfer.Staging`, and directly from one pinned buffer),
  then kernel and copies at once, each on its own queue: wall medians and the profiled
  device timeline of the last run. Where copies overlap the kernel, "kernel+up" takes about
  as long as the longer of the two.
- ``depth``: 3000 short kernels enqueued back to back: how long each ``enqueue`` call takes
  (a driver that blocks there on a deep queue holds the GIL all the while, since pyopencl
  does not release it around ``clEnqueueNDRangeKernel``), and the longest gap of a Python
  thread counting meanwhile; then the same with the host waiting for launch ``i - W``
  before launch ``i``.

Results on an H100: ``benchmarks/results/h100_queues_2026-12-07.log``.

Example::

    python benchmarks/opencl_queues.py   # both; --only depth; --smoke: small sizes (PoCL)
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import pyopencl as cl

from napari_diffuse import opencl_solver
from napari_diffuse.opencl_transfer import Staging

MB = 1 << 20
BUSY = """
kernel void busy(global float4 *a, int loops) {
  size_t i = get_global_id(0); float4 v = a[i];
  for (int k = 0; k < loops; k++) v = v * 1.0001f + 0.5f;
  a[i] = v;
}
kernel void scale(global const float4 *a, global float4 *b) {
  size_t i = get_global_id(0); b[i] = a[i] * 1.0001f;
}
"""


def overlap(context, device, smoke: bool) -> None:
    """Kernel and copies alone and at once, each on its own profiled queue."""
    profiled = cl.command_queue_properties.PROFILING_ENABLE
    compute, up, down = (cl.CommandQueue(context, device, properties=profiled)
                         for _ in range(3))
    size = (8 if smoke else 512) * MB
    program = cl.Program(context, BUSY).build()
    busy = program.busy
    work = cl.Buffer(context, cl.mem_flags.READ_WRITE, (8 if smoke else 256) * MB)
    loops = np.int32(10 if smoke else 4000)
    device_up = cl.Buffer(context, cl.mem_flags.READ_WRITE, size)
    device_down = cl.Buffer(context, cl.mem_flags.READ_WRITE, size)
    host = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    out = np.ones(size, np.uint8)
    pinned = []
    for queue in (up, down):  # one mapped ALLOC_HOST_PTR buffer per direction
        buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR, size)
        pinned.append((buffer, cl.enqueue_map_buffer(
            queue, buffer, cl.map_flags.READ | cl.map_flags.WRITE, 0, (size,), np.uint8)[0]))
    pinned[0][1][:] = host
    staging_up, staging_down = Staging(context, up), Staging(context, down)

    def kernel():
        busy.set_args(work, loops)
        return cl.enqueue_nd_range_kernel(compute, busy, (work.size // 16,), None)

    def up_staged():
        staging_up.upload(device_up, host)
        return cl.enqueue_marker(up)

    def down_staged():
        staging_down.download(out, device_down)
        return cl.enqueue_marker(down)

    def up_pinned():
        return cl.enqueue_copy(up, device_up, pinned[0][1], is_blocking=False)

    def down_pinned():
        return cl.enqueue_copy(down, pinned[1][1], device_down, is_blocking=False)

    cases = {
        "kernel": [kernel],
        "up staged": [up_staged],
        "down staged": [down_staged],
        "up pinned": [up_pinned],
        "down pinned": [down_pinned],
        "up+down pinned": [up_pinned, down_pinned],
        "kernel+up pinned": [kernel, up_pinned],
        "kernel+down pinned": [kernel, down_pinned],
        "kernel+up staged": [kernel, up_staged],
        "kernel+down staged": [kernel, down_staged],
        "kernel+up+down pinned": [kernel, up_pinned, down_pinned],
        # another host thread blocked on the kernel's event meanwhile
        "kernel+up staged, waiter": [kernel, up_staged],
    }

    def run(parts, waiter: bool) -> tuple[float, list]:
        for queue in (compute, up, down):
            queue.finish()
        start = time.perf_counter()
        events, waiting = [], None
        for part in parts:
            events.append((part.__name__, part()))
            if part is kernel:
                compute.flush()
                if waiter:
                    waiting = threading.Thread(target=events[-1][1].wait)
                    waiting.start()
        for queue in (compute, up, down):
            queue.finish()
        if waiting is not None:
            waiting.join()
        return time.perf_counter() - start, events

    print(f"\noverlap: {device.name.strip()}; {size // MB} MB per copy; kernel over "
          f"{work.size // MB} MB (wall median of {3 if smoke else 5}, device ms of the last run)")
    try:
        for name, parts in cases.items():
            walls, events = [], []
            for _ in range(3 if smoke else 5):
                wall, events = run(parts, name.endswith("waiter"))
                walls.append(wall)
            timed = [(n, e) for n, e in events if e.command_type != cl.command_type.MARKER]
            origin = min((e.profile.start for _, e in timed), default=0)
            line = "; ".join(f"{n} {(e.profile.start - origin) * 1e-6:.1f}.."
                             f"{(e.profile.end - origin) * 1e-6:.1f}" for n, e in timed)
            print(f"  {name:24s} wall {statistics.median(walls) * 1e3:7.1f} ms  "
                  f"(min {min(walls) * 1e3:.1f})  device: {line}", flush=True)
    finally:
        staging_up.close()
        staging_down.close()


def depth(context, device, smoke: bool, windows: tuple[int | None, ...]) -> None:
    """Per-enqueue times and a counting thread's longest gap, without and with a window."""
    queue = cl.CommandQueue(context, device)
    launches = 200 if smoke else 3000
    size = (1 if smoke else 64) * MB
    kernel = cl.Program(context, BUSY).build().scale
    buffers = [cl.Buffer(context, cl.mem_flags.READ_WRITE, size) for _ in range(2)]
    kernel.set_args(*buffers)  # the kernel does not keep them alive: this list does
    items = (size // 16,)
    start = time.perf_counter()
    for _ in range(200):
        cl.enqueue_nd_range_kernel(queue, kernel, items, None)
    queue.finish()
    each = (time.perf_counter() - start) / 200
    print(f"\ndepth: {device.name.strip()}; {launches} launches of {each * 1e6:.1f} us each "
          f"({size // MB} MB read and written)")
    for window in windows:
        gaps, stop = [], threading.Event()

        def count(gaps=gaps, stop=stop):
            last = time.perf_counter()
            while not stop.is_set():
                sum(range(30))
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        counter = threading.Thread(target=count)
        counter.start()
        time.sleep(0.02)
        durations, events = [], []
        start = time.perf_counter()
        for i in range(launches):
            if window is not None and i >= window:
                events[i - window].wait()
            before = time.perf_counter()
            events.append(cl.enqueue_nd_range_kernel(queue, kernel, items, None))
            durations.append(time.perf_counter() - before)
        enqueued = time.perf_counter() - start
        queue.finish()
        wall = time.perf_counter() - start
        stop.set()
        counter.join()
        durations, gaps = np.array(durations), np.array(gaps)
        slow = np.flatnonzero(durations > 0.5e-3)
        print(f"  window {str(window):>5}: enqueue loop {enqueued * 1e3:6.1f} ms, wall "
              f"{wall * 1e3:6.1f} ms; enqueue median {np.median(durations) * 1e6:5.1f} us, max "
              f"{durations.max() * 1e3:5.2f} ms, {slow.size} over 0.5 ms (first at launch "
              f"{slow[0] if slow.size else '-'}); counting thread: longest gap "
              f"{gaps.max() * 1e3:5.2f} ms, {(gaps > 5e-3).sum()} over 5 ms", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["overlap", "depth"],
                        help="run one measurement (default: both)")
    parser.add_argument("--smoke", action="store_true", help="small sizes, for PoCL")
    args = parser.parse_args(argv)
    what = [args.only] if args.only else ["overlap", "depth"]
    device = opencl_solver.engine().device
    context = cl.Context([device])
    if "overlap" in what:
        overlap(context, device, args.smoke)
    if "depth" in what:
        depth(context, device, args.smoke, (None, 128, 512, 1024, None))


if __name__ == "__main__":
    main()
