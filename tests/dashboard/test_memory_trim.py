"""The dashboard hands freed heap memory back to the system (issue: 1.36 GB kept after an upload)."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import pytest

from dashboard.memory import release_freed_memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not ctypes.util.find_library("c") or not Path("/proc/self/status").exists(),
                    reason="needs glibc and /proc")
def test_freed_heap_pages_go_back_to_the_system():
    # 200 MB of 40 kB buffers (glibc's heap, under its mmap threshold), each followed by a small
    # one that stays: freeing the big ones leaves holes that free() alone never returns.
    blocks, pins = [], []
    for _ in range(5_000):
        blocks.append(bytearray(b"x" * 40_000))
        pins.append(bytearray(b"p" * 600))
    del blocks
    kept = _rss_mib()
    assert release_freed_memory()
    released = kept - _rss_mib()
    assert released > 100, f"only {released:.0f} MiB of about 190 MiB freed went back"
    assert len(pins) == 5_000
