"""CPU threads of LoRA training on a machine that other processes share.

Why: torch runs every operator on one OpenMP thread per core. When another process keeps a
core busy, the training thread on that core gets a fraction of it and every parallel region
waits for it (the others spin meanwhile), so one busy process can more than double a step.
So training uses only the cores other processes leave idle: the number is re-read every few
steps (`ThreadGovernor`, a Trainer callback) from the CPU time the machine spent beside our
own since the last reading (no extra work; before the first step, a 0.2 s look).
`webevolver bench train` measures this against torch's default (RESULTS.md R11).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CHECK_EVERY_STEPS = 2  # a step is seconds long, so a busy process is noticed within ~15 s
FIRST_LOOK_S = 0.2  # before the first step, nothing of ours runs: a short look at the machine
# Fraction of a core another process must keep busy before training gives that core up: light
# work (a shell, an editor, a test) stays below it, a compute job above it.
BUSY_CORE = 0.5


def usable_cores() -> int:
    """Cores this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds: every core's busy time, and this process's own (all threads)."""

    at: float  # monotonic seconds
    busy_s: float
    own_s: float


def read_cpu() -> CpuReading:
    """Now's `CpuReading`, from /proc/stat's first line. Niced processes count only when we
    are niced too: the scheduler hands a niced neighbour's core back to us as soon as our
    threads want it, and it fills the cores we leave idle, so counting it would make a
    training that gave up a core never take it back."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    busy = user + system + irq + softirq + steal + (nice if os.getpriority(os.PRIO_PROCESS, 0) > 0 else 0)
    own = os.times()
    return CpuReading(at=time.monotonic(), busy_s=busy / os.sysconf("SC_CLK_TCK"), own_s=own.user + own.system)


def others_busy(before: CpuReading, after: CpuReading) -> float:
    """Cores kept busy by other processes between two readings (our own spinning threads
    count as ours, so they never look like another process)."""
    wall = after.at - before.at
    if wall <= 0:
        return 0.0
    return max(0.0, ((after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall)


def threads_for(others: float, cores: int) -> int:
    """Threads to train with: one per core that other processes leave free, at least one."""
    taken = int(others // 1 + (1 if others % 1 >= BUSY_CORE else 0))
    return max(1, cores - taken)


def thread_governor():
    """A `TrainerCallback` that sets torch's thread count to `threads_for` the cores others
    used during the last `CHECK_EVERY_STEPS` steps (before the first: in `FIRST_LOOK_S`). Only
    when training on CPU (on GPUs the CPU threads hardly matter); the process's thread count
    is restored when the training ends (other work of the flow's process runs after it)."""
    import torch
    from transformers import TrainerCallback

    class ThreadGovernor(TrainerCallback):
        def __init__(self) -> None:
            self.cores = usable_cores()
            self.last = read_cpu()
            self.on_cpu = False
            self.restore = torch.get_num_threads()

        def _adapt(self) -> None:
            now = read_cpu()
            torch.set_num_threads(threads_for(others_busy(self.last, now), self.cores))
            self.last = now

        def on_train_begin(self, args, state, control, **kwargs) -> None:
            self.on_cpu = args.device.type == "cpu"
            if self.on_cpu:
                self.restore = torch.get_num_threads()
                self.last = read_cpu()
                time.sleep(FIRST_LOOK_S)
                self._adapt()

        def on_step_end(self, args, state, control, **kwargs) -> None:
            if self.on_cpu and state.global_step % CHECK_EVERY_STEPS == 0:
                self._adapt()

        def on_train_end(self, args, state, control, **kwargs) -> None:
            if self.on_cpu:
                torch.set_num_threads(self.restore)

    return ThreadGovernor()
