"""The peak memory of a process and all its descendants, sampled in a background thread (Linux ``/proc``).

A run of ``benchmarks/reproduce.py`` is several processes: the main one, one per seed, and the student
workers forked from it, which share pages copy-on-write. Adding their resident sets would count a shared
page once per process, so the sum here is of each process's *proportional* set size (PSS, from
``/proc/PID/smaps_rollup``): a page shared by n processes counts 1/n in each, and the sum is the memory the
tree really holds. Sampling misses a peak shorter than the interval; at the 2 s default that is a peak no
training phase has.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

PROC = Path("/proc")


def _parent_pid(stat_text: str) -> int:
    # /proc/PID/stat is "pid (comm) state ppid ...", and comm may itself hold spaces and parentheses
    return int(stat_text.rsplit(")", 1)[1].split()[1])


def descendants(root: int, proc: Path = PROC) -> list[int]:
    """Every live process below ``root`` (children, their children, ...), found by scanning ``proc``."""
    return [pid for pid, _ in descendants_with_depth(root, proc)]


def descendants_with_depth(root: int, proc: Path = PROC) -> list[tuple[int, int]]:
    """``(pid, depth)`` of every live process below ``root``: its children at depth 1, theirs at 2, ..."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = _parent_pid((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [(pid, 1) for pid in children.get(root, [])]
    while todo:
        pid, depth = todo.pop()
        found.append((pid, depth))
        todo.extend((child, depth + 1) for child in children.get(pid, []))
    return found


def pss_bytes(pid: int, proc: Path = PROC) -> int:
    """The proportional set size of ``pid`` in bytes; 0 for a process that has ended."""
    try:
        text = (proc / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    return 0


def tree_pss(root: int, proc: Path = PROC) -> list[tuple[int, int, int]]:
    """``(pid, depth, PSS bytes)`` of ``root`` (depth 0) and of every process below it."""
    return [(pid, depth, pss_bytes(pid, proc)) for pid, depth in [(root, 0), *descendants_with_depth(root, proc)]]


def tree_pss_bytes(root: int, proc: Path = PROC) -> int:
    return sum(size for _, _, size in tree_pss(root, proc))


def by_depth(processes: list[tuple[int, int, int]]) -> dict[int, list[int]]:
    """``{depth: [PSS bytes of each process at that depth, largest first]}``: who held what at a peak."""
    table: dict[int, list[int]] = {}
    for _, depth, size in processes:
        table.setdefault(depth, []).append(size)
    return {depth: sorted(sizes, reverse=True) for depth, sizes in sorted(table.items())}


class TreeMemorySampler:
    """Samples ``tree_pss_bytes(root)`` every ``interval`` seconds and keeps the peak.

    ``reset()`` starts a new window (one per seed), ``peak`` is the largest sample of the window so far, and
    ``stop()`` ends the thread. ``available()`` is False where ``/proc`` has no ``smaps_rollup`` (not Linux,
    or a kernel before 4.14): the caller then reports memory as not measured."""

    def __init__(self, root: int | None = None, interval: float = 2.0, proc: Path = PROC):
        if interval <= 0:
            raise ValueError(f"interval: expected a positive number of seconds, got {interval!r}")
        self.root = os.getpid() if root is None else root
        self.interval = interval
        self.proc = proc
        self._lock = threading.Lock()
        self._peak = 0
        self._peak_processes: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def available(proc: Path = PROC) -> bool:
        return (proc / "self" / "smaps_rollup").is_file()

    def sample(self) -> int:
        processes = tree_pss(self.root, self.proc)
        value = sum(size for _, _, size in processes)
        with self._lock:
            if value > self._peak:
                self._peak, self._peak_processes = value, processes
        return value

    @property
    def peak_by_depth(self) -> dict[int, list[int]]:
        """The peak sample's processes by depth below the root (``by_depth``)."""
        with self._lock:
            return by_depth(self._peak_processes)

    @property
    def peak(self) -> int:
        self.sample()  # the present counts too, so a window shorter than the interval is not empty
        with self._lock:
            return self._peak

    def reset(self) -> None:
        with self._lock:
            self._peak, self._peak_processes = 0, []
        self.sample()

    def start(self) -> "TreeMemorySampler":
        if self._thread is None:
            self.reset()
            self._thread = threading.Thread(target=self._run, name="tree-memory-sampler", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.peak

    def __enter__(self) -> "TreeMemorySampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PhasePeaks:
    """The peak of ``root``'s tree in each named phase: ``with peaks.phase("teacher"): ...``, then ``peaks.peaks``
    is ``{phase: bytes}`` in the order the phases ran (a phase run twice keeps its larger peak).

    One sampler thread runs from ``start()`` to ``stop()`` (or the ``with`` block); each phase is a window of it.
    Where ``/proc`` cannot be read (``TreeMemorySampler.available()`` is False) phases run unmeasured and
    ``peaks`` stays empty."""

    def __init__(self, root: int | None = None, interval: float = 2.0, proc: Path = PROC):
        self.sampler = TreeMemorySampler(root, interval, proc) if TreeMemorySampler.available(proc) else None
        self.peaks: dict[str, int] = {}

    def start(self) -> "PhasePeaks":
        if self.sampler is not None:
            self.sampler.start()
        return self

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def __enter__(self) -> "PhasePeaks":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @contextmanager
    def phase(self, name: str):
        if self.sampler is None:
            yield
            return
        self.sampler.reset()
        try:
            yield
        finally:
            self.peaks[name] = max(self.peaks.get(name, 0), self.sampler.peak)
