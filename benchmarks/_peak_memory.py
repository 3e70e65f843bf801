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
