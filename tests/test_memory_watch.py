"""benchmarks/memory_watch.py: the process tree it finds, the PSS it reads, and a real child's memory seen."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def watch():
    spec = importlib.util.spec_from_file_location("memory_watch", REPO / "benchmarks" / "memory_watch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_proc(root: Path, parents: dict[int, int], pss_kib: dict[int, int]) -> Path:
    for pid, parent in parents.items():
        folder = root / str(pid)
        folder.mkdir(parents=True)
        # a command name with spaces and parentheses, as the kernel allows
        (folder / "stat").write_text(f"{pid} (odd ) (name) S {parent} 1 1 0 -1\n")
        if pid in pss_kib:
            (folder / "smaps_rollup").write_text(f"00400000-7fff [rollup]\nRss: {2 * pss_kib[pid]} kB\n"
                                                 f"Pss: {pss_kib[pid]} kB\nPss_Anon: 1 kB\n")
    (root / "self").mkdir()
    (root / "not-a-pid").mkdir()
    return root


def test_descendants_are_every_process_below_the_root(watch, tmp_path):
    # 10 -> 11 -> 13 -> 14, 10 -> 12; 20 is another tree
    parents = {10: 1, 11: 10, 12: 10, 13: 11, 14: 13, 20: 1, 21: 20}
    proc = _fake_proc(tmp_path, parents, {})
    assert sorted(watch.descendants(10, proc)) == [11, 12, 13, 14]
    assert sorted(watch.descendants(13, proc)) == [14]
    assert watch.descendants(14, proc) == []


def test_tree_pss_is_the_sum_over_the_tree_in_bytes(watch, tmp_path):
    proc = _fake_proc(tmp_path, {10: 1, 11: 10, 12: 11, 20: 1}, {10: 100, 11: 20, 12: 3, 20: 5000})
    assert watch.pss_bytes(11, proc) == 20 * 1024
    assert watch.pss_bytes(99, proc) == 0  # ended
    assert watch.tree_pss_bytes(10, proc) == (100 + 20 + 3) * 1024


def test_peak_is_kept_and_reset_starts_a_new_window(watch, tmp_path):
    proc = _fake_proc(tmp_path, {10: 1, 11: 10}, {10: 100, 11: 50})
    sampler = watch.TreeMemorySampler(root=10, interval=60.0, proc=proc)
    assert sampler.sample() == 150 * 1024
    (proc / "11" / "smaps_rollup").unlink()  # the child ended
    assert sampler.peak == 150 * 1024
    sampler.reset()
    assert sampler.peak == 100 * 1024
    with pytest.raises(ValueError, match="interval"):
        watch.TreeMemorySampler(interval=0)


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="needs Linux /proc/PID/smaps_rollup")
def test_a_real_childs_memory_is_seen(watch):
    size = 300 * 2**20
    code = f"import time; b = bytearray({size}); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    with watch.TreeMemorySampler(interval=0.1) as sampler:
        before = sampler.peak
        child = subprocess.Popen([sys.executable, "-c", code])
        child.wait(timeout=60)
        time.sleep(0.2)
        peak = sampler.peak
    assert child.returncode == 0
    assert peak - before >= 0.9 * size
    assert not sampler._thread  # stopped


def test_the_peak_is_broken_down_by_depth(watch, tmp_path):
    # 10 (the root) -> 11 -> 12, 13; 10 -> 14
    proc = _fake_proc(tmp_path, {10: 1, 11: 10, 12: 11, 13: 11, 14: 10}, {10: 1, 11: 20, 12: 300, 13: 400, 14: 5})
    assert sorted(watch.descendants_with_depth(10, proc)) == [(11, 1), (12, 2), (13, 2), (14, 1)]
    sampler = watch.TreeMemorySampler(root=10, interval=60.0, proc=proc)
    sampler.sample()
    (proc / "13" / "smaps_rollup").unlink()  # a smaller sample later does not replace the peak's breakdown
    sampler.sample()
    assert sampler.peak_by_depth == {0: [1024], 1: [20 * 1024, 5 * 1024], 2: [400 * 1024, 300 * 1024]}


def test_phase_peaks_are_windows_of_one_sampler(watch, tmp_path):
    proc = _fake_proc(tmp_path, {10: 1, 11: 10}, {10: 100, 11: 50})
    rollup = proc / "11" / "smaps_rollup"
    (proc / "self" / "smaps_rollup").write_text("Pss: 1 kB\n")  # this kernel has smaps_rollup
    with watch.PhasePeaks(root=10, interval=60.0, proc=proc) as peaks:
        with peaks.phase("teacher"):
            pass  # 100 + 50
        rollup.write_text("Pss: 700 kB\n")
        with peaks.phase("students"):
            rollup.write_text("Pss: 20 kB\n")  # the peak at the window's start (700) is kept, not the end's
        with peaks.phase("measurement"):
            pass
        rollup.unlink()
        with peaks.phase("teacher"):  # again, smaller: the larger peak stays
            pass
    assert peaks.peaks == {"teacher": 150 * 1024, "students": 800 * 1024, "measurement": 120 * 1024}
    assert list(peaks.peaks) == ["teacher", "students", "measurement"]
    assert peaks.sampler._thread is None  # stopped


def test_phase_peaks_without_proc_measure_nothing(watch, tmp_path):
    peaks = watch.PhasePeaks(proc=tmp_path)  # no self/smaps_rollup: not Linux, or an old kernel
    with peaks, peaks.phase("teacher"):
        ran = True
    assert ran and peaks.peaks == {} and peaks.sampler is None
