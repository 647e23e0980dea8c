"""nnU-Net's own default plans for typical datasets, made by its ExperimentPlanner from a dataset fingerprint.

No images are needed: the planner reads only dataset.json and dataset_fingerprint.json (plus one file
name to pick the image reader), so we write those for a made-up dataset and run the real planner in
a child process pointed at a temporary nnU-Net folder. The architecture, patch size and batch size
are therefore exactly what ``nnUNetv2_plan_and_preprocess`` would choose for such a dataset.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "tumour": 2},
                "file_ending": ".nii.gz"}
NUM_CASES = 100


@dataclass(frozen=True)
class Fingerprint:
    """A made-up dataset: ``NUM_CASES`` images of one shape and spacing (z, y, x)."""
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def describe(self) -> str:
        return (f"{NUM_CASES} CT cases of {'x'.join(map(str, self.shape))} voxels at "
                f"{'x'.join(map(str, self.spacing))} mm")


@dataclass(frozen=True)
class Scenario:
    name: str
    fingerprint: Fingerprint
    configuration: str


ISO_256 = Fingerprint((256, 256, 256), (1.0, 1.0, 1.0))
CT_512 = Fingerprint((100, 512, 512), (2.5, 0.8, 0.8))
ISO_64 = Fingerprint((64, 64, 64), (1.0, 1.0, 1.0))

SCENARIOS = {
    "2d-256": Scenario("2d-256", ISO_256, "2d"),
    "2d-512": Scenario("2d-512", CT_512, "2d"),
    "3d-128": Scenario("3d-128", ISO_256, "3d_fullres"),
    "3d-64": Scenario("3d-64", ISO_64, "3d_fullres"),
}

_PLAN = """
import sys
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
ExperimentPlanner(int(sys.argv[1])).plan_experiment()
"""


def _write_dataset(root: Path, dataset_id: int, fp: Fingerprint) -> None:
    import numpy as np
    import SimpleITK as sitk
    name = f"Dataset{dataset_id:03d}_Bench"
    raw, pre = root / "raw" / name, root / "preprocessed" / name
    for d in (raw / "imagesTr", raw / "labelsTr", pre):
        d.mkdir(parents=True)
    # The planner only looks at one file name to choose the image reader.
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 2, 2), np.float32)), str(raw / "imagesTr" / "c_0000.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 2, 2), np.uint8)), str(raw / "labelsTr" / "c.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({**DATASET_JSON, "numTraining": NUM_CASES}))
    intensity = {"max": 1000.0, "mean": 0.0, "median": 0.0, "min": -1000.0, "percentile_00_5": -1000.0,
                 "percentile_99_5": 1000.0, "std": 300.0}
    (pre / "dataset_fingerprint.json").write_text(json.dumps({
        "spacings": [list(fp.spacing)] * NUM_CASES, "shapes_after_crop": [list(fp.shape)] * NUM_CASES,
        "foreground_intensity_properties_per_channel": {"0": intensity},
        "median_relative_size_after_cropping": 1.0}))


def default_plans(fp: Fingerprint) -> dict:
    """The plans nnU-Net's default ExperimentPlanner makes for a dataset with this fingerprint."""
    with tempfile.TemporaryDirectory(prefix="nnunet-plans-") as tmp:
        root, dataset_id = Path(tmp), 999
        _write_dataset(root, dataset_id, fp)
        env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
               "nnUNet_results": str(root / "results")}
        proc = subprocess.run([sys.executable, "-c", _PLAN, str(dataset_id)], env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nnU-Net's planner failed for {fp.describe()}:\n{proc.stderr[-3000:]}")
        return json.loads((root / "preprocessed" / f"Dataset{dataset_id:03d}_Bench" / "nnUNetPlans.json").read_text())


def plans_for(names) -> dict[str, dict]:
    """Plans per scenario name, planning each distinct fingerprint once."""
    cache: dict[Fingerprint, dict] = {}
    out = {}
    for name in names:
        fp = SCENARIOS[name].fingerprint
        if fp not in cache:
            cache[fp] = default_plans(fp)
        out[name] = cache[fp]
    return out


def managers(plans: dict, configuration: str, llm_spec=None):
    """PlansManager and ConfigurationManager; with ``llm_spec`` the configuration carries it as our trainers expect."""
    import copy
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = copy.deepcopy(plans)
    if llm_spec is not None:
        from nnunetv2_llm.core.plans_entry import put_spec_in_plans
        put_spec_in_plans(plans, configuration, llm_spec)
    pm = PlansManager(plans)
    return pm, pm.get_configuration(configuration)


def build_network(plans: dict, configuration: str, llm_spec=None):
    """The network exactly as nnUNetTrainer (or our nnUNetTrainerLLM) builds it from these plans."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM
    pm, cm = managers(plans, configuration, llm_spec)
    n_out = pm.get_label_manager(DATASET_JSON).num_segmentation_heads
    trainer = nnUNetTrainer if llm_spec is None else nnUNetTrainerLLM
    return trainer.build_network_architecture(pm, cm, 1, n_out, True)
