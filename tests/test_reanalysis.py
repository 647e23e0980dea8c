"""Issue 37: `compare --cases cases.csv --splits splits_final.json` recomputes compare's statistics, report and
figures from the per-case table alone; compare recognises repeated partitions (folds 5, 6, ... of the splits file)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nnunetv2_llm.commands import cli
from nnunetv2_llm.evaluation.compared_runs import partition_groups
from nnunetv2_llm.evaluation.partitions import NOT_INCLUDED, partitions_comparison
from nnunetv2_llm.evaluation.procedure import FoldDifferences
from nnunetv2_llm.nnunet.splits import partition_split
from test_compare import PLAIN, SMOL, _replicated, trained  # noqa: F401 (test_compare's trained folds)

CASES = [f"case_{i:03d}" for i in range(20)]


def _partitioned_table(partitions=2, replicates=2, shift=0.03, seed=0):
    """A cases.csv of two variants on 20 cases, P partitions x 5 folds x R replicates (fold numbers as in the
    splits file), Dice and HD95 only; and the splits file they trained on (nnU-Net's own split function)."""
    rng = np.random.default_rng(seed)
    splits = [e for p in range(1, partitions + 1) for e in partition_split(CASES, p)]
    rows = []
    for index, entry in enumerate(splits):
        fold_effect = rng.normal(0, 0.01)
        for r in range(1, replicates + 1):
            run = rng.normal(0, 0.005)
            for case in entry["val"]:
                base = rng.uniform(0.6, 0.9)
                for variant, delta in (("plain", 0.0), ("smol", shift + fold_effect + run)):
                    dice = base + delta + rng.normal(0, 0.02)
                    rows += [("in-domain", variant, case, index, "1", "Dice", dice, r),
                             ("in-domain", variant, case, index, "1", "HD95", 10 * (1 - dice), r)]
    return pd.DataFrame(rows, columns=["set", "variant", "case", "fold", "label", "metric", "value",
                                       "replicate"]), splits


def _write(tmp_path, table, splits):
    table.to_csv(tmp_path / "cases.csv", index=False)
    (tmp_path / "splits_final.json").write_text(json.dumps(splits))
    return tmp_path / "cases.csv", tmp_path / "splits_final.json"


def _main(capsys, *args):
    rc = cli.main(["compare", *map(str, args)])
    return rc, capsys.readouterr().err


def test_a_partitioned_cases_csv_gets_the_statistic_over_partitions(tmp_path, capsys):
    """2 partitions x 5 folds x 2 replicates: the procedure level is partitions_comparison of each partition's
    fold x replicate differences (computed here from the table with pandas); the case level reads partition 1's
    rows only, each case once; the report says P, k and R and what the interval leaves out."""
    table, splits = _partitioned_table()
    csv_path, splits_path = _write(tmp_path, table, splits)
    rc, err = _main(capsys, "--cases", csv_path, "--splits", splits_path, "-o", tmp_path / "out")
    assert rc == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    runs = report["training_runs"]
    assert (runs["partitions"], runs["folds"], runs["replicates"], runs["runs_per_variant"]) == (2, 5, 2, 20)

    dice = table[table["metric"] == "Dice"].pivot_table(index=["fold", "replicate", "case"], columns="variant",
                                                         values="value")
    difference = dice["smol"] - dice["plain"]
    parts = []
    for p in (1, 2):
        folds = range(5 * (p - 1), 5 * p)
        by_fold = [np.array([difference.loc[f, r].sort_index().to_numpy() for r in (1, 2)]) for f in folds]
        parts.append(FoldDifferences(by_fold, 4, 16))
    expected = partitions_comparison(parts)
    procedure = report["sets"]["in-domain"]["comparisons"]["smol"]["Dice"]["procedure"]
    for key in ("mean_difference", "ci_low", "ci_high", "p"):
        assert procedure[key] == pytest.approx(getattr(expected, key), rel=1e-12), key
    assert procedure["runs"] == 20 and procedure["degrees_of_freedom"] == 4 and NOT_INCLUDED in procedure["note"]

    first = table[(table["fold"] < 5) & (table["replicate"] == 1) & (table["metric"] == "Dice")]
    case_level = report["sets"]["in-domain"]["comparisons"]["smol"]["Dice"]
    means = first.pivot(index="case", columns="variant", values="value")
    assert case_level["n"] == 20 and report["sets"]["in-domain"]["cases"] == CASES
    assert case_level["mean_difference"] == pytest.approx((means["smol"] - means["plain"]).mean())
    assert report["sets"]["in-domain"]["variants"]["smol"]["IoU"]["n"] == 0, "a metric the table lacks is empty"

    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "40 runs per variant" not in markdown and "20 runs per variant (P = 2 partitions x 5 folds x 2" in markdown
    assert "partition 1's out-of-fold predictions" in markdown and "What the interval leaves out" in markdown
    assert "**Re-analysis** of" in markdown and "GFLOPs" in markdown.split("\n\n")[1]
    assert not (tmp_path / "out" / "efficiency.png").exists() and (tmp_path / "out" / "differences_in-domain.png")\
        .stat().st_size > 0
    again = pd.read_csv(tmp_path / "out" / "cases.csv")
    assert len(again) == 2 * len(table) and sorted(again["fold"].unique()) == list(range(10)), \
        "the table written back holds every partition's rows, every metric (NaN where absent)"


def test_another_reference_and_primary_from_the_table(tmp_path, capsys):
    """--reference and --primary re-analyse without predictions: the sign flips and HD95 carries the stars."""
    table, splits = _partitioned_table(partitions=1, replicates=1, shift=0.05)
    csv_path, splits_path = _write(tmp_path, table, splits)
    rc, err = _main(capsys, "--cases", csv_path, "--splits", splits_path, "--reference", "smol", "--primary", "HD95",
                    "-o", tmp_path / "out")
    assert rc == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reference"] == "smol" and report["primary"] == "HD95"
    comparison = report["sets"]["in-domain"]["comparisons"]["plain"]
    assert comparison["Dice"]["procedure"]["mean_difference"] < 0 and comparison["HD95"]["primary"]
    assert report["training_runs"]["partitions"] == 1 and "What the interval leaves out" in \
        (tmp_path / "out" / "report.md").read_text()


def test_reanalysis_bad_input_names_the_value_and_the_fix(tmp_path, capsys):
    table, splits = _partitioned_table(partitions=2, replicates=1)
    csv_path, splits_path = _write(tmp_path, table, splits)
    out = tmp_path / "out"

    def refused(*args, table_=None, splits_=None):
        if table_ is not None:
            table_.to_csv(tmp_path / "bad.csv", index=False)
        if splits_ is not None:
            (tmp_path / "bad.json").write_text(json.dumps(splits_))
        rc, err = _main(capsys, "--cases", tmp_path / "bad.csv" if table_ is not None else csv_path,
                        "--splits", tmp_path / "bad.json" if splits_ is not None else splits_path, *args, "-o", out)
        assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err

    assert "lacks the column(s) value, fold" not in refused(table_=table.drop(columns=["value"]))
    assert "lacks the column(s) fold, value" in refused(table_=table.drop(columns=["value", "fold"]))
    assert "--reference 'smoll' names none of the variants" in refused("--reference", "smoll") and \
        "did you mean" in refused("--reference", "smoll").lower()
    err = refused(splits_=splits[:5])
    assert "fold(s) 5, 6, 7, 8, 9" in err and "not in the splits file (it holds 5 entries" in err and "--splits" in err
    err = refused(table_=table[table["fold"] != 7])
    assert "partition 2 (folds 5-9) lacks fold(s) 7" in err and "-f 0 1 2 3 4 5 6 7 8 9" in err
    moved = [dict(e) for e in splits]
    moved[0], moved[1] = moved[1], moved[0]
    assert "case case_003 is in fold 0, but the splits file validates it in fold 1" in refused(splits_=moved)
    assert "has other cases than the splits file's folds" in refused(table_=table[table["case"] != "case_003"])
    assert "--primary NSD: " in refused("--primary", "NSD") and "(it has Dice, HD95)" in refused("--primary", "NSD")
    assert "unknown metric(s) dice" in refused(table_=table.assign(metric=table["metric"].str.lower()))
    assert "replicate 'one' is not a whole number" in refused(table_=table.assign(replicate="one"))
    assert "value 'x' is not a number" in refused(table_=table.assign(value="x"))
    (tmp_path / "broken.json").write_text("{")
    rc, err = _main(capsys, "--cases", csv_path, "--splits", tmp_path / "broken.json", "-o", out)
    assert rc == 2 and "--splits" in err and "Traceback" not in err
    rc, err = _main(capsys, "--cases", tmp_path / "none.csv", "--splits", splits_path, "-o", out)
    assert rc == 2 and "--cases" in err and "none.csv" in err and "Traceback" not in err
    rc, err = _main(capsys, "--cases", csv_path, "-o", out)
    assert rc == 2 and "add --splits" in err
    rc, err = _main(capsys, "--cases", csv_path, "--splits", splits_path, "-d", "501", "-o", out)
    assert rc == 2 and "-d belong to a compare of trained results" in err
    rc, err = _main(capsys, "-d", "501", "-o", out)
    assert rc == 2 and "compare needs -c, -tr" in err
    assert not out.exists(), "nothing written before every check passed"


def test_partition_groups_need_the_same_folds_of_every_partition():
    assert partition_groups([0, 1, 5, 6]) == {1: [0, 1], 2: [5, 6]}
    assert partition_groups([5, 6, 7, 8, 9]) == {2: [5, 6, 7, 8, 9]}
    assert partition_groups(["all"]) == {1: ["all"]}
    with pytest.raises(ValueError, match=r"partition 2 \(folds 5-9\) lacks fold\(s\) 8, 9.*-f 0 1 2 3 4 5 6 7 8 9"):
        partition_groups([0, 1, 2, 3, 4, 5, 6, 7])


# ---------------------------------------------------------------- end to end: a compare run's own cases.csv


def _same(a, b, path="report"):
    """Equal JSON trees, numbers to float tolerance."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_the_reanalysis_of_a_compare_run_s_cases_csv_reproduces_its_report(nnunet_env, dataset_2d, trained,
                                                                           shifted, tmp_path):
    """Through the CLI, on the trained folds of test_compare: 2 replicates (the procedure level) and a zero-shot
    set; `compare --cases` gives report.json's statistics again, and with --reference another report."""
    folders = _replicated(trained, tmp_path, {PLAIN: 2, SMOL: 2})
    out = tmp_path / "report"
    proc = nnunet_env.run("nnunetv2-llm", "compare", "-d", "501", "-c", "2d", "-tr", folders[PLAIN], folders[SMOL],
                          "-f", "0", "--external", f"shifted={shifted}", "-np", "1", "-o", out, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    splits = nnunet_env.preprocessed_folder(dataset_2d) / "splits_final.json"
    again = tmp_path / "again"
    proc = nnunet_env.run("nnunetv2-llm", "compare", "--cases", out / "cases.csv", "--splits", splits, "-o", again,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first, second = (json.loads((d / "report.json").read_text()) for d in (out, again))
    assert first["sets"]["in-domain"]["comparisons"][SMOL]["Dice"]["procedure"]["runs"] == 2
    for key in ("sets", "training_runs", "reference", "primary", "primary_level", "num_comparisons", "folds",
                "labels", "set_kinds", "variants", "dataset", "configuration", "nsd_tolerance_mm"):
        _same(first[key], second[key], key)
    assert second["efficiency"] == {} and "left out" in second["source"]
    assert (again / "differences_shifted.png").stat().st_size > 0 and not (again / "efficiency.png").exists()
    assert pd.read_csv(again / "cases.csv").equals(pd.read_csv(out / "cases.csv")), "the same table written back"

    other = tmp_path / "other"
    proc = nnunet_env.run("nnunetv2-llm", "compare", "--cases", out / "cases.csv", "--splits", splits,
                          "--reference", SMOL, "-o", other, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flipped = json.loads((other / "report.json").read_text())["sets"]["in-domain"]["comparisons"][PLAIN]["Dice"]
    assert flipped["mean_difference"] == pytest.approx(
        -first["sets"]["in-domain"]["comparisons"][SMOL]["Dice"]["mean_difference"])

    # A splits file whose first five entries no longer give fold 0 its trained split: compare refuses the fold (the
    # split pin, fold_0/split.json), and so does the re-analysis with that file.
    original = splits.read_text()
    entries = json.loads(original)
    moved = entries[0]["val"].pop()
    entries[1]["val"].append(moved)
    try:
        splits.write_text(json.dumps(entries))
        proc = nnunet_env.run("nnunetv2-llm", "compare", "-d", "501", "-c", "2d", "-tr", folders[PLAIN],
                              folders[SMOL], "-f", "0", "-np", "1", "-o", tmp_path / "moved", check=False)
        assert proc.returncode == 2 and "fold 0 trained on another split" in proc.stderr, proc.stderr[-2000:]
        proc = nnunet_env.run("nnunetv2-llm", "compare", "--cases", out / "cases.csv", "--splits", splits,
                              "-o", tmp_path / "moved", check=False)
        assert proc.returncode == 2 and "other cases than the splits file's folds" in proc.stderr, proc.stderr
        assert not (tmp_path / "moved").exists()
    finally:
        splits.write_text(original)


def test_sweep_compare_of_a_partitioned_sweep_compares_partitions(tmp_path):
    """A grid's `partitions: 2` trains folds 0-9: `sweep compare` hands them to one compare, which reads them as 2
    partitions of 5 folds (it passed them as one 10-fold cross-validation before); fold all stays a report apart."""
    from nnunetv2_llm.commands.sweep import compare_requests
    jobs = [{"dataset": "Dataset501_Synth2D", "configuration": "2d", "trainer": t, "plans": "nnUNetPlans",
             "fold": f, "replicate": r} for t in (PLAIN, SMOL) for f in [*range(10), "all"] for r in (1, 2)]
    requests = compare_requests(tmp_path, jobs, {"partitions": 2})
    assert [r.folds for r in requests] == [[str(f) for f in range(10)], ["all"]]
    assert requests[0].replicates == 2
    assert partition_groups([int(f) for f in requests[0].folds]) == {1: [0, 1, 2, 3, 4], 2: [5, 6, 7, 8, 9]}
