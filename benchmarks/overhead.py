"""Training-step and sliding-window-inference cost of the frozen LLM block, against plain nnU-Net.

Plans come from nnU-Net's own planner (see nnunet_plans.py). The two networks are built exactly as
nnUNetTrainer and our nnUNetTrainerLLM build them; the LLM layer has the preset's exact shapes and
random weights (timing does not depend on the values). A training step is nnU-Net's train_step:
zero_grad, forward, deep-supervision Dice+CE loss, backward, gradient clipping at 12, SGD step
(each trainer's own configure_optimizers; fp16 autocast and GradScaler on CUDA as nnU-Net does).
Inference is nnUNetPredictor.predict_sliding_window_return_logits on one random case. Plain and LLM
repetitions alternate in one process (and swap order every repetition), so load changes hit both;
we report medians and the median of the per-repetition ratios. Peak memory is measured separately,
each variant in a fresh process (its peak reset before each phase), so the numbers do not mix.

    python benchmarks/overhead.py            # quick: 2 CPU cores, a few minutes (reduced batch, see output)
    python benchmarks/overhead.py --full     # the issue's sizes and nnU-Net's planned batch sizes
    python benchmarks/overhead.py --variants paper lora depth2 gate pang medvisionllama   # each adaptation's cost
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from nnunet_plans import DATASET_JSON, SCENARIOS, build_network, managers, plans_for  # noqa: E402

# Per mode: scenario -> (batch size or None for the planned one, case edge as a multiple of the patch, mirroring)
MODES = {
    "quick": {"reps": 5, "scenarios": {"2d-256": (2, 1.5, False), "3d-64": (1, 1.0, False)}},
    "full": {"reps": 7, "scenarios": {"2d-256": (None, 2.0, True), "2d-512": (None, 2.0, True),
                                      "3d-128": (None, 2.0, True)}},
}
TARGET_TRAIN, TARGET_INFER = 1.15, 1.10


class Bench:
    """One network with its optimizer, loss, a fixed batch and a predictor: what a trainer holds."""

    def __init__(self, plans: dict, configuration: str, spec_dict: dict | None, device: str, batch: int | None,
                 case_factor: float, mirroring: bool, compile_network: bool = False):
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2_llm import LLMSpec
        from nnunetv2_llm.core.network import unwrap
        from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM

        self.device = torch.device(device)
        spec = LLMSpec.from_dict(spec_dict) if spec_dict else None
        pm, cm = managers(plans, configuration, spec)
        self.network = build_network(plans, configuration, spec).to(self.device)
        trainer = nnUNetTrainer if spec is None else nnUNetTrainerLLM
        hyper = SimpleNamespace(network=self.network, initial_lr=1e-2, weight_decay=3e-5, num_epochs=1000)
        self.optimizer = trainer.configure_optimizers(hyper)[0]
        if compile_network:  # as nnUNetTrainer.initialize does on CUDA (nnUNet_compile), after the optimizer
            self.network = torch.compile(self.network)
        self.grad_scaler = torch.GradScaler("cuda") if self.device.type == "cuda" else None
        self.batch = batch or cm.batch_size
        self.patch = tuple(cm.patch_size)
        n_classes = pm.get_label_manager(DATASET_JSON).num_segmentation_heads
        self.loss = self._loss(cm, n_classes)
        g = torch.Generator().manual_seed(0)
        self.data = torch.randn((self.batch, 1, *self.patch), generator=g).to(self.device)
        self.targets = [torch.randint(0, n_classes, (self.batch, 1, *[round(p * s) for p, s in zip(self.patch, scale)]),
                                      generator=g).to(self.device) for scale in self.scales]
        case = [round(p * case_factor) for p in self.patch]
        # nnU-Net keeps 2D cases as (c, 1, x, y) and 3D cases as (c, x, y, z).
        self.case = torch.randn((1, 1, *case) if len(case) == 2 else (1, *case), generator=g)
        self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                         perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                         verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        self.predictor.manual_initialization(self.network, pm, cm, None, DATASET_JSON, trainer.__name__,
                                             tuple(range(len(self.patch))))
        self.case_shape = case
        self.tiles = len(self.predictor._internal_get_sliding_window_slicers(tuple(self.case.shape[1:])))
        self.mirrors = 2 ** len(self.patch) if mirroring else 1
        net = unwrap(self.network)
        self.block = getattr(net, "llm", None)
        if self.block is not None:
            grid = net.token_grid(self.patch)
            self.block_input = torch.randn((1, self.block.proj_in.in_features, *grid), generator=g).to(self.device)

    def _loss(self, cm, n_classes):
        import numpy as np
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
        # As nnUNetTrainer._build_loss for a label (not region) task.
        self.scales = [list(s) for s in 1 / np.cumprod(np.vstack(cm.pool_op_kernel_sizes), axis=0)][:-1]
        loss = DC_and_CE_loss({"batch_dice": cm.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                              weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
        weights = np.array([1 / 2 ** i for i in range(len(self.scales))])
        weights[-1] = 0
        return DeepSupervisionWrapper(loss, weights / weights.sum())

    def train_step(self) -> None:
        """nnUNetTrainer.train_step on a fixed batch."""
        import torch
        self.network.train()
        self.network.decoder.deep_supervision = True
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            loss = self.loss(self.network(self.data), self.targets)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    def predict(self) -> None:
        """Sliding-window logits of one case, deep supervision off as nnU-Net's validation and predictor run."""
        import torch
        self.network.decoder.deep_supervision = False
        with torch.no_grad():
            self.predictor.predict_sliding_window_return_logits(self.case)
        self.network.decoder.deep_supervision = True

    def block_forward(self) -> None:
        """The LLM block alone, as called once per tile at inference (batch 1)."""
        import torch
        self.block.eval()
        with torch.no_grad():
            self.block(self.block_input)

    def flops(self) -> dict:
        """FLOPs of one training step and of one prediction (patch forward x tiles x mirrorings): load-independent."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as train:
            self.train_step()
        self.network.decoder.deep_supervision = False
        with FlopCounterMode(display=False) as forward, torch.no_grad():
            self.network.eval()
            self.network(self.data[:1])
        self.network.decoder.deep_supervision = True
        return {"train_step_flops": train.get_total_flops(),
                "predict_flops": forward.get_total_flops() * self.tiles * self.mirrors}

    def gradient_and_state_bytes(self) -> dict:
        """Bytes of .grad and optimizer state, in total and for the LLM layer's own weights."""
        from nnunetv2_llm.core.network import unwrap
        net = unwrap(self.network)
        layer_params = {id(p) for p in net.llm.layer.parameters()} if hasattr(net, "llm") else set()
        lora_params = {id(p) for n, p in net.llm.layer.named_parameters() if ".lora_" in n} if hasattr(net, "llm") \
            else set()
        nbytes = lambda t: t.numel() * t.element_size()
        grads = {id(p): nbytes(p.grad) for p in net.parameters() if p.grad is not None}
        state = {id(p): sum(nbytes(v) for v in s.values() if hasattr(v, "numel"))
                 for p, s in self.optimizer.state.items()}
        block = net.llm if hasattr(net, "llm") else None
        return {
            "grad_bytes": sum(grads.values()),
            "optimizer_state_bytes": sum(state.values()),
            "llm_layer_grad_bytes": sum(b for i, b in grads.items() if i in layer_params),
            "llm_layer_optimizer_state_bytes": sum(b for i, b in state.items() if i in layer_params),
            "llm_layer_params_in_optimizer": sum(1 for g in self.optimizer.param_groups for p in g["params"]
                                                 if id(p) in layer_params - lora_params),
            "llm_layer_lora_bytes": sum(b for i, b in state.items() if i in lora_params),
            "block_trainable_bytes": sum(nbytes(p) for p in block.parameters() if p.requires_grad) if block else 0,
            "llm_layer_weight_bytes": sum(nbytes(p) for n, p in block.layer.named_parameters()
                                          if ".lora_" not in n) if block else 0,
        }


def memory_worker(plans, configuration, spec_dict, device, batch, case_factor, mirroring, compile_network) -> dict:
    """Run in a fresh process: peak memory of one variant's prediction, then of its training step.

    The peak is reset before each phase (VmHWM on Linux, CUDA peak stats on a GPU), so each
    number belongs to its phase alone.
    """
    import torch
    out = {"rss_after_imports": common.rss_bytes()}
    bench = Bench(plans, configuration, spec_dict, device, batch, case_factor, mirroring, compile_network)
    out["rss_after_build"] = common.rss_bytes()
    for phase, run in (("predict", bench.predict), ("train", bench.train_step)):
        if not common.reset_peak_rss() and phase == "train":
            out["note"] = "peak RSS could not be reset: the train figure is the peak of both phases"
        if bench.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(bench.device)
        run()
        out[f"peak_rss_{phase}"] = common.peak_rss_bytes()
        if bench.device.type == "cuda":
            out[f"cuda_max_allocated_{phase}"] = torch.cuda.max_memory_allocated(bench.device)
    out.update(bench.gradient_and_state_bytes())
    out.update(bench.flops())
    return out


def time_interleaved(benches: dict, reps: int) -> dict:
    """Alternate the variants every repetition (order swapped each time); the first repetition warms up."""
    times = {name: {"train": [], "predict": [], "block": []} for name in benches}
    names = list(benches)
    for rep in range(reps + 1):
        order = names if rep % 2 == 0 else names[::-1]
        for phase, method in (("train", "train_step"), ("predict", "predict"), ("block", "block_forward")):
            for name in order:
                if phase == "block" and benches[name].block is None:
                    continue
                with common.Stopwatch(benches[name].device) as sw:
                    getattr(benches[name], method)()
                if rep > 0:
                    times[name][phase].append(sw.seconds)
        print(f"  rep {rep}{' (warm-up)' if rep == 0 else ''}: " + ", ".join(
            f"{n} train {times[n]['train'][-1]:.3f}s predict {times[n]['predict'][-1]:.3f}s"
            for n in names if rep > 0), flush=True)
    return times


def summarise(times: dict, plain: str, llm: str) -> dict:
    out = {}
    for phase in ("train", "predict"):
        ratios = [b / a for a, b in zip(times[plain][phase], times[llm][phase])]
        out[phase] = {"plain_median_s": common.median(times[plain][phase]),
                      "llm_median_s": common.median(times[llm][phase]),
                      "median_ratio": common.median(ratios), "ratios": ratios,
                      "plain_s": times[plain][phase], "llm_s": times[llm][phase]}
    out["llm_block_forward"] = {"median_s": common.median(times[llm]["block"]), "s": times[llm]["block"]}
    return out


def variant_spec(model: str, variant: str):
    """A variant (plans/NAME.json) of a named model, as its built-in trainer or `plan --variant` builds it, with
    random weights in place of the pretrained ones (nothing is downloaded; timing does not depend on the values)."""
    from nnunetv2_llm.core.resolve import variant_spec
    spec = variant_spec(model, variant)
    return spec.replace(init="random") if spec.init == "pretrained" else spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small batch, CPU-friendly (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the issue's sizes, planned batch sizes")
    parser.add_argument("--llm", default="llama-3.2-1b", help="preset whose layer shapes are used (default llama-3.2-1b)")
    parser.add_argument("--reps", type=int, help="timed repetitions per variant (default: 5 quick, 7 full)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS),
                        help="subset of the mode's scenarios to run")
    parser.add_argument("--case-factor", type=float,
                        help="edge of the predicted case as a multiple of the patch (default: the mode's, 2.0 in --full); "
                             "1.0 predicts a single tile, which keeps 3D 128^3 within minutes on a CPU")
    parser.add_argument("--no-mirroring", action="store_true",
                        help="predict without test-time mirroring (the ratio per forward pass is unchanged)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both networks, as nnU-Net does on CUDA (run with and without it on a GPU)")
    parser.add_argument("--variants", nargs="+", default=["paper"],
                        help="variants (plans/NAME.json) of --llm to time against plain nnU-Net, interleaved "
                             "(default: paper, the frozen layer; e.g. paper lora depth2 gate pang medvisionllama)")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/overhead-<mode>.json)")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    if args.case_factor is not None and args.case_factor < 1:
        parser.error(f"--case-factor {args.case_factor} is below 1: the case must hold at least one patch "
                     f"(use 1.0 for a single tile)")

    import torch
    from nnunetv2_llm.core.cost import parameter_counts
    from nnunetv2_llm.core.network import unwrap

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = MODES[args.mode]
    reps = args.reps or cfg["reps"]
    scenarios = {k: v for k, v in cfg["scenarios"].items() if not args.scenarios or k in args.scenarios}
    if not scenarios:
        parser.error(f"none of {args.scenarios} is part of --{args.mode} (it runs {sorted(cfg['scenarios'])})")
    machine = common.machine(device)
    print(common.describe_machine(machine))
    print(f"mode --{args.mode}: {reps} timed repetitions after one warm-up; LLM layer shaped like {args.llm} "
          f"(random weights), variants {', '.join(args.variants)}; torch.compile {'on' if args.compile else 'off'}")
    specs = {v: variant_spec(args.llm, v) for v in args.variants}
    all_plans = plans_for(scenarios)
    results = {"mode": args.mode, "machine": machine, "llm": args.llm, "reps": reps, "compile": args.compile,
               "variants": {v: s.to_dict() | {"config": None} for v, s in specs.items()}, "scenarios": {}}
    for name, (batch, case_factor, mirroring) in scenarios.items():
        case_factor = args.case_factor or case_factor
        mirroring = mirroring and not args.no_mirroring
        sc = SCENARIOS[name]
        plans = all_plans[name]
        planned_batch = plans["configurations"][sc.configuration]["batch_size"]
        benches = {"plain": Bench(plans, sc.configuration, None, device, batch, case_factor, mirroring, args.compile)}
        benches.update({v: Bench(plans, sc.configuration, spec.to_dict(), device, batch, case_factor, mirroring,
                                 args.compile) for v, spec in specs.items()})
        first = unwrap(benches[args.variants[0]].network)
        tokens = math.prod(first.token_grid(benches[args.variants[0]].patch))
        b = benches["plain"]
        arch = plans["configurations"][sc.configuration]["architecture"]["arch_kwargs"]
        print(f"\n[{name}] nnU-Net plans '{sc.configuration}' for {sc.fingerprint.describe()}: patch "
              f"{'x'.join(map(str, b.patch))}, features {arch['features_per_stage']}, planned batch {planned_batch}, "
              f"used batch {b.batch}{'' if b.batch == planned_batch else ' (reduced for --quick)'}; bottleneck "
              f"{tokens} tokens; inference case {'x'.join(map(str, b.case_shape))}: {b.tiles} tiles x "
              f"{b.mirrors} mirrorings", flush=True)
        times = time_interleaved(benches, reps)
        entry = {"configuration": sc.configuration, "fingerprint": sc.fingerprint.describe(),
                 "patch_size": list(b.patch), "features_per_stage": arch["features_per_stage"],
                 "planned_batch_size": planned_batch, "batch_size": b.batch, "tokens": tokens,
                 "case_shape": b.case_shape, "tiles": b.tiles, "mirrorings": b.mirrors,
                 "parameters": {"plain": parameter_counts(b.network)}, "variants": {}}
        for v in specs:
            entry["variants"][v] = {"timing": summarise(times, "plain", v),
                                    "parameters": parameter_counts(benches[v].network),
                                    "block_parameters": parameter_counts(unwrap(benches[v].network).llm)}
        del benches
        entry["memory"] = {variant: common.in_fresh_process(memory_worker, plans, sc.configuration, spec_dict, device,
                                                            batch, case_factor, mirroring, args.compile)
                           for variant, spec_dict in [("plain", None)] + [(v, s.to_dict()) for v, s in specs.items()]}
        results["scenarios"][name] = entry
    report(results)
    common.save(results, "overhead", args.mode, args.out)
    return 0


def report(results: dict) -> None:
    cuda = results["machine"]["device"].startswith("cuda")
    variants = list(results["variants"])
    rows = []
    for name, e in results["scenarios"].items():
        for v in variants:
            t, params = e["variants"][v]["timing"], e["variants"][v]["parameters"]
            m = e["memory"]
            rows.append([name, v, "x".join(map(str, e["patch_size"])), e["batch_size"],
                         f"{params['trainable'] / 1e6:.2f}", f"{params['frozen'] / 1e6:.2f}",
                         f"{m[v]['train_step_flops'] / m['plain']['train_step_flops']:.3f}",
                         f"{t['train']['plain_median_s']:.3f}", f"{t['train']['llm_median_s']:.3f}",
                         f"{t['train']['median_ratio']:.3f}",
                         f"{t['predict']['plain_median_s']:.3f}", f"{t['predict']['llm_median_s']:.3f}",
                         f"{t['predict']['median_ratio']:.3f}"])
    print(f"\nTime (median of {results['reps']} interleaved repetitions; ratio = median of per-repetition "
          f"variant/plain); parameters of the whole net (M); FLOPs ratio of a training step (torch's counter)")
    print(common.table(["scenario", "variant", "patch", "batch", "trainable M", "frozen M", "train FLOPs ratio",
                        "train plain s", "train variant s", "train ratio", "predict plain s", "predict variant s",
                        "predict ratio"], rows))
    for name, e in results["scenarios"].items():
        for v in variants:
            t = e["variants"][v]["timing"]
            block_s = t["llm_block_forward"]["median_s"]
            calls = e["tiles"] * e["mirrorings"]
            print(f"[{name}, {v}] the LLM block alone, one batch-1 call: {block_s:.3f}s; x {calls} calls per case = "
                  f"{block_s * calls:.2f}s, measured prediction difference "
                  f"{t['predict']['llm_median_s'] - t['predict']['plain_median_s']:.2f}s")
    rows = []
    for name, e in results["scenarios"].items():
        m = e["memory"]
        for v in variants:
            rows.append([name, v] + [f"{m[x][k] / 1e9:,.1f}" for k in ("train_step_flops", "predict_flops")
                                     for x in ("plain", v)] +
                        [f"{m[v][k] / m['plain'][k]:.3f}" for k in ("train_step_flops", "predict_flops")])
    print("\nFLOPs (torch.utils.flop_counter, GFLOP; load-independent)")
    print(common.table(["scenario", "variant", "train plain", "train variant", "predict plain", "predict variant",
                        "train ratio", "predict ratio"], rows))
    ratios = [(e["variants"][v]["timing"]["train"]["median_ratio"], e["variants"][v]["timing"]["predict"]["median_ratio"])
              for e in results["scenarios"].values() for v in variants]
    print(f"targets: training <= {TARGET_TRAIN}x {'met' if all(t <= TARGET_TRAIN for t, _ in ratios) else 'NOT met'}, "
          f"inference <= {TARGET_INFER}x {'met' if all(p <= TARGET_INFER for _, p in ratios) else 'NOT met'}")

    rows = []
    for name, e in results["scenarios"].items():
        for variant in ["plain", *variants]:
            m = e["memory"][variant]
            key = "cuda_max_allocated" if cuda else "peak_rss"
            rows.append([name, variant, common.mib(m["rss_after_imports"]), common.mib(m["rss_after_build"]),
                         common.mib(m[f"{key}_train"]), common.mib(m[f"{key}_predict"]),
                         common.mib(m["grad_bytes"]), common.mib(m["optimizer_state_bytes"]),
                         "-" if variant == "plain" else
                         f"{m['llm_layer_grad_bytes']} / {m['llm_layer_optimizer_state_bytes']}"])
    kind = "CUDA max allocated" if cuda else "peak RSS"
    print(f"\nMemory (MiB; each variant in a fresh process, peak reset before each phase; {kind}; RSS includes "
          f"the imports)")
    print(common.table(["scenario", "variant", "RSS after imports", "RSS after build", f"{kind} train step",
                        f"{kind} predict", ".grad", "optimizer state", "LLM layer .grad / state bytes"], rows))
    for name, e in results["scenarios"].items():
        plain = e["memory"]["plain"]
        for v in variants:
            llm = e["memory"][v]
            extra_grad = llm["grad_bytes"] - plain["grad_bytes"]
            extra_state = llm["optimizer_state_bytes"] - plain["optimizer_state_bytes"]
            trainable = llm["block_trainable_bytes"]
            frozen_ok = llm["llm_layer_optimizer_state_bytes"] == llm["llm_layer_lora_bytes"]
            print(f"[{name}, {v}] adds {mib(extra_grad)} MiB of .grad and {mib(extra_state)} MiB of optimizer state "
                  f"= exactly the block's trainable tensors ({mib(trainable)} MiB: projections"
                  f"{', adapters' if llm['llm_layer_lora_bytes'] else ''}{', gate' if v == 'gate' else ''})? "
                  f"{'yes' if extra_grad == trainable == extra_state else 'NO'}; frozen layer tensors "
                  f"({mib(llm['llm_layer_weight_bytes'])} MiB): no gradient, no optimizer state: "
                  f"{'yes' if frozen_ok else 'NO'}")


mib = common.mib

if __name__ == "__main__":
    sys.exit(main())
