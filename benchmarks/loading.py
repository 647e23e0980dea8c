"""Time and peak memory to a ready LLM block: our one-layer load vs the reference code's whole-model load.

Checkpoints are generated once, locally, with each model's exact config and random bf16 weights
(the hub ships bf16), written tensor by tensor into safetensors shards so no second copy is held.
Three ways to a ready block, each repetition in a fresh process (order rotated per repetition):

  ours       load_layer(spec) on the checkpoint folder + LLMBlock(...).load_pretrained (its three phases,
             read / build the block / copy the weights in, are reported too)
  reference  AutoModelForCausalLM.from_pretrained(folder, dtype=float32), keep model.model.layers[i], drop
             the model (what the paper's public code does); the gc.collect() that then frees it is timed
             separately and not counted, which favours the reference
  extracted  the same as ours from a single-layer file written once by extract_layer

The files are read once before timing, so every approach finds them in the page cache.

    python benchmarks/loading.py            # quick: a SmolLM2-135M-shaped checkpoint, seconds
    python benchmarks/loading.py --full     # LLaMA-3.2-1B and DeepSeek-R1-Distill-Qwen-1.5B at full size
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# How each model is written: max shard size in bytes (None: one model.safetensors, as its hub repo ships it).
LAYOUTS = {
    "smollm2-135m": 100 * 10 ** 6,         # hub: one file; sharded here to exercise the index in quick mode
    "llama-3.2-1b": 10 ** 9,               # hub: one 2.47 GB model.safetensors; sharded at 1 GB here (index)
    "deepseek-r1-distill-qwen-1.5b": None,  # hub: one 3.55 GB model.safetensors; the same here
}
MODES = {"quick": {"models": ["smollm2-135m"], "reps": 3},
         "full": {"models": ["llama-3.2-1b", "deepseek-r1-distill-qwen-1.5b"], "reps": 3}}
APPROACHES = ("ours", "reference", "extracted")
CHANNELS = 512  # nnU-Net 2D bottleneck
TARGET_MEMORY, TARGET_TIME = 10.0, 5.0


def _tensor_plan(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the checkpoint's tensors, from the model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM
    from nnunetv2_llm.core.decoder_layers import hf_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(config))
    plan = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    if config.get("tie_word_embeddings"):
        plan = [(k, s) for k, s in plan if k != "lm_head.weight"]
    return plan


def generate_checkpoint(folder: Path, config: dict, max_shard_bytes: int | None, seed: int = 0) -> Path:
    """Write a random-weight bf16 checkpoint with ``config``; at most one shard is in memory at a time."""
    import torch
    from safetensors.torch import save_file
    if (folder / "config.json").is_file():
        return folder
    plan = _tensor_plan(config)
    item = 2  # bytes per bf16 value
    shards, current, size = [], [], 0
    for name, shape in plan:
        n = math.prod(shape) * item
        if max_shard_bytes and current and size + n > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += n
    shards.append(current)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        g = torch.Generator().manual_seed(seed)
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            tensors = {}
            for name, shape in shard:
                if name.endswith("norm.weight"):
                    tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
                else:
                    tensors[name] = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
                weight_map[name] = fname
                total += tensors[name].numel() * item
            save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
            del tensors
        if len(shards) > 1:
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}, indent=2))
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def checkpoint_summary(folder: Path) -> dict:
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    return {"files": files, "bytes": sum((folder / f).stat().st_size for f in files),
            "index": (folder / "model.safetensors.index.json").is_file()}


def warm_page_cache(paths) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 * 2 ** 20):
                pass


def worker(approach: str, source: str, layer: int) -> dict:
    """In a fresh process: build a ready block one way; time and peak RSS from after the imports."""
    import importlib
    import torch
    from transformers import AutoModelForCausalLM
    from nnunetv2_llm import LLMSpec, load_layer, read_config, resolve_spec
    from nnunetv2_llm.core.block import LLMBlock
    from nnunetv2_llm.core.weights import tensors_sha256

    # transformers imports a model's code lazily, on first use: do it here, outside the timing, for every approach.
    model_type = read_config(source)["model_type"]
    importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    gc.collect()
    rss_imports = common.rss_bytes()
    common.reset_peak_rss()
    start = time.perf_counter()
    gc_seconds, phases = 0.0, {}
    if approach == "reference":
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        ready = model.model.layers[layer]
        del model
        seconds = time.perf_counter() - start
        # The rest of the model is only released by the collector; its time is reported, not counted.
        gc.collect()
        gc_seconds = time.perf_counter() - start - seconds
    else:
        spec = resolve_spec(LLMSpec(source=source, layer=layer))
        weights = load_layer(spec)
        phases["read"] = time.perf_counter() - start
        block = LLMBlock(CHANNELS, spec)
        phases["build_block"] = time.perf_counter() - start - phases["read"]
        block.load_pretrained(weights.tensors)
        del weights
        ready = block.layer
        seconds = time.perf_counter() - start
        phases["copy_in"] = seconds - phases["read"] - phases["build_block"]
    peak = common.peak_rss_bytes()
    return {"seconds": seconds, "phases": phases, "gc_seconds": gc_seconds, "peak_rss": peak, "rss_after_imports": rss_imports,
            "peak_above_imports": peak - rss_imports, "rss_ready": common.rss_bytes(),
            "layer_dtype": str(next(ready.parameters()).dtype),
            "layer_sha256": tensors_sha256({k: v.float() for k, v in ready.state_dict().items()})}


def measure(model: str, cache: Path, reps: int, max_reference_gb: float) -> dict:
    from nnunetv2_llm import MODELS
    from nnunetv2_llm.core.weights import extract_layer
    from nnunetv2_llm import LLMSpec
    preset = MODELS[model]
    folder = cache / f"{model}-random-bf16"
    t = time.perf_counter()
    existed = (folder / "config.json").is_file()
    generate_checkpoint(folder, preset.config, LAYOUTS[model])
    print(f"[{model}] checkpoint {folder}: {'reused' if existed else f'generated in {time.perf_counter() - t:.0f}s'}",
          flush=True)
    layer_file = cache / f"{model}-layer{preset.layer}.safetensors"
    if not layer_file.is_file():
        extract_layer(LLMSpec(source=str(folder), layer=preset.layer, config=preset.config), layer_file)
    summary = checkpoint_summary(folder)
    params = summary["bytes"] // 2
    # float32 model plus the mapped bf16 checkpoint pages, which count in RSS while it loads
    reference_gb = params * (4 + 2) / 1e9
    approaches = list(APPROACHES)
    skipped = None
    if reference_gb > max_reference_gb:
        approaches.remove("reference")
        skipped = (f"reference skipped: it holds the whole model in float32 plus the mapped bf16 checkpoint, about "
                   f"{reference_gb:.1f} GB, above --max-reference-gb {max_reference_gb} (raise it on a machine "
                   f"with room)")
        print(f"[{model}] {skipped}")
    warm_page_cache([folder / f for f in summary["files"]] + [layer_file])
    runs = {a: [] for a in approaches}
    sources = {"ours": str(folder), "reference": str(folder), "extracted": str(layer_file)}
    for rep in range(reps):
        order = approaches[rep % len(approaches):] + approaches[:rep % len(approaches)]
        for a in order:
            r = common.in_fresh_process(worker, a, sources[a], preset.layer)
            runs[a].append(r)
            gc_note = (f" (+{r['gc_seconds']:.2f}s gc, not counted)" if a == "reference" else
                       " (" + ", ".join(f"{k} {v:.2f}s" for k, v in r["phases"].items()) + ")")
            print(f"  rep {rep + 1} {a:<9} {r['seconds']:7.2f}s{gc_note}  peak RSS {common.mib(r['peak_rss'])} MiB "
                  f"({common.mib(r['peak_above_imports'])} above imports)", flush=True)
    shas = {a: {r["layer_sha256"] for r in rs} for a, rs in runs.items()}
    same = len(set().union(*shas.values())) == 1
    return {"checkpoint": {**summary, "folder": str(folder), "parameters": params,
                           "layer_file": str(layer_file), "layer_file_bytes": layer_file.stat().st_size},
            "layer": preset.layer, "skipped": skipped, "same_layer_weights": same,
            "approaches": {a: {"median_seconds": common.median([r["seconds"] for r in rs]),
                               "median_peak_rss": common.median([r["peak_rss"] for r in rs]),
                               "median_peak_above_imports": common.median([r["peak_above_imports"] for r in rs]),
                               "runs": rs} for a, rs in runs.items()}}


def report(results: dict) -> None:
    rows = []
    for model, e in results["models"].items():
        ref = e["approaches"].get("reference")
        for a, s in e["approaches"].items():
            ratio = lambda key: f"{ref[key] / s[key]:.1f}x" if ref and a != "reference" else "-"
            rows.append([model, a, f"{s['median_seconds']:.2f}", common.mib(s["median_peak_rss"]),
                         common.mib(s["median_peak_above_imports"]), ratio("median_seconds"),
                         ratio("median_peak_rss"), ratio("median_peak_above_imports")])
    print(f"\nTo a ready block (medians of {results['reps']} runs, each in a fresh process; RSS in MiB)")
    print(common.table(["model", "approach", "time s", "peak RSS", "peak above imports", "reference/this time",
                        "reference/this peak", "reference/this above imports"], rows))
    for model, e in results["models"].items():
        c = e["checkpoint"]
        print(f"[{model}] checkpoint {c['bytes'] / 1e9:.2f} GB in {len(c['files'])} file(s)"
              f"{' with an index' if c['index'] else ''}, {c['parameters'] / 1e9:.2f} B parameters; extracted layer "
              f"{e['layer']} file {c['layer_file_bytes'] / 1e6:.1f} MB; all approaches give the same layer weights: "
              f"{'yes' if e['same_layer_weights'] else 'NO'}")
        ref, ours = e["approaches"].get("reference"), e["approaches"]["ours"]
        if ref:
            t = ref["median_seconds"] / ours["median_seconds"]
            m = ref["median_peak_rss"] / ours["median_peak_rss"]
            m2 = ref["median_peak_above_imports"] / ours["median_peak_above_imports"]
            print(f"  targets (ours vs reference): time {t:.1f}x >= {TARGET_TIME}x {'met' if t >= TARGET_TIME else 'NOT met'}; "
                  f"peak RSS {m:.1f}x (above imports {m2:.1f}x) >= {TARGET_MEMORY}x "
                  f"{'met' if m >= TARGET_MEMORY else 'met above imports only' if m2 >= TARGET_MEMORY else 'NOT met'}")
        if e["skipped"]:
            print(f"  {e['skipped']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="SmolLM2-135M-shaped checkpoint (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="LLaMA-3.2-1B and DeepSeek-R1-Distill-Qwen-1.5B shaped checkpoints")
    parser.add_argument("--models", nargs="+", choices=sorted(LAYOUTS), help="override the mode's models")
    parser.add_argument("--reps", type=int, help="runs per approach (default 3)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/nnunetv2-llm-bench").expanduser(),
                        help="where the generated checkpoints are kept (default ~/.cache/nnunetv2-llm-bench)")
    parser.add_argument("--max-reference-gb", type=float, default=8.0,
                        help="skip the reference approach when its estimated peak (6 bytes per parameter: the "
                             "float32 model and the mapped bf16 files) exceeds this many GB (default 8)")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/loading-<mode>.json)")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    models = args.models or MODES[args.mode]["models"]
    reps = args.reps or MODES[args.mode]["reps"]
    machine = common.machine("cpu")
    print(common.describe_machine(machine))
    print(f"mode --{args.mode}: models {models}, {reps} runs per approach; checkpoints in {args.cache_dir}")
    results = {"mode": args.mode, "machine": machine, "reps": reps, "models": {}}
    for model in models:
        results["models"][model] = measure(model, args.cache_dir, reps, args.max_reference_gb)
    report(results)
    common.save(results, "loading", args.mode, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
