"""Repeated partitions (issue 37): seeded 5-fold partitions appended to nnU-Net's splits_final.json, the split each
trained fold is pinned to, and `sweep plan --partitions`."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import save_json
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunetv2_llm.core.locks import exclusive
from nnunetv2_llm.nnunet.datasets import ResultsError
from nnunetv2_llm.nnunet.results import trained_results
from nnunetv2_llm.nnunet.splits import (SPLIT_RECORD, FoldPartition, check_fold_split, fold_partitions,
                                        partition_split, write_partitions)

PLAIN = "nnUNetTrainer_2epochs_5its"
CASES = [f"case_{i:03d}" for i in range(23)]


def _nnunet_splits(folder: Path, cases=CASES) -> Path:
    """splits_final.json as nnUNetTrainer.do_split writes it (its function, its seed, its save_json)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_json(generate_crossval_split(sorted(cases), seed=12345, n_splits=5), str(folder / "splits_final.json"))
    return folder / "splits_final.json"


def _is_partition(entries: list[dict]) -> bool:
    val = sorted(c for e in entries for c in e["val"])
    return val == sorted(CASES) and all(sorted(e["train"] + e["val"]) == sorted(CASES) for e in entries)


def test_partitions_are_appended_with_the_first_entries_byte_identical_and_planning_twice_adds_nothing(tmp_path):
    path = _nnunet_splits(tmp_path / "Dataset999_X")
    before = path.read_bytes()
    written = write_partitions(path.parent, 3)
    assert (written.partitions, written.added) == (3, 10)
    after = path.read_bytes()
    assert after.startswith(before.rstrip()[:-1].rstrip())  # everything before nnU-Net's closing bracket
    splits = json.loads(after)
    assert len(splits) == 15 and splits[:5] == json.loads(before)
    assert after.decode() == json.dumps(splits, indent=4, sort_keys=True)  # formatted as nnU-Net's save_json
    for p in (2, 3):  # the stated rule: nnU-Net's own split function with seed 12345 + p - 1
        own = generate_crossval_split(sorted(CASES), seed=12345 + p - 1, n_splits=5)
        assert splits[5 * (p - 1):5 * p] == [{"train": list(s["train"]), "val": list(s["val"])} for s in own]
        assert _is_partition(splits[5 * (p - 1):5 * p])
    assert splits[5:10] != splits[:5] and splits[10:15] != splits[5:10]
    stamp = path.stat().st_mtime_ns
    for again in (3, 2, 1):  # planning again, or fewer, adds and removes nothing
        assert write_partitions(path.parent, again).added == 0
    assert path.read_bytes() == after and path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == [".splits_final.json.lock", "splits_final.json"]


def test_a_hand_written_split_keeps_its_bytes(tmp_path):
    """A splits file of another format (indent 1, as a user may write it) keeps every byte before its bracket."""
    folder = tmp_path / "Dataset999_X"
    folder.mkdir()
    own = generate_crossval_split(sorted(CASES), seed=7, n_splits=5)
    path = folder / "splits_final.json"
    path.write_text(json.dumps(own, indent=1) + "\n")
    before = path.read_text()
    write_partitions(folder, 2)
    assert path.read_text().startswith(before.rstrip()[:-1].rstrip())
    splits = json.loads(path.read_text())
    assert splits[:5] == json.loads(before) and splits[5:] == partition_split(CASES, 2)


def test_partitions_bad_input(tmp_path):
    path = _nnunet_splits(tmp_path / "Dataset999_X")
    for bad in (0, -1, 21, True, "2", 1.5):
        with pytest.raises(ResultsError, match=rf"partitions: {bad!r}: accepted are whole numbers 1..20"):
            write_partitions(path.parent, bad)
    splits = json.loads(path.read_text())
    write_partitions(path.parent, 2)
    tampered = json.loads(path.read_text())
    moved = tampered[6]["train"].pop()
    tampered[6]["val"].append(moved)
    path.write_text(json.dumps(tampered))
    with pytest.raises(ResultsError, match=r"entry 6 is not partition 2's fold 1 \(nnU-Net's split of the cases "
                                           r"with seed 12346\).*Nothing was written"):
        write_partitions(path.parent, 3)
    assert json.loads(path.read_text()) == tampered
    path.write_text(json.dumps(splits[:3]))
    with pytest.raises(ResultsError, match=r"holds 3 split\(s\); partitions need a 5-fold split as its first five"):
        write_partitions(path.parent, 2)
    overlapping = [*splits[:4], splits[0]]
    path.write_text(json.dumps(overlapping))
    with pytest.raises(ResultsError, match="its first five entries are not a 5-fold partition"):
        write_partitions(path.parent, 2)
    assert json.loads(path.read_text()) == overlapping


def test_a_second_writer_waits_for_the_lock(tmp_path):
    """While one process holds the splits file's lock, another `write_partitions` says it waits and writes nothing;
    once the lock is free it appends, and the file holds the entries of one writer, never a mix."""
    path = _nnunet_splits(tmp_path / "Dataset999_X")
    before = path.read_bytes()
    code = f"from nnunetv2_llm.nnunet.splits import write_partitions; write_partitions({str(path.parent)!r}, 2)"
    printed = tmp_path / "writer.out"
    with exclusive(path.parent / ".splits_final.json.lock", "the test's hold"), open(printed, "w") as out:
        writer = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while writer.poll() is None and time.time() < deadline and "waiting for" not in printed.read_text():
            time.sleep(0.2)
        assert writer.poll() is None, printed.read_text()
        assert "waiting for another run that holds the splits file" in printed.read_text()
        time.sleep(1)
        assert path.read_bytes() == before
    assert writer.wait(timeout=120) == 0, printed.read_text()
    assert len(json.loads(path.read_text())) == 10 and path.read_bytes().startswith(before.rstrip()[:-1].rstrip())


def test_fold_partitions_name_each_fold_s_partition():
    assert fold_partitions([0, 4, 5, 7, "12"]) == [FoldPartition(0, 1, 0), FoldPartition(4, 1, 4),
                                                  FoldPartition(5, 2, 0), FoldPartition(7, 2, 2),
                                                  FoldPartition(12, 3, 2)]
    with pytest.raises(ResultsError, match="fold 'all' belongs to no partition"):
        fold_partitions(["all"])


def test_a_fold_of_partition_1_beyond_a_short_split_gets_no_partitions_advice(tmp_path):
    """A 2-fold split of one's own (as the cascade's): fold 3 is refused; partitions would not help."""
    folder = tmp_path / "Dataset999_X"
    folder.mkdir()
    (folder / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]},
                                                          {"train": ["b"], "val": ["a"]}]))
    with pytest.raises(ResultsError) as e:
        check_fold_split("T", folder, tmp_path / "results", 3)
    assert "T: fold 3 is not in the splits file" in str(e.value) and "holds 2 splits (folds 0-1)" in str(e.value)
    assert "Pick a fold in 0-1. Nothing was trained." in str(e.value) and "--partitions" not in str(e.value)
    check_fold_split("T", folder, tmp_path / "results", 1)


# ---------------------------------------------------------------- with nnU-Net's own trainer and data

@pytest.fixture
def own_env(nnunet_env, dataset_2d, tmp_path, monkeypatch):
    """Dataset 501 with a preprocessed folder of its own (the session's splits file stays untouched), no splits file,
    and an empty nnUNet_results, set in this process too."""
    env = nnunet_env.beside(tmp_path / "nnunet", dataset_2d, ignore=shutil.ignore_patterns("*splits_final.json*"))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env.env[key])
    return env


def _trainer(env, cls, fold):
    return cls(env.plans(501), "2d", fold, env.dataset_json(501), torch.device("cpu"))


def test_partition_1_is_the_split_nnunet_writes(own_env):
    """With no splits file, partitions start from nnU-Net's own: the bytes nnUNetTrainer.do_split writes."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    folder = own_env.preprocessed_folder(501)
    write_partitions(folder, 2)
    ours = (folder / "splits_final.json").read_text()
    (folder / "splits_final.json").unlink()
    _trainer(own_env, nnUNetTrainer, 0).do_split()
    nnunet = (folder / "splits_final.json").read_text()
    assert ours.startswith(nnunet[:-1].rstrip()) and json.loads(ours)[:5] == json.loads(nnunet)


def test_our_trainers_refuse_a_fold_the_splits_file_lacks_and_a_split_changed_under_a_trained_fold(own_env):
    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerSmolLM2_2epochs_5its, nnUNetTrainer_2epochs_5its
    folder = own_env.preprocessed_folder(501)
    results = own_env.results_folder(501, PLAIN)
    for cls in (nnUNetTrainer_2epochs_5its, nnUNetTrainerSmolLM2_2epochs_5its):
        with pytest.raises(ResultsError, match=r"fold 5 is not in the splits file: .* has no splits_final.json yet"):
            _trainer(own_env, cls, 5)
    write_partitions(folder, 2)
    for cls in (nnUNetTrainer_2epochs_5its, nnUNetTrainerSmolLM2_2epochs_5its):
        with pytest.raises(ResultsError) as e:
            _trainer(own_env, cls, 12)
        message = str(e.value)
        assert f"{cls.__name__}: fold 12 is not in the splits file" in message
        assert "holds 10 splits (folds 0-9)" in message and "random 80:20 split" in message
        assert "partition 3's fold 2" in message and "--partitions 3" in message and "\n" not in message
    assert not (results / "fold_12").exists(), "refused before nnU-Net made the fold's folder"

    trainer = _trainer(own_env, nnUNetTrainer_2epochs_5its, 7)
    train, val = trainer.do_split()
    splits = json.loads((folder / "splits_final.json").read_text())
    assert (train, val) == (splits[7]["train"], splits[7]["val"])
    record = json.loads((results / "fold_7" / SPLIT_RECORD).read_text())
    assert record == {"fold": 7, "train": sorted(train), "val": sorted(val)}
    torch.save({"init_args": {}}, results / "fold_7" / "checkpoint_final.pth")  # fold 7 counts as trained
    _trainer(own_env, nnUNetTrainer_2epochs_5its, 6)  # the file still gives fold 7 its split: no refusal

    changed = json.loads(json.dumps(splits))
    case = changed[7]["val"].pop()
    changed[7]["train"].append(case)
    (folder / "splits_final.json").write_text(json.dumps(changed))
    for fold in (6, 7):  # another fold, and fold 7 itself (--c / --val)
        with pytest.raises(ResultsError, match=rf"no longer gives trained fold\(s\) 7 of .* the split they trained on "
                                               rf"\(fold 7: its train cases differ from the file's entry 7 \(1 moved: "
                                               rf"{case}\)"):
            _trainer(own_env, nnUNetTrainer_2epochs_5its, fold)
    run = trained_results("Dataset501_Synth2D", PLAIN, "nnUNetPlans", "2d")  # what compare and export read
    with pytest.raises(ResultsError, match=rf"{PLAIN}: fold 7 trained on another split than Dataset501_Synth2D's "
                                           rf"splits_final.json now gives \(its train cases differ .*{case}\)"):
        run.require_done(7)
    run.require_same_split(6)  # a fold without a record is not judged


def test_sweep_plan_partitions_and_bad_input(own_env, tmp_path, capsys):
    from nnunetv2_llm.commands.cli import main
    folder = own_env.preprocessed_folder(501)
    out = tmp_path / "sweep"
    capsys.readouterr()
    assert main(["sweep", "plan", "-o", str(out), "-d", "501", "-tr", PLAIN, "-f", "0", "2", "--partitions", "2"]) == 0
    printed = capsys.readouterr().out
    jobs = json.loads((out / "sweep.json").read_text())["jobs"]
    assert [j["fold"] for j in jobs] == [0, 2, 5, 7]
    assert [j["id"] for j in jobs][-1] == f"2d__{PLAIN}__nnUNetPlans__fold7"
    assert f"nnUNetv2_train Dataset501_Synth2D 2d 7 -tr {PLAIN} -p nnUNetPlans" in printed
    assert ("4 jobs (nnUNetv2_train runs): 1 configuration(s) x 1 variant(s) x 4 fold(s) (2 in each of 2 partitions) "
            "x 1 replicate(s)") in printed
    splits = (folder / "splits_final.json").read_bytes()
    assert len(json.loads(splits)) == 10
    assert main(["sweep", "plan", "-o", str(out), "-d", "501", "-tr", PLAIN, "-f", "0", "2", "--partitions", "2"]) == 0
    assert (folder / "splits_final.json").read_bytes() == splits  # planning twice adds nothing
    for flags, message in ((["--partitions", "0"], "partitions: 0: accepted are whole numbers 1..20"),
                           (["--partitions", "-2"], "partitions: -2: accepted are whole numbers 1..20"),
                           (["-f", "5", "--partitions", "2"], "folds: [5] with partitions: 2: the grid's folds are "
                                                               "those of each partition, 0-4")):
        capsys.readouterr()
        assert main(["sweep", "plan", "-o", str(tmp_path / "bad"), "-d", "501", "-tr", PLAIN, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"dataset": 501, "trainers": [PLAIN], "partitions": "2"}))
    assert main(["sweep", "plan", str(grid), "-o", str(tmp_path / "bad")]) == 2
    assert "partitions: '2': accepted" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and (folder / "splits_final.json").read_bytes() == splits


def test_a_sweep_job_of_a_stock_trainer_fails_on_a_fold_the_splits_file_lost(own_env, tmp_path):
    """Stock nnUNetTrainer does not check its fold: a sweep job fails before it starts nnUNetv2_train when the splits
    file no longer holds the job's fold (truncated after `sweep plan`), with the reason in its log."""
    from nnunetv2_llm.sweep.grid import plan_sweep
    from nnunetv2_llm.sweep.jobs import run_job
    out = tmp_path / "sweep"
    jobs = plan_sweep({"dataset": 501, "trainers": ["nnUNetTrainer"], "folds": [1], "partitions": 2}, out)
    assert [j["fold"] for j in jobs] == [1, 6]
    path = own_env.preprocessed_folder(501) / "splits_final.json"
    path.write_text(json.dumps(json.loads(path.read_text())[:5]))
    assert run_job(jobs[1], str(out), dict(own_env.env)) == "failed"
    log = (out / "logs" / f"{jobs[1]['id']}.log").read_text()
    assert "error: nnUNetTrainer: fold 6 is not in the splits file" in log and "--partitions 2" in log
    assert "nnUNetv2_train" not in log and not own_env.results_folder(501, "nnUNetTrainer").exists()


@pytest.mark.slow
def test_stock_nnunet_trains_partition_2_s_fold_and_our_trainer_refuses_what_the_file_lacks(own_env, tmp_path):
    """End to end with the stock CLIs: `sweep plan --partitions 2` writes the partitions; stock `nnUNetv2_train 501
    2d 7` trains partition 2's fold 2 (validated on its cases, recorded in fold_7/split.json); fold 12 is refused
    with the message alone, and so is a fold once the file no longer gives fold 7 its split; stock nnUNetv2_predict
    -f 7 predicts with it; compare and export refuse fold 7 once its split changed."""
    own_env.run("nnunetv2-llm", "sweep", "plan", "-o", tmp_path / "sweep", "-d", "501", "-tr", PLAIN, "-f", "2",
                "--partitions", "2", "--device", "cpu")
    path = own_env.preprocessed_folder(501) / "splits_final.json"
    splits = json.loads(path.read_text())
    results = own_env.results_folder(501, PLAIN)
    own_env.train("501", "2d", "7", "-tr", PLAIN)
    fold = results / "fold_7"
    assert json.loads((fold / SPLIT_RECORD).read_text())["val"] == sorted(splits[7]["val"])
    assert sorted(p.name[:-4] for p in (fold / "validation").glob("*.png")) == sorted(splits[7]["val"])
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "Desired fold for training: 7" in log and "80:20" not in log

    images = own_env.dataset_folder(501) / "imagesTs"
    own_env.run("nnUNetv2_predict", "-i", images, "-o", tmp_path / "pred", "-d", "501", "-c", "2d", "-tr", PLAIN,
                "-f", "7", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar")
    assert len(list((tmp_path / "pred").glob("*.png"))) == len(list(images.iterdir()))

    refused = own_env.train("501", "2d", "12", "-tr", PLAIN, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {PLAIN}: fold 12 is not in the splits file")
    assert "--partitions 3" in refused.stderr and not (results / "fold_12").exists()

    changed = json.loads(path.read_text())
    changed[7]["train"].append(changed[7]["val"].pop())
    path.write_text(json.dumps(changed))
    for args in (("5",), ("7", "--val")):
        refused = own_env.train("501", "2d", *args, "-tr", PLAIN, check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "no longer gives trained fold(s) 7" in refused.stderr and "Epoch 0" not in refused.stdout
    assert not (results / "fold_5").exists()
    assert os.listdir(fold / "validation")  # --val was refused before it touched the validation
    for command in ("compare", "export"):
        out = tmp_path / command
        proc = own_env.run("nnunetv2-llm", command, "-d", "501", "-c", "2d", "-tr", PLAIN, "-f", "7", "-o", out,
                           check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{PLAIN}: fold 7 trained on another split than Dataset501_Synth2D's splits_final.json" in proc.stderr
        assert not out.exists()


@pytest.mark.slow
def test_compare_reads_partition_2_s_folds_trained_with_the_stock_cli(nnunet_env, dataset_2d, own_env, tmp_path):
    """End to end: fold 0 of two trainers (the session's, trained on nnU-Net's own split, which is partition 1),
    partition 2's fold 0 (fold 5) trained with stock nnUNetv2_train after `sweep plan --partitions 2`; `compare -f 0
    5` reads two partitions of one fold each (P = 2, k = 1: no procedure interval, said why), and its case level is
    partition 1's fold 0, each case once."""
    smol = "nnUNetTrainerSmolLM2_2epochs_5its"
    for trainer in (PLAIN, smol):
        trained = nnunet_env.trained(dataset_2d, trainer)
        shutil.copytree(trained, own_env.results_folder(501, trainer),
                        ignore=lambda folder, names: [n for n in names if Path(folder) == trained
                                                      and n.startswith("fold_") and n != "fold_0"])
    shutil.copy(nnunet_env.preprocessed_folder(dataset_2d) / "splits_final.json", own_env.preprocessed_folder(501))
    own_env.run("nnunetv2-llm", "sweep", "plan", "-o", tmp_path / "sweep", "-d", "501", "-tr", PLAIN, "-tr", smol,
                "-f", "0", "--partitions", "2", "--device", "cpu")
    splits = json.loads((own_env.preprocessed_folder(501) / "splits_final.json").read_text())
    for trainer in (PLAIN, smol):
        own_env.train("501", "2d", "5", "-tr", trainer)
    out = tmp_path / "report"
    own_env.run("nnunetv2-llm", "compare", "-d", "501", "-c", "2d", "-tr", PLAIN, "-tr", smol, "-f", "0", "5",
                "-o", out, "-np", "1")
    report = json.loads((out / "report.json").read_text())
    runs = report["training_runs"]
    assert (runs["partitions"], runs["folds"], runs["replicates"], runs["runs_per_variant"]) == (2, 1, 1, 2)
    assert sorted(report["sets"]["in-domain"]["cases"]) == sorted(splits[0]["val"])
    text = (out / "report.md").read_text()
    assert "one training run of one fold in each of 2 partitions; the procedure level needs 2 or more folds" in text
    assert "a single training run per variant" not in text and "reads partition 1's out-of-fold predictions" in text
    rows = (out / "cases.csv").read_text().splitlines()
    assert {r.split(",")[3] for r in rows[1:] if r.startswith("in-domain,")} == {"0", "5"}
