"""Bytes of nnU-Net's checkpoint_final.pth with and without the LLM block, per layer dtype and frozen/trainable.

Each checkpoint is built the way nnUNetTrainer.save_checkpoint builds it (network state dict,
optimizer state dict, logging, init args with the plans) for a network built from nnU-Net's own
default plans, after one optimizer step so SGD's momentum buffers exist, exactly as they do after
training (each trainer's own configure_optimizers: ours leaves frozen weights out). Weights are
random: sizes do not depend on values. ``--real`` also breaks down checkpoints from actual runs.

    python benchmarks/checkpoint_size.py             # 2D plans for a 256x256 patch
    python benchmarks/checkpoint_size.py --full      # also the 512x512 2D and 128^3 3D plans
    python benchmarks/checkpoint_size.py --real results/.../fold_0/checkpoint_final.pth
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from nnunet_plans import DATASET_JSON, SCENARIOS, build_network, plans_for  # noqa: E402

MODES = {"quick": ["2d-256"], "full": ["2d-256", "2d-512", "3d-128"]}
MODELS = ("llama-3.2-1b", "smollm2-135m")
DTYPES = ("float32", "bfloat16")


def tensor_bytes(obj, seen: set | None = None) -> int:
    """Bytes of the distinct tensor storages inside nested dicts/lists, as torch.save stores them.

    Shared storages count once: nnU-Net's decoder holds a reference to the encoder, so its state
    dict lists every encoder tensor twice under two names.
    """
    import torch
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


def checkpoint_like_nnunet(plans: dict, configuration: str, spec) -> dict:
    """The dict nnUNetTrainer.save_checkpoint writes, for a fresh network after one SGD step."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2_llm.core.plans_entry import put_spec_in_plans
    from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM
    net = build_network(plans, configuration, spec)
    trainer = nnUNetTrainer if spec is None else nnUNetTrainerLLM
    optimizer = trainer.configure_optimizers(
        SimpleNamespace(network=net, initial_lr=1e-2, weight_decay=3e-5, num_epochs=1000))[0]
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    saved_plans = copy.deepcopy(plans)
    if spec is not None:
        put_spec_in_plans(saved_plans, configuration, spec)
    dim = len(plans["configurations"][configuration]["patch_size"])
    return {
        "network_weights": net.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {k: [0.0] * 1000 for k in ("mean_fg_dice", "ema_fg_dice", "train_losses", "val_losses", "lrs")},
        "_best_ema": None,
        "current_epoch": 1000,
        "init_args": {"plans": saved_plans, "configuration": configuration, "fold": 0,
                      "dataset_json": DATASET_JSON, "device": torch.device("cpu")},
        "trainer_name": trainer.__name__,
        "inference_allowed_mirroring_axes": tuple(range(dim)),
    }


def file_size(checkpoint: dict) -> int:
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint_final.pth")
        torch.save(checkpoint, path)
        return os.path.getsize(path)


def measure_variant(plans, configuration, spec) -> dict:
    ckpt = checkpoint_like_nnunet(plans, configuration, spec)
    llm_keys = {k: v for k, v in ckpt["network_weights"].items() if k.startswith("llm.")}
    return {"file_bytes": file_size(ckpt), "network_weights_bytes": tensor_bytes(ckpt["network_weights"]),
            "optimizer_state_bytes": tensor_bytes(ckpt["optimizer_state"]),
            "llm_keys_bytes": tensor_bytes(llm_keys)}


def measure_real(path: Path) -> dict:
    import torch
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    llm = {k: v for k, v in ckpt["network_weights"].items() if k.startswith("llm.")}
    dtypes = sorted({str(v.dtype) for v in llm.values()})
    return {"path": str(path), "trainer": ckpt.get("trainer_name"), "file_bytes": path.stat().st_size,
            "network_weights_bytes": tensor_bytes(ckpt["network_weights"]),
            "optimizer_state_bytes": tensor_bytes(ckpt["optimizer_state"]),
            "llm_keys_bytes": tensor_bytes(llm), "llm_dtypes": dtypes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="2D 256x256 plans (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="2D 256/512 and 3D 128^3 plans")
    parser.add_argument("--real", nargs="+", type=Path, default=[], help="also break down these checkpoint files")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/checkpoint_size-<mode>.json)")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    missing = [str(p) for p in args.real if not p.is_file()]
    if missing:
        parser.error(f"--real: no such file(s) {missing}; pass checkpoint_final.pth files of finished runs")

    from nnunetv2_llm import model_spec
    machine = common.machine("cpu")
    print(common.describe_machine(machine))
    names = MODES[args.mode]
    all_plans = plans_for(names)
    results = {"mode": args.mode, "machine": machine, "scenarios": {}, "real": []}
    rows = []
    for name in names:
        sc = SCENARIOS[name]
        plans = all_plans[name]
        entry = {"configuration": sc.configuration, "fingerprint": sc.fingerprint.describe(),
                 "patch_size": plans["configurations"][sc.configuration]["patch_size"], "variants": {}}
        variants = [("plain nnU-Net", None)] + [
            (f"+{model} {'trainable' if trainable else 'frozen'} {dtype}",
             model_spec(model, dtype=dtype, trainable=trainable))
            for model in MODELS for trainable in (False, True) for dtype in DTYPES]
        for label, spec in variants:
            v = measure_variant(plans, sc.configuration, spec)
            entry["variants"][label] = v
            base = entry["variants"]["plain nnU-Net"]["file_bytes"]
            rows.append([name, label, common.mib(v["file_bytes"]), common.mib(v["network_weights_bytes"]),
                         common.mib(v["optimizer_state_bytes"]), common.mib(v["llm_keys_bytes"]),
                         f"{v['file_bytes'] / base:.2f}x"])
            print(f"  {name} {label}: {common.mib(v['file_bytes'])} MiB", flush=True)
        results["scenarios"][name] = entry
    print("\ncheckpoint_final.pth as nnU-Net writes it (MiB; 'llm.*' = the block's keys in network_weights)")
    print(common.table(["plans", "variant", "file", "network_weights", "optimizer_state", "llm.* keys", "vs plain"],
                       rows))
    if args.real:
        real_rows = []
        for path in args.real:
            r = measure_real(path)
            results["real"].append(r)
            real_rows.append([r["path"], r["trainer"], common.mib(r["file_bytes"]), common.mib(r["network_weights_bytes"]),
                              common.mib(r["optimizer_state_bytes"]), common.mib(r["llm_keys_bytes"]),
                              ",".join(r["llm_dtypes"]) or "-"])
        print("\nreal checkpoints (MiB)")
        print(common.table(["file", "trainer", "file", "network_weights", "optimizer_state", "llm.* keys",
                            "llm dtype"], real_rows))
    common.save(results, "checkpoint_size", args.mode, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
