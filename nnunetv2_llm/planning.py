"""nnunetv2-llm plan: LLM plans derived from any nnU-Net plans, for ablations and layer sweeps without new code.

A derived plans file is a copy of the source plans (nnUNetPlans, nnUNetResEncUNet{M,L,XL}Plans, ...)
with its own plans_name and the LLM spec in every configuration that defines a network
(configurations[c]['llm']; configurations that inherit, like 3d_cascade_fullres, inherit it).
Every data_identifier stays, so nnU-Net trains on the data it already preprocessed:

    nnunetv2-llm plan -d 501 --llm llama-3.2-1b --layer 0-15
    nnUNetv2_train 501 2d 0 -tr nnUNetTrainerLLM -p nnUNetPlans_LLM_llama-3.2-1b_L07
"""
from __future__ import annotations

import argparse
import copy
import importlib.resources
import json
import os
import pydoc
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .files import write_json
from .spec import PLANS_KEY, PRESETS, SPEC_OPTIONS, LLMSpec, check_layers

PRESET_KEYS = ("description", "llm", "layer", "hidden_size", *SPEC_OPTIONS)
PRESET_TYPES = {"layer": (int, str), "hidden_size": (int,), "stage": (int,), "residual": (bool,), "trainable": (bool,)}
# Plans names nnU-Net writes itself (plus the files that share the folder): never ours to replace.
NNUNET_NAMES = re.compile(r"^(nnUNetPlans|nnUNetResEncUNet[A-Z]*Plans|dataset|dataset_fingerprint|splits_final)$")
PLANS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*$")


class PlanningError(UserError, ValueError):
    """Bad input to ``plan``; the message names the value, what is accepted and the fix."""


# ---------------------------------------------------------------- presets

def presets_folder() -> Path:
    """The presets shipped with the package (the repository's ``plans/`` folder)."""
    return Path(str(importlib.resources.files("nnunetv2_llm.plan_presets")))


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_folder().glob("*.json"))


def load_preset(name_or_path: str) -> dict:
    """Spec options from a preset name (a file stem in ``plans/``) or a JSON file."""
    path = Path(name_or_path)
    if not path.is_file():
        path = presets_folder() / f"{name_or_path}.json"
    if not path.is_file():
        raise PlanningError(f"--preset {name_or_path!r} is neither a file nor a known preset; known presets are "
                            f"{', '.join(preset_names())} (in {presets_folder()}).")
    try:
        preset = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PlanningError(f"preset file {path} is not valid JSON ({e}); fix the file.") from None
    if not isinstance(preset, dict):
        raise PlanningError(f"preset file {path} must hold a JSON object with keys from {', '.join(PRESET_KEYS)}.")
    unknown = sorted(set(preset) - set(PRESET_KEYS))
    if unknown:
        raise PlanningError(f"preset file {path} has unknown keys {unknown}; accepted keys are "
                            f"{', '.join(PRESET_KEYS)}.")
    for key, value in preset.items():
        kinds = PRESET_TYPES.get(key, (str,))
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise PlanningError(f"preset file {path}: {key}={value!r} must be of type "
                                f"{' or '.join(k.__name__ for k in kinds)}; fix the file.")
    return preset


# ---------------------------------------------------------------- layers

def parse_layers(text) -> list[int]:
    """``14``, ``0-15``, ``0,3,7`` or ``0-2,9`` -> sorted distinct layer indices."""
    layers = set()
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise argparse.ArgumentTypeError(
                f"layer {text!r} is not understood; write an index (14), a range (0-15) or a comma list (0,3,7-9).")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise argparse.ArgumentTypeError(f"layer range {part.strip()!r} runs backwards; write {last}-{first}.")
        layers.update(range(first, last + 1))
    return sorted(layers)


# ---------------------------------------------------------------- the dataset's plans

def dataset_folder(dataset: str) -> Path:
    """``nnUNet_preprocessed/DatasetXXX_Name`` for an id (501) or a full name."""
    root = os.environ.get("nnUNet_preprocessed")
    if not root or not Path(root).is_dir():
        raise PlanningError(f"nnUNet_preprocessed={root!r} is not a folder; export nnUNet_preprocessed and run "
                            f"nnUNetv2_plan_and_preprocess for the dataset first.")
    root = Path(root)
    if re.fullmatch(r"\d+", dataset):
        found = sorted(root.glob(f"Dataset{int(dataset):03d}_*"))
    else:
        found = [root / dataset] if (root / dataset).is_dir() and dataset.startswith("Dataset") else []
    if len(found) != 1:
        known = sorted(p.name for p in root.glob("Dataset*") if p.is_dir())
        what = "several folders match" if found else "no preprocessed dataset matches"
        raise PlanningError(f"-d {dataset}: {what} in {root} (found: {', '.join(known) or 'none'}); run "
                            f"nnUNetv2_plan_and_preprocess -d {dataset} first, or pass an id or name listed there.")
    return found[0]


def is_plans(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()).get("configurations"), dict)
    except (json.JSONDecodeError, AttributeError, OSError):
        return False


def load_source_plans(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not (path.is_file() and is_plans(path)):
        available = sorted(p.stem for p in folder.glob("*.json") if is_plans(p))
        raise PlanningError(
            f"-p {name}: there are no such plans in {folder} (available: {', '.join(available) or 'none'}). Create "
            f"them with nnUNetv2_plan_experiment -d {folder.name} [-pl nnUNetPlannerResEncM|L|XL], or pick one of those.")
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
        n_stages = arch["arch_kwargs"]["n_stages"]
        if not -n_stages <= spec.stage < n_stages:
            raise PlanningError(f"--stage {spec.stage} is out of range for configuration {name!r}: its net has "
                                f"{n_stages} encoder stages, valid values are {-n_stages}..{n_stages - 1} "
                                f"(-1 is the bottleneck).")
        names.append(name)
    if not names:
        raise PlanningError(f"the plans {plans.get('plans_name')!r} define no network in any configuration; "
                            f"plan from nnUNetPlans or a ResEnc preset.")
    return names


def llm_plans(source: dict, name: str, spec: LLMSpec) -> dict:
    """The source plans renamed, with the spec in every configuration that defines a network."""
    plans = copy.deepcopy(source)
    plans["plans_name"] = name
    with_network = _architecture_check(plans, spec)
    for conf_name, conf in plans["configurations"].items():
        if conf_name in with_network or PLANS_KEY in conf:  # an inheriting entry's own spec would shadow the new one
            conf[PLANS_KEY] = spec.to_dict()
    return plans


# ---------------------------------------------------------------- specs and names

def _model(llm: str, revision: str | None) -> tuple[str, dict]:
    """Source and model config of ``--llm``; built-in presets carry their config (no download)."""
    if llm in PRESETS:
        return PRESETS[llm].source, copy.deepcopy(PRESETS[llm].config)
    from .weights import canonical_source, read_config
    return canonical_source(llm), read_config(llm, revision)


def model_tag(llm: str) -> str:
    """A short, name-safe label of the model: the preset name or the last part of the source."""
    stem = re.sub(r"\.(gguf|safetensors)$", "", re.split(r"[/:\\]", llm.rstrip("/\\"))[-1])
    return re.sub(r"[^A-Za-z0-9.-]+", "-", stem).strip("-.") or "model"


def variant_tag(spec: LLMSpec) -> str:
    """Suffixes for every option that differs from the paper's frozen reference wiring."""
    parts = []
    if spec.init != "pretrained":
        parts.append({"random": "rand", "random-reference": "randref", "identity": "identity"}[spec.init])
    if spec.trainable:
        parts.append("T")
    if spec.positions != "reference":
        parts.append("nopos" if spec.positions == "none" else spec.positions)
    if spec.attention == "bidirectional":
        parts.append("bidir")
    if spec.residual:
        parts.append("res")
    if spec.dtype == "bfloat16":
        parts.append("bf16")
    if spec.stage != -1:
        parts.append(f"stage{spec.stage}")
    return "".join(f"-{p}" for p in parts)


@dataclass
class PlanRequest:
    """What to write: the specs (one per layer) and the plans name of each."""

    specs: list[LLMSpec]
    names: list[str]


def resolve_request(args) -> PlanRequest:
    """Preset options, overridden by command-line flags, into one spec and plans name per layer."""
    preset = load_preset(args.preset) if args.preset else {}
    llm = args.llm or preset.get("llm") or args.default_llm
    options = {k: preset[k] for k in SPEC_OPTIONS if k in preset}
    from .cli import spec_options
    options.update(spec_options(args))
    source, config = _model(llm, options.get("revision"))
    hidden = config.get("hidden_size")
    if "hidden_size" in preset and preset["hidden_size"] != hidden:
        fitting = [n for n in preset_names() if load_preset(n).get("llm") == llm]
        raise PlanningError(
            f"preset {args.preset!r} is written for a model of hidden size {preset['hidden_size']}, but --llm {llm} "
            f"has hidden size {hidden}. Drop --llm to use the preset's own model ({preset.get('llm')}), or use "
            f"{'a preset for ' + llm + ' (' + ', '.join(fitting) + ')' if fitting else 'flags instead of a preset'}.")

    n_layers = config.get("num_hidden_layers")
    from .weights import extracted_layer
    in_file = extracted_layer(source)
    if in_file is not None and args.layer is not None and args.layer != [in_file]:
        raise PlanningError(f"--llm {llm} holds only layer {in_file} (a file from `nnunetv2-llm extract`), not "
                            f"--layer {','.join(map(str, args.layer))}. Drop --layer, or extract the layer you want "
                            f"(`nnunetv2-llm extract --layer N`).")
    if in_file is not None:
        layers = [in_file]
    elif args.layer is not None:
        layers = args.layer
    elif "layer" in preset:
        try:
            layers = parse_layers(preset["layer"])
        except argparse.ArgumentTypeError as e:
            raise PlanningError(f"preset {args.preset!r}: {e}") from None
    elif llm in PRESETS:
        layers = [PRESETS[llm].layer]
    else:
        raise PlanningError(f"--llm {llm!r} is not a built-in preset ({', '.join(sorted(PRESETS))}), so --layer is "
                            f"required" + (f": 0..{n_layers - 1}." if n_layers else "."))
    check_layers(layers, n_layers, llm, " Pass --layer within that range.")
    specs = [LLMSpec(source=source, layer=i, config=copy.deepcopy(config), **options) for i in layers]

    width = max(2, len(str((n_layers or max(layers) + 1) - 1)))
    if args.output:
        base = args.output.removesuffix(".json")
        names = [base] if len(layers) == 1 else [f"{base}_L{i:0{width}d}" for i in layers]
    else:
        tag = f"{args.plans}_LLM_{model_tag(llm)}{variant_tag(specs[0])}"
        names = [f"{tag}_L{i:0{width}d}" for i in layers]
    return PlanRequest(specs, names)


def check_name(folder: Path, name: str, source_name: str, overwrite: bool | str) -> Path:
    """The target file of a new plans name, refusing names that are not ours to write."""
    if not PLANS_NAME.fullmatch(name):
        raise PlanningError(
            f"plans name {name!r} is not usable: use letters, digits, '.', '-' and single '_' (nnU-Net splits "
            f"results folders {{trainer}}__{{plans}}__{{configuration}} on '__'), e.g. {source_name}_LLM_mine.")
    if NNUNET_NAMES.fullmatch(name) or name == source_name:
        raise PlanningError(
            f"plans name {name!r} belongs to nnU-Net (its own plans, the source plans or its dataset files) and "
            f"would be overwritten; pick another -o NAME, e.g. {source_name}_LLM_mine.")
    path = folder / f"{name}.json"
    if path.exists():
        existing = json.loads(path.read_text()) if is_plans(path) else {}
        ours = any(PLANS_KEY in c for c in existing.get("configurations", {}).values())
        if not ours:
            raise PlanningError(f"{path} exists and holds no LLM plans; it is not ours to replace. Pick another "
                                f"-o NAME.")
        if not overwrite:
            raise PlanningError(f"{path} exists; pass --overwrite to replace it, or pick another -o NAME.")
        trained = trained_folds(folder.name, name)
        if trained and overwrite != "trained":
            raise PlanningError(
                f"plans {name!r} already trained {len(trained)} fold(s) ({', '.join(map(str, trained[:3]))}"
                f"{' ...' if len(trained) > 3 else ''}); new plans under that name would mix two networks in one "
                f"results folder (and in an ensemble of its folds). Pick another -o NAME, or pass "
                f"--overwrite-trained if you mean to retrain every fold.")
    return path


def trained_folds(dataset_name: str, plans_name: str) -> list[Path]:
    """Fold folders in nnUNet_results with a checkpoint of these plans (any trainer or configuration)."""
    results = os.environ.get("nnUNet_results")
    if not results:
        return []
    return sorted({p.parent for p in (Path(results) / dataset_name).glob(f"*__{plans_name}__*/fold_*/checkpoint_*.pth")})


def extract_into(specs: list[LLMSpec], names: list[str], weights_dir: Path) -> list[LLMSpec]:
    """Fetch each pretrained layer once into ``weights_dir/NAME.safetensors`` and point the spec at that file,
    pinned by its sha256: every job trained from these plans then reads the same tensors, and none of them
    touches the hub. A file already there for the same source and layer is reused."""
    from .weights import LLMWeightsError, extract_layer, load_extracted
    out = []
    for spec, name in zip(specs, names):
        if not spec.loads_pretrained:
            out.append(spec)
            continue
        path = (Path(weights_dir) / f"{name}.safetensors").resolve()
        weights = None
        if path.is_file():
            try:
                weights = load_extracted(path)
            except LLMWeightsError:
                weights = None
            if weights is not None and (weights.source, weights.layer) != (spec.source, spec.layer):
                weights = None
        if weights is None:
            extract_layer(spec, path)
            weights = load_extracted(path)
        out.append(spec.replace(source=str(path), sha256=weights.sha256))
    return out


def write_plans(args, weights_dir: Path | None = None) -> list[Path]:
    """Validate everything first, then write one plans file per layer (with ``weights_dir``: after fetching
    each layer into that folder, see :func:`extract_into`)."""
    folder = dataset_folder(str(args.dataset))
    source = load_source_plans(folder, args.plans)
    request = resolve_request(args)
    if len(set(request.names)) != len(request.names):
        raise PlanningError(f"plans names {request.names} repeat; give -o a distinct name per layer.")
    targets = [check_name(folder, name, args.plans, args.overwrite) for name in request.names]
    specs = request.specs if weights_dir is None else extract_into(request.specs, request.names, weights_dir)
    plans = [llm_plans(source, name, spec) for name, spec in zip(request.names, specs)]
    for path, p in zip(targets, plans):
        write_json(path, p)
    return targets


def cmd_plan(args) -> int:
    targets = write_plans(args)
    for path in targets:
        plans = json.loads(path.read_text())
        with_llm = [c for c, conf in plans["configurations"].items() if PLANS_KEY in conf]
        spec = LLMSpec.from_dict(plans["configurations"][with_llm[0]][PLANS_KEY])
        print(f"wrote {path}: {spec.source} layer {spec.layer} (init={spec.init}, trainable={spec.trainable}, "
              f"positions={spec.positions}, attention={spec.attention}, residual={spec.residual}) "
              f"in {', '.join(with_llm)}")
    dataset_id = int(targets[0].parent.name[len("Dataset"):len("Dataset") + 3])
    name = targets[0].stem if len(targets) == 1 else "NAME  (each plans name above)"
    print(f"train with: nnUNetv2_train {dataset_id} {with_llm[0]} FOLD -tr nnUNetTrainerLLM -p {name}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="write LLM plans next to existing nnU-Net plans (layer sweeps, ablations)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", required=True, help="dataset id (501) or name (Dataset501_Synth2D)")
    p.add_argument("-p", "--plans", default="nnUNetPlans",
                   help="source plans, e.g. nnUNetPlans or nnUNetResEncUNetMPlans (default: nnUNetPlans)")
    from .cli import add_spec_arguments
    add_spec_arguments(p, layer_type=parse_layers,
                       layer_help="0-based decoder layer: 14, a range 0-15 or a list 0,3,7-9 (one plans file per "
                                  "layer; default: the preset's)")
    p.set_defaults(default_llm=p.get_default("llm"), llm=None)
    p.add_argument("--preset", help=f"spec options from plans/NAME.json or a JSON file; flags override them "
                                    f"(presets: {', '.join(preset_names())})")
    p.add_argument("-o", "--output", help="plans name (default: <source>_LLM_<model>[-options]_L<layer>); with "
                                          "several layers, _L<layer> is appended")
    p.add_argument("--overwrite", action="store_const", const=True, default=False,
                   help="replace LLM plans of the same name (refused if folds were trained with them)")
    p.add_argument("--overwrite-trained", dest="overwrite", action="store_const", const="trained",
                   help="replace LLM plans even if folds were trained with them (retrain every fold)")
    p.set_defaults(func=cmd_plan)


__all__ = ["PlanningError", "load_preset", "parse_layers", "preset_names", "presets_folder", "register",
           "write_plans"]
