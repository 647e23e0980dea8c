"""What a sweep will cost before it starts: its number of training runs and their time, measured on this machine
(a few training iterations of the first job's network), so a grid of full-length runs on a CPU is seen as such."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..nnunet.lengths import NNUNET_LENGTH, run_length

MEASURE_SECONDS = 15  # at most this long (after the first iteration) measuring


@dataclass
class SweepEstimate:
    """The training runs of a sweep and their estimated time: measured seconds per training iteration of the first
    job's network on ``device``, times every run's epochs x iterations."""

    runs: int
    iterations: int
    seconds_per_iteration: float
    device: str
    full_length: int  # runs at nnU-Net's full length (1000 epochs of 250 iterations)

    @property
    def seconds(self) -> float:
        return self.iterations * self.seconds_per_iteration

    def lines(self) -> list[str]:
        lines = [f"{self.runs} training run(s), {self.iterations:,} training iterations in all; estimated "
                 f"{duration(self.seconds)} on {self.device} ({self.seconds_per_iteration:.2f} s per iteration of the "
                 f"first job's network, measured here; data loading and validation add to it)"]
        if self.full_length and self.device == "cpu":
            epochs, iterations = NNUNET_LENGTH
            lines.append(f"{self.full_length} run(s) train nnU-Net's full length ({epochs} epochs of {iterations} "
                         f"iterations) on the CPU: use a GPU (--backend slurm), or a short trainer "
                         f"(e.g. nnUNetTrainerSmolLM2_10epochs_20its; `nnunetv2-llm trainers` lists the lengths).")
        return lines


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def job_device(job: dict) -> str:
    """Where the job trains: its ``-device``, else CUDA when torch sees a GPU, else the CPU (as `sweep run` does)."""
    from ..nnunet.environment import cuda_available
    from .backends import train_device
    device = train_device(job["train_args"]) or ("cuda" if cuda_available() else "cpu")
    return "cpu" if device == "cuda" and not cuda_available() else device


def seconds_per_iteration(job: dict, device: str) -> float:
    """A few training iterations (forward, backward, SGD step at the plans' batch and patch size) of the job's
    network, with its LLM block if it has one (random weights: only the structure counts)."""
    import torch

    from ..nnunet.networks import build_unet
    from ..nnunet.datasets import preprocessed_folder, read_dataset_json
    from ..core.files import read_json
    from .grid import check_trainer, job_spec
    folder = preprocessed_folder(job["dataset"])
    plans_file = folder / f"{job['plans']}.json"
    spec = job_spec(check_trainer(job["trainer"]), plans_file, job["configuration"])
    plans = read_json(plans_file)
    net = build_unet(plans, read_dataset_json(folder / "dataset.json"), job["configuration"], spec,
                     deep_supervision=True)
    batch = plans["configurations"][job["configuration"]].get("batch_size", 2)
    dev = torch.device(device)
    network = net.network.to(dev).train()
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-3, momentum=0.99)
    x = torch.randn(batch, net.in_channels, *net.patch_size, device=dev)
    times = []
    while len(times) < 4 and (len(times) < 2 or sum(times[1:]) < MEASURE_SECONDS):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = network(x)
        sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out])).backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / len(times[1:])  # the first iteration allocates


def measured_seconds_per_iteration(job: dict, device: str) -> float:
    """:func:`seconds_per_iteration` in the environment the job trains in: on the CPU with the CPU settings, in a
    process of its own unless this one already has them (OpenMP reads them at start; spinning threads make a loaded
    CPU several times slower)."""
    import os
    if device != "cpu" or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return seconds_per_iteration(job, device)
    import json
    import subprocess
    import sys

    from ..nnunet.environment import nnunet_env
    from .grid import SweepError
    proc = subprocess.run([sys.executable, "-m", __name__, json.dumps(job)], capture_output=True, text=True,
                          env=nnunet_env(device="cpu", training=True))
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SweepError(f"measuring the training speed of {job['id']} failed: {last}")
    return float(proc.stdout.split()[-1])


def estimate(jobs: list[dict]) -> SweepEstimate:
    """The sweep's runs and their time on this machine (see :class:`SweepEstimate`)."""
    lengths = [run_length(j["trainer"]) for j in jobs]
    device = job_device(jobs[0])
    return SweepEstimate(runs=len(jobs), iterations=sum(e * i for e, i in lengths),
                         seconds_per_iteration=measured_seconds_per_iteration(jobs[0], device), device=device,
                         full_length=sum(length == NNUNET_LENGTH for length in lengths))


if __name__ == "__main__":
    import json
    import sys
    print(seconds_per_iteration(json.loads(sys.argv[1]), "cpu"))
