"""Keep freed memory in the process on glibc, so that a CPU model pass stops paying the kernel for every batch.

glibc's `malloc` hands any block above its mmap threshold (128 KiB, rising to at most 32 MiB as blocks are freed)
back to the kernel when it is freed, and trims the top of its heap past twice that. A model forward allocates and
frees activations of a few MiB per operator, and the next batch takes the same memory back one zeroed 4 KiB page
fault at a time: the offline rule's scoring took 24 million page faults over 1,000 rows, and ran 1.17x faster with
the memory kept (1.06x with the larger batches a bf16 CPU now gets; benchmarks/RESULTS.md). Raising the thresholds once keeps that memory in the heap for reuse, as the
allocators PyTorch recommends for CPU inference (jemalloc, tcmalloc) do, but without preloading a library.

The setting is process-wide and only changes when memory goes back to the kernel: it never changes a value. A heap
that grew for a large batch stays that large until the process ends; `INSTRUCTMINING_CPU_MALLOC=0` leaves glibc's
defaults alone.
"""

import ctypes
import ctypes.util
import logging
import platform

from ._env import env_switch


logger = logging.getLogger(__name__)

MALLOC_ENV = "INSTRUCTMINING_CPU_MALLOC"
# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
# Blocks up to this size come from the heap; larger ones (none in a model pass over a 1,024-token batch) are mapped.
_MMAP_THRESHOLD = 256 * 2**20
# Free memory at the heap's top that is kept rather than trimmed, and what each growth of the heap adds on top.
_TRIM_THRESHOLD = 1024 * 2**20
_TOP_PAD = 64 * 2**20

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process (see the module docstring); returns whether they are
    set. A no-op returning `False` off glibc (macOS, Windows, musl) or with `INSTRUCTMINING_CPU_MALLOC=0`.

    Example:

    ```py
    >>> from hf_instructmining._malloc import keep_freed_memory
    >>> isinstance(keep_freed_memory(), bool)
    True
    ```
    """
    global _done
    if _done or env_switch(MALLOC_ENV) is False:
        return _done
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    settings = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD))
    _done = all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
    logger.debug("glibc malloc keeps freed memory for reuse: %s", _done)
    return _done
