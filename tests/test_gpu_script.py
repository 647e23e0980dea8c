"""benchmarks/gpu.py, the script for the first GPU, cannot rot: its rehearsal runs every step on the CPU at tiny
sizes, and its figures are labelled with the device they were measured on (never a CPU figure as a GPU one)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_without_a_gpu_it_asks_for_the_rehearsal(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here: the script would run for real")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU is visible" in proc.stderr and "--rehearse" in proc.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "rehearsal.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", "--out", str(out)], capture_output=True,
                          text=True, timeout=1500, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "rehearse" and results["machine"]["device"] == "cpu" and "gpu" not in results["machine"]
    steps = results["steps"]
    assert {k: v["status"] for k, v in steps.items()} == {"overhead": "done", "latency": "done", "cli": "done",
                                                           "ddp": "skipped"}
    overhead = steps["overhead"]["scenarios"]
    assert set(overhead) == {"2d-64", "2d-64 compile"}
    for entry in overhead.values():
        for variant in ("fp32", "bf16"):
            assert entry["variants"][variant]["train"]["median_ratio"] > 0
    assert 0 < steps["overhead"]["bf16_vs_fp32_block_output"]["relative_l2"] < 0.05
    assert steps["latency"]["median_ms"]["plain"] > 0
    for trainer in ("GpuCheckPlain", "GpuCheckSmolLM2"):
        checks = steps["cli"]["trainers"][trainer]
        assert checks["all_losses_finite"] and checks["steps"] == 10 and checks["scaler_skips"] == 0
    assert steps["cli"]["trainers"]["GpuCheckSmolLM2"]["nonfinite_block_outputs"] == 0
    assert "GPUs" in steps["ddp"]["reason"]
    assert "--rehearse` on cpu" in results["readme_table"] and results["readme_table"] in proc.stdout
