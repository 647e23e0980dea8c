"""nnunetv2-llm info: parameters and FLOPs of a configured nnU-Net with and without the LLM block.

The paper's "Param(M) / GFLOPs" columns for your own plans. The net is built from the preprocessed
plans, or from the trained results' plans.json when -tr names them; the LLM layer gets random
weights (its structure is all that counts), so nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json

from ..core.models import DEFAULT_MODEL
from .options import DEFAULT_PLANS, add_spec_arguments, spec_options


def print_table(info: dict) -> None:
    from rich.table import Table

    from ..core.terminal import console as make_console
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
    row("+ the LLM block", info["nnunet_llm"])
    row("added by the block", info["added"], sign="+")
    console.print(table)
    print(f"{info['flops_note']}\nplans: {info['plans']}\nLLM block: {info['llm_description']}\n"
          f"LLM spec from {info['llm_from']}; block on "
          f"{info['bottleneck_channels']} bottleneck channels", flush=True)


def cmd_info(args) -> int:
    from ..core.resolve import source_spec
    from ..nnunet.networks import cost_report
    fallback = source_spec(args.llm or DEFAULT_MODEL, args.layer, any_layer=True, **spec_options(args))
    origin = f"--llm {args.llm}" if args.llm else f"the default model {DEFAULT_MODEL} (no --llm given)"
    info = cost_report(args.dataset, args.configuration, args.trainer, args.plans, fallback, origin)
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
    p.add_argument("-tr", "--trainer", help="trainer: its trained results' plans.json if they exist, and its built-in LLM")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS, help="plans identifier (default nnUNetPlans)")
    add_spec_arguments(p, llm_default=None, llm_use="LLM when neither the trainer nor the plans name one (default "
                       f"{DEFAULT_MODEL}): ", layer_help="0-based decoder layer of --llm (default: the model's paper "
                       "layer)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=cmd_info)
