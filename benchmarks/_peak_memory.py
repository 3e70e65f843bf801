"""Peak resident memory of this process, for the memory benchmarks' child processes.

`resource.getrusage(RUSAGE_SELF).ru_maxrss` is not it in a child started by fork + exec (`subprocess`, or
`multiprocessing`'s spawn): Linux carries the high-water mark across `exec`, so the child reports at least the
parent's resident memory at the fork. `VmHWM` in `/proc/self/status` belongs to the new address space only.
"""

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's own peak resident set size in bytes (`VmHWM`; `ru_maxrss` where `/proc` is missing)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class AnonymousPeak:
    """The peak of this process's anonymous resident memory (`RssAnon`), sampled every `interval` seconds.

    `VmHWM` also counts the pages of memory-mapped files that were read (a `datasets` Arrow file is mapped, not
    loaded): they grow with the rows read although the kernel can drop them at any time, as page cache. `RssAnon` is
    the memory the process holds itself. Linux only (`peak` stays 0 elsewhere).

    Example: `with AnonymousPeak() as anon: work()`, then `anon.peak` in bytes.
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak = 0

    def _read(self) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024  # kB
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._read())

    def __enter__(self) -> "AnonymousPeak":
        import threading

        if not Path("/proc/self/status").exists():
            return self
        self.peak = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._read())
