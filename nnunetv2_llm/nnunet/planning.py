"""LLM plans derived from any nnU-Net plans, for ablations and layer sweeps without new code.

A derived plans file is a copy of the source plans (nnUNetPlans, nnUNetResEncUNet{M,L,XL}Plans, ...)
with its own plans_name and the LLM spec in every configuration that defines a network
(configurations[c]['llm']; configurations that inherit, like 3d_cascade_fullres, inherit it).
Every data_identifier stays, so nnU-Net trains on the data it already preprocessed. ``nnunetv2-llm plan``
and ``sweep plan`` both go through :func:`write_llm_plans`.
"""
from __future__ import annotations

import copy
import json
import pydoc
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError, did_you_mean
from ..core.files import write_json
from ..core.locks import exclusive
from ..core.plans_entry import PLANS_KEY, configurations_with_spec, put_spec_in_plans
from ..core.resolve import request_specs
from ..core.spec import LLMSpec
from .datasets import preprocessed_folder

# Plans names nnU-Net writes itself (plus the files that share the folder): never ours to replace.
NNUNET_NAMES = re.compile(r"^(nnUNetPlans|nnUNetResEncUNet[A-Z]*Plans|dataset|dataset_fingerprint|splits_final)$")
PLANS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*$")
# Written into plans made by a sweep: which sweep folder they belong to (no other run may replace them).
SWEEP_KEY = "nnunetv2_llm_sweep"
# Held (filelock) in the preprocessed folder while plans names are checked and written.
PLAN_LOCK = ".nnunetv2_llm_plan.lock"


class PlanningError(UserError, ValueError):
    """Bad input to ``plan``; the message names the value, what is accepted and the fix."""


# ---------------------------------------------------------------- the dataset's plans

def is_plans(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()).get("configurations"), dict)
    except (json.JSONDecodeError, AttributeError, OSError, UnicodeDecodeError):
        return False


def plans_in(folder: Path) -> list[str]:
    """The plans identifiers of a preprocessed dataset folder (its other JSON files are not plans)."""
    return sorted(p.stem for p in Path(folder).glob("*.json") if is_plans(p))


def load_source_plans(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not (path.is_file() and is_plans(path)):
        available = plans_in(folder)
        raise PlanningError(
            f"-p {name}: there are no such plans in {folder} (available: {', '.join(available) or 'none'})."
            f"{did_you_mean(name, available)} Create them with nnUNetv2_plan_experiment -d {folder.name} "
            f"[-pl nnUNetPlannerResEncM|L|XL], or pick one of those.")
    return json.loads(path.read_text())


def _architecture_check(plans: dict, spec: LLMSpec) -> list[str]:
    """Names of the configurations that define a network; each must be one the LLM block can wrap."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
    names = []
    for name, conf in plans["configurations"].items():
        arch = conf.get("architecture")
        if arch is None:
            continue
        cls = pydoc.locate(arch["network_class_name"])
        if not (isinstance(cls, type) and issubclass(cls, (PlainConvUNet, ResidualEncoderUNet))):
            raise PlanningError(
                f"configuration {name!r} uses the network {arch['network_class_name']}; the LLM block wraps "
                f"PlainConvUNet and ResidualEncoderUNet (and subclasses). Plan from nnUNetPlans or a ResEnc preset.")
        from ..core.network import stage_out_of_range
        refused = stage_out_of_range(spec.stage, arch["arch_kwargs"]["n_stages"], f"configuration {name!r}")
        if refused:
            raise PlanningError(f"{refused} Pass --stage within that range.")
        refused = _beyond_window(conf, spec)
        if refused:
            raise PlanningError(f"configuration {name!r}: {refused}")
        names.append(name)
    if not names:
        raise PlanningError(f"the plans {plans.get('plans_name')!r} define no network in any configuration; "
                            f"plan from nnUNetPlans or a ResEnc preset.")
    return names


def _beyond_window(conf: dict, spec: LLMSpec) -> str | None:
    """Why a configuration's bottleneck grid is too large for the layer's sliding window (see
    :func:`~nnunetv2_llm.core.layer_attention.window_refusal`), or None: known here, not only after training has started."""
    import math

    from ..core.layer_attention import window_refusal
    from ..core.network import stage_grid
    kwargs = conf["architecture"]["arch_kwargs"]
    if "patch_size" not in conf or "strides" not in kwargs:
        return None
    n = kwargs["n_stages"]
    tokens = {stage: math.prod(stage_grid(conf["patch_size"], kwargs["strides"], stage)) for stage in range(n)}
    return window_refusal(spec, tokens[spec.stage % n], tokens)


def llm_plans(source: dict, name: str, spec: LLMSpec) -> dict:
    """The source plans renamed, with the spec in every configuration that defines a network."""
    plans = copy.deepcopy(source)
    plans["plans_name"] = name
    with_network = _architecture_check(plans, spec)
    for conf_name, conf in plans["configurations"].items():
        if conf_name in with_network or PLANS_KEY in conf:  # an inheriting entry's own spec would shadow the new one
            put_spec_in_plans(plans, conf_name, spec)
    return plans


# ---------------------------------------------------------------- specs and names

def hub_needed(spec: LLMSpec) -> str | None:
    """A note when training will have to read the layer from the hub and the hub cannot be asked from here now."""
    from ..core.weights.hub import cached_layer_files
    from ..core.weights.reach import gated_advice, hub_access, unreachable_advice
    from ..core.weights import source_kind
    if not spec.loads_pretrained or source_kind(spec.source) != "hub":
        return None
    layers = range(spec.layer, spec.layer + spec.depth)
    if all(cached_layer_files(spec.source, i, spec.revision) for i in layers):
        return None
    access = hub_access()
    if access.reachable:
        gated = gated_advice(spec.source)
        return f"note: training reads {spec.layers_named} of {spec.source} from the hub" + (f"; {gated}" if gated else "")
    return (f"note: training needs the hub: {spec.layers_named} of {spec.source} is not cached here and the hub "
            f"({access.endpoint}) cannot be asked: {access.reason}. {unreachable_advice(spec.source)}")


def model_tag(llm: str) -> str:
    """A short, name-safe label of the model: the named model or the last part of the source."""
    stem = re.sub(r"\.(gguf|safetensors)$", "", re.split(r"[/:\\]", llm.rstrip("/\\"))[-1])
    return re.sub(r"[^A-Za-z0-9.-]+", "-", stem).strip("-.") or "model"


@dataclass
class PlansRequest:
    """What to plan: a model (a named one, hub id, folder or file; default: the variant's, else the default model),
    a variant (a shipped name or a JSON file), layers (``14``, ``0-15``, ``last``, ``all``, a list; default: the
    variant's, else the named model's), spec options that override the variant's, and the plans name."""

    llm: str | None = None
    variant: str | None = None
    layers: str | list[int] | None = None
    options: dict = field(default_factory=dict)
    output: str | None = None


@dataclass
class PlannedSpecs:
    specs: list[LLMSpec]
    names: list[str]


def resolve_request(request: PlansRequest, source_plans: str, name_suffix: str = "") -> PlannedSpecs:
    """One spec and plans name per layer (the name ends in ``name_suffix`` before the layer, e.g. a sweep's tag)."""
    asked = request_specs(request.llm, request.variant, request.layers, dict(request.options))
    layers = [s.layer for s in asked.specs]
    width = max(2, len(str((asked.num_layers or max(layers) + 1) - 1)))
    if request.output:
        base = request.output.removesuffix(".json") + name_suffix
        names = [base] if len(layers) == 1 else [f"{base}_L{i:0{width}d}" for i in layers]
    else:
        tag = f"{source_plans}_LLM_{model_tag(asked.llm)}{asked.specs[0].name_tag()}{name_suffix}"
        names = [f"{tag}_L{i:0{width}d}" for i in layers]
    return PlannedSpecs(asked.specs, names)


def check_name(folder: Path, name: str, source_name: str, overwrite: bool | str, sweep: str | None = None) -> Path:
    """The target file of a new plans name, refusing names that are not ours to write. A sweep replaces only the
    plans it wrote itself; plans written by ``plan`` or another sweep are never replaced by one."""
    rename = "give the llm entry another `output:` name" if sweep is not None else "pick another -o NAME"
    if not PLANS_NAME.fullmatch(name):
        raise PlanningError(
            f"plans name {name!r} is not usable: use letters, digits, '.', '-' and single '_' (nnU-Net splits "
            f"results folders {{trainer}}__{{plans}}__{{configuration}} on '__'), e.g. {source_name}_LLM_mine.")
    if NNUNET_NAMES.fullmatch(name) or name == source_name:
        raise PlanningError(
            f"plans name {name!r} belongs to nnU-Net (its own plans, the source plans or its dataset files) and "
            f"would be overwritten; {rename}, e.g. {source_name}_LLM_mine.")
    path = folder / f"{name}.json"
    if not path.exists():
        return path
    existing = json.loads(path.read_text()) if is_plans(path) else {}
    if not configurations_with_spec(existing):
        raise PlanningError(f"{path} exists and holds no LLM plans; it is not ours to replace; {rename}.")
    owner = existing.get(SWEEP_KEY)
    if sweep is not None and owner != str(Path(sweep).resolve()):
        by = f"the sweep in {owner}" if owner else "`nnunetv2-llm plan`"
        raise PlanningError(f"{path} exists, written by {by}; this sweep does not replace plans it did not write. "
                            f"Give this sweep's llm entry its own output name, or use another sweep folder name.")
    if sweep is None and not overwrite:
        raise PlanningError(f"{path} exists; pass --overwrite to replace it, or pick another -o NAME.")
    if sweep is None:
        refuse_retraining(folder.name, name, overwrite)
    return path


def refuse_retraining(dataset_name: str, name: str, overwrite: bool | str) -> None:
    """New plans under a name that trained folds would mix two networks in one results folder."""
    trained = trained_folds(dataset_name, name)
    if trained and overwrite != "trained":
        raise PlanningError(
            f"plans {name!r} already trained {len(trained)} fold(s) ({', '.join(map(str, trained[:3]))}"
            f"{' ...' if len(trained) > 3 else ''}); new plans under that name would mix two networks in one "
            f"results folder (and in an ensemble of its folds). Pick another -o NAME, or pass "
            f"--overwrite-trained if you mean to retrain every fold.")


def trained_folds(dataset_name: str, plans_name: str) -> list[Path]:
    """Fold folders in nnUNet_results with a checkpoint of these plans (any trainer or configuration)."""
    import os
    results = os.environ.get("nnUNet_results")
    if not results:
        return []
    return sorted({p.parent for p in (Path(results) / dataset_name).glob(f"*__{plans_name}__*/fold_*/checkpoint_*.pth")})


def extract_into(specs: list[LLMSpec], names: list[str], weights_dir: Path) -> list[LLMSpec]:
    """Fetch each block's pretrained layer(s) (and final norm) once into ``weights_dir/NAME.safetensors`` and point
    the spec at that file, pinned by its sha256: every job trained from these plans then reads the same tensors,
    and none of them touches the hub. A file already there for the same source and layers is reused."""
    from ..core.weights import LLMWeightsError, extract_layer, load_extracted, load_pinned
    out = []
    for spec, name in zip(specs, names):
        if not spec.loads_pretrained:
            out.append(spec)
            continue
        path = (Path(weights_dir) / f"{name}.safetensors").resolve()
        local = spec.replace(source=str(path))
        try:
            first = load_extracted(path, spec.layer) if path.is_file() else None
            if first is None or (first.source, first.revision or None) != (spec.source, spec.revision or None):
                raise LLMWeightsError("not this spec's file")
            pinned = load_pinned(local)[0]
        except LLMWeightsError:
            extract_layer(spec, path)
            pinned = load_pinned(local)[0]  # a pin in the spec still holds for the tensors fetched now
        out.append(pinned)
    return out


def write_llm_plans(dataset, source_plans: str, request: PlansRequest, overwrite: bool | str = False,
                    weights_dir: Path | None = None, sweep: str | None = None) -> list[Path]:
    """Validate everything first, then write one plans file per layer next to the source plans. With
    ``weights_dir`` each layer is fetched into that folder first (see :func:`extract_into`); ``sweep`` (a sweep
    folder) tags the plans as that sweep's: their names end in ``_sweep-<folder name>``, and plans of that name are
    replaced only if the same sweep wrote them."""
    folder = preprocessed_folder(dataset)
    source = load_source_plans(folder, source_plans)
    suffix = f"_sweep-{re.sub(r'[^A-Za-z0-9.-]+', '-', Path(sweep).name).strip('-.') or 'sweep'}" if sweep else ""
    planned = resolve_request(request, source_plans, suffix)
    if len(set(planned.names)) != len(planned.names):
        raise PlanningError(f"plans names {planned.names} repeat; give -o a distinct name per layer.")
    # Two runs to one name: the second waits, then finds the first one's plans (refused unless --overwrite).
    with exclusive(folder / PLAN_LOCK, f"the plans of {folder.name}"):
        targets = [check_name(folder, name, source_plans, overwrite, sweep) for name in planned.names]
        specs = planned.specs if weights_dir is None else extract_into(planned.specs, planned.names, weights_dir)
        plans = [llm_plans(source, name, spec) for name, spec in zip(planned.names, specs)]
        if sweep:
            for p in plans:
                p[SWEEP_KEY] = str(Path(sweep).resolve())
        # A sweep planned again writes the same plans: leave those (and the folds they trained) alone.
        changed = [(path, p) for path, p in zip(targets, plans)
                   if not (path.is_file() and json.loads(path.read_text()) == p)]
        if sweep:
            for path, _ in changed:
                if path.exists():
                    refuse_retraining(folder.name, path.stem, overwrite)
        for path, p in changed:
            write_json(path, p)
    return targets
