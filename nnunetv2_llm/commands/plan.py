"""nnunetv2-llm plan: LLM plans derived from any nnU-Net plans, for ablations and layer sweeps without new code.

A derived plans file is a copy of the source plans (nnUNetPlans, nnUNetResEncUNet{M,L,XL}Plans, ...) with its own
plans_name and the LLM spec in every configuration that defines a network. Every data_identifier stays, so
nnU-Net trains on the data it already preprocessed:

    nnunetv2-llm plan -d 501 --llm llama-3.2-1b --variant layer-sweep
    nnUNetv2_train 501 2d 0 -tr nnUNetTrainerLLM -p nnUNetPlans_LLM_llama-3.2-1b_L07

A variant (--variant) is a named wiring (plans/NAME.json); flags override its options.
"""
from __future__ import annotations

import argparse

from ..core.variants import variant_names
from .options import DEFAULT_PLANS, add_spec_arguments, layers_type, spec_options


def cmd_plan(args) -> int:
    from ..core.layer_attention import describe
    from ..core.files import read_json
    from ..core.plans_entry import configurations_with_spec
    from ..core.resolve import spec_in_plans
    from ..nnunet.environment import cpu_advice, cuda_available
    from ..nnunet.planning import PlanningError, PlansRequest, hub_needed, write_llm_plans
    from ..nnunet.datasets import dataset_id
    if args.preset:
        raise PlanningError(f"--preset was split into --llm MODEL and --variant NAME in 0.3: --preset llama-paper is "
                            f"--llm llama-3.2-1b --variant paper (variants: {', '.join(variant_names())}).")
    request = PlansRequest(llm=args.llm, variant=args.variant, layers=args.layer, options=spec_options(args),
                           output=args.output)
    targets = write_llm_plans(args.dataset, args.plans, request, overwrite=args.overwrite)
    for path in targets:
        plans = read_json(path)
        with_llm = configurations_with_spec(plans)
        spec = spec_in_plans(plans, with_llm[0], str(path))
        print(f"wrote {path}: {describe(spec)} in {', '.join(with_llm)}")
    hub_note = hub_needed(spec)
    if hub_note:
        print(hub_note)
    number = dataset_id(targets[0].parent.name)
    on_cpu = not cuda_available()
    print("train with" + (" (no CUDA GPU here: on the CPU, with the settings below; nnUNetTrainerLLM runs 1000 "
                          "epochs, nnUNetTrainerLLM_10epochs_20its a short first try)" if on_cpu else "") + ":")
    device = " -device cpu" if on_cpu else ""
    commands = [f"nnUNetv2_train {number} {with_llm[0]} FOLD -tr nnUNetTrainerLLM -p {path.stem}{device}"
                for path in targets]
    if on_cpu:
        print(f"  {cpu_advice()[0]}")
        commands = [f"nnUNet_n_proc_DA=0 {c}" for c in commands]
    for command in commands:
        print(f"  {command}")
    if on_cpu:
        print("  (nnUNet_n_proc_DA=0 for training only: nnU-Net's planner fails with it)")
    return 0


def variants_epilog() -> str:
    """Every shipped variant with what it reproduces, for --help."""
    import textwrap

    from ..core.variants import load_variant
    lines = ["variants (plans/NAME.json):"]
    for name in variant_names():
        v = load_variant(name)
        trainer = f" Built-in trainers: nnUNetTrainer<Model>{v.trainer}." if v.trainer is not None else ""
        lines += textwrap.wrap(f"{name}: {v.description} ({v.reproduces}.){trainer}", 100, initial_indent="  ",
                               subsequent_indent="    ")
    return "\n".join(lines)


def families_epilog() -> str:
    """The model families the block is proven for, with what is tested for each."""
    from ..core.families import families_text
    return "model families (--llm: a checkpoint of these is proven layer for layer; others may build, unchecked):\n" \
        + families_text()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="write LLM plans next to existing nnU-Net plans (layer sweeps, ablations)",
        description=__doc__, epilog=variants_epilog() + "\n\n" + families_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", required=True, help="dataset id (501) or name (Dataset501_Synth2D)")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS,
                   help="source plans, e.g. nnUNetPlans or nnUNetResEncUNetMPlans (default: nnUNetPlans)")
    add_spec_arguments(p, llm_default=None, layer_parser=layers_type,
                       layer_help="0-based decoder layer: 14, a range 0-15, a list 0,3,7-9, last or all (one plans "
                                  "file per layer; default: the variant's, else the named model's paper layer)")
    p.add_argument("--variant", metavar="NAME|FILE",
                   help=f"a named wiring whose options the flags override (plans/NAME.json, or a JSON file of your "
                        f"own): {', '.join(variant_names())}; default: the authors' wiring")
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", help="plans name (default: <source>_LLM_<model>[-options]_L<layer>); with "
                                          "several layers, _L<layer> is appended")
    p.add_argument("--overwrite", action="store_const", const=True, default=False,
                   help="replace LLM plans of the same name (refused if folds were trained with them)")
    p.add_argument("--overwrite-trained", dest="overwrite", action="store_const", const="trained",
                   help="replace LLM plans even if folds were trained with them (retrain every fold)")
    p.set_defaults(func=cmd_plan)
