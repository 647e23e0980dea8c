"""``nnunetv2-llm info``: parameters and FLOPs of a configured nnU-Net with and without the LLM block.

The paper's "Param(M) / GFLOPs" columns for your own plans. The net is built from the preprocessed
plans, or from a trained run's ``plans.json`` when ``-tr`` names one; the LLM layer gets random
weights (its structure is all that counts), so nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError
from .files import read_json
from .spec import PRESETS, LLMSpec, preset_spec, spec_from_entry

DEFAULT_LLM = "llama-3.2-1b"
FLOPS_NOTE = ("GFLOPs = FLOPs counted by torch.utils.flop_counter.FlopCounterMode / 1e9 for one forward pass of "
              "one patch at batch size 1 (2 FLOPs per multiply-accumulate, so GMACs = GFLOPs / 2; attention "
              "runs on the math SDPA backend so the counter sees it).")


class InfoError(UserError, ValueError):
    """The dataset, plans, configuration or trainer cannot be used; the message says what exists."""


@dataclass
class NetCost:
    trainable: int
    frozen: int
    flops: int
    tokens: int | None = None
    token_grid: tuple[int, ...] | None = None
    hidden_size: int | None = None

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict:
        return {**asdict(self), "gflops": self.gflops, "gmacs": self.gflops / 2}


@dataclass
class PlansSource:
    plans: dict
    dataset_json: dict
    origin: str
    trained: bool


def load_plans(dataset: str, plans_identifier: str, trainer: str | None, configuration: str) -> PlansSource:
    """A trained run's plans.json when ``trainer`` has one, else the preprocessed plans."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise InfoError(f"dataset {dataset!r} not found: {e}") from None
    if trainer is not None and os.environ.get("nnUNet_results"):
        run = Path(get_output_folder(name, trainer, plans_identifier, configuration))
        if (run / "plans.json").is_file():
            return PlansSource(read_json(run / "plans.json"), read_json(run / "dataset.json"),
                               str(run / "plans.json"), True)
    if not os.environ.get("nnUNet_preprocessed"):
        raise InfoError("nnUNet_preprocessed is not set; export it (see `nnunetv2-llm doctor`).")
    folder = Path(nnUNet_preprocessed.get()) / name
    plans_file = folder / f"{plans_identifier}.json"
    if not plans_file.is_file():
        found = sorted(p.stem for p in folder.glob("*.json") if p.stem not in ("dataset", "dataset_fingerprint"))
        raise InfoError(f"no plans {plans_identifier!r} for {name} in {folder} (found: {found or 'none'}); run "
                        f"`nnUNetv2_plan_and_preprocess -d {dataset}` or pass -p with one of those.")
    return PlansSource(read_json(plans_file), read_json(folder / "dataset.json"),
                       str(plans_file), False)


def choose_spec(source: PlansSource, configuration: str, trainer: str | None, fallback: LLMSpec) -> tuple[LLMSpec, str]:
    """The spec the trainer would use: a trained run's, a preset trainer's, the plans', else ``fallback``."""
    from . import trainers
    from .spec import PLANS_KEY
    from .trainers import _PresetTrainer
    entry = source.plans["configurations"][configuration].get(PLANS_KEY)
    if source.trained and entry is not None:
        return spec_from_entry(entry, source.origin), f"the trained run's plans ({source.origin})"
    cls = getattr(trainers, trainer, None) if trainer else None
    if trainer and not source.trained and not (isinstance(cls, type) and trainer in trainers.__all__):
        raise InfoError(f"trainer {trainer!r} is neither an nnunetv2-llm trainer nor trained for these plans; "
                        f"pass one of ours (e.g. nnUNetTrainerLLaMA) or leave out -tr and choose --llm.")
    if cls is not None and issubclass(cls, _PresetTrainer):
        return preset_spec(cls.preset, **cls.options), f"trainer {trainer}"
    if entry is not None:
        return spec_from_entry(entry, source.origin), f"the plans ({source.origin})"
    if cls is not None and issubclass(cls, trainers.nnUNetTrainerLLM):
        raise InfoError(f"{trainer} takes its LLM from the plans, and {source.origin} carries none; pass -p with "
                        f"plans written by `nnunetv2-llm plan`.")
    return fallback, "--llm"


def build_networks(source: PlansSource, configuration: str, spec: LLMSpec):
    """The configured U-Net (as the trainer builds it for inference) and the same U-Net with the block."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from .network import LLMUNet
    plans_manager = PlansManager(source.plans)
    config_manager = plans_manager.get_configuration(configuration)
    in_channels = determine_num_input_channels(plans_manager, config_manager, source.dataset_json)
    out_channels = plans_manager.get_label_manager(source.dataset_json).num_segmentation_heads

    def unet():
        return nnUNetTrainer.build_network_architecture(plans_manager, config_manager, in_channels, out_channels,
                                                        enable_deep_supervision=False)
    return unet().eval(), LLMUNet(unet(), spec).eval(), in_channels, tuple(config_manager.patch_size)


def measure(net, in_channels: int, patch_size: tuple[int, ...]) -> NetCost:
    """Parameter counts and counted FLOPs of one forward pass; a fake input tensor, so no real compute."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from .block import parameter_counts
    from .network import LLMUNet
    counts = parameter_counts(net)
    with FakeTensorMode(allow_non_fake_inputs=True):
        patch = torch.zeros(1, in_channels, *patch_size)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            net(patch)
    cost = NetCost(counts["trainable"], counts["frozen"], int(counter.get_total_flops()))
    if isinstance(net, LLMUNet):
        cost.token_grid = net.token_grid(patch_size)
        cost.tokens = math.prod(cost.token_grid)
        cost.hidden_size = net.llm.config.hidden_size
    return cost


def describe(spec: LLMSpec) -> str:
    mode = "trainable" if spec.trainable else "frozen"
    return f"{spec.source} layer {spec.layer} ({mode}, init {spec.init})"


def collect(args) -> dict:
    fallback = preset_spec(args.llm, **({"layer": args.layer} if args.layer is not None else {}),
                           trainable=args.trainable, stage=args.stage)
    source = load_plans(args.dataset, args.plans, args.trainer, args.configuration)
    if args.configuration not in source.plans["configurations"]:
        raise InfoError(f"configuration {args.configuration!r} is not in {source.origin}; available: "
                        f"{list(source.plans['configurations'])}.")
    spec, spec_origin = choose_spec(source, args.configuration, args.trainer, fallback)
    plain, with_llm, in_channels, patch = build_networks(source, args.configuration, spec)
    base, llm = measure(plain, in_channels, patch), measure(with_llm, in_channels, patch)
    return {
        "dataset": source.plans.get("dataset_name"), "configuration": args.configuration, "plans": source.origin,
        "patch_size": list(patch), "batch_size": 1, "llm": {k: v for k, v in spec.to_dict().items() if k != "config"},
        "llm_description": describe(spec), "llm_from": spec_origin, "bottleneck_channels": with_llm.llm.proj_in.in_features,
        "nnunet": base.to_dict(), "nnunet_llm": llm.to_dict(),
        "added": {"trainable": llm.trainable - base.trainable, "frozen": llm.frozen - base.frozen,
                  "flops": llm.flops - base.flops, "gflops": llm.gflops - base.gflops,
                  "gmacs": (llm.gflops - base.gflops) / 2},
        "flops_note": FLOPS_NOTE,
    }


def print_table(info: dict) -> None:
    from rich.table import Table

    from .environment import console as make_console
    console = make_console(140)
    patch = "x".join(map(str, info["patch_size"]))
    table = Table(title=f"{info['dataset']} {info['configuration']}: patch {patch}, batch size 1")
    for column in ("network", "trainable (M)", "frozen (M)", "GFLOPs", "GMACs", "tokens", "hidden"):
        table.add_column(column, justify="left" if column == "network" else "right")

    def row(name, cost, sign=""):
        tokens = "-" if cost.get("tokens") is None else f"{cost['tokens']} ({'x'.join(map(str, cost['token_grid']))})"
        table.add_row(name, f"{sign}{cost['trainable'] / 1e6:.2f}", f"{sign}{cost['frozen'] / 1e6:.2f}",
                      f"{sign}{cost['gflops']:.2f}", f"{sign}{cost['gmacs']:.2f}", tokens,
                      "-" if cost.get("hidden_size") is None else str(cost["hidden_size"]))
    row("nnU-Net", info["nnunet"])
    row(f"+ {info['llm_description']}", info["nnunet_llm"])
    row("added by the block", info["added"], sign="+")
    console.print(table)
    print(f"{FLOPS_NOTE}\nplans: {info['plans']}\nLLM spec from {info['llm_from']}; block on {info['bottleneck_channels']} "
          f"bottleneck channels", flush=True)


def cmd_info(args) -> int:
    info = collect(args)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_table(info)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="parameters and GFLOPs of the configured net with and without the LLM block",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name, as for nnUNetv2_train")
    p.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-tr", "--trainer", help="trainer: its trained run's plans.json if it exists, and its LLM preset")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("--llm", default=DEFAULT_LLM, choices=sorted(PRESETS),
                   help=f"LLM when neither the trainer nor the plans name one (default {DEFAULT_LLM})")
    p.add_argument("--layer", type=int, help="0-based decoder layer of --llm (default: the preset's)")
    p.add_argument("--trainable", action="store_true", help="count the --llm layer as trainable (paper '(T)')")
    p.add_argument("--stage", type=int, default=-1, help="encoder stage of the --llm block (default -1, the bottleneck)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=cmd_info)
