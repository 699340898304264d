"""LoRA training on a shared CPU: the thread count chosen from other processes' CPU time, the
Trainer callback applying it, and `bench_train`'s report (tiny model, one step per case).
Speed itself is measured by `webevolver bench train`, never asserted here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evolver_core.training import threads
from evolver_core.training.threads import CpuReading, others_busy, read_cpu, thread_governor, threads_for


@pytest.mark.parametrize(("others", "cores", "expected"), [
    (0.0, 2, 2), (0.3, 2, 2),  # light work beside us keeps both cores
    (0.7, 2, 1), (1.0, 2, 1),  # one busy process (it gets < 1 core while we run 2 threads)
    (2.0, 2, 1), (5.0, 2, 1),  # never fewer than one thread
    (1.6, 8, 6), (1.4, 8, 7),
])
def test_threads_are_the_cores_others_leave_idle(others: float, cores: int, expected: int) -> None:
    assert threads_for(others, cores) == expected


def test_our_own_cpu_time_is_not_counted_as_another_process() -> None:
    before = CpuReading(at=10.0, busy_s=100.0, own_s=50.0)
    # 2 s: 4 core-seconds busy, 2.6 of them ours (two threads, partly spinning)
    assert others_busy(before, CpuReading(at=12.0, busy_s=104.0, own_s=52.6)) == pytest.approx(0.7)
    assert others_busy(before, CpuReading(at=12.0, busy_s=102.0, own_s=52.5)) == 0.0  # tick rounding
    assert others_busy(before, before) == 0.0


def test_a_real_reading_moves_forward() -> None:
    first = read_cpu()
    sum(i * i for i in range(200_000))  # some CPU time of our own
    second = read_cpu()
    assert second.at > first.at and second.own_s >= first.own_s and second.busy_s >= first.busy_s
    assert others_busy(first, second) >= 0.0


def test_the_governor_sets_torchs_threads_from_the_last_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([CpuReading(0.0, 0.0, 0.0),  # created
                     CpuReading(0.0, 0.0, 0.0), CpuReading(0.2, 0.35, 0.0),  # first look: others busy 1.75 cores
                     CpuReading(1.0, 2.0, 1.0),  # step 2: others kept one core busy
                     CpuReading(2.0, 3.8, 2.6)])  # step 4: others used 0.2 of a core
    monkeypatch.setattr(threads, "read_cpu", lambda: next(readings))
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    on_cpu = SimpleNamespace(device=torch.device("cpu"))
    original = torch.get_num_threads()
    governor = thread_governor()
    try:
        governor.on_train_begin(on_cpu, SimpleNamespace(global_step=0), None)
        assert torch.get_num_threads() == 2
        governor.on_step_end(on_cpu, SimpleNamespace(global_step=1), None)  # not a checking step: no reading
        governor.on_step_end(on_cpu, SimpleNamespace(global_step=2), None)
        assert torch.get_num_threads() == 3
        governor.on_step_end(on_cpu, SimpleNamespace(global_step=4), None)
        assert torch.get_num_threads() == 4
        governor.on_train_end(on_cpu, SimpleNamespace(global_step=4), None)
        assert torch.get_num_threads() == original  # the process's own setting is back
    finally:
        torch.set_num_threads(original)


def test_bench_train_reports_every_case_and_the_ratios(tiny_model: Path) -> None:
    from evolver_core.benchmarks import bench_train

    result = bench_train(steps=1, model=str(tiny_model))
    cases = {"default_quiet", "chosen_quiet", "default_shared", "chosen_shared"}
    assert set(result["step_s"]) == cases and set(result["runs"]) == cases
    assert all(len(times) == 1 and times[0] > 0 for times in result["runs"].values())
    assert {"ratio", "quiet_cost", "default_ratio", "target", "quiet_target", "cores"} <= set(result)
