"""``nnunetv2-llm compare``: is the difference between trained nnU-Net variants real?

For any nnU-Net results (ours, stock nnU-Net's or another plugin's), scored the same way:

* in-domain: the out-of-fold validation predictions nnU-Net wrote (``fold_X/validation``), pooled over
  the requested folds against the ground truth nnU-Net evaluated them with
  (``nnUNet_preprocessed/<dataset>/gt_segmentations``), so every training case counts once per variant;
* zero-shot (``--external NAME=FOLDER``): labelled images the models never saw, predicted by each
  variant with the stock ``nnUNetv2_predict`` (ensemble of the requested folds), cached in the report folder.

Per case and label: Dice and IoU (nnU-Net's own code, equal to its summary.json), HD95 and NSD in mm
(MONAI); see :mod:`nnunetv2_llm.metrics` for the empty-mask conventions. Against the reference variant:
mean paired difference with a seeded bootstrap 95% CI, Wilcoxon signed-rank p (Holm-corrected over every
comparison in the report), matched-pairs rank-biserial effect size and win/tie/loss counts; per-fold means;
a ranking with bootstrap rank stability; trainable/frozen parameters and GFLOPs per patch.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_path, file_sha256, read_json, write_json
from .metrics import DEFAULT_TOLERANCE_MM, HIGHER_IS_BETTER, METRICS, case_metrics
from .statistics import holm, paired_comparison, rank_stability, significance_mark

IN_DOMAIN = "in-domain"
CACHE_VERSION = 1


class CompareError(UserError, ValueError):
    """Results cannot be compared as asked; the message names the variant, fold, case or file and the fix."""


# ---------------------------------------------------------------- variants

@dataclass
class Variant:
    """One trained results folder: ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``."""

    trainer: str
    plans: str
    configuration: str
    folder: Path
    label: str = ""
    dataset_json: dict = field(default_factory=dict)
    plans_json: dict = field(default_factory=dict)

    def __post_init__(self):
        self.label = self.label or (self.trainer if self.plans == "nnUNetPlans" else f"{self.trainer}__{self.plans}")

    def train_command(self, dataset: str, fold, extra: str = "") -> str:
        plans = "" if self.plans == "nnUNetPlans" else f" -p {self.plans}"
        return f"nnUNetv2_train {dataset} {self.configuration} {fold} -tr {self.trainer}{plans}{extra}"


def resolve_variant(item: str, plans: str, dataset_name: str, configuration: str) -> Variant:
    """``TRAINER``, ``TRAINER__PLANS`` or a results folder path (``TRAINER__PLANS__CONFIGURATION``)."""
    path = Path(item).expanduser()
    if path.is_dir() and path.name.count("__") == 2:
        trainer, plans, conf = path.name.split("__")
        if conf != configuration:
            raise CompareError(f"-tr {item}: that results folder is for configuration {conf!r}, not -c {configuration}.")
        folder = path.resolve()
    else:
        from nnunetv2.utilities.file_path_utilities import get_output_folder
        trainer, _, own_plans = item.partition("__")
        plans = own_plans or plans
        folder = Path(get_output_folder(dataset_name, trainer, plans, configuration))
    if not (folder / "plans.json").is_file() or not (folder / "dataset.json").is_file():
        found = sorted(p.name for p in folder.parent.glob(f"*__{configuration}") if p.is_dir()) \
            if folder.parent.is_dir() else []
        raise CompareError(f"-tr {item}: no trained results in {folder} (plans.json and dataset.json missing). "
                           f"Train it with nnUNetv2_train, or pick one of: {', '.join(found) or 'none'}.")
    return Variant(trainer, plans, configuration, folder, dataset_json=read_json(folder / "dataset.json"),
                   plans_json=read_json(folder / "plans.json"))


def foreground_labels(dataset_json: dict) -> list[int]:
    """Foreground labels as nnU-Net evaluates them (regions are not supported here)."""
    labels = []
    for name, value in dataset_json["labels"].items():
        if name == "ignore":
            continue
        if not isinstance(value, int):
            raise CompareError(f"label {name!r} is a region {value}; compare scores plain labels only.")
        if value != 0:
            labels.append(value)
    return sorted(labels)


def check_variants(variants: list[Variant]) -> list[int]:
    """Every variant must segment the same labels; returns them."""
    first = variants[0]
    labels = foreground_labels(first.dataset_json)
    for v in variants[1:]:
        other = foreground_labels(v.dataset_json)
        if other != labels or v.dataset_json["labels"] != first.dataset_json["labels"]:
            raise CompareError(f"{v.label} segments labels {v.dataset_json['labels']}, {first.label} segments "
                               f"{first.dataset_json['labels']}: variants of one comparison must be trained on the "
                               f"same dataset and labels.")
    return labels


# ---------------------------------------------------------------- cases

@dataclass
class Case:
    name: str
    reference: Path
    prediction: Path
    fold: object


def validation_cases(variant: Variant, dataset: str, folds: list, ending: str) -> dict[str, Case]:
    """Out-of-fold validation predictions of the requested folds, checked for finished training."""
    from nnunetv2.paths import nnUNet_preprocessed
    gt = Path(nnUNet_preprocessed.require()) / variant.folder.parent.name / "gt_segmentations"
    cases = {}
    for fold in folds:
        fold_dir = variant.folder / f"fold_{fold}"
        if not (fold_dir / "checkpoint_final.pth").is_file():
            state = "is unfinished (no checkpoint_final.pth)" if fold_dir.is_dir() else "is missing"
            raise CompareError(f"{variant.label}: fold {fold} {state} in {variant.folder}. Train it: "
                               f"{variant.train_command(dataset, fold)}, or leave it out of -f.")
        validation = fold_dir / "validation"
        predictions = sorted(validation.glob(f"*{ending}")) if validation.is_dir() else []
        if not predictions:
            raise CompareError(f"{variant.label}: fold {fold} has no validation predictions in {validation}. "
                               f"Run {variant.train_command(dataset, fold, ' --val')}.")
        for p in predictions:
            name = p.name[: -len(ending)]
            reference = gt / p.name
            if not reference.is_file():
                raise CompareError(f"{variant.label}: no ground truth {reference} for validation case {name}; "
                                   f"run nnUNetv2_plan_and_preprocess -d {dataset} again to restore gt_segmentations.")
            if name in cases:
                raise CompareError(f"{variant.label}: case {name} is validated in folds {cases[name].fold} and "
                                   f"{fold}; pass folds of one cross-validation split.")
            cases[name] = Case(name, reference, p, fold)
    return cases


def check_same_cases(sets: dict[str, dict[str, Case]], where: str) -> list[str]:
    labels = list(sets)
    first = set(sets[labels[0]])
    for label in labels[1:]:
        other = set(sets[label])
        if other != first:
            only_first, only_other = sorted(first - other), sorted(other - first)
            raise CompareError(
                f"{where}: {labels[0]} and {label} scored different cases (only in {labels[0]}: "
                f"{', '.join(only_first[:10]) or 'none'}; only in {label}: {', '.join(only_other[:10]) or 'none'}). "
                f"Compare variants trained on the same dataset and split, with the same folds (-f).")
    return sorted(first)


# ---------------------------------------------------------------- external sets

@dataclass
class External:
    name: str
    images: Path
    labels: Path


def parse_external(item: str, labels: list[int], dataset_json: dict, ending: str) -> External:
    """``NAME=FOLDER``: a raw dataset (imagesTs+labelsTs, else imagesTr+labelsTr) or a folder holding those."""
    name, sep, folder = item.partition("=")
    if not sep or not name or not folder:
        raise CompareError(f"--external {item!r}: write NAME=FOLDER, e.g. --external shifted=/data/Dataset601_X.")
    if name == IN_DOMAIN or not all(c.isalnum() or c in "-_." for c in name):
        raise CompareError(f"--external {item!r}: NAME must use letters, digits, '-', '_', '.' and not be "
                           f"{IN_DOMAIN!r}.")
    root = Path(folder).expanduser().resolve()
    pairs = [(root / f"images{s}", root / f"labels{s}") for s in ("Ts", "Tr")]
    found = next(((i, lab) for i, lab in pairs if i.is_dir() and lab.is_dir()), None)
    if found is None:
        raise CompareError(f"--external {name}={folder}: no imagesTs+labelsTs (or imagesTr+labelsTr) folders in "
                           f"{root}. Point it at an nnU-Net raw dataset or a folder holding those two folders.")
    own = root / "dataset.json"
    if own.is_file():
        ext_json = read_json(own)
        if ext_json.get("labels") != dataset_json["labels"]:
            raise CompareError(f"--external {name}: its dataset.json labels {ext_json.get('labels')} differ from "
                               f"the models' labels {dataset_json['labels']}; zero-shot sets need the same labels.")
        if ext_json.get("file_ending", ending) != ending:
            raise CompareError(f"--external {name}: files end in {ext_json['file_ending']!r}, the models were "
                               f"trained on {ending!r}; convert the images first.")
    if not list(found[1].glob(f"*{ending}")):
        raise CompareError(f"--external {name}: {found[1]} holds no label files ending in {ending!r}.")
    return External(name, *found)


def external_label_check(ext: External, labels: list[int], reader_writer, ending: str) -> None:
    allowed = set(labels) | {0}
    for f in sorted(ext.labels.glob(f"*{ending}")):
        seg, _ = reader_writer.read_seg(str(f))
        extra = sorted(set(np.unique(seg).astype(int).tolist()) - allowed)
        if extra:
            raise CompareError(f"--external {ext.name}: {f.name} holds labels {extra} that the models do not know "
                               f"(they segment {sorted(allowed)}); zero-shot sets need the same labels.")


def checkpoint_stamp(variant: Variant, folds: list) -> list:
    return [[str(f), (variant.folder / f"fold_{f}" / "checkpoint_final.pth").stat().st_mtime_ns] for f in folds]


def predict_external(variant: Variant, ext: External, dataset: str, folds: list, out_root: Path, device: str,
                     echo) -> Path:
    """The variant's ensemble prediction of ``ext`` with the stock ``nnUNetv2_predict``, run once and cached."""
    from .environment import cli_path, ext_trainer_entries
    out = out_root / "external" / ext.name / variant.label
    stamp = {"folds": checkpoint_stamp(variant, folds), "images": str(ext.images)}
    marker = out / ".nnunetv2-llm-prediction.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        echo(f"reusing {variant.label}'s predictions of {ext.name} ({out})")
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [cli_path("nnUNetv2_predict"), "-i", str(ext.images), "-o", str(partial), "-d", dataset,
           "-c", variant.configuration, "-tr", variant.trainer, "-p", variant.plans,
           "-f", *[str(f) for f in folds], "-device", device, "--disable_progress_bar"]
    if device == "cpu":
        cmd += ["-npp", "0", "-nps", "0"]
    env = {**os.environ, "nnUNet_extTrainer": os.pathsep.join(ext_trainer_entries())}
    echo(f"predicting {ext.name} with {variant.label} (folds {' '.join(map(str, folds))}) ...")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"nnUNetv2_predict for {variant.label} on {ext.name} failed (exit {proc.returncode}):\n"
                           + (proc.stdout + proc.stderr)[-3000:])
    write_json(partial / marker.name, stamp)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, out)
    return out


def external_cases(ext: External, predictions: Path, ending: str) -> dict[str, Case]:
    cases = {}
    for ref in sorted(ext.labels.glob(f"*{ending}")):
        pred = predictions / ref.name
        if not pred.is_file():
            raise CompareError(f"--external {ext.name}: no prediction {pred} for the labelled case {ref.name}: "
                               f"every label file needs its image ({ext.images}/{ref.name[:-len(ending)]}_0000{ending}).")
        cases[ref.name[: -len(ending)]] = Case(ref.name[: -len(ending)], ref, pred, "ensemble")
    return cases


# ---------------------------------------------------------------- scoring (cached, parallel)

def _score(job) -> tuple:
    reference, prediction, reader_name, labels, tolerances = job
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name
    reader_writer = recursive_find_reader_writer_by_name(reader_name)()
    return case_metrics(str(reference), str(prediction), reader_writer, labels, tolerances)


def score_cases(cases: dict[str, Case], cache_dir: Path, reader_name: str, labels: list[int],
                tolerances: dict[int, float], processes: int, progress, description: str) -> dict:
    """``{case: {label: metrics}}``, read from the cache where the prediction and reference are unchanged."""
    settings = {"version": CACHE_VERSION, "labels": labels, "tolerances": {str(k): v for k, v in tolerances.items()}}
    results, todo = {}, []
    for name, case in cases.items():
        key = {"prediction": file_sha256(case.prediction), "reference": file_sha256(case.reference), **settings}
        cached = cache_dir / f"{name}.json"
        if cached.is_file():
            entry = json.loads(cached.read_text())
            if entry.get("key") == key:
                results[name] = {int(k): v for k, v in entry["metrics"].items()}
                continue
        todo.append((name, key))
    task = progress.add_task(description, total=len(cases), completed=len(cases) - len(todo))
    jobs = [(cases[n].reference, cases[n].prediction, reader_name, labels, tolerances) for n, _ in todo]
    workers = max(1, min(processes, len(jobs)))
    with contextlib.ExitStack() as stack:
        mapped = map(_score, jobs) if workers == 1 else \
            stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map(_score, jobs)
        for (name, key), metrics in zip(todo, mapped):
            write_json(cache_dir / f"{name}.json", {"key": key, "metrics": metrics})
            results[name] = metrics
            progress.advance(task)
    return results


# ---------------------------------------------------------------- statistics and report

def case_means(scores: dict, cases: list[str], labels: list[int], metric: str) -> np.ndarray:
    """Per case the mean over labels (NaN labels left out, as nnU-Net's foreground mean does)."""
    out = []
    for c in cases:
        values = [scores[c][label][metric] for label in labels]
        finite = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        out.append(float(np.mean(finite)) if finite else math.nan)
    return np.array(out)


def summarize_set(name: str, variants: list[Variant], reference: int, scores: dict, cases: list[str],
                  case_folds: dict, labels: list[int], seed: int, resamples: int) -> dict:
    """Means, per-fold means, paired comparisons and ranks of every variant on one case set."""
    entry = {"cases": cases, "variants": {}, "comparisons": {}, "ranking": {}}
    for i, v in enumerate(variants):
        per_metric = {}
        for metric in METRICS:
            values = case_means(scores[v.label], cases, labels, metric)
            folds = {}
            for fold in sorted({str(case_folds[v.label][c]) for c in cases}):
                fold_values = [x for c, x in zip(cases, values) if str(case_folds[v.label][c]) == fold]
                folds[fold] = float(np.nanmean(fold_values)) if not np.all(np.isnan(fold_values)) else math.nan
            per_label = {str(label): float(np.nanmean([scores[v.label][c][label][metric] for c in cases]))
                         if not all(math.isnan(scores[v.label][c][label][metric]) for c in cases) else math.nan
                         for label in labels}
            per_metric[metric] = {"mean": float(np.nanmean(values)) if not np.all(np.isnan(values)) else math.nan,
                                  "std": float(np.nanstd(values, ddof=1)) if np.sum(~np.isnan(values)) > 1 else math.nan,
                                  "per_fold": folds, "per_label": per_label}
        entry["variants"][v.label] = per_metric
        if i != reference:
            entry["comparisons"][v.label] = {
                metric: paired_comparison(case_means(scores[v.label], cases, labels, metric),
                                          case_means(scores[variants[reference].label], cases, labels, metric),
                                          HIGHER_IS_BETTER[metric], seed, resamples)
                for metric in METRICS}
    for metric in METRICS:
        matrix = np.stack([case_means(scores[v.label], cases, labels, metric) for v in variants], axis=1)
        ranks = rank_stability(matrix, HIGHER_IS_BETTER[metric], seed)
        entry["ranking"][metric] = {v.label: {"rank": r, "first": f}
                                    for v, r, f in zip(variants, ranks["rank"], ranks["first"])}
    return entry


def apply_holm(sets: dict) -> None:
    """Holm over every (set, variant, metric) comparison in the report."""
    keys = [(s, v, m) for s, e in sets.items() for v, c in e["comparisons"].items() for m in c
            if not math.isnan(c[m]["p"])]
    adjusted = holm([sets[s]["comparisons"][v][m]["p"] for s, v, m in keys])
    for (s, v, m), p in zip(keys, adjusted):
        sets[s]["comparisons"][v][m]["p_holm"] = p
    for e in sets.values():
        for c in e["comparisons"].values():
            for m in c.values():
                m.setdefault("p_holm", math.nan)


def pairwise_matrix(variants: list[Variant], scores: dict, cases: list[str], labels: list[int],
                    metric: str = "Dice") -> list[list[float]]:
    """Holm-corrected Wilcoxon p between every pair of variants on one set (for the significance figure)."""
    from .statistics import wilcoxon_p
    values = [case_means(scores[v.label], cases, labels, metric) for v in variants]
    pairs = [(i, j) for i in range(len(variants)) for j in range(i + 1, len(variants))]
    raw = []
    for i, j in pairs:
        keep = ~(np.isnan(values[i]) | np.isnan(values[j]))
        raw.append(wilcoxon_p(values[i][keep] - values[j][keep]) if keep.any() else 1.0)
    matrix = [[math.nan] * len(variants) for _ in variants]
    for (i, j), p in zip(pairs, holm(raw)):
        matrix[i][j] = matrix[j][i] = p
    return matrix


def efficiency(variant: Variant) -> dict:
    """Trainable/frozen parameters and GFLOPs of one patch, as ``nnunetv2-llm info`` counts them."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from .info import measure
    from .network import LLMUNet
    from .spec import PLANS_KEY, spec_from_entry
    plans_manager = PlansManager(variant.plans_json)
    conf = plans_manager.get_configuration(variant.configuration)
    in_channels = determine_num_input_channels(plans_manager, conf, variant.dataset_json)
    out_channels = plans_manager.get_label_manager(variant.dataset_json).num_segmentation_heads
    net = nnUNetTrainer.build_network_architecture(plans_manager, conf, in_channels, out_channels, False)
    entry = conf.configuration.get(PLANS_KEY)
    if entry is not None:
        net = LLMUNet(net, spec_from_entry(entry, str(variant.folder / "plans.json")))
    cost = measure(net.eval(), in_channels, tuple(conf.patch_size))
    return {"trainable_M": cost.trainable / 1e6, "frozen_M": cost.frozen / 1e6, "gflops": cost.gflops,
            "patch_size": list(conf.patch_size), "llm": entry is not None}


def _fmt(x, digits=3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_report(report: dict) -> str:
    ref = report["reference"]
    lines = [f"# nnunetv2-llm compare: {report['dataset']} {report['configuration']}", "",
             f"Reference: **{ref}**. Folds: {' '.join(map(str, report['folds']))}. Values are means over cases "
             f"(each case: mean over labels {report['labels']}); Δ = variant - reference with a bootstrap 95% CI "
             f"({report['bootstrap_resamples']} resamples, seed {report['seed']}); p = paired Wilcoxon signed-rank, "
             f"Holm-corrected over all {report['num_comparisons']} comparisons in this report "
             f"(* p<0.05, ** p<0.01, *** p<0.001); r = matched-pairs rank-biserial; W/T/L = wins/ties/losses "
             f"of the variant. NSD at {report['tolerance_note']}; HD95 in mm (lower is better).", ""]
    for set_name, entry in report["sets"].items():
        n = len(entry["cases"])
        lines += [f"## {set_name} ({n} cases)", "",
                  "| variant | Dice | Δ Dice [95% CI] | p | r | W/T/L | IoU | NSD | Δ NSD | HD95 | Δ HD95 | "
                  "P(rank 1) | trainable M | frozen M | GFLOPs |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, per_metric in entry["variants"].items():
            comp = entry["comparisons"].get(label)
            eff = report["efficiency"].get(label, {})

            def delta(metric):
                if comp is None:
                    return "(reference)"
                c = comp[metric]
                return (f"{c['mean_difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                        f"{significance_mark(c['p_holm'])}")
            dice = comp["Dice"] if comp else None
            wtl = f"{dice['wins']}/{dice['ties']}/{dice['losses']}" if dice else "-"
            lines.append(
                f"| {label} | {_fmt(per_metric['Dice']['mean'])} ± {_fmt(per_metric['Dice']['std'])} | {delta('Dice')} "
                f"| {_fmt(dice['p_holm'], 4) if dice else '-'} | {_fmt(dice['rank_biserial'], 2) if dice else '-'} "
                f"| {wtl} "
                f"| {_fmt(per_metric['IoU']['mean'])} | {_fmt(per_metric['NSD']['mean'])} | {delta('NSD')} "
                f"| {_fmt(per_metric['HD95']['mean'], 2)} | {delta('HD95') if comp else '(reference)'} "
                f"| {_fmt(entry['ranking']['Dice'][label]['first'], 2)} | {_fmt(eff.get('trainable_M'), 2)} "
                f"| {_fmt(eff.get('frozen_M'), 2)} | {_fmt(eff.get('gflops'), 2)} |")
        folds = sorted({f for v in entry["variants"].values() for f in v["Dice"]["per_fold"]})
        if set_name == IN_DOMAIN and len(folds) > 1:
            lines += ["", "Dice per fold: " + "; ".join(
                f"{label} " + " ".join(_fmt(v['Dice']['per_fold'].get(f)) for f in folds)
                for label, v in entry["variants"].items())]
        lines.append("")
    if len(report["sets"]) > 1:
        lines += ["## In-domain vs zero-shot (mean Dice, and the drop)", "",
                  "| variant | " + " | ".join(report["sets"]) + " | " +
                  " | ".join(f"drop to {s}" for s in report["sets"] if s != IN_DOMAIN) + " |",
                  "|---|" + "---|" * (2 * len(report["sets"]) - 1)]
        for label in report["sets"][IN_DOMAIN]["variants"]:
            means = {s: e["variants"][label]["Dice"]["mean"] for s, e in report["sets"].items()}
            drops = [means[IN_DOMAIN] - means[s] for s in report["sets"] if s != IN_DOMAIN]
            lines.append(f"| {label} | " + " | ".join(_fmt(m) for m in means.values()) + " | "
                         + " | ".join(f"{d:+.3f}" for d in drops) + " |")
        lines.append("")
    return "\n".join(lines)


def write_cases_csv(path: Path, report_scores: dict, sets: dict, labels: list[int], case_folds: dict) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["set", "variant", "case", "fold", "label", "metric", "value"])
    for set_name, by_variant in report_scores.items():
        for variant, scores in by_variant.items():
            for case in sets[set_name]["cases"]:
                fold = case_folds[set_name][variant][case]
                for label in labels:
                    for metric in METRICS:
                        writer.writerow([set_name, variant, case, fold, label, metric, scores[case][label][metric]])
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue())


def save_figures(out: Path, report: dict, report_scores: dict, labels: list[int]) -> list[Path]:
    """Per-case distributions, paired differences with CIs, and the Dice significance matrix, per set."""
    from matplotlib.figure import Figure
    written = []
    for set_name, entry in report["sets"].items():
        names = list(entry["variants"])
        tag = set_name.replace("/", "_")
        fig = Figure(figsize=(4 * len(METRICS), 1 + 0.6 * len(names) + 1.5), layout="constrained")
        for ax, metric in zip(fig.subplots(1, len(METRICS)), METRICS):
            data = [case_means(report_scores[set_name][n], entry["cases"], labels, metric) for n in names]
            data = [d[~np.isnan(d)] for d in data]
            ax.boxplot(data, orientation="horizontal", showfliers=False)
            for i, d in enumerate(data, start=1):
                ax.scatter(d, np.full(len(d), i) + np.linspace(-0.15, 0.15, len(d)), s=8, color="k", alpha=0.6)
            ax.set_yticks(range(1, len(names) + 1), names, fontsize=7)
            ax.set_title(f"{metric} per case ({'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better)",
                         fontsize=9)
        written.append(_savefig(fig, out / f"distributions_{tag}.png"))
        compared = list(entry["comparisons"])
        if compared:
            fig = Figure(figsize=(4 * len(METRICS), 1 + 0.6 * len(compared) + 1), layout="constrained")
            for ax, metric in zip(fig.subplots(1, len(METRICS)), METRICS):
                for i, name in enumerate(compared):
                    c = entry["comparisons"][name][metric]
                    ax.errorbar(c["mean_difference"], i, xerr=[[c["mean_difference"] - c["ci_low"]],
                                                               [c["ci_high"] - c["mean_difference"]]],
                                fmt="o", color="k", capsize=3)
                    ax.annotate(f"p={_fmt(c['p_holm'], 3)}{significance_mark(c['p_holm'])}",
                                (c["mean_difference"], i + 0.2), fontsize=7, ha="center")
                ax.axvline(0, color="grey", lw=1)
                ax.set_yticks(range(len(compared)), compared, fontsize=7)
                ax.set_ylim(-0.7, len(compared) - 0.3)
                ax.set_title(f"Δ {metric} vs {report['reference']} (95% CI)", fontsize=9)
            written.append(_savefig(fig, out / f"differences_{tag}.png"))
        matrix = np.array(entry["pairwise_dice_p_holm"], dtype=float)
        fig = Figure(figsize=(2 + 0.8 * len(names), 1.5 + 0.8 * len(names)), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(np.where(np.isnan(matrix), 1.0, matrix), vmin=0, vmax=0.1, cmap="viridis_r")
        for i in range(len(names)):
            for j in range(len(names)):
                if i != j:
                    ax.text(j, i, f"{matrix[i, j]:.3f}{significance_mark(matrix[i, j])}", ha="center",
                            va="center", fontsize=7, color="w" if matrix[i, j] < 0.05 else "k")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{set_name}: Wilcoxon p on Dice, Holm over the pairs", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
        written.append(_savefig(fig, out / f"significance_{tag}.png"))
    return written


def _savefig(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


# ---------------------------------------------------------------- command

def parse_tolerances(items: list[str] | None, labels: list[int]) -> dict[int, float]:
    """``1.5`` for every label, or ``LABEL=MM`` per label (others keep the default)."""
    tolerances = dict.fromkeys(labels, DEFAULT_TOLERANCE_MM)
    for item in items or []:
        key, sep, value = item.rpartition("=")
        try:
            mm = float(value)
        except ValueError:
            mm = -1.0
        if mm <= 0:
            raise CompareError(f"--nsd-tolerance {item!r}: give a positive distance in mm, for all labels (2.0) "
                               f"or per label (1=2.0).")
        if not sep:
            tolerances = dict.fromkeys(labels, mm)
        elif not key.isdigit() or int(key) not in labels:
            raise CompareError(f"--nsd-tolerance {item!r}: label {key!r} is not one of the labels {labels}.")
        else:
            tolerances[int(key)] = mm
    return tolerances


def parse_folds(values: list[str]) -> list:
    folds = []
    for v in values:
        if v == "all":
            folds.append("all")
            continue
        if not v.isdigit():
            raise CompareError(f"-f {v!r}: folds are integers (0..4 for nnU-Net's 5-fold split) or 'all'.")
        folds.append(int(v))
    if len(set(folds)) != len(folds):
        raise CompareError(f"-f {' '.join(values)}: a fold is listed twice.")
    return folds


def run_compare(args, echo=print) -> dict:
    import torch
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .environment import console, ensure_trainer_lookup
    for var in ("nnUNet_results", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            raise CompareError(f"{var} is not set; export it (see `nnunetv2-llm doctor`).")
    try:
        dataset_name = maybe_convert_to_dataset_name(args.dataset)
    except RuntimeError as e:
        raise CompareError(f"-d {args.dataset}: {e}") from None
    if len(args.plans) not in (1, len(args.trainers)):
        raise CompareError(f"-p takes one plans name for all variants or one per -tr ({len(args.trainers)}); "
                           f"got {len(args.plans)}.")
    plans = args.plans * len(args.trainers) if len(args.plans) == 1 else args.plans
    variants = [resolve_variant(t, p, dataset_name, args.configuration) for t, p in zip(args.trainers, plans)]
    labels_seen = [v.label for v in variants]
    if len(set(labels_seen)) != len(labels_seen):
        raise CompareError(f"a variant is listed twice: {labels_seen}.")
    if args.reference is None:
        reference = 0
    else:
        matches = [i for i, v in enumerate(variants) if args.reference in (v.label, v.trainer)]
        if len(matches) != 1:
            raise CompareError(f"--reference {args.reference!r} names none (or several) of the variants "
                               f"{labels_seen}; pass one of those.")
        reference = matches[0]
    labels = check_variants(variants)
    dataset_json = variants[0].dataset_json
    ending = dataset_json["file_ending"]
    folds = parse_folds(args.folds)
    tolerances = parse_tolerances(args.nsd_tolerance, labels)
    externals = [parse_external(e, labels, dataset_json, ending) for e in args.external or []]
    if len({e.name for e in externals}) != len(externals):
        raise CompareError("--external: each NAME must be unique.")
    out = Path(args.output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CompareError(f"-o {args.output} is a file; pass a folder for the report.")

    sets: dict[str, dict[str, dict[str, Case]]] = {IN_DOMAIN: {v.label: validation_cases(v, args.dataset, folds, ending)
                                                                for v in variants}}
    case_lists = {IN_DOMAIN: check_same_cases(sets[IN_DOMAIN], "in-domain validation")}
    example = next(iter(sets[IN_DOMAIN][variants[0].label].values())).reference
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its choice
        reader_writer_cls = determine_reader_writer_from_dataset_json(dataset_json, str(example))
    for ext in externals:
        external_label_check(ext, labels, reader_writer_cls(), ending)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    ensure_trainer_lookup()
    start = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(), transient=True) as progress:
        task = progress.add_task("zero-shot predictions (nnUNetv2_predict)", total=len(externals) * len(variants))
        for ext in externals:
            sets[ext.name] = {}
            for v in variants:
                predictions = predict_external(v, ext, args.dataset, folds, out, device,
                                               lambda m: progress.console.print(m, markup=False, highlight=False))
                sets[ext.name][v.label] = external_cases(ext, predictions, ending)
                progress.advance(task)
            case_lists[ext.name] = check_same_cases(sets[ext.name], f"--external {ext.name}")

    scores: dict[str, dict] = {}
    score_start = time.monotonic()
    with Progress(*columns, console=console(), transient=True) as progress:
        for set_name, by_variant in sets.items():
            scores[set_name] = {v.label: score_cases(by_variant[v.label], out / "cache" / set_name / v.label,
                                                     reader_writer_cls.__name__, labels, tolerances, args.processes,
                                                     progress, f"scoring {v.label} on {set_name}")
                                for v in variants}
    scored = sum(len(c) for c in case_lists.values()) * len(variants)
    score_seconds = time.monotonic() - score_start
    case_folds = {s: {v: {c: case.fold for c, case in cases.items()} for v, cases in by.items()}
                  for s, by in sets.items()}
    summaries = {s: summarize_set(s, variants, reference, scores[s], case_lists[s], case_folds[s], labels,
                                  args.seed, args.bootstrap) for s in sets}
    for s, entry in summaries.items():
        entry["pairwise_dice_p_holm"] = pairwise_matrix(variants, scores[s], case_lists[s], labels)
    apply_holm(summaries)
    report = {
        "dataset": dataset_name, "configuration": args.configuration, "folds": folds, "labels": labels,
        "output": str(out),
        "reference": variants[reference].label, "seed": args.seed, "bootstrap_resamples": args.bootstrap,
        "nsd_tolerance_mm": {str(k): v for k, v in tolerances.items()},
        "tolerance_note": ", ".join(f"label {k}: {v:g} mm" for k, v in tolerances.items()),
        "variants": {v.label: {"trainer": v.trainer, "plans": v.plans, "folder": str(v.folder)} for v in variants},
        "efficiency": {v.label: efficiency(v) for v in variants},
        "num_comparisons": sum(1 for e in summaries.values() for c in e["comparisons"].values() for _ in c),
        "sets": summaries,
        "conventions": {"both_empty": "NaN for every metric (left out of means and tests)",
                        "one_empty": "Dice = IoU = NSD = 0, HD95 = image diagonal in mm",
                        "case_value": "mean over labels of the case, NaN labels left out"},
        "timing": {"seconds_scoring": score_seconds, "cases_scored": scored,
                   "seconds_per_case": score_seconds / scored if scored else math.nan,
                   "seconds_total": time.monotonic() - start},
    }
    markdown = markdown_report(report)
    write_json(out / "report.json", _json_safe(report), indent=2)
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text(markdown + "\n")
    write_cases_csv(out / "cases.csv", scores, summaries, labels, case_folds)
    figures = save_figures(out, report, scores, labels)
    echo(markdown)
    echo(f"wrote {out / 'report.md'}, report.json, cases.csv and {len(figures)} figures in {out}")
    return report


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _json_safe(x.item())
    return x


def cmd_compare(args) -> int:
    run_compare(args)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="paired statistics, surface metrics and zero-shot generalisation of trained nnU-Net variants",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-tr", "--trainers", nargs="+", required=True, metavar="TRAINER[__PLANS]|FOLDER",
                   help="the variants: trainer names (any trainer, stock or plugin), TRAINER__PLANS, or results folders")
    p.add_argument("-p", "--plans", nargs="+", default=["nnUNetPlans"],
                   help="plans identifier for all variants, or one per -tr (default nnUNetPlans)")
    p.add_argument("-f", "--folds", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default 0 1 2 3 4)")
    p.add_argument("--reference", help="the variant the others are compared with (default: the first)")
    p.add_argument("--external", nargs="+", metavar="NAME=FOLDER",
                   help="zero-shot sets: an nnU-Net raw dataset or a folder with imagesTs/labelsTs, same labels")
    p.add_argument("--nsd-tolerance", nargs="+", metavar="MM|LABEL=MM",
                   help=f"NSD tolerance in mm, for all labels or per label (default {DEFAULT_TOLERANCE_MM:g})")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("-np", "--processes", type=int, default=os.cpu_count() or 1,
                   help="processes scoring cases in parallel (default: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="device of the external predictions (default: cuda if available)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.set_defaults(func=cmd_compare)
