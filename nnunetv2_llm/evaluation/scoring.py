"""Scoring the cases of one variant on one set: per case and target the metrics of :mod:`.metrics`, in parallel,
cached by the sha256 of the prediction and reference files (a changed file is scored again)."""
from __future__ import annotations

import contextlib
import json
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..core.files import file_sha256, write_json
from .cases import Case
from .labels import LabelRule
from .metrics import METRICS, case_metrics
from .statistics import mean_of_present

CACHE_VERSION = 2  # 2: targets keyed as nnU-Net's summary.json keys them, the ignore label masked


@dataclass(frozen=True)
class CaseScores:
    """One variant's metrics on one set: ``values[metric]`` is a cases x targets array (NaN where reference and
    prediction are both empty), targets keyed as nnU-Net's summary.json keys them."""

    cases: tuple[str, ...]
    targets: tuple[str, ...]
    values: dict[str, np.ndarray]

    @classmethod
    def of(cls, per_case: dict[str, dict[str, dict[str, float]]], targets: list[str]) -> "CaseScores":
        """From ``{case: {target: {metric: value}}}`` (what :func:`.metrics.case_metrics` gives per case)."""
        cases = tuple(per_case)
        return cls(cases, tuple(targets), {m: np.array([[per_case[c][k][m] for k in targets] for c in cases],
                                                       dtype=float).reshape(len(cases), len(targets))
                                           for m in METRICS})

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.cases)}

    def _rows(self, cases: list[str]) -> list[int]:
        return [self._index[c] for c in cases]

    def value(self, case: str, target: str, metric: str) -> float:
        return float(self.values[metric][self._rows([case])[0], self.targets.index(target)])

    def case_means(self, cases: list[str], metric: str) -> np.ndarray:
        """Per case the mean over its targets (NaN targets left out, as nnU-Net's foreground mean does)."""
        return np.array([mean_of_present(row) for row in self.values[metric][self._rows(cases)]])

    def target_means(self, cases: list[str], metric: str) -> dict[str, float]:
        """Per target the mean over ``cases`` (NaN left out)."""
        block = self.values[metric][self._rows(cases)]
        return {k: mean_of_present(block[:, j]) for j, k in enumerate(self.targets)}


def _score(job) -> dict:
    reference, prediction, reader_name, rule, tolerances = job
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name
    reader_writer = recursive_find_reader_writer_by_name(reader_name)()
    return case_metrics(str(reference), str(prediction), reader_writer, rule, tolerances)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the main process, which stops them (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def score_cases(cases: dict[str, Case], cache_dir: Path, reader_name: str, rule: LabelRule,
                tolerances: dict[str, float], processes: int, progress, description: str) -> CaseScores:
    """Every case's metrics, read from the cache where the prediction and reference are unchanged."""
    settings = {"version": CACHE_VERSION, "targets": rule.keys, "ignore_label": rule.ignore_label,
                "tolerances": tolerances}
    results, todo = {}, []
    for name, case in cases.items():
        key = {"prediction": file_sha256(case.prediction), "reference": file_sha256(case.reference), **settings}
        cached = cache_dir / f"{name}.json"
        if cached.is_file():
            try:
                entry = json.loads(cached.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                entry = {}
            if entry.get("key") == key:
                results[name] = entry["metrics"]
                continue
        todo.append((name, key))
    task = progress.add_task(description, total=len(cases), completed=len(cases) - len(todo))
    jobs = [(cases[n].reference, cases[n].prediction, reader_name, rule, tolerances) for n, _ in todo]
    workers = max(1, min(processes, len(jobs)))
    with contextlib.ExitStack() as stack:
        mapped = map(_score, jobs) if workers == 1 else stack.enter_context(
            ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupts)).map(_score, jobs)
        for (name, key), metrics in zip(todo, mapped):
            write_json(cache_dir / f"{name}.json", {"key": key, "metrics": metrics})
            results[name] = metrics
            progress.advance(task)
    return CaseScores.of({name: results[name] for name in cases}, rule.keys)
