"""The load guard: what else ran on this job's CPUs while it was timing.

Other processes slow autoregressive decoding (a chain of small kernels, each a barrier across
threads) more than speculation (fewer, larger passes), so a busy machine inflates speed-ups. The
guard reads the kernel's own counters, before and after a timed stretch:

- /proc/stat, the lines of the CPUs this process may run on: the CPU time spent busy (user,
  nice, system, irq, softirq) and stolen by the hypervisor (steal) out of all the time there was;
- /proc/<pid>/stat of this process and its children (threads included): the busy time that was ours;
- /proc/loadavg: the 1-minute load average at the end.

`other` is the busy time of everything but this job, and `steal` the time the hypervisor gave
to other machines, each as a share of the CPU time the job's CPUs had. Where /proc is missing
(not Linux) the guard reads nothing and says so.
"""
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ltd.core.errors import LtdError

PROC = Path("/proc")
BUSY = (0, 1, 2, 5, 6)  # user nice system irq softirq (guest time is counted in user already)
STEAL = 7


@dataclass
class Counters:
    total: int  # ticks of the job's CPUs, every state
    busy: int
    steal: int
    ours: int  # ticks this process and its descendants ran


@dataclass
class Load:
    """What the counters say of a stretch of time; shares of the job's CPUs' time."""

    other: float  # busy with other processes
    steal: float  # stolen by the hypervisor
    loadavg: float  # 1-minute load average at the end
    cpus: int

    @property
    def share(self) -> float:
        """The CPU time other work took from this job: other processes and steal."""
        return self.other + self.steal

    def describe(self) -> str:
        return (f"other processes {self.other:.0%} of the CPU, steal {self.steal:.0%}, load average "
                f"{self.loadavg:.1f} on {self.cpus} CPU{'s' if self.cpus != 1 else ''}")

    @classmethod
    def of_question(cls, row: dict) -> "Load | None":
        """The load read over one question, from a question row of the harness (ltd.eval.runner)."""
        if row.get("other_load") is None:
            return None
        return cls(row["other_load"], row["steal"], row["loadavg"], len(job_cpus()))


def job_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def cpu_ticks(cpus: list[int]) -> tuple[int, int, int] | None:
    """(total, busy, steal) ticks of `cpus` since boot, from /proc/stat."""
    try:
        lines = (PROC / "stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    total = busy = steal = 0
    for line in lines:
        name, *values = line.split()
        if name in wanted:
            ticks = [int(v) for v in values[:8]]
            total += sum(ticks)
            busy += sum(ticks[i] for i in BUSY)
            steal += ticks[STEAL]
    return total, busy, steal


def tree_ticks(root: int) -> int:
    """User and system ticks of process `root` and every live descendant (children that ended
    and were waited for are in their parents' cutime and cstime)."""
    parents, ticks = {}, {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        fields = text[text.rfind(")") + 2:].split()  # the name may hold spaces and parentheses
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        total += ticks.get(pid, 0)
        frontier += [child for child, parent in parents.items() if parent == pid]
    return total


def loadavg() -> float:
    try:
        return float((PROC / "loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


class LoadMeter:
    """Counters read at `start()` and compared at each `read()` (a job times several stretches by
    starting again)."""

    def __init__(self):
        self.cpus = job_cpus()
        self.before: Counters | None = None

    def counters(self) -> Counters | None:
        ticks = cpu_ticks(self.cpus)
        if ticks is None:
            return None
        return Counters(*ticks, ours=tree_ticks(os.getpid()))

    def start(self) -> "LoadMeter":
        self.before = self.counters()
        return self

    def read(self) -> Load | None:
        """The load since `start()`; None where /proc cannot tell."""
        after = self.counters()
        if self.before is None or after is None:
            return None
        b = self.before
        total = max(1, after.total - b.total)
        others = max(0, (after.busy - b.busy) - (after.ours - b.ours))
        return Load(other=min(1.0, others / total), steal=(after.steal - b.steal) / total, loadavg=loadavg(),
                    cpus=len(self.cpus))


@dataclass
class LoadGuard:
    """What a timing job does about load: `limit` is the share of the CPU other work may take
    before a run is called busy; `require_quiet` refuses a busy run instead of warning."""

    limit: float = 0.1
    require_quiet: bool = False

    def __post_init__(self):
        if not 0 <= self.limit <= 1:
            raise LtdError(f"max_other_load must be a share of the CPU between 0 and 1, got {self.limit}")

    def busy(self, load: Load | None) -> bool:
        return load is not None and load.share > self.limit

    def before_timing(self, seconds: float = 1.0) -> None:
        """With `require_quiet`, refuse to start on a machine already busy (measured for `seconds`)."""
        if not self.require_quiet:
            return
        meter = LoadMeter().start()
        time.sleep(seconds)
        load = meter.read()
        if self.busy(load):
            raise LtdError(f"the machine is busy before timing ({load.describe()} over {seconds:g} s, above "
                           f"max_other_load {self.limit:.0%}): require_quiet=true refuses to time here")

    def check(self, load: Load | None, what: str) -> None:
        """During timing: with `require_quiet`, stop as soon as other work took too much."""
        if self.require_quiet and self.busy(load):
            raise LtdError(f"other work took the CPU while timing {what} ({load.describe()}, above max_other_load "
                           f"{self.limit:.0%}): require_quiet=true refuses the run; what finished is kept")

    def verdict(self, load: Load | None) -> str:
        """One line for the end of a timed run."""
        if load is None:
            return "load: not measured (no /proc on this system)"
        if self.busy(load):
            return (f"warning: the machine was busy while timing: {load.describe()} (above max_other_load "
                    f"{self.limit:.0%}); speed-ups are inflated on a busy machine: time again on a quiet one, or "
                    f"require_quiet=true to refuse such runs")
        return f"load while timing: {load.describe()}"
