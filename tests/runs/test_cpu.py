"""The CPU a run gets: cores from affinity and cgroup quota, threads, flushed denormals, the
allocator's kept memory, and the watch that notices another process taking a core."""

from __future__ import annotations

import pytest
import torch

from arcdiff.runs.cpu import CpuWatch, available_cpus, cgroup_cpu_limit, setup_cpu


@pytest.fixture(autouse=True)
def restore_cpu_state():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "files, cores",
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_the_cgroup_quota_is_read_in_cores(tmp_path, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == cores


def test_available_cpus_is_within_the_affinity_mask():
    import os

    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_threads_come_from_the_config_then_omp_num_threads_then_the_cores(monkeypatch):
    cpu = torch.device("cpu")
    assert setup_cpu(1, cpu).threads == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert setup_cpu(None, cpu).threads == torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert setup_cpu(None, cpu).threads == available_cpus()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(available_cpus() * 2))  # more ranks than cores
    assert setup_cpu(None, cpu).threads == 1


def test_denormals_are_flushed_on_the_cpu():
    tiny = torch.tensor([1e-30])
    try:
        torch.set_flush_denormal(False)
        assert (tiny * 1e-10).item() != 0.0  # 1e-40: a denormal float32
        if not setup_cpu(1, torch.device("cpu")).flush_denormal:
            pytest.skip("this CPU has no flush-to-zero mode")
        assert (tiny * 1e-10).item() == 0.0
    finally:
        torch.set_flush_denormal(False)


def windows(watch: CpuWatch, n: int, rate: float, busy: float):
    """``n`` windows of steps at ``rate`` steps/s, threads ``busy`` of the time: the events."""
    step_s = 1 / rate
    events = []
    for _ in range(n * round(watch.window_s * rate)):  # whole windows: pick rates that fit
        event = watch.update(step_s, step_s * busy * watch.threads)
        if event is not None:
            events.append(event)
    return events


def test_a_shared_cpu_moves_a_two_thread_run_to_one_thread():
    watch = CpuWatch(threads=2)
    assert windows(watch, 3, rate=2.0, busy=0.94) == []  # a quiet machine: nothing to say
    (event,) = windows(watch, 2, rate=1.0, busy=0.55)  # another process took a core
    assert event.threads == 1 and watch.threads == 1
    assert event.rate == pytest.approx(1.0) and event.reference == pytest.approx(2.0)
    assert "shared" in event.message() and "1 thread" in event.message()
    assert event.metrics()["threads"] == 1.0
    # on one thread from now on, with a reference of its own
    assert windows(watch, 3, rate=1.25, busy=0.99) == []
    # shared from its first window: no reference to name
    (first,) = windows(CpuWatch(threads=2), 1, rate=0.5, busy=0.6)
    assert first.reference is None and "against" not in first.message()


def test_a_one_thread_run_is_told_once_when_its_rate_collapses():
    watch = CpuWatch(threads=1)
    assert windows(watch, 2, rate=2.0, busy=0.99) == []
    (event,) = windows(watch, 4, rate=0.5, busy=0.5)
    assert event.threads is None and "collapsed" in event.message()
    assert "threads" not in event.metrics() and event.metrics()["cpu_shared_rate"] == 0.5
