"""`nnunetv2-llm export`: a submission folder from short trained folds (LLM and plain nnU-Net), `--check` offline
against the stock nnUNetv2_predict, the Dockerfile's pins, refusals at export, and the entry point's bad input."""
import importlib.metadata
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_llm.commands import cli
from nnunetv2_llm.submission.versions import package_versions
from nnunetv2_llm.submission.check import OfflineRun, agrees, same_labels

PLAIN = "nnUNetTrainer_2epochs_5its"
SMOL = "nnUNetTrainerSmolLM2_2epochs_5its"


@pytest.fixture(scope="module")
def llm_submission(nnunet_env, dataset_2d, smollm2_gguf, tmp_path_factory) -> Path:
    """The SmolLM2 fold exported once for this module, in nnU-Net's input naming."""
    nnunet_env.trained(dataset_2d, SMOL)
    out = tmp_path_factory.mktemp("export") / "submission"
    nnunet_env.run("nnunetv2-llm", "export", "-d", dataset_2d, "-c", "2d", "-tr", SMOL, "-f", "0", "-o", out)
    return out


def test_llm_submission_holds_the_model_and_no_llm_files(llm_submission, nnunet_env, dataset_2d):
    names = zipfile.ZipFile(llm_submission / "model.zip").namelist()
    model = f"{nnunet_env.dataset_folder(dataset_2d).name}/{SMOL}__nnUNetPlans__2d"
    assert f"{model}/fold_0/checkpoint_final.pth" in names and f"{model}/plans.json" in names
    assert not [n for n in names if n.endswith((".gguf", ".safetensors"))]
    plans = json.loads(zipfile.ZipFile(llm_submission / "model.zip").read(f"{model}/plans.json"))
    assert re.fullmatch(r"[0-9a-f]{64}", plans["configurations"]["2d"]["llm"]["sha256"])
    assert (llm_submission / "src" / "nnunetv2_llm" / "ext_trainers" / "nnunetv2_llm_trainers.py").is_file()
    assert (llm_submission / "src" / "nnunetv2_llm" / "submission" / "runtime.py").is_file()
    for name in ("Dockerfile", "predict.py", "README.md", "export.json"):
        assert (llm_submission / name).is_file(), name


def test_dockerfile_pins_the_installed_versions(llm_submission):
    dockerfile = (llm_submission / "Dockerfile").read_text()
    pins = dict(re.findall(r"^\s+([A-Za-z0-9_.-]+)==([^\s\\]+)", dockerfile, flags=re.M))
    for name in ("torch", "nnunetv2", "transformers", "dynamic-network-architectures"):
        assert pins[name] == importlib.metadata.version(name).split("+")[0], name
    assert {**pins, "nnunetv2-llm": importlib.metadata.version("nnunetv2-llm")} == package_versions()
    assert "ENV PYTHONUNBUFFERED=1" in dockerfile and "HF_HUB_OFFLINE=1" in dockerfile
    assert "nnUNet_extTrainer=/opt/algorithm/src/nnunetv2_llm/ext_trainers" in dockerfile
    assert "nnUNetv2_install_pretrained_model_from_zip /opt/algorithm/model.zip" in dockerfile
    assert dockerfile.rstrip().endswith('ENTRYPOINT ["python", "/opt/algorithm/predict.py"]')
    assert re.search(r"^ARG BASE_IMAGE=\S+$", dockerfile, flags=re.M)


@pytest.mark.slow
def test_check_of_the_llm_submission_equals_nnunet_predict(llm_submission, nnunet_env):
    proc = nnunet_env.run("nnunetv2-llm", "export", "--check", llm_submission)
    assert "check passed: 4 case(s)" in proc.stdout
    report = json.loads((llm_submission / "check.json").read_text())
    assert report["agrees"] and len(report["cases"]) == 4
    assert all(c["differing_voxels"] == c["tied_voxels"] <= 2 and c["same_geometry"] for c in report["cases"])
    assert report["network"] in ("namespace", "audit guard") and report["seconds_per_case"] > 0
    assert f"{report['seconds_per_case']:.2f} s per case" in (llm_submission / "README.md").read_text()


@pytest.mark.slow
def test_plain_nnunet_exports_in_the_folders_layout_and_checks(nnunet_env, dataset_2d, tmp_path):
    nnunet_env.trained(dataset_2d, PLAIN)
    out = tmp_path / "plain"
    exported = nnunet_env.run("nnunetv2-llm", "export", "-d", dataset_2d, "-c", "2d", "-tr", PLAIN, "-f", "0",
                              "-o", out, "--layout", "folders", "--channel-folders", "image",
                              "--output-subfolder", "images/segmentation", "--disable-tta")
    assert "No ensemble directory" not in exported.stdout + exported.stderr, "nnU-Net's worrying line is silenced"
    record = json.loads((out / "export.json").read_text())
    assert record["input"]["channel_folders"] == ["image"] and record["use_mirroring"] is False
    assert "Plain nnU-Net model" in (out / "README.md").read_text()
    proc = nnunet_env.run("nnunetv2-llm", "export", "--check", out)
    assert "check passed" in proc.stdout
    assert json.loads((out / "check.json").read_text())["agrees"]


@pytest.mark.slow
def test_entry_point_reads_mha_and_keeps_its_geometry(llm_submission, nnunet_env, dataset_2d, tmp_path):
    """A PNG-trained model given .mha images (the platforms' usual type) writes .mha labels with the input's
    geometry, equal to its labels for the same pixels given as PNG."""
    images = nnunet_env.dataset_folder(dataset_2d) / "imagesTs"
    mha_in, png_in = tmp_path / "mha_in", tmp_path / "png_in"
    mha_in.mkdir()
    png_in.mkdir()
    cases = sorted(p for p in images.glob("*_0000.png"))[:2]
    for i, png in enumerate(cases):
        shutil.copy(png, png_in / f"case{i}.png")
        image = sitk.ReadImage(str(png))
        image.SetOrigin((10.0, -4.0))  # the model's own spacing (1, 1): a different one would be resampled
        sitk.WriteImage(image, str(mha_in / f"case{i}.mha"))
    offline = OfflineRun(llm_submission, tmp_path / "work")
    for folder in (mha_in, png_in):
        proc = offline.run(folder, tmp_path / f"out_{folder.name}")
        assert proc.returncode == 0 and not offline.refused, proc.stderr[-2000:]
    for i in range(len(cases)):
        label = sitk.ReadImage(str(tmp_path / "out_mha_in" / f"case{i}.mha"))
        assert label.GetSpacing() == (1.0, 1.0) and label.GetOrigin() == (10.0, -4.0)
        as_png = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out_png_in" / f"case{i}.png")))
        assert np.array_equal(sitk.GetArrayFromImage(label).reshape(as_png.shape), as_png)
        assert set(np.unique(as_png)) <= set(nnunet_env.dataset_json(dataset_2d)["labels"].values())


def _4d_mha(path: Path) -> None:
    volume = sitk.GetImageFromArray(np.zeros((3, 8, 8), np.float32))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path))


def _two_component_mha(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 2), np.float32), isVector=True), str(path))


@pytest.mark.parametrize("bad, expected", [
    ({"notes.txt": b"x"}, "notes.txt: not an image this model reads"),
    ({"case_0001.png": None}, "case 'case' has channel files _0001; the model takes 1 channel(s): _0000"),
    ({"case_0000.png": None, "other.mha": b"not an image"}, "other.mha cannot be read as an image"),
    ({"case_0000.png": None, "z4d.mha": _4d_mha}, "z4d.mha is a 4D image (size (8, 8, 3, 2)); the model takes 2D or 3D"),
    ({"case_0000.png": None, "zrgb.mha": _two_component_mha}, "zrgb.mha has 2 components per pixel"),
], ids=["text", "channel", "damaged", "4d", "2-component"])
@pytest.mark.slow
def test_entry_point_refuses_bad_input_and_writes_nothing(llm_submission, nnunet_env, dataset_2d, tmp_path, bad,
                                                          expected):
    png = next((nnunet_env.dataset_folder(dataset_2d) / "imagesTs").glob("*_0000.png"))
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "inputs.json").write_text("{}")  # platform metadata is ignored
    for name, content in bad.items():
        if content is None:
            shutil.copy(png, inputs / name)
        elif callable(content):
            content(inputs / name)
        else:
            (inputs / name).write_bytes(content)
    proc = OfflineRun(llm_submission, tmp_path / "work").run(inputs, outputs)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not outputs.exists() or not any(outputs.iterdir()), "nothing is written for a bad input folder"


@pytest.mark.slow
@pytest.mark.parametrize("reach", ["llm file", "network"])
def test_check_fails_loudly_when_the_entry_point_reaches_out(llm_submission, nnunet_env, smollm2_gguf, tmp_path,
                                                             reach):
    """The guard is real: an entry point that opens the LLM's GGUF, or connects anywhere (here: loopback), fails."""
    copy = tmp_path / "submission"
    shutil.copytree(llm_submission, copy, ignore=shutil.ignore_patterns("check.json"))  # another test's check
    line = (f"open({str(smollm2_gguf)!r}, 'rb').read(4)" if reach == "llm file"
            else "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)")
    predict = copy / "predict.py"
    predict.write_text(f"{line}\n{predict.read_text()}")
    _record_edits(copy)  # an edit that also rewrote export.json's hashes: only the guard can catch it
    proc = nnunet_env.run("nnunetv2-llm", "export", "--check", copy, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "reached for the network or for files it must not need" in proc.stderr
    assert (str(smollm2_gguf.resolve()) if reach == "llm file" else "127.0.0.1") in proc.stderr


def _record_edits(submission: Path) -> None:
    from nnunetv2_llm.submission.hashes import record_sha256, recorded_hashes
    record = json.loads((submission / "export.json").read_text())
    record["sha256"] = recorded_hashes(submission)
    record["record_sha256"] = record_sha256(record)
    (submission / "export.json").write_text(json.dumps(record))


@pytest.mark.parametrize("edit", ["Dockerfile", "predict.py", "src"])
def test_check_refuses_a_submission_edited_after_export(llm_submission, tmp_path, capsys, edit):
    """Issue 21 #6: a Dockerfile pinned to another torch, a changed entry point or package code is not what export
    wrote: --check names the file before running anything, and records nothing in the README."""
    copy = tmp_path / "submission"
    shutil.copytree(llm_submission, copy, ignore=shutil.ignore_patterns("check.json"))  # another test's check
    readme = (copy / "README.md").read_text()
    target = {"Dockerfile": copy / "Dockerfile", "predict.py": copy / "predict.py",
              "src": copy / "src" / "nnunetv2_llm" / "core" / "block.py"}[edit]
    text = target.read_text()
    target.write_text(text.replace("HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE=0").replace("torch==", "torch==1.0.0 #")
                      if edit == "Dockerfile" else text + "\n# edited\n")
    assert cli.main(["export", "--check", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"{edit} of {copy} changed since export" in err and "Export again" in err
    assert (copy / "README.md").read_text() == readme and not (copy / "check.json").exists()


def test_check_refuses_an_edited_export_json(llm_submission, tmp_path, capsys):
    """export.json decides how the container predicts (folds, tiling, mirroring): an edit to it is refused too."""
    copy = tmp_path / "submission"
    shutil.copytree(llm_submission, copy, ignore=shutil.ignore_patterns("check.json"))  # another test's check
    record = json.loads((copy / "export.json").read_text())
    record["tile_step_size"] = 0.9
    (copy / "export.json").write_text(json.dumps(record))
    assert cli.main(["export", "--check", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "export.json was edited after export" in err and not (copy / "check.json").exists()


def _copy_run(nnunet_env, dataset_2d, plans_name: str) -> Path:
    trained = nnunet_env.trained(dataset_2d, SMOL)
    copied = trained.parent / f"{SMOL}__{plans_name}__2d"
    shutil.rmtree(copied, ignore_errors=True)
    shutil.copytree(trained, copied, ignore=shutil.ignore_patterns("fold_1", "fold_2", "fold_3", "fold_4"))
    return copied


def test_export_refuses_plans_without_sha256_and_missing_folds(in_process_env, dataset_2d, tmp_path, capsys):
    copied = _copy_run(in_process_env, dataset_2d, "nnUNetPlans_nosha")
    out = tmp_path / "submission"
    try:
        args = ["export", "-d", str(dataset_2d), "-c", "2d", "-tr", SMOL, "-p", "nnUNetPlans_nosha", "-o", str(out)]
        assert cli.main([*args, "-f", "0", "1"]) == 2
        err = capsys.readouterr().err
        assert "fold 1 is missing in" in err
        assert f"2d 1 -tr {SMOL} -p nnUNetPlans_nosha" in err and "or leave it out of -f" in err

        plans_file = copied / "plans.json"
        plans = json.loads(plans_file.read_text())
        plans["configurations"]["2d"]["llm"]["sha256"] = None
        plans_file.write_text(json.dumps(plans))
        assert cli.main([*args, "-f", "0"]) == 2
        err = capsys.readouterr().err
        assert "records no sha256 for the LLM layer" in err and "--val" in err

        plans["configurations"]["2d"]["llm"]["sha256"] = "0" * 64
        plans_file.write_text(json.dumps(plans))
        assert cli.main([*args, "-f", "0"]) == 2
        assert "fold 0 trained another LLM block than" in capsys.readouterr().err
        (copied / "fold_0" / "validation" / "summary.json").unlink()
        assert cli.main([*args, "-f", "0"]) == 2
        err = capsys.readouterr().err
        assert "fold 0 did not finish nnU-Net's final validation (it has no validation/summary.json)" in err
        assert f"2d 0 -tr {SMOL} -p nnUNetPlans_nosha --val" in err
        assert not out.exists() and not list(tmp_path.glob(".submission*")), "nothing is half-written"
    finally:
        shutil.rmtree(copied)


def test_export_refuses_a_truncated_checkpoint_of_plain_nnunet(in_process_env, dataset_2d, tmp_path, capsys):
    """Issue 21 #5: a plain trainer's checkpoint is loaded too; one cut to half its size is refused, naming it."""
    trained = in_process_env.trained(dataset_2d, PLAIN)
    copied = trained.parent / f"{PLAIN}__nnUNetPlans_truncated__2d"
    shutil.rmtree(copied, ignore_errors=True)
    shutil.copytree(trained, copied, ignore=shutil.ignore_patterns("fold_1", "fold_2", "fold_3", "fold_4"))
    try:
        checkpoint = copied / "fold_0" / "checkpoint_final.pth"
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
        out = tmp_path / "submission"
        assert cli.main(["export", "-d", str(dataset_2d), "-c", "2d", "-tr", PLAIN, "-p", "nnUNetPlans_truncated",
                         "-f", "0", "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert str(checkpoint) in err and "truncated or damaged" in err and "Traceback" not in err
        assert not out.exists() and not list(tmp_path.glob(".submission*")), "nothing is half-written"
    finally:
        shutil.rmtree(copied)


def test_export_refuses_an_existing_folder_and_bad_options(in_process_env, dataset_2d, tmp_path, capsys):
    in_process_env.trained(dataset_2d, PLAIN)
    base = ["export", "-d", str(dataset_2d), "-c", "2d", "-tr", PLAIN, "-f", "0"]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert cli.main([*base, "-o", str(taken), "--overwrite"]) == 2
    assert "not a submission folder written by export" in capsys.readouterr().err
    assert (taken / "keep.txt").read_text() == "mine"
    assert cli.main([*base, "-o", str(tmp_path / "s"), "--layout", "folders"]) == 2
    assert "one --channel-folders name per input channel of the model (1" in capsys.readouterr().err
    assert cli.main([*base, "-o", str(tmp_path / "s"), "--step-size", "0"]) == 2
    assert "--step-size 0.0: accepted is 0 < step <= 1" in capsys.readouterr().err
    assert cli.main(["export", "-d", str(dataset_2d), "-tr", PLAIN]) == 2
    assert "export needs -c, -o (or --check FOLDER" in capsys.readouterr().err
    assert cli.main(["export", "--check", str(taken)]) == 2
    assert "is not a submission folder (export.json missing)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_same_labels_sees_a_changed_voxel_and_a_moved_origin(tmp_path):
    label = np.zeros((1, 8, 8), dtype=np.uint8)
    label[0, 2:5, 2:5] = 1
    image = sitk.GetImageFromArray(label)
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    label[0, 0, 0] = 2
    changed = sitk.GetImageFromArray(label)
    changed.SetOrigin((1.0, 0.0, 0.0))
    sitk.WriteImage(changed, str(tmp_path / "b.nii.gz"))
    assert same_labels(tmp_path / "a.nii.gz", tmp_path / "a.nii.gz") == {"differing_voxels": 0, "tied_voxels": 0,
                                                                         "same_geometry": True}
    assert same_labels(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz") == {"differing_voxels": 1, "tied_voxels": 0,
                                                                         "same_geometry": False}


def test_a_differing_voxel_passes_only_where_the_stock_run_scores_a_tie(tmp_path):
    """Two processes may flip a voxel whose top two classes are tied; a voxel the stock run is sure of fails."""
    stock = np.zeros((1, 8, 8), dtype=np.uint8)
    stock[0, 2:5, 2:5] = 1
    sitk.WriteImage(sitk.GetImageFromArray(stock), str(tmp_path / "stock.nii.gz"))
    ours = stock.copy()
    ours[0, 2, 2] = 0  # the stock run's 0.5002 against 0.4998: a tie
    sitk.WriteImage(sitk.GetImageFromArray(ours), str(tmp_path / "ours.nii.gz"))
    probabilities = np.stack([np.where(stock == 1, 0.1, 1.0), np.where(stock == 1, 0.9, 0.0)]).astype(np.float32)
    probabilities[:, 0, 2, 2] = (0.4998, 0.5002)
    np.savez(tmp_path / "stock.npz", probabilities=probabilities)
    tie = same_labels(tmp_path / "ours.nii.gz", tmp_path / "stock.nii.gz", tmp_path / "stock.npz")
    assert tie == {"differing_voxels": 1, "tied_voxels": 1, "same_geometry": True} and agrees(tie)
    ours[0, 3, 3] = 0  # 0.9 against 0.1: a real difference
    sitk.WriteImage(sitk.GetImageFromArray(ours), str(tmp_path / "ours.nii.gz"))
    wrong = same_labels(tmp_path / "ours.nii.gz", tmp_path / "stock.nii.gz", tmp_path / "stock.npz")
    assert wrong == {"differing_voxels": 2, "tied_voxels": 1, "same_geometry": True} and not agrees(wrong)


@pytest.mark.parametrize("subfolder", ["../escaped", "/tmp/escaped-absolute", "labels/../../escaped"])
def test_output_subfolder_outside_output_is_refused_everywhere(llm_submission, in_process_env, dataset_2d, tmp_path,
                                                               capsys, subfolder):
    """Issue 30 #4: labels go to /output/SUBFOLDER only; an absolute one or one with '..' is refused at export, by
    the entry point (a hand-edited export.json with its hash recomputed) and by --check, before anything is
    written."""
    from nnunetv2_llm.submission.runtime import run_container
    in_process_env.trained(dataset_2d, PLAIN)
    out = tmp_path / "s"
    assert cli.main(["export", "-d", str(dataset_2d), "-c", "2d", "-tr", PLAIN, "-f", "0", "-o", str(out),
                     "--output-subfolder", subfolder]) == 2
    err = capsys.readouterr().err
    assert f"--output-subfolder {subfolder!r} leaves its folder" in err and "Give a relative path" in err
    assert not out.exists() and not list(tmp_path.glob(".s*"))

    copy = tmp_path / "submission"
    shutil.copytree(llm_submission, copy, ignore=shutil.ignore_patterns("check.json"))
    record = json.loads((copy / "export.json").read_text())
    record["input"]["output_subfolder"] = subfolder
    (copy / "export.json").write_text(json.dumps(record))
    _record_edits(copy)
    inputs, outputs = tmp_path / "in", tmp_path / "out" / "deep"
    inputs.mkdir()
    shutil.copy(next((in_process_env.dataset_folder(dataset_2d) / "imagesTs").glob("*_0000.png")), inputs)
    assert run_container(copy / "export.json", inputs, outputs) == 2
    err = capsys.readouterr().err
    assert f"output_subfolder {subfolder!r} leaves its folder" in err and str(copy / "export.json") in err
    assert not (tmp_path / "out").exists() and not Path("/tmp/escaped-absolute").exists()
    assert cli.main(["export", "--check", str(copy), "-i", str(inputs)]) == 2
    assert f"output_subfolder {subfolder!r} leaves its folder" in capsys.readouterr().err
    assert not (copy / "check.json").exists()


def test_an_output_subfolder_through_a_symlink_out_of_output_is_refused(llm_submission, in_process_env, dataset_2d,
                                                                       tmp_path, capsys):
    """Issue 38 #3: the record's output subfolder is inside /output, but /output/images is a symbolic link to a
    folder outside: the entry point follows the path, refuses it naming where it leads, and writes nothing there."""
    from nnunetv2_llm.submission.runtime import run_container
    copy = tmp_path / "submission"
    shutil.copytree(llm_submission, copy, ignore=shutil.ignore_patterns("check.json"))
    record = json.loads((copy / "export.json").read_text())
    record["input"]["output_subfolder"] = "images/x"
    (copy / "export.json").write_text(json.dumps(record))
    _record_edits(copy)
    inputs, outputs, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    for folder in (inputs, outputs, elsewhere):
        folder.mkdir()
    (outputs / "images").symlink_to(elsewhere, target_is_directory=True)
    shutil.copy(next((in_process_env.dataset_folder(dataset_2d) / "imagesTs").glob("*_0000.png")), inputs)
    assert run_container(copy / "export.json", inputs, outputs) == 2
    err = capsys.readouterr().err
    assert f"output_subfolder 'images/x' leads to {elsewhere / 'x'} through a symbolic link, outside the output " \
           f"folder {outputs}" in err, err
    assert list(elsewhere.iterdir()) == [], "nothing written outside the output folder"


def test_check_names_the_file_ending_it_expects_and_the_one_it_found(llm_submission, in_process_env, dataset_2d,
                                                                     tmp_path, capsys):
    """Issue 38 #8: `export --check -i` on .mha images of a model trained on PNG names the ending it needs (it
    compares with nnUNetv2_predict, which reads the training ending) and the one it found."""
    images = tmp_path / "mha"
    images.mkdir()
    png = next((in_process_env.dataset_folder(dataset_2d) / "imagesTs").glob("*_0000.png"))
    sitk.WriteImage(sitk.ReadImage(str(png)), str(images / png.name.replace(".png", ".mha")))
    assert cli.main(["export", "--check", str(llm_submission), "-i", str(images)]) == 2
    err = capsys.readouterr().err
    assert f"no cases named CASE_0000.png in {images}" in err and "the model was trained on (.png)" in err, err
    assert "the folder holds files ending in .mha" in err and "convert them first" in err


def test_case_headers_are_checked_before_anything_is_predicted(tmp_path):
    """Issue 30 #12: the entry point reads every case's header first: channel files of one case on different grids,
    a 4D file, a vector image, or a 2D file for a 3D model are refused, naming the file and the fix."""
    from nnunetv2_llm.core.errors import UserError
    from nnunetv2_llm.submission.runtime import find_cases
    record = {"file_ending": ".nii.gz", "channels": {"0": "T1", "1": "T2"}, "input": {"layout": "nnunet"}}

    def write(name, shape, spacing=(1.0, 1.0, 1.0)):
        image = sitk.GetImageFromArray(np.zeros(shape, np.float32))
        image.SetSpacing(spacing[: image.GetDimension()])
        sitk.WriteImage(image, str(tmp_path / name))
    write("a_0000.nii.gz", (4, 8, 8))
    write("a_0001.nii.gz", (4, 8, 8))
    assert list(find_cases(tmp_path, record, 3)) == ["a"]
    write("b_0000.nii.gz", (4, 8, 8))
    write("b_0001.nii.gz", (4, 8, 9))
    with pytest.raises(UserError, match=r"case 'b': its channel files differ in shape or spacing .*size \(8, 8, 4\).*"
                                        r"size \(9, 8, 4\).*Resample them"):
        find_cases(tmp_path, record, 3)
    write("b_0001.nii.gz", (4, 8, 8), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(UserError, match=r"case 'b': its channel files differ in shape or spacing"):
        find_cases(tmp_path, record, 3)
    for path in tmp_path.glob("b_*"):
        path.unlink()
    write("c_0000.nii.gz", (8, 8))
    write("c_0001.nii.gz", (8, 8))
    with pytest.raises(UserError, match=r"c_0000.nii.gz is a 2D image \(size \(8, 8\)\); the model takes 3D images"):
        find_cases(tmp_path, record, 3)


@pytest.mark.slow
def test_check_names_the_users_file_not_its_staged_copy(llm_submission, nnunet_env, dataset_2d, tmp_path):
    """Issue 30 (smaller): --check copies -i into the platform layout; a refusal by the entry point names the file
    the user gave, not the copy."""
    inputs = tmp_path / "cases"
    inputs.mkdir()
    rgb = sitk.GetImageFromArray(np.zeros((8, 8, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(inputs / "colour_0000.png"))
    proc = nnunet_env.run("nnunetv2-llm", "export", "--check", llm_submission, "-i", inputs, check=False)
    assert proc.returncode == 2 and f"{inputs / 'colour_0000.png'} has 3 components per pixel" in proc.stderr, \
        proc.stderr
    assert "nnunetv2-llm-check-" not in proc.stderr
