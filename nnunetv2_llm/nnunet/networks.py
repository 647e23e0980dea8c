"""The configured U-Net of a plans file, built as nnU-Net's trainers build it for inference, with or without the
LLM block: what ``info``, ``compare`` and the benchmarks count and time."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.layer_attention import describe
from ..core.network import LLMUNet
from ..core.spec import LLMSpec


@dataclass
class ConfiguredNet:
    network: object
    in_channels: int
    patch_size: tuple[int, ...]


def build_unet(plans: dict, dataset_json: dict, configuration: str, spec: LLMSpec | None = None,
               deep_supervision: bool = False) -> ConfiguredNet:
    """nnU-Net's network for ``configuration`` of ``plans`` (its own ``build_network_architecture``), wrapped with
    the LLM block of ``spec`` when one is given. The layer's tensors are the block's zeros or random init: only the
    structure counts here. nnUNetTrainer.build_network_architecture is this one call of get_network_from_plans;
    calling it directly spares importing nnU-Net's training stack (torch._dynamo, its logger, data loaders)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans_manager = PlansManager(plans)
    config_manager = plans_manager.get_configuration(configuration)
    in_channels = determine_num_input_channels(plans_manager, config_manager, dataset_json)
    out_channels = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    net = get_network_from_plans(config_manager.network_arch_class_name, config_manager.network_arch_init_kwargs,
                                 config_manager.network_arch_init_kwargs_req_import, in_channels, out_channels,
                                 allow_init=True, deep_supervision=deep_supervision)
    if spec is not None:
        net = LLMUNet(net, spec)
    return ConfiguredNet(net, in_channels, tuple(config_manager.patch_size))


# ---------------------------------------------------------------- what `info` reports

@dataclass
class PlansSource:
    plans: dict
    dataset_json: dict
    origin: str
    trained: bool


def load_plans(dataset, plans_identifier: str, trainer: str | None, configuration: str) -> PlansSource:
    """The trained results' plans.json when ``trainer`` has them, else the preprocessed plans."""
    import os
    from pathlib import Path

    from ..core.files import read_json
    from .datasets import ResultsError, dataset_name, preprocessed_folder, read_dataset_json
    from .results import results_folder
    name = dataset_name(dataset)
    if trainer is not None and os.environ.get("nnUNet_results"):
        run = results_folder(name, trainer, plans_identifier, configuration)
        if (run / "plans.json").is_file():
            source = PlansSource(read_json(run / "plans.json"), read_dataset_json(run / "dataset.json"),
                                 str(run / "plans.json"), True)
            return _with_configuration(source, configuration)
    folder = preprocessed_folder(dataset)
    plans_file = Path(folder) / f"{plans_identifier}.json"
    if not plans_file.is_file():
        from .planning import plans_in
        found = plans_in(folder)
        raise ResultsError(f"no plans {plans_identifier!r} for {name} in {folder} (found: {found or 'none'}); run "
                           f"`nnUNetv2_plan_and_preprocess -d {dataset}` or pass -p with one of those.")
    return _with_configuration(PlansSource(read_json(plans_file), read_dataset_json(folder / "dataset.json"),
                                           str(plans_file), False), configuration)


def _with_configuration(source: PlansSource, configuration: str) -> PlansSource:
    from .datasets import ResultsError
    configurations = source.plans.get("configurations") if isinstance(source.plans, dict) else None
    if not isinstance(configurations, dict) or configuration not in configurations:
        raise ResultsError(f"configuration {configuration!r} is not in {source.origin}; available: "
                           f"{list(configurations or {})}.")
    return source


def choose_spec(source: PlansSource, configuration: str, trainer: str | None, fallback: LLMSpec,
                fallback_origin: str) -> tuple[LLMSpec, str]:
    """The spec the trainer would use: its trained results', the trainer's own (as in training),
    the plans', else ``fallback`` (said to come from ``fallback_origin``). Each spec comes from
    :mod:`~nnunetv2_llm.core.resolve`; this picks which one ``info`` counts and says where it came from."""
    from ..core.resolve import spec_in_plans
    planned = spec_in_plans(source.plans, configuration, source.origin)
    if source.trained and planned is not None:
        return planned, f"the trained results' plans ({source.origin})"
    own = trainer_spec(source, configuration, trainer) if trainer else None
    if own is not None:
        return own, f"trainer {trainer}"
    if planned is not None:
        return planned, f"the plans ({source.origin})"
    return fallback, fallback_origin


def trainer_spec(source: PlansSource, configuration: str, trainer: str) -> LLMSpec | None:
    """An LLM trainer's own spec (None for another trainer of ours or one trained for these plans); imported only
    when -tr names one, since our trainers import nnU-Net's whole training stack."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..core.errors import did_you_mean
    from ..core.resolve import spec_for_trainer
    from . import trainers
    from .datasets import ResultsError
    cls = getattr(trainers, trainer, None)
    if not source.trained and not (isinstance(cls, type) and trainer in trainers.__all__):
        raise ResultsError(f"trainer {trainer!r} is neither an nnunetv2-llm trainer nor trained for these plans; "
                           f"pass one of ours (`nnunetv2-llm trainers` lists them) or leave out -tr and choose "
                           f"--llm.{did_you_mean(trainer, trainers.__all__)}")
    if cls is not None and issubclass(cls, trainers.nnUNetTrainerLLM):
        plans_manager = PlansManager(source.plans)
        return spec_for_trainer(cls, plans_manager.plans, plans_manager.get_configuration(configuration).configuration)
    return None


def cost_report(dataset, configuration: str, trainer: str | None, plans_identifier: str, fallback: LLMSpec,
                fallback_origin: str) -> dict:
    """Parameters and FLOPs of the configured net with and without the LLM block (what ``info`` prints);
    ``fallback_origin`` says where ``fallback`` came from when neither trainer nor plans name a spec."""
    from ..core.cost import FLOPS_NOTE, measure
    source = load_plans(dataset, plans_identifier, trainer, configuration)
    spec, spec_origin = choose_spec(source, configuration, trainer, fallback, fallback_origin)
    plain = build_unet(source.plans, source.dataset_json, configuration)
    with_llm = build_unet(source.plans, source.dataset_json, configuration, spec)
    base = measure(plain.network.eval(), plain.in_channels, plain.patch_size)
    llm = measure(with_llm.network.eval(), with_llm.in_channels, with_llm.patch_size)
    return {
        "dataset": source.plans.get("dataset_name"), "configuration": configuration, "plans": source.origin,
        "patch_size": list(plain.patch_size), "batch_size": 1,
        "llm": {k: v for k, v in spec.to_dict().items() if k != "config"},
        "llm_description": describe(spec), "llm_from": spec_origin,
        "bottleneck_channels": with_llm.network.llm.proj_in.in_features,
        "nnunet": base.to_dict(), "nnunet_llm": llm.to_dict(),
        "added": {"trainable": llm.trainable - base.trainable, "frozen": llm.frozen - base.frozen,
                  "flops": llm.flops - base.flops, "gflops": llm.gflops - base.gflops,
                  "gmacs": (llm.gflops - base.gflops) / 2},
        "flops_note": FLOPS_NOTE,
    }
