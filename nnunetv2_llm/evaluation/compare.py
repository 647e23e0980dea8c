"""``compare``: is the difference between trained nnU-Net variants real?

For any nnU-Net results (ours, stock nnU-Net's or another plugin's), scored the same way:

* in-domain: the out-of-fold validation predictions nnU-Net wrote (``fold_X/validation``), pooled over
  the requested folds against the ground truth nnU-Net evaluated them with
  (``nnUNet_preprocessed/<dataset>/gt_segmentations``), so every training case counts once per variant; for fold
  ``all`` (trained on every case, validated on them by nnU-Net) the set is ``in-sample``, never cross-validation;
* held-out (``--held-out NAME=FOLDER``: the training distribution) and zero-shot (``--external NAME=FOLDER``: a
  shifted one) sets: labelled images the models never saw, predicted by each variant with the stock
  ``nnUNetv2_predict`` (ensemble of the requested folds), cached in the report folder;
* repeated partitions (folds 5, 6, ... of the splits file are partitions 2, 3, ...: :mod:`..nnunet.splits`): the
  procedure level averages the partitions (:mod:`.partitions`); the case level, the other sets' ensemble and
  cases.csv's first rows are the first partition's (with partitions, nnU-Net's own 5-fold cross-validation), so
  each case counts once.

Per case and label (or region): Dice and IoU (nnU-Net's own code and label rule, equal to its summary.json), HD95
and NSD in mm (MONAI); see :mod:`.metrics` for the empty-mask conventions. Against the reference variant: mean
paired difference with a seeded bootstrap 95% CI and the sign-flip permutation test of the same mean (Wilcoxon as an
extra column), matched-pairs rank-biserial effect size and win/tie/loss counts; per-fold means; a ranking with
bootstrap rank stability; trainable/frozen parameters and GFLOPs per patch; with several training runs the
procedure level (:mod:`.procedure`). One primary endpoint (``--primary``) carries stars, the rest is secondary
(:mod:`.summary`).

Everything is checked before anything is written or predicted; the report folder is locked while a run writes it
(a second run into the same folder waits, then reuses the first one's predictions and scores).

This module runs the steps (:func:`run_compare`): the request and its checks are :mod:`.compare_request`, what is
found before any scoring :mod:`.compare_plan`, the scores :mod:`.scoring` and :mod:`.run_scores`, the statistics
:mod:`.report_statistics`, and the files :mod:`.report`.
"""
from __future__ import annotations

import math
import time

from ..core.locks import exclusive
from ..nnunet.environment import ensure_trainer_lookup, resolve_device
from .cases import check_same_cases, validation_set_name
from .compare_plan import ComparePlan, plan_compare
from .compare_request import CompareRequest
from .external import external_cases, predict_external
from .report import cases_csv_blocks, write_report
from .report_statistics import report_from_scores
from .run_scores import TrainingRunScores
from .scoring import CaseScores, score_cases
from .summary import CompareReport


def run_compare(request: CompareRequest, echo=print) -> CompareReport:
    """Check, then (holding the report folder's lock) predict the other sets, score, test and write the report."""
    plan = plan_compare(request)
    out = plan.out
    with exclusive(out / ".compare.lock", f"the report folder {out}", echo):
        return score_and_report(plan, echo)


def score_and_report(p: ComparePlan, echo) -> CompareReport:
    """Predict the other sets, score every set and training run, compute the report's statistics and write it."""
    from ..nnunet.splits import dataset_splits
    start = time.monotonic()
    device = resolve_device(p.request.device) if p.externals else "cpu"
    ensure_trainer_lookup()
    labels = [v.label for v in p.variants]
    validation = validation_set_name(p.folds)
    sets = {validation: p.in_domain, **predict_other_sets(p, device)}
    case_lists = {s: check_same_cases(by, s) for s, by in sets.items()}
    score_start = time.monotonic()
    scores = score_sets(p, sets, labels)
    runs = score_training_runs(p, scores[validation], validation, labels)
    scored = (sum(len(c) for c in case_lists.values())
              + sum(len(next(iter(by.values()))) for by in p.run_cases.values())) * len(labels)
    score_seconds = time.monotonic() - score_start
    case_folds = {s: {v: {c: case.fold for c, case in cases.items()} for v, cases in by.items()}
                  for s, by in sets.items()}
    run_scores = TrainingRunScores(runs, p.partitions, dataset_splits(p.dataset))
    report = report_from_scores(header_of(p), labels, p.reference, scores, case_folds, run_scores, p.request.seed,
                                p.request.bootstrap, p.request.primary, p.left_out, p.efficiency,
                                {"seconds_scoring": score_seconds, "cases_scored": scored,
                                 "seconds_per_case": score_seconds / scored if scored else math.nan,
                                 "seconds_total": time.monotonic() - start})
    first_lines, layer_figures = [], []
    if p.layer_series is not None:
        from .layers import layer_rows, layers_figure, which_layer, write_layers_csv
        rows, plain = layer_rows(report, p.specs, p.layer_series)
        write_layers_csv(p.out / "layers.csv", rows)
        layer_figures = [layers_figure(p.out / ("layers.png" if s == validation else f"layers_{s}.png"), rows,
                                       report, s, plain) for s in report.sets]
        first_lines = which_layer(rows, plain, validation)
        report.layers = rows
    write_report(p.out, report, scores, cases_csv_blocks(scores, case_folds, run_scores), first_lines, echo,
                 ", layers.csv" if first_lines else "", len(layer_figures))
    return report


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..core.terminal import console
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console(), transient=True)


def predict_other_sets(p: ComparePlan, device) -> dict[str, dict]:
    """The held-out and zero-shot sets' cases per variant, predicted with ``nnUNetv2_predict`` by the first
    partition's folds (the case level's models); each variant's seconds per case go into its cost."""
    sets: dict[str, dict] = {}
    with _progress() as progress:
        task = progress.add_task("predictions of the other sets (nnUNetv2_predict)",
                                 total=len(p.externals) * len(p.variants))
        say = lambda m: progress.console.print(m, markup=False, highlight=False)  # noqa: E731
        timings: dict[str, list[float]] = {v.label: [] for v in p.variants}
        for ext in p.externals:
            cases = p.external_cases[ext.name]
            sets[ext.name] = {}
            for v in p.variants:
                predicted = predict_external(v, ext, cases, p.partitions[next(iter(p.partitions))], p.out, device,
                                             say)  # the case level's models: the first partition's folds
                sets[ext.name][v.label] = external_cases(ext, predicted.folder, cases, v.dataset_json["file_ending"])
                if predicted.seconds_per_case is not None:
                    timings[v.label].append(predicted.seconds_per_case)
                progress.advance(task)
    for label, seconds in timings.items():
        p.efficiency[label].seconds_per_case = sum(seconds) / len(seconds) if seconds else None
        p.efficiency[label].device = device if seconds else None
    return sets


def score_sets(p: ComparePlan, sets: dict[str, dict], labels: list[str]) -> dict[str, dict[str, CaseScores]]:
    """Each set's cases scored per variant (cached in the report folder)."""
    scores: dict[str, dict] = {}
    with _progress() as progress:
        for set_name, by_variant in sets.items():
            scores[set_name] = {v: score_cases(by_variant[v], p.out / "cache" / set_name / v, p.reader_name, p.rule,
                                               p.tolerances, p.request.processes, progress,
                                               f"scoring {v} on {set_name}") for v in labels}
    return scores


def score_training_runs(p: ComparePlan, first_run: dict[str, CaseScores], validation: str,
                        labels: list[str]) -> dict[tuple[int, int], dict[str, CaseScores]]:
    """(partition, replicate) -> each variant's scores on the validation set; the first partition's replicate 1 is
    ``first_run``, the set's case level."""
    first = next(iter(p.partitions))
    with _progress() as progress:
        def run_cache(part: int, r: int) -> str:  # partition 1's replicates keep their cache folders
            return f"{validation}-replicate-{r}" if part == first else f"{validation}-partition-{part}-replicate-{r}"

        def what(part: int, r: int) -> str:
            return ", ".join(filter(None, [f"replicate {r}" if r > 1 else "",
                                           f"partition {part}" if len(p.partitions) > 1 else ""]))

        return {(first, 1): first_run, **{
            (part, r): {v: score_cases(by_variant[v], p.out / "cache" / run_cache(part, r) / v, p.reader_name,
                                       p.rule, p.tolerances, p.request.processes, progress,
                                       f"scoring {v} ({what(part, r)}) on {validation}") for v in labels}
            for (part, r), by_variant in p.run_cases.items()}}


def header_of(p: ComparePlan) -> dict:
    """The report's descriptive fields of a compare run."""
    return dict(
        dataset=p.dataset, configuration=p.request.configuration, folds=p.folds, labels=p.rule.keys,
        ignore_label=p.rule.ignore_label, output=str(p.out),
        targets_note=f"{'regions' if any(isinstance(t, tuple) for t in p.rule.targets) else 'labels'} "
                     f"{', '.join(p.rule.keys)}" + (f", ignore label {p.rule.ignore_label} masked"
                                                     if p.rule.ignore_label is not None else ""),
        nsd_tolerance_mm=p.tolerances,
        tolerance_note=", ".join(f"label {k}: {v:g} mm" for k, v in p.tolerances.items()),
        variants={v.label: {"trainer": v.trainer, "plans": v.plans, "folder": str(v.folder)} for v in p.variants},
        set_kinds={e.name: e.kind for e in p.externals})
