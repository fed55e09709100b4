"""Shared by the numba CPU kernels: the threading layer, and running a kernel serially or in parallel.

Importing this module imports numba, so only the kernel modules import it, and only the dispatcher
imports those, once it has chosen the numba backend. Every kernel comes in two compiled entry
points, one serial and one with ``prange`` loops; :func:`launch` picks one per call.

Unless ``NUMBA_THREADING_LAYER`` is set, this module selects numba's ``workqueue`` threading layer:
its idle workers sleep, where an OpenMP layer's would spin against torch's own OpenMP pool (a second
libgomp; on 2 shared cores that made the training step 2-3x slower). Parallel launches are
serialised by a lock, which makes them safe from several Python threads (the ``workqueue`` layer
aborts on concurrent use); serial ones need none (``nogil``, no shared state).
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba
import torch

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba.config defines its settings at run time (from the environment), so its stubs lack them
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]  # takes effect unless numba already ran parallel code

#: inputs with fewer entries run in the calling thread (see :func:`launch`). Measured on the 2-core
#: development CPU with torch at 2 threads (benchmarks/train_step.py, 2026-12-02): numba's parallel
#: launch made the whole training step slower at every size it ran there (1.67x -> 1.83x against the
#: baseline at batch 8 x 128 once serial, 1.61x -> 1.78x at 32 x 128; RMSNorm forward+backward on
#: [4096, 1024] 9.4 ms parallel, 2.8 ms serial) and first pays off around 2^24 entries (AbsTopK
#: forward+backward on [16384, 1024]: 57 ms parallel, 76 ms serial).
PARALLEL_MIN_NUMEL = 1 << 23
_LOCK = threading.Lock()


def launch(serial: Callable, parallel: Callable, numel: int, *args) -> None:
    """Run ``parallel(*args)`` on up to ``torch.get_num_threads()`` threads, or ``serial(*args)`` here.

    Small inputs (fewer than :data:`PARALLEL_MIN_NUMEL` entries) and one thread run serially: a
    parallel launch wakes numba's worker threads, which costs more than it saves on small inputs.
    """
    n_threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # set at run time
    if n_threads <= 1 or numel < PARALLEL_MIN_NUMEL:
        serial(*args)
        return
    with _LOCK:
        numba.set_num_threads(n_threads)
        parallel(*args)


@functools.cache
def thread_pool(n_threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n_threads`` Python threads for independent serial kernels (``nogil``).

    Its jobs must run numba (or numpy) code only: a torch op on a worker thread would start a second
    OpenMP team there, which spins against torch's own on few cores.
    """
    return ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="sparselens-kernels")
