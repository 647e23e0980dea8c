"""What every benchmark script shares: the machine description, peak memory, isolated runs, tables, JSON."""
from __future__ import annotations

import importlib.metadata
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from nnunetv2_llm.core.files import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict:
    """The machine a result was measured on, with its load when the run started."""
    import torch
    info = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": importlib.metadata.version("transformers"),
        "nnunetv2": importlib.metadata.version("nnunetv2"),
        "device": device,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def describe_machine(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (f"machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
            f"{info['ram_gb']} GB RAM, device {info['device']}{gpu}; python {info['python']}, torch {info['torch']}, "
            f"transformers {info['transformers']}, nnunetv2 {info['nnunetv2']}; "
            f"load average at start {info['load_average_at_start']}")


def peak_rss_bytes() -> int:
    """This process's peak resident set size since start or the last :func:`reset_peak_rss`.

    On Linux this is VmHWM; ``ru_maxrss`` would be wrong for a spawned child, which inherits its
    parent's peak through fork.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def in_fresh_process(func, *args):
    """``func(*args)`` in a new interpreter, so its peak RSS is its own and nothing is shared or cached."""
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(func, args)


def median(values) -> float:
    return float(statistics.median(values))


class Stopwatch:
    """Wall time of a block; synchronises CUDA first so queued kernels are counted."""

    def __init__(self, device):
        self.device = device
        self.seconds = None

    def _sync(self):
        if self.device.type == "cuda":
            import torch
            torch.cuda.synchronize(self.device)

    def __enter__(self):
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds = time.perf_counter() - self.start


def table(headers: list[str], rows: list[list]) -> str:
    """A plain fixed-width text table (also valid Markdown)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2 ** 20:,.1f}"


def default_out(name: str, mode: str) -> Path:
    return RESULTS / f"{name}-{mode}.json"


def save(results: dict, name: str, mode: str, out: Path | None) -> Path:
    """Record the load at the end next to the load at the start, write the JSON and say where."""
    if "machine" in results:
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    home = json.dumps(str(Path.home()) + "/")[1:-1]
    results = json.loads(json.dumps(results).replace(home, "~/"))  # the results name no user's home folder
    path = write_json(out or default_out(name, mode), results, indent=2)
    print(f"\nwrote {path}")
    return path
