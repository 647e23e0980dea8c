"""Everything a GPU user cares about, in one run of under 8 minutes on one GPU; rehearsed on the CPU first.

    python benchmarks/gpu.py               # on the GPU: every step at nnU-Net's own sizes
    python benchmarks/gpu.py --rehearse    # every step at tiny sizes on the CPU, in a few minutes

Steps, each with its own time budget; a step that cannot run is skipped with the reason, and a step that fails is
recorded with its error, so a short run still returns the earlier steps' figures:

1. overhead   nnU-Net's plans (2D 256x256 and 512x512 at the planned batch, 3D 128^3): plain vs + a
              LLaMA-3.2-1B-shaped frozen layer stored in float32 and in bfloat16, eager and torch.compile (2D 256);
              nnU-Net's training step (fp16 autocast + GradScaler on CUDA) and sliding-window prediction of one
              case; interleaved repetitions, medians of per-repetition ratios; CUDA max allocated memory; how far
              the bfloat16 layer's output is from the float32 one's.
2. latency    the paper's per-image inference time (UNet 5.0 ms -> +LLaMA 5.9 ms): batch 1, 256x256, forward pass.
3. cli        the stock CLIs on the device: a generated 2D dataset, nnUNetv2_train of plain nnU-Net and of the
              SmolLM2 trainer with nnU-Net's default compile, losses finite, GradScaler skips and non-finite block
              outputs counted, nnUNetv2_predict on the device and on the CPU from the same checkpoint (differing
              voxels counted).
4. ddp        with two or more GPUs: nnUNetv2_train -num_gpus 2 of the SmolLM2 trainer for a few iterations (no
              unused-parameter error; the frozen layer's sha256 equal on both ranks and to the pretrained one).

Writes benchmarks/results/gpu-<gpu name>.json (gpu-rehearsal-cpu.json for --rehearse) and prints the table for docs/benchmarks-and-results.md.
Never labels a CPU figure as a GPU one: the JSON names the device every figure was measured on.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STEPS = ("overhead", "latency", "cli", "ddp")
# Seconds each step may use (the whole run stays under 8 minutes on one GPU).
BUDGET = {"gpu": {"overhead": 200, "latency": 20, "cli": 190, "ddp": 60},
          "rehearse": {"overhead": 240, "latency": 30, "cli": 360, "ddp": 60}}
SIZES = {
    # scenario -> (batch: None = nnU-Net's planned one, case edge as a multiple of the patch, mirroring)
    "gpu": {"scenarios": {"2d-256": (None, 2.0, True), "2d-512": (None, 2.0, True), "3d-128": (None, 1.0, False)},
            "compile": ["2d-256"], "reps": 5, "latency_edge": 256, "latency_reps": 50, "length": "_10epochs_20its",
            "model": "llama-3.2-1b"},
    # Every code path at the smallest sizes: a SmolLM2-shaped layer, one repetition (figures to check the script, not
    # to quote).
    "rehearse": {"scenarios": {"2d-64": (2, 1.0, False)}, "compile": ["2d-64"], "reps": 1, "latency_edge": 64,
                 "latency_reps": 3, "length": "_2epochs_5its", "model": "smollm2-135m"},
}
PAPER_MS = {"plain": 5.0, "llm": 5.9}  # the paper's UNet vs UNet + LLaMA per image (Table 1's inference time)


class Skip(Exception):
    """A step or item that cannot run here, with the reason."""


class Run:
    """The results, the clock and each step's budget."""

    def __init__(self, mode: str, device: str):
        self.mode, self.device, self.start = mode, device, time.monotonic()
        self.results = {"mode": mode, "machine": common.machine(device), "steps": {}}

    def step(self, name: str, func, *args):
        begun = time.monotonic()
        budget = BUDGET[self.mode][name]
        print(f"\n== step {name} (budget {budget} s)", flush=True)
        try:
            out = func(self, begun + budget, *args)
            out = {"status": "done", **out}
        except Skip as e:
            out = {"status": "skipped", "reason": str(e)}
        except Exception as e:  # a failed step must not lose the others' figures
            out = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-2000:]}
        out["seconds"] = round(time.monotonic() - begun, 1)
        print(f"== step {name}: {out['status']} in {out['seconds']} s"
              + (f" ({out.get('reason') or out.get('error')})" if out["status"] != "done" else ""), flush=True)
        self.results["steps"][name] = out


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


# ---------------------------------------------------------------- 1. overhead

def _fingerprints():
    from nnunet_plans import SCENARIOS, Fingerprint, Scenario
    return {**SCENARIOS, "2d-64": Scenario("2d-64", Fingerprint((64, 64, 64), (1.0, 1.0, 1.0)), "2d")}


def bf16_error(spec) -> dict:
    """The same random layer and input in float32 and in bfloat16 storage: relative error of the block's output."""
    import torch

    from nnunetv2_llm.core.block import LLMBlock
    torch.manual_seed(0)
    fp32 = LLMBlock(512, spec.replace(init="random"))
    bf16 = LLMBlock(512, spec.replace(init="random", dtype="bfloat16"))
    bf16.load_state_dict({**fp32.state_dict(), "_extra_state": bf16.get_extra_state()})
    x = torch.randn(1, 512, 16, 16)
    with torch.no_grad():
        a, b = fp32.eval()(x), bf16.eval()(x)
    return {"relative_l2": float((a - b).norm() / a.norm()), "max_abs": float((a - b).abs().max()),
            "output_rms": float(a.square().mean().sqrt())}


def step_overhead(run: Run, deadline: float) -> dict:
    import torch

    from nnunet_plans import default_plans
    from overhead import Bench, memory_worker, summarise, time_interleaved

    from nnunetv2_llm import model_spec
    sizes = SIZES[run.mode]
    spec = model_spec(sizes["model"], init="random")  # random weights: nothing downloaded; timing is value-blind
    variants = {"fp32": spec, "bf16": spec.replace(dtype="bfloat16")}
    out = {"llm": f"{sizes['model']} layer {spec.layer} shape, random weights, frozen", "scenarios": {},
           "bf16_vs_fp32_block_output": bf16_error(spec)}
    scenarios = _fingerprints()
    for name, (batch, case_factor, mirroring) in sizes["scenarios"].items():
        for compiled in (False, True):
            key = f"{name}{' compile' if compiled else ''}"
            if compiled and name not in sizes["compile"]:
                continue
            if _left(deadline) < 20:
                out["scenarios"][key] = {"status": "skipped", "reason": "step budget spent"}
                continue
            sc = scenarios[name]
            plans = default_plans(sc.fingerprint)
            benches = {"plain": Bench(plans, sc.configuration, None, run.device, batch, case_factor, mirroring,
                                      compiled)}
            benches.update({v: Bench(plans, sc.configuration, s.to_dict(), run.device, batch, case_factor, mirroring,
                                     compiled) for v, s in variants.items()})
            times = time_interleaved(benches, sizes["reps"])
            entry = {"patch": list(benches["plain"].patch), "batch": benches["plain"].batch,
                     "planned_batch": plans["configurations"][sc.configuration]["batch_size"],
                     "tiles": benches["plain"].tiles, "mirrorings": benches["plain"].mirrors,
                     "variants": {v: summarise(times, "plain", v) for v in variants}}
            del benches
            if run.device == "cuda":  # each variant alone in a fresh process: no other variant's tensors counted
                torch.cuda.empty_cache()
                entry["cuda_max_allocated_mib"] = {}
                for v, spec_dict in [("plain", None)] + [(v, s.to_dict()) for v, s in variants.items()]:
                    mem = common.in_fresh_process(memory_worker, plans, sc.configuration, spec_dict, run.device,
                                                  batch, case_factor, mirroring, compiled)
                    entry["cuda_max_allocated_mib"][v] = {
                        phase: round(mem[f"cuda_max_allocated_{phase}"] / 2 ** 20, 1) for phase in ("train", "predict")}
            out["scenarios"][key] = entry
    return out


# ---------------------------------------------------------------- 2. the paper's per-image latency

def step_latency(run: Run, deadline: float) -> dict:
    import torch

    from nnunet_plans import DATASET_JSON, default_plans
    from nnunetv2_llm import model_spec
    from nnunetv2_llm.nnunet.networks import build_unet
    edge, reps = SIZES[run.mode]["latency_edge"], SIZES[run.mode]["latency_reps"]
    plans = default_plans(_fingerprints()["2d-256" if edge == 256 else "2d-64"].fingerprint)
    nets = {"plain": build_unet(plans, DATASET_JSON, "2d").network,
            "llm": build_unet(plans, DATASET_JSON, "2d", model_spec(SIZES[run.mode]["model"])).network}
    device = torch.device(run.device)
    x = torch.randn(1, 1, edge, edge, device=device)
    times = {v: [] for v in nets}
    for net in nets.values():
        net.to(device).eval().decoder.deep_supervision = False
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for rep in range(reps + 3):
            for v, net in (nets.items() if rep % 2 == 0 else reversed(list(nets.items()))):
                with common.Stopwatch(device) as sw:
                    net(x)
                if rep >= 3:
                    times[v].append(sw.seconds * 1000)
            if _left(deadline) < 0:
                break
    medians = {v: common.median(t) for v, t in times.items()}
    return {"input": f"1x1x{edge}x{edge}", "llm": SIZES[run.mode]["model"], "reps": len(times["plain"]),
            "median_ms": medians,
            "ratio": medians["llm"] / medians["plain"], "paper_ms": PAPER_MS,
            "paper_ratio": PAPER_MS["llm"] / PAPER_MS["plain"],
            "note": "nnU-Net's 2D U-Net of 256x256 plans (not the paper's UNet), forward pass at batch 1, fp16 "
                    "autocast on CUDA as nnU-Net predicts"}


# ---------------------------------------------------------------- 3. the stock CLIs on the device

CHECK_TRAINERS = '''
"""Trainers that count what a GPU run must not do: GradScaler skips, non-finite LLM block outputs."""
import json
import math
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: F401

from nnunetv2_llm.core.network import unwrap
from nnunetv2_llm.core.weights import tensors_sha256
from nnunetv2_llm.nnunet import trainers


class Checks:
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.gpu_checks = {"steps": 0, "scaler_skips": 0, "nonfinite_block_outputs": 0, "losses": []}

    def train_step(self, batch):
        scale = self.grad_scaler.get_scale() if self.grad_scaler is not None else None
        out = super().train_step(batch)
        self.gpu_checks["steps"] += 1
        if scale is not None and self.grad_scaler.get_scale() < scale:
            self.gpu_checks["scaler_skips"] += 1
        self.gpu_checks["losses"].append(float(out["loss"]))
        return out

    def on_train_start(self):
        super().on_train_start()
        net = unwrap(self.network)
        if hasattr(net, "llm"):
            def count(module, inputs, output):
                self.gpu_checks["nonfinite_block_outputs"] += int((~torch.isfinite(output)).sum())
            net.llm.register_forward_hook(count)

    def on_train_end(self):
        net = unwrap(self.network)
        checks = dict(self.gpu_checks, rank=self.local_rank)
        checks["all_losses_finite"] = all(math.isfinite(x) for x in checks.get("losses", []))
        if hasattr(net, "llm"):
            checks["layer_sha256"] = tensors_sha256(net.llm.pretrained_tensors()[0])
        Path(self.output_folder, f"gpu_checks_rank{self.local_rank}.json").write_text(json.dumps(checks))
        super().on_train_end()


class GpuCheckPlain(Checks, trainers.nnUNetTrainer{length}):
    pass


class GpuCheckSmolLM2(Checks, trainers.nnUNetTrainerSmolLM2{length}):
    pass
'''


def _cli(command: list[str], env: dict, deadline: float, log: Path) -> subprocess.CompletedProcess:
    left = _left(deadline)
    if left < 10:
        raise Skip(f"step budget spent before `{Path(command[0]).name} {' '.join(command[1:4])}`")
    with open(log, "a") as f:
        f.write("$ " + " ".join(command) + "\n")
        f.flush()
        proc = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=left)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {proc.returncode}; last lines of {log}:\n"
                           + "\n".join(log.read_text().splitlines()[-15:]))
    return proc


def _prepare_cli(root: Path, length: str, device: str) -> dict:
    from nnunetv2_llm.nnunet.environment import nnunet_cli_env
    from nnunetv2_llm.nnunet.synthetic import make_dataset
    ext = root / "ext_trainers"
    ext.mkdir()
    (ext / "gpu_check_trainers.py").write_text(CHECK_TRAINERS.replace("{length}", length))
    env = nnunet_cli_env(root / "raw", root / "preprocessed", root / "results", device)
    env["nnUNet_extTrainer"] = os.pathsep.join([env["nnUNet_extTrainer"], str(ext)])
    for key in ("raw", "preprocessed", "results"):
        (root / key).mkdir()
    make_dataset(root / "raw", 701, dim=2, num_train=20, num_test=4, seed=0)
    return env


def _checks(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("gpu_checks_rank*.json"))]


def step_cli(run: Run, deadline: float, work: Path) -> dict:
    from nnunetv2_llm.nnunet.environment import cli_path
    root = work / "cli"
    root.mkdir()
    env = _prepare_cli(root, SIZES[run.mode]["length"], run.device)
    log = root / "cli.log"
    _cli([cli_path("nnUNetv2_plan_and_preprocess"), "-d", "701", "-c", "2d", "-np", "2", "-npfp", "2"], env,
         deadline, log)
    out = {"dataset": "synthetic 2D, 20 training + 4 test cases of 64x64", "length": SIZES[run.mode]["length"],
           "compile": run.device == "cuda" and env.get("nnUNet_compile", "true").lower() in ("1", "true", "t"),
           "trainers": {}}
    results = root / "results" / "Dataset701_Synth2D"
    for trainer in ("GpuCheckPlain", "GpuCheckSmolLM2"):
        start = time.monotonic()
        # one data-augmentation process on the CPU (nnU-Net's planner must not see this setting, it crashes on 0)
        _cli([cli_path("nnUNetv2_train"), "701", "2d", "0", "-tr", trainer, "-device", run.device],
             {**env, **({"nnUNet_n_proc_DA": "0"} if run.device == "cpu" else {})}, deadline, log)
        (checks,) = _checks(results / f"{trainer}__nnUNetPlans__2d" / "fold_0")
        summary = json.loads((results / f"{trainer}__nnUNetPlans__2d" / "fold_0" / "validation" / "summary.json")
                             .read_text())
        out["trainers"][trainer] = {**{k: v for k, v in checks.items() if k != "losses"},
                                    "final_loss": checks["losses"][-1] if checks.get("losses") else None,
                                    "validation_dice": summary["foreground_mean"]["Dice"],
                                    "seconds": round(time.monotonic() - start, 1)}
    images = root / "raw" / "Dataset701_Synth2D" / "imagesTs"
    predictions = {}
    for device in dict.fromkeys([run.device, "cpu"]):
        target = root / f"pred_{device}"
        start = time.monotonic()
        _cli([cli_path("nnUNetv2_predict"), "-i", str(images), "-o", str(target), "-d", "701", "-c", "2d",
              "-tr", "GpuCheckSmolLM2", "-f", "0", "-device", device, "--disable_progress_bar"], env, deadline, log)
        predictions[device] = (target, round(time.monotonic() - start, 1))
    out["predict_seconds"] = {d: s for d, (_, s) in predictions.items()}
    if run.device != "cpu":
        import numpy as np
        from PIL import Image
        differing, total = 0, 0
        for case in sorted(predictions["cpu"][0].glob("*.png")):
            a = np.asarray(Image.open(case))
            b = np.asarray(Image.open(predictions[run.device][0] / case.name))
            differing += int((a != b).sum())
            total += a.size
        out["device_vs_cpu_labels"] = {"differing_voxels": differing, "voxels": total}
    else:
        out["device_vs_cpu_labels"] = "rehearsal on the CPU: both predictions ran on the CPU"
    return out


# ---------------------------------------------------------------- 4. DDP over NCCL

def step_ddp(run: Run, deadline: float, work: Path) -> dict:
    import torch

    from nnunetv2_llm import model_spec
    from nnunetv2_llm.core.weights import load_layer
    from nnunetv2_llm.nnunet.environment import cli_path
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        raise Skip(f"needs two or more GPUs, {gpus} visible (nnU-Net's -num_gpus runs NCCL on CUDA only)")
    root = work / "ddp"
    root.mkdir()
    env = _prepare_cli(root, "_2epochs_5its", "cuda")
    log = root / "ddp.log"
    _cli([cli_path("nnUNetv2_plan_and_preprocess"), "-d", "701", "-c", "2d", "-np", "2", "-npfp", "2"], env,
         deadline, log)
    _cli([cli_path("nnUNetv2_train"), "701", "2d", "0", "-tr", "GpuCheckSmolLM2", "-num_gpus", "2"], env, deadline,
         log)
    checks = _checks(root / "results" / "Dataset701_Synth2D" / "GpuCheckSmolLM2__nnUNetPlans__2d" / "fold_0")
    pretrained = load_layer(model_spec("smollm2-135m")).sha256
    return {"ranks": len(checks), "layer_sha256_per_rank": [c.get("layer_sha256") for c in checks],
            "frozen_layer_identical_on_every_rank": len({c.get("layer_sha256") for c in checks}) == 1,
            "equals_the_pretrained_layer": all(c.get("layer_sha256") == pretrained for c in checks),
            "scaler_skips": [c.get("scaler_skips") for c in checks]}


# ---------------------------------------------------------------- report

def readme_table(results: dict) -> str:
    device = results["machine"].get("gpu", results["machine"]["device"])
    lines = [f"Measured with `python benchmarks/gpu.py{' --rehearse' if results['mode'] == 'rehearse' else ''}` "
             f"on {device} ({results['machine']['device']}); torch {results['machine']['torch']}.", ""]
    overhead = results["steps"].get("overhead", {})
    if overhead.get("status") == "done":
        lines += [f"Ratios to plain nnU-Net ({overhead['llm']}), medians of interleaved repetitions:", "",
                  "| scenario | batch | train +LLM fp32 | train +LLM bf16 | predict +LLM fp32 | predict +LLM bf16 | "
                  "max allocated in training, plain / fp32 / bf16 (MiB) |", "|---|---|---|---|---|---|---|"]
        for name, e in overhead["scenarios"].items():
            if "variants" not in e:
                lines.append(f"| {name} | - | {e.get('reason', '')} | | | | |")
                continue
            v = e["variants"]
            mem = e.get("cuda_max_allocated_mib")
            lines.append(f"| {name} | {e['batch']} | {v['fp32']['train']['median_ratio']:.2f}x | "
                         f"{v['bf16']['train']['median_ratio']:.2f}x | {v['fp32']['predict']['median_ratio']:.2f}x | "
                         f"{v['bf16']['predict']['median_ratio']:.2f}x | "
                         + (" / ".join(f"{mem[k]['train']:,.0f}" for k in ("plain", "fp32", "bf16")) if mem else "-") + " |")
        err = overhead["bf16_vs_fp32_block_output"]
        lines += ["", f"bfloat16 layer vs float32, block output: relative L2 error {err['relative_l2']:.2e}."]
    latency = results["steps"].get("latency", {})
    if latency.get("status") == "done":
        m = latency["median_ms"]
        lines.append(f"Per-image forward ({latency['input']}): plain {m['plain']:.2f} ms, +{latency['llm']} {m['llm']:.2f} ms "
                     f"({latency['ratio']:.2f}x; the paper: 5.0 -> 5.9 ms, {latency['paper_ratio']:.2f}x).")
    cli = results["steps"].get("cli", {})
    if cli.get("status") == "done":
        t = cli["trainers"]
        lines.append(f"Stock CLIs ({cli['length']}, compile {'on' if cli['compile'] else 'off'}): losses finite "
                     f"{all(x['all_losses_finite'] for x in t.values())}; GradScaler skips plain "
                     f"{t['GpuCheckPlain']['scaler_skips']}, +SmolLM2 {t['GpuCheckSmolLM2']['scaler_skips']}; "
                     f"non-finite block outputs {t['GpuCheckSmolLM2']['nonfinite_block_outputs']}; labels on the "
                     f"device vs the CPU: {cli['device_vs_cpu_labels']}.")
    for name in STEPS:
        step = results["steps"].get(name, {})
        if step.get("status") in ("skipped", "failed"):
            lines.append(f"Step {name}: {step['status']} ({step.get('reason') or step.get('error')}).")
    return "\n".join(lines)


def output_path(results: dict) -> Path:
    if results["mode"] == "rehearse":
        return common.RESULTS / "gpu-rehearsal-cpu.json"
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", results["machine"].get("gpu", "unknown-gpu")).strip("-").lower()
    return common.RESULTS / f"gpu-{name}.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rehearse", action="store_true", help="every step at tiny sizes on the CPU")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="the steps to run (default all)")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/gpu-<gpu name>.json)")
    args = parser.parse_args(argv)
    import torch
    if not args.rehearse and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: run it on a GPU machine, or rehearse it here with --rehearse (CPU, tiny "
                     "sizes; its figures are not GPU figures)")
    run = Run("rehearse" if args.rehearse else "gpu", "cpu" if args.rehearse else "cuda")
    print(common.describe_machine(run.results["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="nnunetv2-llm-gpu-") as tmp:
        for name, func in (("overhead", step_overhead), ("latency", step_latency), ("cli", step_cli),
                           ("ddp", step_ddp)):
            if name not in args.steps:
                continue
            run.step(name, func, *([Path(tmp)] if name in ("cli", "ddp") else []))
    run.results["seconds_total"] = round(time.monotonic() - run.start, 1)
    table = readme_table(run.results)
    run.results["readme_table"] = table
    print("\n" + table)
    common.save(run.results, "gpu", run.mode, args.out or output_path(run.results))
    return 0 if all(s["status"] != "failed" for s in run.results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
