"""How many threads llama.cpp gets when ``n_threads`` is not set.

llama.cpp's threads meet at a barrier after every operation of the graph. When another
program holds a core, the thread that waits for it stalls all the others (they spin), and a
decode can take many times longer than on one thread. So the default is every core on a
quiet machine and fewer when the load average says the cores are already busy
(benchmarks/bench_threads.py measures both cases).
"""

from __future__ import annotations

import os


def default_threads(cores: int, load: float | None) -> int:
    """Threads for llama.cpp: all ``cores`` unless other work already keeps some of them busy.

    ``load`` is the one-minute load average before the model runs (``None`` where unknown).
    A core counts as busy when a whole runnable process is waiting for it on average.
    """
    if load is None or cores <= 1:
        return max(1, cores)
    busy = int(load + 0.5)
    return max(1, min(cores, cores - busy + 1)) if busy >= cores else cores


def load_average() -> float | None:
    """The one-minute load average, or None where the system does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
