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
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import did_you_mean
from ..core.files import atomic_path, check_checkpoint_file, write_json
from ..core.locks import exclusive
from ..nnunet.environment import ensure_trainer_lookup, resolve_device
from ..nnunet.datasets import dataset_name, require_folder
from ..nnunet.results import (DEFAULT_PLANS, TrainedResults, found_replicates, replicate_root,
                              resolve_trained_results)
from ..nnunet.splits import NNUNET_FOLDS, parse_folds
from .cases import IN_SAMPLE, OWN_SETS, CompareError, check_same_cases, own_set, validation_cases
from .external import External, check_external, external_cases, parse_external, predict_external
from .figures import save_figures
from .labels import LabelRule, label_rule
from .metrics import DEFAULT_TOLERANCE_MM, METRICS
from .procedure import TrainingRuns
from .report import markdown_report, report_json, write_cases_csv
from .scoring import CaseScores, score_cases
from .summary import (DEFAULT_PRIMARY, CompareReport, Cost, ProcedureMean, SetSummary, apply_holm, holm_families,
                      summarize_set)

BOOTSTRAP_RANGE = (100, 1_000_000)
CONVENTIONS = {"both_empty": "NaN for every metric (left out of means); in a pair where the other variant has a "
                             "number it counts as the metric's perfect value (Dice, IoU, NSD 1; HD95 0), NaN in both "
                             "is left out of the pair",
               "one_empty": "Dice = IoU = NSD = 0, HD95 = image diagonal in mm",
               "case_value": "mean over labels of the case, NaN labels left out",
               "ignore_label": "voxels under the reference's ignore label are left out of every metric"}


@dataclass
class CompareRequest:
    """What to compare: the variants (trainer names, ``TRAINER__PLANS`` or results folders) of one dataset and
    configuration, the folds, the other case sets, and how to test."""

    dataset: str
    configuration: str
    trainers: list[str]
    output: str
    plans: list[str] = field(default_factory=lambda: [DEFAULT_PLANS])
    folds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    reference: str | None = None
    external: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    nsd_tolerance: list[str] | None = None
    bootstrap: int = 2000
    seed: int = 0
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    device: str = "auto"
    by_layer: str | None = None  # "strict": one series of plans that differ only in their layer; "series": several
    replicates: int | None = None  # training replicates per fold to use (None: as many as every variant has)
    primary: str = DEFAULT_PRIMARY  # the metric of the primary endpoint (the only test with stars)


@dataclass
class Prepared:
    """A request with every input checked: nothing is written until this exists."""

    request: CompareRequest
    dataset: str
    variants: list[TrainedResults]
    reference: int
    rule: LabelRule
    folds: list
    tolerances: dict[str, float]
    externals: list[External]
    external_cases: dict[str, list[str]]
    in_domain: dict
    reader_name: str
    efficiency: dict
    out: Path
    layer_series: dict | None = None  # variant label -> its series (by-layer reports)
    specs: dict | None = None
    partitions: dict = field(default_factory=dict)  # partition -> its folds (fold indices of the splits file)
    run_cases: dict = field(default_factory=dict)  # (partition, replicate) -> variant label -> its cases; not the first
    left_out: list[str] = field(default_factory=list)  # replicate runs found without a partner, and why


def parse_tolerances(items: list[str] | None, keys: list[str]) -> dict[str, float]:
    """``1.5`` for every label, or ``LABEL=MM`` per label (a region as nnU-Net names it, ``(1, 2)=2``). Order does
    not matter: a per-label value wins over the global one; two different values for one label are refused."""
    given: dict[str | None, tuple[str, float]] = {}  # label (None: every label) -> (item, mm)
    for item in items or []:
        key, sep, value = item.rpartition("=")
        try:
            mm = float(value)
        except ValueError:
            mm = -1.0
        if not mm > 0 or not math.isfinite(mm):
            raise CompareError(f"--nsd-tolerance {item!r}: give a positive distance in mm, for all labels (2.0) "
                               f"or per label (1=2.0).")
        label = key.strip() if sep else None
        if label is not None and label not in keys:
            raise CompareError(f"--nsd-tolerance {item!r}: label {key!r} is not one of the labels {keys}.")
        if label in given and given[label][1] != mm:
            raise CompareError(f"--nsd-tolerance {given[label][0]!r} and {item!r} give two distances for "
                               f"{'every label' if label is None else f'label {label}'}; keep one.")
        given[label] = (item, mm)
    default = given.pop(None, (None, DEFAULT_TOLERANCE_MM))[1]
    return {k: given[k][1] if k in given else default for k in keys}


def pick_reference(variants: list[TrainedResults], reference: str | None) -> int:
    if reference is None:
        return 0
    matches = [i for i, v in enumerate(variants) if reference in (v.label, v.trainer)]
    if len(matches) != 1:
        labels = [v.label for v in variants]
        raise CompareError(f"--reference {reference!r} names none (or several) of the variants {labels}; pass one "
                           f"of those.{did_you_mean(reference, labels)}")
    return matches[0]


def check_labels(variants: list[TrainedResults]) -> LabelRule:
    """Every variant must segment the same labels; returns nnU-Net's rule for them."""
    first = variants[0]
    for v in variants[1:]:
        if (v.dataset_json["labels"], v.dataset_json.get("regions_class_order")) != \
                (first.dataset_json["labels"], first.dataset_json.get("regions_class_order")):
            raise CompareError(f"{v.label} segments labels {v.dataset_json['labels']}, {first.label} segments "
                               f"{first.dataset_json['labels']}: variants of one comparison must be trained on the "
                               f"same dataset and labels.")
    return label_rule(first.dataset_json, str(first.folder / "dataset.json"))


def efficiency(variant: TrainedResults) -> Cost:
    """Trainable/frozen parameters and GFLOPs of one patch, as ``nnunetv2-llm info`` counts them."""
    from ..core.cost import measure
    from ..nnunet.networks import build_unet
    spec = variant.llm_spec()
    net = build_unet(variant.plans_json, variant.dataset_json, variant.configuration, spec)
    cost = measure(net.network.eval(), net.in_channels, net.patch_size)
    return Cost(cost.trainable / 1e6, cost.frozen / 1e6, cost.gflops, list(net.patch_size), spec is not None)


def check_statistics(bootstrap: int, primary: str) -> None:
    """The options of the statistics, shared by compare and the re-analysis of a cases.csv."""
    if not BOOTSTRAP_RANGE[0] <= bootstrap <= BOOTSTRAP_RANGE[1]:
        raise CompareError(f"--bootstrap {bootstrap}: accepted are {BOOTSTRAP_RANGE[0]}..{BOOTSTRAP_RANGE[1]} "
                           f"resamples (fewer give a CI that changes with the seed; the default is 2000).")
    if primary not in METRICS:
        raise CompareError(f"--primary {primary}: accepted are {', '.join(METRICS)} (the metric of the "
                           f"primary endpoint; the default is {DEFAULT_PRIMARY}).{did_you_mean(primary, METRICS)}")


def prepare(request: CompareRequest) -> Prepared:
    """Check every input (variants, labels, folds, checkpoints, the other sets' files, options) before anything
    is written or predicted."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    require_folder("nnUNet_results")
    gt_root = require_folder("nnUNet_preprocessed")
    name = dataset_name(request.dataset)
    check_statistics(request.bootstrap, request.primary)
    if request.processes < 1:
        raise CompareError(f"-np {request.processes}: give at least 1 process.")
    if len(request.plans) not in (1, len(request.trainers)):
        raise CompareError(f"-p takes one plans name for all variants or one per -tr ({len(request.trainers)}); "
                           f"got {len(request.plans)}.")
    plans = request.plans * len(request.trainers) if len(request.plans) == 1 else request.plans
    variants = [resolve_trained_results(t, p, name, request.configuration) for t, p in zip(request.trainers, plans)]
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise CompareError(f"a variant is listed twice: {labels}.")
    specs = {v.label: v.llm_spec() for v in variants}
    if request.by_layer and request.reference is None and sum(s is None for s in specs.values()) == 1:
        request.reference = next(v.label for v in variants if specs[v.label] is None)  # Δ to plain nnU-Net
    reference = pick_reference(variants, request.reference)
    layer_series = None
    if request.by_layer:
        from .layers import check_series
        layer_series = check_series(specs, {v.label: v.trainer for v in variants}, request.by_layer == "strict")
    rule = check_labels(variants)
    dataset_json = variants[0].dataset_json
    folds = parse_folds(request.folds, name)
    partitions = partition_groups(folds)
    tolerances = parse_tolerances(request.nsd_tolerance, rule.keys)
    externals = [parse_external(e, dataset_json, "zero-shot") for e in request.external] + \
                [parse_external(e, dataset_json, "held-out") for e in request.held_out]
    if len({e.name for e in externals}) != len(externals):
        raise CompareError("--external / --held-out: each NAME must be unique.")
    out = Path(request.output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CompareError(f"-o {request.output} is a file; pass a folder for the report.")
    gt = gt_root / name / "gt_segmentations"
    first, *others = partitions
    where = f"{own_set(folds)} validation"
    in_domain = _checked_cases(variants, partitions[first], gt, where)
    run_cases = {(p, 1): _checked_cases(variants, partitions[p], gt, f"{where} of partition {p}") for p in others}
    for v in variants:
        v.require_same_plans(folds)  # one network per variant: the parameter counts and predictions build it
    example = next(iter(in_domain[labels[0]].values())).reference
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its choice
        reader_writer_cls = determine_reader_writer_from_dataset_json(dataset_json, str(example))
    ext_cases = {ext.name: check_external(ext, dataset_json, rule, reader_writer_cls()) for ext in externals}
    replicates, left_out = count_replicates(variants, request.replicates)
    for p in partitions:
        one = in_domain if p == first else run_cases[p, 1]
        for r in range(2, replicates + 1):
            run_cases[p, r] = _checked_cases([replicate_of(v, r) for v in variants], partitions[p], gt,
                                             f"{where} of replicate {r}" + (f", partition {p}" if others else ""),
                                             also={f"{labels[0]} (replicate 1)": one[labels[0]]})
            for v in variants:
                replicate_of(v, r).require_same_plans(partitions[p])  # each replicate's folder is one network too
    costs = {v.label: efficiency(v) for v in variants}
    return Prepared(request, name, variants, reference, rule, folds, tolerances, externals, ext_cases, in_domain,
                    reader_writer_cls.__name__, costs, out, layer_series, specs, partitions, run_cases, left_out)


def partition_groups(folds: list) -> dict[int, list]:
    """Partition -> its folds (:func:`..nnunet.splits.fold_partitions`: folds 5, 6, ... of the splits file are
    partitions 2, 3, ...); fold all is a group of its own. Every partition must hold the same folds within it, or the
    partitions' means are of different folds."""
    from ..nnunet.splits import fold_partitions
    if "all" in [str(f) for f in folds]:  # alone, or refused with its reason by validation_cases
        return {1: list(folds)}
    groups: dict[int, dict[int, int]] = {}
    for part in sorted(fold_partitions(folds), key=lambda x: x.fold):
        groups.setdefault(part.partition, {})[part.fold_in_partition] = part.fold
    within = {p: set(g) for p, g in groups.items()}
    every = set().union(*within.values())
    for p, have in within.items():
        if have != every:
            missing = [NNUNET_FOLDS * (p - 1) + f for f in sorted(every - have)]
            wanted = [NNUNET_FOLDS * (q - 1) + f for q in groups for f in sorted(every)]
            raise CompareError(
                f"-f {' '.join(map(str, folds))}: partition {p} (folds {NNUNET_FOLDS * (p - 1)}-"
                f"{NNUNET_FOLDS * p - 1}) lacks fold(s) "
                f"{', '.join(map(str, missing))}, which the other partitions have (fold f of partition p is fold "
                f"{NNUNET_FOLDS}(p-1)+f of the splits file). Pass the same folds of every partition (-f "
                f"{' '.join(map(str, wanted))}), or one partition's.")
    return {p: [groups[p][f] for f in sorted(groups[p])] for p in sorted(groups)}


def _checked_cases(runs: list[TrainedResults], folds: list, gt: Path, where: str, also: dict | None = None) -> dict:
    """Each run's validation cases by label, checked to be the same cases for every run (and ``also``), with every
    fold's checkpoint readable."""
    cases = {v.label: validation_cases(v, folds, gt) for v in runs}
    check_same_cases({**cases, **(also or {})}, where)
    for v in runs:
        for fold in folds:
            check_checkpoint_file(v.checkpoint(fold))
    return cases


def replicate_of(variant: TrainedResults, replicate: int) -> TrainedResults:
    """The same trainer, plans and configuration in replicate ``replicate``'s results root."""
    root = replicate_root(variant.folder.parent.parent, replicate)
    return TrainedResults(variant.dataset, variant.trainer, variant.plans, variant.configuration,
                          root / variant.folder.parent.name / variant.folder.name, replicate)


def count_replicates(variants: list[TrainedResults], wanted: int | None) -> tuple[int, list[str]]:
    """How many training replicates every variant has (``$nnUNet_results/replicates/<r>``; ``wanted``, from
    --replicates, must be there for each), and the replicates found beyond them, named with the reason."""
    found = {v.label: len(found_replicates(v.folder.parent.parent, v.folder.parent.name, v.folder.name))
             for v in variants}
    if wanted is None:
        used = min(found.values())
        fewest = min(found, key=found.get)
        why = f"{fewest} has {used}"
    else:
        used, why = wanted, f"--replicates {wanted}"
    left_out = [f"replicate{'s' if n > used + 1 else ''} {used + 1}{f'-{n}' if n > used + 1 else ''} of {label} "
                f"({why})" for label, n in found.items() if n > used]
    if wanted is None:
        return used, left_out
    if wanted < 1:
        raise CompareError(f"--replicates {wanted}: give 1 or more training replicates per fold.")
    for v in variants:
        if found[v.label] < wanted:
            missing = replicate_of(v, found[v.label] + 1)
            raise CompareError(f"--replicates {wanted}: {v.label} has {found[v.label]} (no {missing.folder}). Train "
                               f"replicate {found[v.label] + 1}: {missing.train_command(0)} (each fold), or pass "
                               f"--replicates {found[v.label]}.")
    return wanted, left_out


def run_compare(request: CompareRequest, echo=print) -> CompareReport:
    """Check, then (holding the report folder's lock) predict the other sets, score, test and write the report."""
    prepared = prepare(request)
    out = prepared.out
    with exclusive(out / ".compare.lock", f"the report folder {out}", echo):
        return _run(prepared, echo)


def split_sizes(splits: list[dict] | None, folds: list) -> tuple[float, float]:
    """Mean validation and training cases of the folds (Nadeau-Bengio's n_test and n_train), from the splits file."""
    chosen = [splits[int(f)] for f in folds if splits and str(f) != "all" and int(f) < len(splits)]
    if not chosen:
        return math.nan, math.nan
    return (sum(len(s["val"]) for s in chosen) / len(chosen), sum(len(s["train"]) for s in chosen) / len(chosen))


@dataclass
class OwnRuns:
    """The own set's training runs for the procedure level: per (partition, replicate) each variant's scores, the
    folds of each partition (fold indices of the splits file) and the splits file that gives their cases."""

    scores: dict[tuple[int, int], dict[str, CaseScores]]
    partitions: dict[int, list]
    splits: list[dict] | None

    @property
    def replicates(self) -> int:
        return max(r for _, r in self.scores)

    def fold_cases(self, fold) -> list[str]:
        """The cases fold ``fold`` validated on, as nnU-Net orders them."""
        return sorted(self.splits[int(fold)]["val"])

    def fold_of(self, partition: int) -> dict:
        """Case -> its fold in ``partition`` (fold all: every scored case)."""
        if [str(f) for f in self.partitions[partition]] == ["all"]:
            return {c: "all" for c in next(iter(self.scores[partition, 1].values())).cases}
        return {c: f for f in self.partitions[partition] for c in self.fold_cases(f)}


def training_runs(labels: list[str], reference: str, own: OwnRuns, entry: SetSummary, in_sample: bool,
                  left_out: list[str]) -> TrainingRuns:
    """The procedure level of the own set (``entry``): per comparison and metric its :class:`ProcedureComparison`
    over the partitions (:func:`.partitions.partitions_comparison`; one partition: compare's Nadeau-Bengio level),
    per variant and metric the procedure-level interval of its mean; returns what the report says about the training
    runs. In-sample scores (fold all) get no procedure level."""
    import numpy as np

    from .partitions import partitions_comparison
    from .procedure import RunDifferences
    from .statistics import with_perfect_partners
    first = next(iter(own.partitions))
    runs_of = TrainingRuns.of(len(own.partitions[first]), own.replicates, in_sample, left_out, len(own.partitions))
    if in_sample:
        return runs_of
    sizes = {p: split_sizes(own.splits, folds) for p, folds in own.partitions.items()}

    def runs(label: str, metric: str, p: int) -> list:  # per fold of partition p: replicates x cases
        return [np.array([own.scores[p, r][label].case_means(own.fold_cases(f), metric)
                          for r in range(1, own.replicates + 1)]) for f in own.partitions[p]]

    def paired(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:  # the case level's pairing rule
        a, b, _ = with_perfect_partners(a, b, metric)
        return a - b

    for metric in METRICS:
        by_variant = {v: {p: runs(v, metric, p) for p in own.partitions} for v in labels}
        for v in labels:
            level = partitions_comparison([RunDifferences(by_variant[v][p], *sizes[p]) for p in own.partitions],
                                          components=False)
            entry.variants[v].metrics[metric].procedure = ProcedureMean(level.mean_difference, level.ci_low,
                                                                        level.ci_high, level.runs)
            if v != reference:
                entry.comparisons[v][metric].procedure = partitions_comparison([RunDifferences(
                    [paired(a, b, metric) for a, b in zip(by_variant[v][p], by_variant[reference][p])], *sizes[p])
                    for p in own.partitions])
    return runs_of


def analyse(header: dict, labels: list[str], reference: int, scores: dict[str, dict[str, CaseScores]],
            case_folds: dict, own: OwnRuns, seed: int, resamples: int, primary: str, left_out: list[str],
            costs: dict[str, Cost], timing: dict[str, float]) -> CompareReport:
    """Every statistic of a report from per-case scores: ``scores`` per set and variant (the own set: the first
    partition's replicate 1), ``own`` the own set's training runs; ``header`` the report's descriptive fields.
    compare and the re-analysis of a cases.csv (:mod:`.reanalysis`) both end here."""
    own_name = next(s for s in scores if s in OWN_SETS)
    summaries = {s: summarize_set(s, labels, reference, by, sorted(next(iter(by.values())).cases), case_folds[s],
                                  seed, resamples) for s, by in scores.items()}
    runs = training_runs(labels, labels[reference], own, summaries[own_name], own_name == IN_SAMPLE, left_out)
    families = holm_families(summaries, own_name, primary, runs.procedure_level)
    apply_holm(summaries, families, own_name, primary)
    return CompareReport(**header, reference=labels[reference], seed=seed, bootstrap_resamples=resamples,
                         training_runs=runs, efficiency=costs, primary=primary, primary_level=families.primary_level,
                         num_comparisons=families.secondary_tests, sets=summaries, conventions=CONVENTIONS,
                         timing=timing)


def csv_runs(scores: dict[str, dict[str, CaseScores]], case_folds: dict, own: OwnRuns) -> list[tuple]:
    """cases.csv's blocks: (set, replicate, scores by variant, case -> fold); the own set once per partition and
    replicate, each case with its fold of that partition."""
    own_name = next(s for s in scores if s in OWN_SETS)
    blocks = [(s, 1, by, next(iter(case_folds[s].values()))) for s, by in scores.items()]
    for (p, r), by in own.scores.items():
        if (p, r) != (next(iter(own.partitions)), 1):
            blocks.append((own_name, r, by, own.fold_of(p)))
    return blocks


def write_report(out: Path, report: CompareReport, scores: dict, blocks: list[tuple], first: list[str], echo,
                 also: str = "", figures_before: int = 0) -> None:
    """report.md, report.json, cases.csv and the figures, each written atomically."""
    markdown = markdown_report(report, first)
    write_json(out / "report.json", report_json(report), indent=2)
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text(markdown + "\n")
    write_cases_csv(out / "cases.csv", blocks, report.labels)
    figures = save_figures(out, report, scores)
    echo(markdown)
    echo(f"wrote {out / 'report.md'}, report.json, cases.csv{also} and {figures_before + len(figures)} figures in "
         f"{out}")


def header_of(p: Prepared) -> dict:
    """The report's descriptive fields of a compare run."""
    return dict(
        dataset=p.dataset, configuration=p.request.configuration, folds=p.folds, labels=p.rule.keys,
        ignore_label=p.rule.ignore_label, output=str(p.out),
        targets_note=f"{'regions' if any(isinstance(t, tuple) for t in p.rule.targets) else 'labels'} "
                     f"{', '.join(p.rule.keys)}" + (f", ignore label {p.rule.ignore_label} masked"
                                                     if p.rule.ignore_label is not None else ""),
        nsd_tolerance_mm=p.tolerances, tolerance_note=", ".join(f"label {k}: {v:g} mm" for k, v in p.tolerances.items()),
        variants={v.label: {"trainer": v.trainer, "plans": v.plans, "folder": str(v.folder)} for v in p.variants},
        set_kinds={e.name: e.kind for e in p.externals})


def _run(p: Prepared, echo) -> CompareReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..core.terminal import console
    from ..nnunet.splits import dataset_splits
    start = time.monotonic()
    device = resolve_device(p.request.device) if p.externals else "cpu"
    ensure_trainer_lookup()
    labels = [v.label for v in p.variants]
    own = own_set(p.folds)
    sets = {own: p.in_domain}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(), transient=True) as progress:
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
    case_lists = {s: check_same_cases(by, s) for s, by in sets.items()}
    scores: dict[str, dict] = {}
    score_start = time.monotonic()
    with Progress(*columns, console=console(), transient=True) as progress:
        for set_name, by_variant in sets.items():
            scores[set_name] = {v: score_cases(by_variant[v], p.out / "cache" / set_name / v, p.reader_name, p.rule,
                                               p.tolerances, p.request.processes, progress,
                                               f"scoring {v} on {set_name}") for v in labels}
    first = next(iter(p.partitions))
    with Progress(*columns, console=console(), transient=True) as progress:
        def run_cache(part: int, r: int) -> str:  # partition 1's replicates keep their cache folders
            return f"{own}-replicate-{r}" if part == first else f"{own}-partition-{part}-replicate-{r}"

        def what(part: int, r: int) -> str:
            return ", ".join(filter(None, [f"replicate {r}" if r > 1 else "",
                                           f"partition {part}" if len(p.partitions) > 1 else ""]))

        runs = {(first, 1): scores[own], **{
            (part, r): {v: score_cases(by_variant[v], p.out / "cache" / run_cache(part, r) / v, p.reader_name,
                                       p.rule, p.tolerances, p.request.processes, progress,
                                       f"scoring {v} ({what(part, r)}) on {own}") for v in labels}
            for (part, r), by_variant in p.run_cases.items()}}
    scored = (sum(len(c) for c in case_lists.values())
              + sum(len(next(iter(by.values()))) for by in p.run_cases.values())) * len(labels)
    score_seconds = time.monotonic() - score_start
    case_folds = {s: {v: {c: case.fold for c, case in cases.items()} for v, cases in by.items()}
                  for s, by in sets.items()}
    own_runs = OwnRuns(runs, p.partitions, dataset_splits(p.dataset))
    report = analyse(header_of(p), labels, p.reference, scores, case_folds, own_runs, p.request.seed,
                     p.request.bootstrap, p.request.primary, p.left_out, p.efficiency,
                     {"seconds_scoring": score_seconds, "cases_scored": scored,
                      "seconds_per_case": score_seconds / scored if scored else math.nan,
                      "seconds_total": time.monotonic() - start})
    first_lines, layer_figures = [], []
    if p.layer_series is not None:
        from .layers import layer_rows, layers_figure, which_layer, write_layers_csv
        rows, plain = layer_rows(report, p.specs, p.layer_series)
        write_layers_csv(p.out / "layers.csv", rows)
        layer_figures = [layers_figure(p.out / ("layers.png" if s == own else f"layers_{s}.png"), rows, report, s,
                                       plain) for s in report.sets]
        first_lines = which_layer(rows, plain, own)
        report.layers = rows
    write_report(p.out, report, scores, csv_runs(scores, case_folds, own_runs), first_lines, echo,
                 ", layers.csv" if first_lines else "", len(layer_figures))
    return report
