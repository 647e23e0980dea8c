"""nnU-Net trainers that put an LLM decoder layer at the bottleneck.

``nnUNetTrainerLLM`` takes its spec from the plans (``nnunetv2-llm plan``); the built-in trainers
(``nnUNetTrainerLLaMA``, ``nnUNetTrainerLLaMATrainable``, ...) are one model with one variant each, derived from
:data:`~nnunetv2_llm.core.models.MODELS` and the variant files in ``plans/``; every trainer has short-length
variants (``_2epochs_5its``, ...). ``nnunetv2-llm trainers`` lists them all.

The static ``build_network_architecture`` builds the structure only, from the spec and model config
stored in the plans (``configurations[c]['llm']``), so ``nnUNetv2_predict`` needs neither the hub
nor the LLM files: the frozen weights come from the checkpoint. Pretrained weights are read in
``initialize()``, before any training time is spent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from ..core.block import EXTRA_STATE, LLMBlock
from ..core.cost import parameter_counts
from ..core.files import load_checkpoint, read_json, write_json
from ..core.models import MODELS, model_spec
from ..core.network import LLMUNet, unwrap
from ..core.spec import PLANS_KEY, LLMSpec, LLMSpecError, refuse_another_block, spec_from_entry
from ..core.variants import load_variant, variant_names
from ..core.weights import LLMWeightsError, load_pinned
from . import pretrained
from .lengths import LENGTHS
from .results import ResultsError, new_plans_fix, plans_differences, trained_plans_clashes


def spec_from_configuration(plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> LLMSpec:
    """The configuration's LLM spec; a bad entry is an error that names the plans it came from."""
    entry = configuration_manager.configuration.get(PLANS_KEY)
    where = (f"plans {plans_manager.plans_name!r} of {plans_manager.dataset_name} (nnUNet_preprocessed/"
             f"{plans_manager.dataset_name}/{plans_manager.plans_name}.json for training, the results folder's "
             f"plans.json for prediction)")
    if entry is None:
        raise LLMSpecError(
            f"{where} carry no LLM spec (configurations[...]['{PLANS_KEY}']). Write LLM plans with "
            "`nnunetv2-llm plan -d DATASET --llm MODEL` and pass them with -p, or use a built-in trainer such as "
            "nnUNetTrainerSmolLM2 or nnUNetTrainerLLaMA (`nnunetv2-llm trainers` lists them).")
    return spec_from_entry(entry, where)


class nnUNetTrainerLLM(nnUNetTrainer):
    """Takes its LLM spec from the plans, e.g. plans written by ``nnunetv2-llm plan``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        pretrained.install()
        self.planned_spec = self.llm_spec()
        if self.planned_spec.config is None:
            raise LLMSpecError(f"the LLM spec for {self.planned_spec.source!r} carries no model config; write the "
                               f"plans with `nnunetv2-llm plan` so the structure can be built offline.")
        self._checkpoint_spec: LLMSpec | None = None

    def llm_spec(self) -> LLMSpec:
        """The spec these plans ask for (built-in trainers: their own, refusing plans that ask for another)."""
        return spec_from_configuration(self.plans_manager, self.configuration_manager)

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
        """Settle the spec this run trains with (a checkpoint's record, or the planned spec with the loaded tensors'
        sha256), write it into the plans once (they land in the results folder's plans.json and every checkpoint),
        then build the net and copy the pretrained tensors in."""
        if self.was_initialized:
            return super().initialize()
        self._check_other_folds_plans()
        spec, weights = self._spec_to_train()
        entry = spec.to_dict()
        self.plans_manager.plans["configurations"][self.configuration_name][PLANS_KEY] = entry
        self.configuration_manager.configuration[PLANS_KEY] = entry
        super().initialize()
        block = unwrap(self.network).llm
        if weights is not None:
            layers, norm = weights
            block.load_pretrained([w.tensors for w in layers], None if norm is None else norm.weight)
            zero = [i for i, layer in enumerate(block.pretrained_tensors(), start=spec.layer)
                    if not any(t.abs().sum() > 0 for t in layer.values())]
            if spec.init == "pretrained" and zero:
                raise LLMWeightsError(f"layer {', '.join(map(str, zero))} of {spec.source} loaded as all zeros: the "
                                      f"block would skip {'it' if len(zero) == 1 else 'them'}"
                                      f"{' and be a plain linear bottleneck' if len(zero) == spec.depth else ''}. "
                                      f"The source is broken; get a good copy of it.")
        self._log_llm(spec, weights)

    def _spec_to_train(self):
        """(spec, weights): the checkpoint's spec when resuming or validating, else the planned one with its tensors
        loaded, pinned by the plans' sha256 and by the folds already trained in this results folder."""
        if self._checkpoint_spec is not None:
            return self._checkpoint_spec, None
        spec = self.planned_spec
        if not spec.loads_pretrained:
            self._check_trained_folds(spec)
            return spec, None
        try:
            pinned, layers, norm = load_pinned(spec, echo=self.print_to_log_file)
        except LLMWeightsError as e:
            raise LLMWeightsError(f"{type(self).__name__}: cannot load the pretrained LLM layer. {e}") from None
        spec = pinned
        self._check_trained_folds(spec)
        return spec, (layers, norm)

    def _new_plans_fix(self) -> str:
        return new_plans_fix(self.plans_manager.dataset_name, self.configuration_name, self.plans_manager.plans_name)

    def _plans_file(self) -> str:
        return f"nnUNet_preprocessed/{self.plans_manager.dataset_name}/{self.plans_manager.plans_name}.json"

    def _check_other_folds_plans(self) -> None:
        """A results folder pins the plans its folds trained with (their checkpoints hold them): a fold that would
        train with other plans is refused before it starts, because nnU-Net would overwrite the folder's
        plans.json with them and the trained folds would no longer load (nor form one model with this one)."""
        if not self.output_folder_base:
            return
        base = Path(self.output_folder_base)
        clashes = trained_plans_clashes(base, self.plans_manager.plans, self.configuration_name, skip=self.fold)
        if clashes:
            folds = ", ".join(clashes)
            raise ResultsError(
                f"{type(self).__name__}: fold {self.fold} would train with plans {self._plans_file()} that differ "
                f"from the plans fold(s) {folds} of {base} trained with ({next(iter(clashes.values()))}; trained -> "
                f"now). nnU-Net would overwrite {base / 'plans.json'} with them and fold(s) {folds} would no longer "
                f"load. Nothing was trained. "
                f"{self._new_plans_fix()}"
                f" (move fold_{folds.split(',')[0]} and the other trained folds away first).")

    def _check_own_checkpoint_plans(self, checkpoint: dict, source) -> None:
        """``--c`` and ``--val`` go on with a checkpoint: it must have trained with the plans given now, else nnU-Net
        builds another network and fails on the checkpoint's tensors."""
        trained = (checkpoint.get("init_args") or {}).get("plans") if isinstance(checkpoint, dict) else None
        differences = (plans_differences(trained, self.plans_manager.plans, self.configuration_name)
                       if isinstance(trained, dict) else "")
        if differences:
            raise ResultsError(
                f"{type(self).__name__}: the checkpoint {source if isinstance(source, (str, Path)) else ''} of fold "
                f"{self.fold} trained with other plans than {self._plans_file()} now holds ({differences}; trained "
                f"-> now), so it cannot go on (--c) or be validated (--val) with them. Restore the plans it trained "
                f"with (its init_args['plans']), or train the fold from scratch (without --c/--val). "
                f"{self._new_plans_fix()}.")

    def _check_trained_folds(self, spec: LLMSpec) -> None:
        """Every fold of a results folder (and a fold resumed later) trains with the same tensors and wiring."""
        results_plans = Path(self.output_folder_base) / "plans.json"
        entry = (read_json(results_plans).get("configurations", {}).get(self.configuration_name, {}).get(PLANS_KEY)
                 if results_plans.is_file() else None)
        if entry is None:
            return
        refuse_another_block(
            spec, spec_from_entry(entry, str(results_plans)),
            f"{results_plans} records folds trained with a different LLM block ({{differences}}); all folds of a run "
            f"must train with the same tensors and wiring. Restore the weights and plans the first folds used, or "
            f"train these plans under another name (`nnunetv2-llm plan -o NEW_NAME`).", "now", "there",
            error=LLMWeightsError)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """The checkpoint holds the layer's weights and the spec (with sha256) they were trained with: ``--c`` and
        ``--val`` train and validate with that spec (refused when it is not the one planned), so the record in the
        results folder's plans.json stays intact and no pretrained layer is read again."""
        checkpoint = (load_checkpoint(filename_or_checkpoint, mmap=True)  # a peek at the record: tensors stay on disk
                      if isinstance(filename_or_checkpoint, (str, Path)) else filename_or_checkpoint)
        if not self.was_initialized:
            self._check_own_checkpoint_plans(checkpoint, filename_or_checkpoint)
        record = checkpoint["network_weights"].get(f"llm.{EXTRA_STATE}")
        if record is not None and not self.was_initialized:
            trained = LLMBlock.recorded_spec(record)
            refuse_another_block(
                self.planned_spec, trained,
                "the checkpoint was trained with a different LLM block than the plans describe ({differences}); "
                "resume or validate it with the plans it trained with (its init_args hold them), or train these "
                "plans under another name.")
            self._checkpoint_spec = trained
        super().load_checkpoint(str(filename_or_checkpoint) if isinstance(filename_or_checkpoint, Path)
                                else filename_or_checkpoint)
        if self._checkpoint_spec is not None and self.local_rank == 0:
            self._restore_results_plans()

    def _restore_results_plans(self) -> None:
        """``--val`` skips nnU-Net's ``on_train_start`` (which writes the results folder's plans.json): write the
        checkpoint's record back when the file lost it, so prediction builds the block this checkpoint trained."""
        results_plans = Path(self.output_folder_base) / "plans.json"
        entry = self.plans_manager.plans["configurations"][self.configuration_name][PLANS_KEY]
        stored = (read_json(results_plans).get("configurations", {}).get(self.configuration_name, {}).get(PLANS_KEY)
                  if results_plans.is_file() else None)
        if stored != entry:
            write_json(results_plans, self.plans_manager.plans)

    def _log_llm(self, spec: LLMSpec, weights) -> None:
        net = unwrap(self.network)
        counts = parameter_counts(net)
        grid = net.token_grid(self.configuration_manager.patch_size)
        if weights is not None:
            layers, norm = weights
            loaded = [(f"layer {w.layer}: ", w) for w in layers] + ([("final norm: ", norm)] if norm is not None else [])
            origin = "; ".join(f"{name if len(loaded) > 1 else ''}sha256 {w.sha256} from {', '.join(w.files)}"
                               for name, w in loaded)
        else:
            origin = "weights from the checkpoint" if self._checkpoint_spec is not None else f"init {spec.init}"
        adaptations = (f", lora_rank={spec.lora_rank} on {','.join(spec.lora_targets)} (alpha {spec.lora_alpha:g})"
                       if spec.lora_rank else "") + (", gate" if spec.gate else "") + \
            (", final_norm" if spec.final_norm else "")
        self.print_to_log_file(
            f"LLM block: {spec.source} {spec.layers_named} ({origin}); init={spec.init}, "
            f"trainable={spec.trainable}, dtype={spec.dtype}, positions={spec.positions}, "
            f"attention={spec.attention}, residual={spec.residual}, stage={net.stage}{adaptations}")
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


# ---------------------------------------------------------------- built-in trainers: one model, one variant

def builtin_spec(model: str, variant: str) -> LLMSpec:
    """The spec of a built-in trainer: the model's layer (or the variant's), wired as the variant says."""
    v = load_variant(variant)
    depth = v.options.get("depth", 1)
    layer = MODELS[model].block_start(depth) if v.layer is None else v.layer
    if isinstance(layer, str):
        from ..core.spec import parse_block_starts
        (layer,) = parse_block_starts(layer, MODELS[model].num_layers, depth)
    return model_spec(model, layer=layer, **v.options)


class BuiltinTrainer(nnUNetTrainerLLM):
    """A built-in model and variant: the spec comes from them and is written into the plans."""

    model: str = ""
    variant: str = ""

    def llm_spec(self) -> LLMSpec:
        """The built-in spec. Plans that carry another LLM spec are refused rather than silently ignored."""
        spec = builtin_spec(self.model, self.variant)
        entry = self.configuration_manager.configuration.get(PLANS_KEY)
        if entry is not None:
            plans = self.plans_manager.plans_name
            refuse_another_block(
                spec, spec_from_entry(entry, f"plans {plans!r}"),
                f"{type(self).__name__} trains its built-in {self.model} layer, but plans {plans!r} carry another LLM "
                f"spec ({{differences}}). Train these plans with -tr nnUNetTrainerLLM -p {plans}, or drop -p to train "
                f"the built-in spec.", "built-in", "plans")
        return spec


def _builtin_variants() -> list:
    """The variants with a trainer suffix, the paper's own (suffix "") first."""
    found = [load_variant(n) for n in variant_names()]
    return sorted((v for v in found if v.trainer is not None), key=lambda v: (v.trainer != "", v.trainer))


def _builtin_trainer(model: str, variant) -> type:
    m = MODELS[model]
    doc = f"{variant.reproduces}: {variant.description} Model: {m.description}."
    return type(f"nnUNetTrainer{m.trainer_name}{variant.trainer}", (BuiltinTrainer,),
                {"__module__": __name__, "model": model, "variant": variant.name, "__doc__": doc})


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


def _length_variant(base: type, suffix: str, epochs, iterations) -> type:
    return type(base.__name__ + suffix, (_Length, base), {
        "__module__": __name__, "epochs": epochs, "iterations": iterations,
        "__doc__": f"{base.__name__} for {epochs} epochs of {iterations or 'the default'} iterations."})


BUILTIN_TRAINERS = [_builtin_trainer(m, v) for m in MODELS for v in _builtin_variants()]
BASE_TRAINERS = [nnUNetTrainerLLM, *BUILTIN_TRAINERS]
LENGTH_VARIANTS = [_length_variant(b, s, e, i) for b in BASE_TRAINERS for s, (e, i) in LENGTHS.items()]
# Plain nnU-Net at our short lengths, for like-for-like baselines (nnU-Net has the epoch-only ones).
LENGTH_VARIANTS += [_length_variant(nnUNetTrainer, s, e, i) for s, (e, i) in LENGTHS.items() if i is not None]
globals().update({cls.__name__: cls for cls in BASE_TRAINERS + LENGTH_VARIANTS})

__all__ = [cls.__name__ for cls in BASE_TRAINERS + LENGTH_VARIANTS]


@dataclass(frozen=True)
class TrainerInfo:
    """One trainer class as ``nnunetv2-llm trainers`` lists it."""

    name: str
    base: str
    model: str | None
    variant: str | None
    length: str | None


def trainer_table() -> list[TrainerInfo]:
    """Every trainer class this package adds, with what it trains."""
    rows = []
    for cls in BASE_TRAINERS + LENGTH_VARIANTS:
        base = next((b for b in cls.__mro__[1:] if b in BASE_TRAINERS or b is nnUNetTrainer), cls) \
            if issubclass(cls, _Length) else cls
        length = cls.__name__[len(base.__name__):] if issubclass(cls, _Length) else None
        rows.append(TrainerInfo(cls.__name__, base.__name__, getattr(base, "model", None) or None,
                                getattr(base, "variant", None) or None, length))
    return rows
