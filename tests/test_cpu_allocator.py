"""modeling_mckd.cpu_allocator: glibc keeps freed memory for reuse, and the runs ask for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modeling_mckd import cpu_allocator
from modeling_mckd.arguments import DataArguments, ModelArguments, RunArguments

REPO = Path(__file__).resolve().parents[1]

# Allocate and free a 64 MiB tensor `rounds` times and print the minor page faults it cost. By
# default glibc mmaps each one afresh (one fault per 4 KiB page, every round); tuned, the freed
# memory stays in the heap and later rounds fault nothing.
FAULT_PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    from modeling_mckd.cpu_allocator import tune_cpu_allocator
    if sys.argv[1] == "tuned":
        assert tune_cpu_allocator()
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 << 20); del x
    before = faults()
    for _ in range(int(sys.argv[2])):
        x = torch.ones(16 << 20); del x
    print(faults() - before)
    """
)
PAGES_PER_ROUND = (64 << 20) // 4096


def _faults(mode: str, rounds: int) -> int:
    result = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode, str(rounds)], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(cpu_allocator._glibc() is None, reason="the tuning applies to glibc only")
def test_tuned_allocator_reuses_freed_memory_instead_of_faulting_it_in_again():
    rounds = 12
    default = _faults("default", rounds)
    if default < rounds * PAGES_PER_ROUND // 2:
        pytest.skip(f"this kernel faults little by default ({default} faults), e.g. transparent huge pages")
    tuned = _faults("tuned", rounds)
    # at most the heap's one-time growth, against a fresh set of pages every round by default
    assert tuned <= 1.5 * PAGES_PER_ROUND < default


class _FakeLibc:
    def __init__(self, result: int = 1):
        self.calls, self.result = [], result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_sets_glibc_mmap_then_trim_threshold(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(cpu_allocator, "_glibc", lambda: libc)
    assert cpu_allocator.tune_cpu_allocator(mmap_threshold=1 << 20, trim_threshold=2 << 20) is True
    # M_MMAP_THRESHOLD is -3 and M_TRIM_THRESHOLD -1 in glibc's <malloc.h>
    assert libc.calls == [(-3, 1 << 20), (-1, 2 << 20)]


def test_reports_false_when_glibc_refuses_or_is_absent(monkeypatch, caplog):
    monkeypatch.setattr(cpu_allocator, "_glibc", lambda: _FakeLibc(result=0))
    assert cpu_allocator.tune_cpu_allocator() is False
    assert "refused" in caplog.text
    monkeypatch.setattr(cpu_allocator, "_glibc", lambda: None)
    assert cpu_allocator.tune_cpu_allocator() is False


@pytest.mark.parametrize("field, value", [("mmap_threshold", 0), ("trim_threshold", -5), ("mmap_threshold", 2**31),
                                          ("trim_threshold", 1.5), ("mmap_threshold", True)])
def test_rejects_impossible_thresholds(monkeypatch, field, value):
    libc = _FakeLibc()
    monkeypatch.setattr(cpu_allocator, "_glibc", lambda: libc)
    with pytest.raises(ValueError, match=field):
        cpu_allocator.tune_cpu_allocator(**{field: value})
    assert libc.calls == []  # nothing half-applied


class _Stop(Exception):
    pass


@pytest.mark.parametrize("tune", [True, False])
def test_runs_tune_the_allocator_unless_told_not_to(monkeypatch, tmp_path, tune):
    from modeling_mckd import runner

    calls = []
    monkeypatch.setattr(runner, "tune_cpu_allocator", lambda: calls.append(True))

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(runner, "load_run_dataset", stop)  # the first step after the tuning
    run_args = RunArguments(output_dir=str(tmp_path), tune_cpu_allocator=tune)
    with pytest.raises(_Stop):
        runner.run_teacher(ModelArguments(), DataArguments(), run_args)
    assert calls == ([True] if tune else [])


# Under the tuned allocator, allocate 160 MiB in 1 MiB torch tensors (heap memory, below the raised mmap
# threshold), keep a small one allocated after them so that the heap's top cannot shrink, free the rest,
# and print the resident MiB after the free and after release_free_memory.
RELEASE_PROBE = textwrap.dedent(
    """
    import os, torch
    from modeling_mckd.cpu_allocator import release_free_memory, tune_cpu_allocator
    assert tune_cpu_allocator()
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    chunks = [torch.ones(1 << 18) for _ in range(160)]
    pin = torch.ones(1 << 10)
    del chunks
    freed = rss()
    print(freed, release_free_memory(), rss())
    """
)


@pytest.mark.skipif(cpu_allocator._glibc() is None or not Path("/proc/self/statm").is_file(),
                    reason="malloc_trim is glibc's; resident size is read from /proc")
def test_release_free_memory_gives_the_freed_heap_back_to_the_kernel():
    result = subprocess.run([sys.executable, "-c", RELEASE_PROBE], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=True)
    freed, released, after = result.stdout.split()
    assert released == "True"
    # the tuned allocator kept the 160 MiB after the free; malloc_trim returns nearly all of it
    assert float(freed) - float(after) > 120


def test_release_free_memory_without_glibc_only_collects(monkeypatch):
    monkeypatch.setattr(cpu_allocator, "_glibc", lambda: None)
    assert cpu_allocator.release_free_memory() is False
