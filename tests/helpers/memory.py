"""What a real worker process holds in memory, read from ``/proc``.

``Memory.of(process)`` finds the process that serves requests (with one worker, the
``tracker-api`` process itself; with several, its first worker child). ``measure()`` resets the
kernel's peak counter (VmHWM), runs the load, and reports in MiB how far the resident set
rose at its peak and how much of that is still held afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


def _status(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _is_worker(pid: int) -> bool:
    """uvicorn starts each of several workers as a spawned process (not the resource
    tracker, which is a multiprocessing child too)."""
    return b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()


@dataclass
class Growth:
    """MiB above the resident set measured before the load."""

    peak: float = 0.0
    retained: float = 0.0


@dataclass
class Memory:
    pid: int
    baseline: int = 0
    growth: Growth = field(default_factory=Growth)

    @classmethod
    def of(cls, process: subprocess.Popen[bytes] | None) -> Memory:
        """The worker of a ``tracker-api`` process (itself with one worker)."""
        assert process is not None, "the process is not running"
        workers = [child for child in _children(process.pid) if _is_worker(child)]
        return cls(workers[0] if workers else process.pid)

    def rss(self) -> int:
        return _status(self.pid, "VmRSS")

    def retained(self) -> float:
        """MiB held now above the baseline."""
        self.growth.retained = (self.rss() - self.baseline) / MIB
        return self.growth.retained

    @contextmanager
    def measure(self) -> Iterator[Growth]:
        """Baseline, then the peak of what runs inside; call ``retained()`` afterwards."""
        # Writing 5 to clear_refs resets VmHWM to the current resident set (Linux >= 4.0).
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.baseline = self.rss()
        self.growth = Growth()
        yield self.growth
        self.growth.peak = (_status(self.pid, "VmHWM") - self.baseline) / MIB
        self.retained()
