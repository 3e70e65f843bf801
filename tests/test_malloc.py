"""glibc keeps a CPU model pass's freed memory: the setting takes, the opt-out holds, and the page faults go away."""

import platform
import subprocess
import sys

import pytest


pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")

# Allocates and frees a 64 MiB tensor 40 times after a first one (above glibc's largest default mmap threshold,
# 32 MiB, as a batch's logits can be) and prints the minor page faults those 40 took.
FAULTS = """
import resource, sys, torch
from hf_instructmining._malloc import keep_freed_memory
print(keep_freed_memory())
torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    torch.ones(16 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(env_value: str | None):
    env = {"PATH": "/usr/bin:/bin"} | ({"INSTRUCTMINING_CPU_MALLOC": env_value} if env_value is not None else {})
    done = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env)
    return done


def test_freed_memory_is_reused_instead_of_faulted_back_in():
    kept, default = _run(None), _run("0")
    assert kept.returncode == default.returncode == 0, kept.stderr + default.stderr
    kept_set, kept_faults = kept.stdout.split()
    default_set, default_faults = default.stdout.split()
    assert (kept_set, default_set) == ("True", "False")
    # The default maps the 64 MiB and faults it in on every allocation (655,400 faults here: 16,384 4 KiB pages each
    # time; fewer, larger ones where transparent huge pages are always on). Kept, the heap grows a few times while
    # aligned blocks do not yet fit the freed ones (114,688 faults here), then reuses them.
    assert int(kept_faults) * 3 < int(default_faults)


def test_a_bad_setting_is_refused_in_one_line():
    done = _run("yes")
    assert done.returncode != 0
    assert "`INSTRUCTMINING_CPU_MALLOC` must be `1` or `0` (or unset), got `yes`." in done.stderr
