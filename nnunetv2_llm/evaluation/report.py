"""The numbers of a compare report (means, per-fold means, paired comparisons, ranks, Holm over the whole report)
and how they are written: report.md, report.json and cases.csv."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..core.files import atomic_path
from .cases import IN_DOMAIN, IN_SAMPLE, OWN_SETS, own_set_of
from .efficiency import efficiency_table
from .formatting import fmt
from .metrics import HIGHER_IS_BETTER, METRICS
from .procedure import has_interval
from .scoring import case_means
from .statistics import (bootstrap_ci, holm, mean_of_present, paired_comparison, present, rank_stability,
                         significance_mark, std_of_present, wilcoxon_p)


def summarize_set(labels: list[str], reference: int, scores: dict, cases: list[str], case_folds: dict,
                  keys: list[str], seed: int, resamples: int) -> dict:
    """Means (with a bootstrap CI over cases), per-fold and per-target means, paired comparisons with the
    reference and ranks of every variant (``labels``) on one case set."""
    entry = {"cases": cases, "variants": {}, "comparisons": {}, "ranking": {}}
    values = {(v, m): case_means(scores[v], cases, keys, m) for v in labels for m in METRICS}
    for i, v in enumerate(labels):
        per_metric = {}
        for metric in METRICS:
            x = values[v, metric]
            folds = {fold: mean_of_present([value for c, value in zip(cases, x) if str(case_folds[v][c]) == fold])
                     for fold in sorted({str(case_folds[v][c]) for c in cases})}
            per_target = {k: mean_of_present([scores[v][c][k][metric] for c in cases]) for k in keys}
            kept = present(x)
            low, high = bootstrap_ci(kept, seed, resamples) if len(kept) else (math.nan, math.nan)
            per_metric[metric] = {"mean": mean_of_present(x), "std": std_of_present(x), "ci_low": low,
                                  "ci_high": high, "n": int(len(kept)), "per_fold": folds, "per_label": per_target}
        entry["variants"][v] = per_metric
        if i != reference:
            entry["comparisons"][v] = {
                metric: paired_comparison(values[v, metric], values[labels[reference], metric],
                                          HIGHER_IS_BETTER[metric], seed, resamples)
                for metric in METRICS}
    for metric in METRICS:
        matrix = np.stack([values[v, metric] for v in labels], axis=1)
        ranks = rank_stability(matrix, HIGHER_IS_BETTER[metric], seed)
        entry["ranking"][metric] = {v: {"rank": r, "first": f} for v, r, f in zip(labels, ranks["rank"], ranks["first"])}
    entry["pairwise_dice_p"] = pairwise_matrix(labels, scores, cases, keys)  # uncorrected; apply_holm corrects
    return entry


def _other_pairs(entry: dict) -> list[tuple[int, int]]:
    """The pairs of the significance figure that are not a comparison with the reference (both are other variants)."""
    labels = list(entry["variants"])
    others = [i for i, v in enumerate(labels) if v in entry["comparisons"]]
    return [(i, j) for i in others for j in others if i < j]


def _holm_procedures(sets: dict) -> None:
    """Holm over every procedure-level test, a family of its own (the two levels answer different questions)."""
    procedures = [c[m]["procedure"] for e in sets.values() for c in e["comparisons"].values() for m in c
                  if "procedure" in c[m]]
    tested = [x for x in procedures if not math.isnan(x["p"])]
    for x, p in zip(tested, holm([x["p"] for x in tested])):
        x["p_holm"] = p


def apply_holm(sets: dict) -> int:
    """One family of case-level tests per report: Holm over every (set, variant, metric) comparison with the
    reference and every Dice pair of two other variants that the significance figure shows (the figure's cells of a
    pair with the reference are the table's p); the procedure-level tests are corrected as a family of their own.
    Returns the number of case-level tests."""
    _holm_procedures(sets)
    keys = [(s, v, m) for s, e in sets.items() for v, c in e["comparisons"].items() for m in c
            if not math.isnan(c[m]["p"])]
    pairs = [(s, i, j) for s, e in sets.items() for i, j in _other_pairs(e)
             if not math.isnan(e["pairwise_dice_p"][i][j])]
    adjusted = holm([sets[s]["comparisons"][v][m]["p"] for s, v, m in keys]
                    + [sets[s]["pairwise_dice_p"][i][j] for s, i, j in pairs])
    for (s, v, m), p in zip(keys, adjusted):
        sets[s]["comparisons"][v][m]["p_holm"] = p
    for e in sets.values():
        for c in e["comparisons"].values():
            for m in c.values():
                m.setdefault("p_holm", math.nan)
        labels = list(e["variants"])
        matrix = [[math.nan] * len(labels) for _ in labels]
        for i, v in enumerate(labels):
            for j, w in enumerate(labels):  # a pair with the reference: the table's p of the other variant
                other = w if v not in e["comparisons"] else v if w not in e["comparisons"] else None
                if i != j and other is not None:
                    matrix[i][j] = e["comparisons"][other]["Dice"]["p_holm"]
        e["pairwise_dice_p_holm"] = matrix
    for (s, i, j), p in zip(pairs, adjusted[len(keys):]):
        sets[s]["pairwise_dice_p_holm"][i][j] = sets[s]["pairwise_dice_p_holm"][j][i] = p
    for e in sets.values():
        e.pop("pairwise_dice_p")
    return len(keys) + len(pairs)


def pairwise_matrix(labels: list[str], scores: dict, cases: list[str], keys: list[str],
                    metric: str = "Dice") -> list[list[float]]:
    """Wilcoxon p between every pair of variants on one set, uncorrected (``apply_holm`` corrects them)."""
    values = [case_means(scores[v], cases, keys, metric) for v in labels]
    matrix = [[math.nan] * len(labels) for _ in labels]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            keep = ~(np.isnan(values[i]) | np.isnan(values[j]))
            matrix[i][j] = matrix[j][i] = wilcoxon_p(values[i][keep] - values[j][keep]) if keep.any() else 1.0
    return matrix


def _delta(comparison: dict | None, metric: str) -> str:
    if comparison is None:
        return "(reference)"
    c = comparison[metric]
    return f"{c['mean_difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]{significance_mark(c['p_holm'])}"


def _set_table(report: dict, set_name: str, entry: dict) -> list[str]:
    lines = [f"## {set_name} ({len(entry['cases'])} cases{', ' + report['set_kinds'][set_name] if set_name in report['set_kinds'] else ''})",
             "",
             "| variant | Dice | Δ Dice [95% CI] | p | r | W/T/L | IoU | NSD | Δ NSD | HD95 (mm) | Δ HD95 (mm) | "
             "P(rank 1) | trainable M | frozen M | GFLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, per_metric in entry["variants"].items():
        comp = entry["comparisons"].get(label)
        eff = report["efficiency"].get(label, {})
        dice = comp["Dice"] if comp else None
        wtl = f"{dice['wins']}/{dice['ties']}/{dice['losses']}" if dice else "-"
        lines.append(
            f"| {label} | {fmt(per_metric['Dice']['mean'])} ± {fmt(per_metric['Dice']['std'])} | {_delta(comp, 'Dice')} "
            f"| {fmt(dice['p_holm'], 4) if dice else '-'} | {fmt(dice['rank_biserial'], 2) if dice else '-'} "
            f"| {wtl} | {fmt(per_metric['IoU']['mean'])} | {fmt(per_metric['NSD']['mean'])} | {_delta(comp, 'NSD')} "
            f"| {fmt(per_metric['HD95']['mean'], 2)} | {_delta(comp, 'HD95')} "
            f"| {fmt(entry['ranking']['Dice'][label]['first'], 2)} | {fmt(eff.get('trainable_M'), 2)} "
            f"| {fmt(eff.get('frozen_M'), 2)} | {fmt(eff.get('gflops'), 2)} |")
    folds = sorted({f for v in entry["variants"].values() for f in v["Dice"]["per_fold"]})
    if set_name in OWN_SETS and len(folds) > 1:
        lines += ["", "Dice per fold: " + "; ".join(
            f"{label} " + " ".join(fmt(v['Dice']['per_fold'].get(f)) for f in folds)
            for label, v in entry["variants"].items())]
    return lines + [""]


def _generalisation_table(report: dict) -> list[str]:
    """In-domain Dice next to each other set's; a zero-shot set's column of differences is its drop."""
    own = own_set_of(report)
    others = [s for s in report["sets"] if s != own]
    kinds = report["set_kinds"]
    title = " and ".join(sorted({kinds[s] for s in others}, reverse=True))
    explained = ("Δ = the set's mean Dice minus the in-domain (cross-validation) mean: a held-out set has the "
                 "training distribution, so its Δ is noise around 0; for a zero-shot (shifted) set a negative Δ is "
                 "the drop."
                 if own == IN_DOMAIN else
                 "Δ = the set's mean Dice minus the in-sample mean (fold all scored on its own training cases): "
                 "a held-out set's Δ is the gap between fit and generalisation, a zero-shot set's adds the shift.")
    lines = [f"## {own.capitalize()} vs {title} (mean Dice)", "", explained, "",
             "| variant | " + " | ".join(report["sets"]) + " | " + " | ".join(f"Δ {s} ({kinds[s]})" for s in others)
             + " |", "|---|" + "---|" * (len(report["sets"]) + len(others))]
    for label in report["sets"][own]["variants"]:
        means = {s: e["variants"][label]["Dice"]["mean"] for s, e in report["sets"].items()}
        lines.append(f"| {label} | " + " | ".join(fmt(m) for m in means.values()) + " | "
                     + " | ".join(f"{means[s] - means[own]:+.3f}" for s in others) + " |")
    return lines + [""]


PROCEDURE_TITLE = "This training procedure against that one (unit: the training run)"
PROCEDURE_QUESTION = "Would training this variant again, on new cases like these, beat training the reference again?"
CASES_TITLE = "These models on these cases (unit: the case)"
CASES_QUESTION = ("Are these trained models (replicate 1) different on these cases? The trained models are held fixed, "
                  "so training noise is not in these intervals.")


def _procedure_delta(c: dict) -> str:
    x = c["procedure"]
    if not has_interval(x):
        return "-"
    return f"{x['mean_difference']:+.3f} [{x['ci_low']:+.3f}, {x['ci_high']:+.3f}]{significance_mark(x['p_holm'])}"


def _bold_lead(note: str) -> str:
    """The note as one sentence, its "training noise is not measured" in bold (said once, plainly)."""
    lead = "training noise is not measured"
    if note.startswith(lead):
        return f"**Training noise is not measured**{note[len(lead):]}."
    return f"{note[0].upper()}{note[1:]}."


def procedure_lines(report: dict) -> list[str]:
    """The headline of a report: the procedure level (unit = training run) when the runs allow one, else, once and
    plainly, that training noise is not measured and how to measure it."""
    runs = report.get("training_runs")
    own = own_set_of(report)
    entry = report["sets"].get(own)
    if not runs or entry is None:
        return []
    if not runs["procedure_level"] or not entry["comparisons"]:
        return [_bold_lead(runs["note"]), ""]
    first = next(iter(next(iter(entry["comparisons"].values())).values()))["procedure"]
    lines = [f"## {PROCEDURE_TITLE}", "",
             f"{PROCEDURE_QUESTION} {own}, {runs['runs_per_variant']} runs per variant ({runs['folds']} folds x "
             f"{runs['replicates']} replicate(s)). Δ = variant - {report['reference']}, 95% CI; method: {first['method']}; p Holm-corrected over the "
             f"report's procedure-level tests (* p<0.05, ** p<0.01, *** p<0.001). Dice and NSD: higher is better; "
             f"HD95 in mm: lower is better.", ""]
    if not runs["training_noise_measured"]:
        lines += [_bold_lead(runs["note"]), ""]
    lines += ["| variant | runs | Δ Dice [95% CI] | p | Δ NSD [95% CI] | Δ HD95 (mm) [95% CI] | variance of Δ Dice: "
              "fold / run / case |", "|---|---|---|---|---|---|---|"]
    for label, c in entry["comparisons"].items():
        x = c["Dice"]["procedure"]
        vc = x.get("variance_components")
        parts = " / ".join(f"{vc[k]:.2g}" if vc[k] is not None and not math.isnan(vc[k]) else "-"
                           for k in ("fold", "run", "case")) if vc else "-"
        lines.append(f"| {label} | {x['runs']} | {_procedure_delta(c['Dice'])} | {fmt(x['p_holm'], 4)} | "
                     f"{_procedure_delta(c['NSD'])} | {_procedure_delta(c['HD95'])} | {parts} |")
    return lines + ["", "Variance components (with replicates; statsmodels MixedLM): fold = between folds (their "
                    "training and validation cases), run = between training runs of one fold, case = between cases "
                    "within one run.", ""]


def markdown_report(report: dict, first: list[str] = ()) -> str:
    """report.md: ``first`` (a sweep's "Which layer?"), the explanation, a table per case set, in-domain against the
    other sets, and accuracy against cost."""
    lines = [f"# nnunetv2-llm compare: {report['dataset']} {report['configuration']}", "", *procedure_lines(report),
             *first, f"## {CASES_TITLE}", "", CASES_QUESTION,
             f"Reference: **{report['reference']}**. Folds: {' '.join(map(str, report['folds']))}. Values are means "
             f"over cases (each case: mean over {report['targets_note']}); Δ = variant - reference with a bootstrap "
             f"95% CI ({report['bootstrap_resamples']} resamples, seed {report['seed']}); p = paired Wilcoxon "
             f"signed-rank, Holm-corrected over all {report['num_comparisons']} tests of this report (the comparisons "
             f"with the reference and the significance figure's Dice pairs of two other variants) "
             f"(* p<0.05, ** p<0.01, *** p<0.001); r = matched-pairs rank-biserial; W/T/L = wins/ties/losses "
             f"of the variant. Dice, IoU and NSD: higher is better; HD95 in mm: lower is better. NSD at "
             f"{report['tolerance_note']}.", ""]
    if own_set_of(report) == IN_SAMPLE:
        lines += [f"**{IN_SAMPLE}**: fold all trained on every training case and nnU-Net validated it on those same "
                  f"cases, so these scores measure fit, not generalisation (they are not cross-validation). For "
                  f"out-of-fold scores compare folds 0-4; for unseen cases add --held-out or --external sets.", ""]
    for set_name, entry in report["sets"].items():
        lines += _set_table(report, set_name, entry)
    if len(report["sets"]) > 1:
        lines += _generalisation_table(report)
    lines += efficiency_table(report, own_set_of(report))
    return "\n".join(lines)


def write_cases_csv(path: Path, report_scores: dict, sets: dict, keys: list[str], case_folds: dict,
                    replicates: dict | None = None) -> None:
    """One row per set, variant, case, label and metric; ``replicate`` names the training replicate (1: the models
    in nnUNet_results; r >= 2: ``replicates``' in-domain scores, from $nnUNet_results/replicates/<r>)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["set", "variant", "case", "fold", "label", "metric", "value", "replicate"])
    own = next(s for s in report_scores if s in OWN_SETS)
    runs = [(s, 1, by) for s, by in report_scores.items()] + [(own, r, by) for r, by in (replicates or {}).items()]
    for set_name, replicate, by_variant in runs:
        for variant, scores in by_variant.items():
            for case in sets[set_name]["cases"]:
                fold = case_folds[set_name][variant][case]
                for key in keys:
                    for metric in METRICS:
                        writer.writerow([set_name, variant, case, fold, key, metric, scores[case][key][metric],
                                         replicate])
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
