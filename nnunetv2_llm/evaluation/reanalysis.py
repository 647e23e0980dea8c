"""Re-analysis without predictions: every statistic, report and figure of ``compare`` from its per-case table alone
(``nnunetv2-llm compare --cases cases.csv --splits splits_final.json -o DIR``, or :func:`reanalyse` on a pandas
DataFrame), for another reference, another primary metric, or a statistician who has only the table.

The table has compare's cases.csv columns (``replicate`` may be left out: replicate 1), any subset of the metrics,
and fold numbers as in the splits file: folds 5, 6, ... are partitions 2, 3, ... (:mod:`..nnunet.splits`). The
splits file gives each fold's cases and sizes (the Nadeau-Bengio correction). The statistics are compare's own
(:func:`.report_statistics.report_from_scores`), so a cases.csv re-analysed with compare's options gives compare's
numbers. What needs the networks (parameters, GFLOPs, wall time, the by-layer table) is left out, and the report
says so. A report.json beside the table, when there is one, gives the descriptive fields (dataset, configuration,
variants' folders, the kinds of the other sets, NSD tolerances).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..core.errors import UserError, did_you_mean
from ..core.locks import exclusive
from ..nnunet.splits import read_splits
from .cases import VALIDATION_SETS, CompareError
from .compare_request import check_statistics, report_folder
from .compared_runs import partition_groups
from .metrics import METRICS
from .report import CASES_COLUMNS, cases_csv_blocks, write_report
from .report_statistics import report_from_scores
from .run_scores import TrainingRunScores
from .scoring import CaseScores
from .summary import DEFAULT_PRIMARY, CompareReport

REQUIRED = tuple(c for c in CASES_COLUMNS if c != "replicate")
LEFT_OUT = ("no predictions or networks read: trainable and frozen parameters, GFLOPs, "
            "wall time and the by-layer table need the networks and are left out")


def _fold(value) -> int | str:
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].isdigit():  # a fold column pandas read as floats
        text = text[:-2]
    return int(text) if text.isdigit() else text


def _scores(rows, targets: list[str], where: str) -> CaseScores:
    """One variant's rows of one set, replicate and partition as :class:`CaseScores` (a metric the table lacks is
    NaN, so it drops out of every mean and test)."""
    if rows.duplicated(["case", "label", "metric"]).any():
        case, label, metric = rows[rows.duplicated(["case", "label", "metric"])].iloc[0][["case", "label", "metric"]]
        raise CompareError(f"cases.csv repeats case {case}, label {label}, metric {metric} of {where}: each row "
                           f"must be one case, label and metric of one variant, set and replicate.")
    cases = sorted(rows["case"].unique())
    table = rows.pivot(index="case", columns=["metric", "label"], values="value")
    values = {}
    for metric in METRICS:
        if metric in table.columns.get_level_values(0):
            values[metric] = table[metric].reindex(index=cases, columns=targets).to_numpy(dtype=float)
        else:
            values[metric] = np.full((len(cases), len(targets)), math.nan)
    return CaseScores(tuple(cases), tuple(targets), values)


def _replicates(own, variants: list[str]) -> tuple[int, list[str]]:
    """The replicates every variant has (1..R), and those beyond, named with the reason (as compare names them)."""
    found = {}
    for v in variants:
        have = sorted(own.loc[own["variant"] == v, "replicate"].unique())
        if have != list(range(1, len(have) + 1)):
            raise CompareError(f"cases.csv: {v}'s replicates are {have}; replicates are numbered 1, 2, ... without "
                               f"gaps (1: the models in nnUNet_results).")
        found[v] = len(have)
    used = min(found.values())
    fewest = min(found, key=found.get)
    left_out = [f"replicate{'s' if n > used + 1 else ''} {used + 1}{f'-{n}' if n > used + 1 else ''} of {label} "
                f"({fewest} has {used})" for label, n in found.items() if n > used]
    return used, left_out


def reanalyse(cases, splits: list[dict], output: str | Path, reference: str | None = None,
              primary: str = DEFAULT_PRIMARY, seed: int = 0, bootstrap: int = 2000, header: dict | None = None,
              source: str = "cases.csv", echo=print) -> CompareReport:
    """compare's report from its per-case table: ``cases`` a pandas DataFrame with cases.csv's columns, ``splits``
    the splits file's entries the folds trained on, ``header`` report.json's descriptive fields (optional). Writes
    report.md, report.json, cases.csv and the figures to ``output``; every input is checked before anything is
    written."""
    import pandas as pd
    start = time.monotonic()
    check_statistics(bootstrap, primary)
    missing = [c for c in REQUIRED if c not in cases.columns]
    if missing:
        raise CompareError(f"{source} lacks the column(s) {', '.join(missing)}: a table to re-analyse has compare's "
                           f"cases.csv columns {', '.join(CASES_COLUMNS)} (replicate may be left out: 1). Add them, "
                           f"or pass the cases.csv that compare wrote.")
    table = cases.copy()
    if table.empty:
        raise CompareError(f"{source} holds no rows: pass the cases.csv that compare wrote.")
    for column, integer in (("value", False), ("replicate", True)):
        if column not in table:
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = table[column][(numbers.isna() & table[column].notna()) | (integer & ~(numbers % 1 == 0))]
        if len(bad):
            raise CompareError(f"{source}: {column} {bad.iloc[0]!r} is not a{' whole' if integer else ''} number; "
                               f"each row's {column} is one (NaN or empty where a metric has no value).")
        table[column] = numbers.astype(int) if integer else numbers
    if "replicate" not in table:
        table["replicate"] = 1
    for column in ("set", "variant", "case", "label", "metric"):
        table[column] = table[column].astype(str)
    unknown = sorted(set(table["metric"]) - set(METRICS))
    if unknown:
        raise CompareError(f"{source}: unknown metric(s) {', '.join(unknown)}; accepted are {', '.join(METRICS)} "
                           f"(any subset).{did_you_mean(unknown[0], METRICS)}")
    if primary not in set(table["metric"]):
        raise CompareError(f"--primary {primary}: {source} has no {primary} rows (it has "
                           f"{', '.join(m for m in METRICS if m in set(table['metric']))}); pass one of those.")
    own_names = [s for s in dict.fromkeys(table["set"]) if s in VALIDATION_SETS]
    if len(own_names) != 1:
        raise CompareError(f"{source}: sets {list(dict.fromkeys(table['set']))} hold {len(own_names)} of compare's own "
                           f"validation sets ({' or '.join(VALIDATION_SETS)}); a re-analysis needs exactly one.")
    own_name = own_names[0]
    variants = list(dict.fromkeys(table["variant"]))
    matches = [i for i, v in enumerate(variants) if v == reference] if reference is not None else [0]
    if not matches:
        raise CompareError(f"--reference {reference!r} names none of the variants in {source} {variants}; pass one "
                           f"of those.{did_you_mean(reference, variants)}")
    targets = list(dict.fromkeys(table["label"]))
    table["fold"] = table["fold"].map(_fold)
    own = table[table["set"] == own_name]
    folds = sorted(set(own["fold"]), key=lambda f: (f == "all", f if isinstance(f, int) else 0))
    bad = [f for f in folds if f != "all" and not (isinstance(f, int) and f < len(splits))]
    if bad or ("all" in folds and len(folds) > 1):
        raise CompareError(f"{source}: fold(s) {', '.join(map(str, bad or folds))} of the {own_name} rows are not "
                           f"in the splits file (it holds {len(splits)} entries, folds 0-{len(splits) - 1}"
                           f"{'; fold all stands alone' if not bad else ''}); pass the splits_final.json the folds "
                           f"trained on (--splits).")
    partitions = partition_groups(folds)
    first = next(iter(partitions))
    part_of = {f: p for p, fs in partitions.items() for f in fs}
    own = own.assign(partition=own["fold"].map(part_of))
    replicates, left_out = _replicates(own, variants)
    runs = {}
    for p, p_folds in partitions.items():
        expected = sorted({c for f in p_folds for c in (splits[f]["val"] if f != "all" else own["case"])})
        for r in range(1, replicates + 1):
            runs[p, r] = {}
            for v in variants:
                rows = own[(own["partition"] == p) & (own["replicate"] == r) & (own["variant"] == v)]
                where = f"{v} ({own_name}, partition {p}, replicate {r})"
                have = sorted(rows["case"].unique())
                if have != expected:
                    lacks, extra = sorted(set(expected) - set(have)), sorted(set(have) - set(expected))
                    raise CompareError(f"{source}: {where} has other cases than the splits file's folds "
                                       f"{', '.join(map(str, p_folds))} validate (missing: {', '.join(lacks[:5]) or 'none'}; "
                                       f"not in them: {', '.join(extra[:5]) or 'none'}); pass the splits_final.json "
                                       f"the folds trained on, and every case of each fold.")
                for f in p_folds:
                    moved = sorted(set(rows.loc[rows["fold"] == f, "case"]) - set(splits[f]["val"] if f != "all"
                                                                                    else expected))
                    if moved:
                        other = next(g for g in p_folds if moved[0] in splits[g]["val"])
                        raise CompareError(f"{source}: {where}: case {moved[0]} is in fold {f}, but the splits "
                                           f"file validates it in fold {other}; pass the splits_final.json the "
                                           f"folds trained on.")
                runs[p, r][v] = _scores(rows, targets, where)
    scores, case_folds = {}, {}
    for s in dict.fromkeys(table["set"]):
        rows = own[(own["partition"] == first) & (own["replicate"] == 1)] if s == own_name else \
            table[(table["set"] == s) & (table["replicate"] == 1)]
        missing_variants = [v for v in variants if v not in set(rows["variant"])]
        if missing_variants:
            raise CompareError(f"{source}: set {s} has no rows of {', '.join(missing_variants)}; every variant needs "
                               f"the same cases of every set.")
        scores[s] = runs[first, 1] if s == own_name else \
            {v: _scores(rows[rows["variant"] == v], targets, f"{v} ({s})") for v in variants}
        case_folds[s] = {v: dict(zip(g["case"], g["fold"])) for v, g in rows.groupby("variant", sort=False)}
        for v in variants[1:]:
            if scores[s][v].cases != scores[s][variants[0]].cases:
                raise CompareError(f"{source}: set {s}: {variants[0]} and {v} have different cases; paired tests "
                                   f"need the same cases of every variant.")
    given = dict(header or {})
    tolerances = given.get("nsd_tolerance_mm") or {}
    out = report_folder(output)
    fields = dict(
        dataset=given.get("dataset", "(from a cases.csv)"), configuration=given.get("configuration", ""),
        folds=folds, labels=targets, ignore_label=given.get("ignore_label"), output=str(out),
        targets_note=given.get("targets_note", f"labels {', '.join(targets)}"), nsd_tolerance_mm=tolerances,
        tolerance_note=given.get("tolerance_note", "the tolerance of the run that wrote the table"),
        variants={v: (given.get("variants") or {}).get(v, {}) for v in variants},
        set_kinds={s: (given.get("set_kinds") or {}).get(s, "other set") for s in scores if s not in VALIDATION_SETS},
        source=f"{source} ({LEFT_OUT})")
    run_scores = TrainingRunScores(runs, partitions, splits)
    report = report_from_scores(fields, variants, matches[0], scores, case_folds, run_scores, seed, bootstrap, primary,
                                left_out, {}, {"seconds_total": time.monotonic() - start})
    with exclusive(out / ".compare.lock", f"the report folder {out}", echo):
        write_report(out, report, scores, cases_csv_blocks(scores, case_folds, run_scores), [], echo)
    return report


def reanalyse_files(cases_csv: str | Path, splits_json: str | Path, output: str | Path, reference: str | None = None,
                    primary: str = DEFAULT_PRIMARY, seed: int = 0, bootstrap: int = 2000, echo=print) -> CompareReport:
    """:func:`reanalyse` of a cases.csv file with its splits file (and the report.json beside it, if any)."""
    import pandas as pd
    path = Path(cases_csv).expanduser()
    try:
        table = pd.read_csv(path, dtype={"fold": str, "case": str, "label": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise CompareError(f"--cases {cases_csv}: cannot read it as a CSV table ({str(e).splitlines()[0]}); pass "
                           f"the cases.csv that compare wrote.") from None
    try:
        splits = read_splits(Path(splits_json).expanduser(),
                             fix="pass --splits the splits_final.json the cases.csv's folds trained on")
    except UserError as e:
        raise CompareError(f"--splits: {e}") from None
    beside = path.parent / "report.json"
    header = None
    if beside.is_file():
        try:
            header = json.loads(beside.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
        header = {k: header[k] for k in ("dataset", "configuration", "ignore_label", "targets_note",
                                          "nsd_tolerance_mm", "tolerance_note", "variants", "set_kinds")
                  if k in header} if isinstance(header, dict) else None
    return reanalyse(table, splits, output, reference, primary, seed, bootstrap, header, str(path), echo)
