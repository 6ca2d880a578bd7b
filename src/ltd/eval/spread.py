"""How sure a speed-up is: 95 % intervals by a paired bootstrap.

Every method decodes the same questions in one run, so a resample draws questions (with
replacement) and keeps each drawn question's throughput for every method: what the question makes
easy or hard cancels in the ratios, and the interval says how much the choice of questions (and
the machine's noise within them) moves a speed-up. A task with a single question has nothing to
resample but its repeats (`repeats=`): then the repeats are drawn instead. A mean over tasks draws
each task's questions apart (a stratified bootstrap) and averages the tasks' speed-ups, as the point
estimate does. Percentile intervals, a fixed seed: the same records give the same interval.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


@dataclass
class Sample:
    """One task's per-unit mean throughputs ([units, methods]) and what a unit is."""

    throughputs: np.ndarray
    methods: list[str]
    unit: str  # "question" or "repeat" (one question, decoded several times)

    @property
    def units(self) -> int:
        return self.throughputs.shape[0]

    def column(self, method: str) -> int:
        return self.methods.index(method)


def sample(questions: pd.DataFrame, methods: list[str]) -> Sample:
    """The units a task's question rows resample by: its questions, or, when it has one question,
    that question's repeats (a row per method, question and repeat; no `repeat` column: one each)."""
    rows = questions if "repeat" in questions else questions.assign(repeat=0)
    unit = "question" if rows["question_id"].nunique() > 1 else "repeat"
    keys = ["question_id"] if unit == "question" else ["question_id", "repeat"]
    table = rows.pivot_table(index=keys, columns="method", values="throughput", aggfunc="mean", sort=False)
    return Sample(table[methods].to_numpy(dtype=float), list(methods), unit)


def resampled_means(s: Sample, rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """[resamples, methods] mean throughput over each resample's units (all methods drawn alike)."""
    draws = rng.integers(0, s.units, size=(resamples, s.units))
    return s.throughputs[draws].mean(axis=1)


def interval(values: np.ndarray, resampled: bool = True) -> tuple[float, float]:
    """The percentile interval of `values`; NaN for both ends where nothing was resampled (every
    task of a single unit: no spread can be told)."""
    if not resampled:
        return float("nan"), float("nan")
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class Spread:
    """Point estimates and intervals of a set of tasks' records: per task, and the mean over tasks."""

    samples: dict[str, Sample]  # task -> its sample
    resamples: dict[str, np.ndarray]  # task -> [resamples, methods] mean throughputs

    @classmethod
    def of(cls, per_task: dict[str, pd.DataFrame], methods: list[str], resamples: int = RESAMPLES) -> "Spread":
        rng = np.random.default_rng(SEED)
        samples = {task: sample(rows, methods) for task, rows in per_task.items()}
        return cls(samples, {task: resampled_means(s, rng, resamples) for task, s in samples.items()})

    def _point(self, task: str) -> np.ndarray:
        return self.samples[task].throughputs.mean(axis=0)

    def _ratio(self, task: str, numerator: str, denominator: str, means: np.ndarray) -> np.ndarray:
        s = self.samples[task]
        return means[..., s.column(numerator)] / means[..., s.column(denominator)]

    def throughput(self, task: str | None, method: str) -> tuple[float, float, float]:
        """(mean tok/s, low, high) of `method` on `task`, or, for None, the mean over the tasks."""
        tasks = [task] if task is not None else list(self.samples)
        point = np.mean([self._point(t)[self.samples[t].column(method)] for t in tasks])
        draws = np.mean([self.resamples[t][:, self.samples[t].column(method)] for t in tasks], axis=0)
        return (float(point), *interval(draws, self._spreads(tasks)))

    def ratio(self, task: str | None, numerator: str, denominator: str) -> tuple[float, float, float]:
        """(mean throughput of `numerator` / that of `denominator`, low, high) on `task`, or, for
        None, the mean of that ratio over the tasks (each task's questions resampled apart)."""
        tasks = [task] if task is not None else list(self.samples)
        point = np.mean([self._ratio(t, numerator, denominator, self._point(t)) for t in tasks])
        draws = np.mean([self._ratio(t, numerator, denominator, self.resamples[t]) for t in tasks], axis=0)
        return (float(point), *interval(draws, self._spreads(tasks)))

    def relative(self, task: str | None, numerator: str, denominator: str,
                 base: str) -> tuple[float, float, float]:
        """(mean speed-up of `numerator` / that of `denominator`, low, high): a ratio of speed-ups
        over `base` (the mean over tasks of each, for task None), paired within each resample."""
        tasks = [task] if task is not None else list(self.samples)

        def speedups(method: str, means_of) -> np.ndarray:
            return np.mean([self._ratio(t, method, base, means_of(t)) for t in tasks], axis=0)

        point = speedups(numerator, self._point) / speedups(denominator, self._point)
        draws = speedups(numerator, self.resamples.get) / speedups(denominator, self.resamples.get)
        return (float(point), *interval(draws, self._spreads(tasks)))

    def _spreads(self, tasks: list[str]) -> bool:
        return any(self.samples[t].units > 1 for t in tasks)

    def units(self, task: str | None = None) -> str:
        """What the intervals of `task` (None: all tasks) rest on, in words: `5 questions`, `3 repeats`."""
        tasks = [task] if task is not None else list(self.samples)
        counts: dict[str, int] = {}
        for t in tasks:
            s = self.samples[t]
            counts[s.unit] = counts.get(s.unit, 0) + s.units
        return " + ".join(f"{n} {unit}{'s' if n != 1 else ''}" for unit, n in counts.items())
