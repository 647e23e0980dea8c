"""How a compare report is written: report.md from the :class:`CompareReport`, report.json (the one place that
turns the objects into report.json's keys) and cases.csv, written with the figures into the report folder."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import numpy as np

from ..core.files import atomic_path, write_json
from .cases import IN_DOMAIN, IN_SAMPLE, VALIDATION_SETS
from .efficiency import efficiency_table
from .figures import save_figures
from .formatting import fmt
from .metrics import METRICS
from .partitions import NOT_INCLUDED
from .procedure import CASE_LEVEL, PROCEDURE_LEVEL, ProcedureComparison
from .run_scores import TrainingRunScores
from .scoring import CaseScores
from .statistics import significance_mark
from .summary import Comparison, CompareReport, SetSummary

STARS = "(* p<0.05, ** p<0.01, *** p<0.001)"
CASES_COLUMNS = ("set", "variant", "case", "fold", "label", "metric", "value", "replicate")


def _mark(c: Comparison, level: str, p: float) -> str:
    """Stars for the primary endpoint only: every other p is secondary."""
    return significance_mark(p) if c.primary_at == level else ""


def _delta(comparison: dict[str, Comparison] | None, metric: str) -> str:
    if comparison is None:
        return "(reference)"
    c = comparison[metric]
    x = c.case
    if math.isnan(x.ci_low):
        return f"{fmt(x.mean_difference)} [-]"
    return f"{x.mean_difference:+.3f} [{x.ci_low:+.3f}, {x.ci_high:+.3f}]{_mark(c, CASE_LEVEL, c.p_holm)}"


def _set_heading(report: CompareReport, set_name: str, entry: SetSummary) -> str:
    kind = report.set_kinds.get(set_name)
    return f"## {set_name} ({len(entry.cases)} cases{', ' + kind if kind and kind != set_name else ''})"


def _set_table(report: CompareReport, set_name: str, entry: SetSummary) -> list[str]:
    lines = [_set_heading(report, set_name, entry), "",
             "| variant | Dice | Δ Dice [95% CI] | p | p Wilcoxon | r | W/T/L | IoU | NSD | Δ NSD | HD95 (mm) | "
             "Δ HD95 (mm) | P(rank 1) | trainable M | frozen M | GFLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for label, variant in entry.variants.items():
        comp = entry.comparisons.get(label)
        cost = report.efficiency.get(label)
        dice = comp["Dice"] if comp else None
        wtl = f"{dice.case.wins}/{dice.case.ties}/{dice.case.losses}" if dice else "-"
        m = variant.metrics
        lines.append(
            f"| {label} | {fmt(m['Dice'].mean)} ± {fmt(m['Dice'].std)} | {_delta(comp, 'Dice')} "
            f"| {fmt(dice.p_holm, 4) if dice else '-'} | {fmt(dice.case.p_wilcoxon, 4) if dice else '-'} "
            f"| {fmt(dice.case.rank_biserial, 2) if dice else '-'} "
            f"| {wtl} | {fmt(m['IoU'].mean)} | {fmt(m['NSD'].mean)} | {_delta(comp, 'NSD')} "
            f"| {fmt(m['HD95'].mean, 2)} | {_delta(comp, 'HD95')} "
            f"| {fmt(variant.ranks['Dice'].first, 2)} | {fmt(cost.trainable_M if cost else None, 2)} "
            f"| {fmt(cost.frozen_M if cost else None, 2)} | {fmt(cost.gflops if cost else None, 2)} |")
        if dice:
            said = [dice.case.note] if dice.case.note else []
            if dice.case.filled_pairs:
                said.append(f"{dice.case.filled_pairs} pair(s) where one variant left a case empty, rightly, "
                            f"count it as Dice 1")
            if said:
                notes.append(f"- {label} (Dice): {'; '.join(said)}.")
    if notes:
        lines += [""] + notes
    folds = sorted({f for v in entry.variants.values() for f in v.metrics["Dice"].per_fold})
    if set_name in VALIDATION_SETS and len(folds) > 1:
        lines += ["", "Dice per fold: " + "; ".join(
            f"{label} " + " ".join(fmt(v.metrics['Dice'].per_fold.get(f)) for f in folds)
            for label, v in entry.variants.items())]
    return lines + [""]


def _generalisation_table(report: CompareReport) -> list[str]:
    """In-domain Dice next to each other set's; a zero-shot set's column of differences is its drop."""
    own = report.validation_set
    others = [s for s in report.sets if s != own]
    kinds = report.set_kinds
    title = " and ".join(sorted({kinds[s] for s in others}, reverse=True))
    explained = ("Δ = the set's mean Dice minus the in-domain (cross-validation) mean: a held-out set has the "
                 "training distribution, so its Δ is noise around 0; for a zero-shot (shifted) set a negative Δ is "
                 "the drop."
                 if own == IN_DOMAIN else
                 "Δ = the set's mean Dice minus the in-sample mean (fold all scored on its own training cases): "
                 "a held-out set's Δ is the gap between fit and generalisation, a zero-shot set's adds the shift.")
    columns = [f"Δ {s}" + (f" ({kinds[s]})" if kinds[s] != s else "") for s in others]
    lines = [f"## {own.capitalize()} vs {title} (mean Dice)", "", explained, "",
             "| variant | " + " | ".join(report.sets) + " | " + " | ".join(columns) + " |",
             "|---|" + "---|" * (len(report.sets) + len(others))]
    for label in report.sets[own].variants:
        means = {s: e.variants[label].metrics["Dice"].mean for s, e in report.sets.items()}
        lines.append(f"| {label} | " + " | ".join(fmt(m) for m in means.values()) + " | "
                     + " | ".join(f"{means[s] - means[own]:+.3f}" for s in others) + " |")
    return lines + [""]


PROCEDURE_TITLE = "This training procedure against that one (unit: the training run)"
PROCEDURE_QUESTION = "Would training this variant again, on new cases like these, beat training the reference again?"
CASES_TITLE = "These models on these cases (unit: the case)"
CASES_QUESTION = ("Are these trained models (replicate 1) different on these cases? The trained models are held fixed, "
                  "so training noise is not in these intervals.")


def _procedure_delta(c: Comparison) -> str:
    x = c.procedure
    if x is None or not x.has_interval:
        return "-"
    return f"{x.mean_difference:+.3f} [{x.ci_low:+.3f}, {x.ci_high:+.3f}]{_mark(c, PROCEDURE_LEVEL, x.p_holm)}"


def _bold_lead(note: str) -> str:
    """The note as one sentence, its "training noise is not measured" in bold (said once, plainly)."""
    lead = "training noise is not measured"
    if note.startswith(lead):
        return f"**Training noise is not measured**{note[len(lead):]}."
    if note.startswith("in-sample"):
        return f"**In-sample**{note[len('in-sample'):]}."
    return f"{note[0].upper()}{note[1:]}."


def _components(x: ProcedureComparison) -> str:
    vc = x.variance_components
    if not vc:
        return "-"
    parts = " / ".join(f"{vc[k]:.2g}" if vc[k] is not None and not math.isnan(vc[k]) else "-"
                       for k in ("fold", "run", "case"))
    return parts + (" (fold: boundary fit)" if x.fold_component_on_boundary else "")


def primary_line(report: CompareReport) -> str:
    """The report's one primary endpoint, said once: the only test with stars."""
    tested = len(report.sets[report.validation_set].comparisons)
    level = "procedure level (unit: the training run)" if report.primary_level == PROCEDURE_LEVEL else \
        "case level (unit: the case)"
    return (f"**Primary endpoint**: {report.primary} on the {report.validation_set} set at the {level}, each variant "
            f"against {report.reference}, Holm over the {tested} variant(s) {STARS}. Every other p in this report is "
            f"secondary: shown without stars, to read as a description, not a finding (`--primary METRIC` picks "
            f"another metric).")


def procedure_lines(report: CompareReport) -> list[str]:
    """The headline of a report: the procedure level (unit = training run) when the runs allow one, else, once and
    plainly, why there is none (one training run, or in-sample scores) and how to get one."""
    runs = report.training_runs
    own = report.validation_set
    entry = report.sets[own]
    if not runs.procedure_level or not entry.comparisons:
        return [_bold_lead(runs.note), ""]
    primary = report.primary
    shown = [primary] + [m for m in ("Dice", "NSD", "HD95") if m != primary]
    first = next(iter(entry.comparisons.values()))[primary].procedure
    lines = [f"## {PROCEDURE_TITLE}", "",
             f"{PROCEDURE_QUESTION} {own}, {runs.runs_per_variant} runs per variant ("
             f"{f'P = {runs.partitions} partitions x ' if runs.partitions > 1 else ''}{runs.folds} folds x "
             f"{runs.replicates} replicate(s)). Δ = variant - {report.reference}, 95% CI; method: {first.method}; p of "
             f"{primary}: the primary endpoint (Holm over the variants); the other metrics' intervals are secondary. "
             f"Dice, IoU and NSD: higher is better; HD95 in mm: lower is better.", ""]
    if not runs.training_noise_measured or runs.left_out or runs.partitions > 1:
        lines += [_bold_lead(runs.note), ""]
    lines += ["| variant | runs | " + " | ".join(f"Δ {m}{' (mm)' if m == 'HD95' else ''} [95% CI]"
                                                + (" | p" if m == primary else "") for m in shown)
              + f" | variance of a run's Δ {primary}: fold / run / case |",
              "|---|---|" + "---|" * (len(shown) + 2)]
    said = []
    for label, c in entry.comparisons.items():
        x = c[primary].procedure
        cells = [_procedure_delta(c[m]) + (f" | {fmt(x.p_holm, 4)}" if m == primary else "") for m in shown]
        lines.append(f"| {label} | {x.runs} | " + " | ".join(cells) + f" | {_components(x)} |")
        said += [f"- {label}: {caveat}." for caveat in x.caveats]
    lines += [""] + (said + [""] if said else [])
    if any(NOT_INCLUDED in c[primary].procedure.note for c in entry.comparisons.values()):
        lines += [f"What the interval leaves out: {NOT_INCLUDED[len('the interval does not include '):]}.", ""]
    return lines + ["Variance components (with replicates; statsmodels MixedLM), each a variance of one run's mean "
                    "difference: fold = between folds (their training and validation cases; none below 3 folds), "
                    "run = between training runs of one fold, case = the per-case variance within one run over the "
                    "cases per fold.", ""]


def markdown_report(report: CompareReport, first: list[str] = ()) -> str:
    """report.md: ``first`` (a sweep's "Which layer?"), the explanation, a table per case set, in-domain against the
    other sets, and accuracy against cost."""
    pairs = any(e.other_pairs() for e in report.sets.values())
    lines = [f"# nnunetv2-llm compare: {report.dataset} {report.configuration}", "",
             *([f"**Re-analysis** of {report.source}.", ""] if report.source else []), *procedure_lines(report),
             primary_line(report), "", *first, f"## {CASES_TITLE}", "", CASES_QUESTION,
             f"Reference: **{report.reference}**. Folds: {' '.join(map(str, report.folds))}. Values are means "
             f"over cases (each case: mean over {report.targets_note}); Δ = variant - reference with a bootstrap "
             f"95% CI of the mean difference ({report.bootstrap_resamples} resamples, seed {report.seed}); p = paired "
             f"sign-flip permutation test of that same mean difference, Holm-corrected over the "
             f"{report.num_comparisons} secondary tests of this report (the comparisons with the reference"
             f"{' and the significance figure' + chr(39) + 's Dice pairs of two other variants' if pairs else ''}); "
             f"stars only on the primary endpoint; p Wilcoxon = signed-rank test (of the pseudo-median), uncorrected, "
             f"for reference; r = matched-pairs rank-biserial; W/T/L = wins/ties/losses of the variant. A case left "
             f"empty in reference and prediction by one variant only counts as that metric's perfect value in the "
             f"pair. Dice, IoU and NSD: higher is better; HD95 in mm: lower is better. NSD at "
             f"{report.tolerance_note}.", ""]
    if report.validation_set == IN_SAMPLE:
        lines += [f"**{IN_SAMPLE}**: fold all trained on every training case and nnU-Net validated it on those same "
                  f"cases, so these scores measure fit, not generalisation (they are not cross-validation). For "
                  f"out-of-fold scores compare folds 0-4; for unseen cases add --held-out or --external sets.", ""]
    for set_name, entry in report.sets.items():
        lines += _set_table(report, set_name, entry)
    if len(report.sets) > 1:
        lines += _generalisation_table(report)
    lines += efficiency_table(report, report.validation_set) if report.efficiency else []
    return "\n".join(lines)


def write_cases_csv(path: Path, blocks: list[tuple], keys: list[str]) -> None:
    """One row per set, variant, case, label and metric. ``blocks``: (set, replicate, scores by variant, case ->
    fold), as :func:`cases_csv_blocks` gives them; ``replicate`` names the training replicate (1: the models in
    nnUNet_results; r >= 2: $nnUNet_results/replicates/<r>) and ``fold`` the fold index of the splits file, so
    folds 5, 6, ... are the rows of partitions 2, 3, ..."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CASES_COLUMNS)
    for set_name, replicate, by_variant, fold_of in blocks:
        for variant, scores in by_variant.items():
            for case in sorted(scores.cases):
                for key in keys:
                    for metric in METRICS:
                        writer.writerow([set_name, variant, case, fold_of[case], key, metric,
                                         scores.value(case, key, metric), replicate])
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue())


def json_safe(x):
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return json_safe(x.item())
    return x


def _plain(x):
    """A dataclass tree as JSON's plain values (properties such as a paired result's note included)."""
    if is_dataclass(x):
        out = {f.name: _plain(getattr(x, f.name)) for f in fields(x)}
        if hasattr(type(x), "note") and isinstance(getattr(type(x), "note"), property):
            out["note"] = x.note
        return out
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def report_json(report: CompareReport) -> dict:
    """report.json's keys from the objects: the only place the report becomes string keys."""
    def comparison(c: Comparison) -> dict:
        out = {**_plain(c.case), "p_holm": c.p_holm, "primary": c.primary_at or None}
        if c.procedure is not None:
            out["procedure"] = _plain(c.procedure)
        return out

    def variant_metric(m) -> dict:
        out = _plain(m)
        if m.procedure is None:
            out.pop("procedure")
        return out

    sets = {name: {"cases": e.cases,
                   "variants": {v: {m: variant_metric(x) for m, x in s.metrics.items()} for v, s in e.variants.items()},
                   "comparisons": {v: {m: comparison(x) for m, x in c.items()} for v, c in e.comparisons.items()},
                   "ranking": {m: {v: _plain(s.ranks[m]) for v, s in e.variants.items()} for m in METRICS},
                   "pairwise_dice_p_holm": e.pairwise_dice_p_holm}
            for name, e in report.sets.items()}
    plain = {f.name: getattr(report, f.name) for f in fields(report) if f.name not in ("sets", "layers")}
    out = {**_plain(plain), "sets": sets}
    if report.layers is not None:
        out["layers"] = [asdict(r) for r in report.layers]
    return json_safe(out)


def cases_csv_blocks(scores: dict[str, dict[str, CaseScores]], case_folds: dict,
                     runs: TrainingRunScores) -> list[tuple]:
    """cases.csv's blocks: (set, replicate, scores by variant, case -> fold); the validation set once per partition
    and replicate, each case with its fold of that partition."""
    validation = next(s for s in scores if s in VALIDATION_SETS)
    blocks = [(s, 1, by, next(iter(case_folds[s].values()))) for s, by in scores.items()]
    for (p, r), by in runs.scores.items():
        if (p, r) != (next(iter(runs.partitions)), 1):
            blocks.append((validation, r, by, runs.fold_of(p)))
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
