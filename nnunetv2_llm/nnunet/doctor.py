"""The checks of `nnunetv2-llm doctor`: is this environment ready to train with the nnunetv2-llm trainers?

Checks the nnunetv2 version, that what training imports imports (torch, torchvision, dynamic_network_architectures,
nnU-Net's trainer), nnU-Net's three folders, that nnUNet_extTrainer lists our trainers folder and that nnU-Net's own
lookup finds every trainer there, which named LLM models can be loaded (locally or from the hub; nothing is
downloaded) and that gguf, which reads the default model, imports.
Exit code 1 when something blocks training.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import os
import pkgutil
import shlex
from dataclasses import dataclass
from pathlib import Path

from .environment import cpu_advice, ext_trainer_entries, lists_our_trainers, searched_first, trainers_folder

OK, WARN, FAIL = "OK", "WARN", "FAIL"
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass
class Check:
    """One line of the report; ``fix`` is a command or instruction printed verbatim under the table."""

    name: str
    status: str
    detail: str
    fix: str | None = None


def declared(package: str):
    """The version range this package declares for ``package`` (its own metadata is the single source)."""
    from packaging.requirements import Requirement
    for line in importlib.metadata.requires("nnunetv2-llm") or []:
        req = Requirement(line)
        if req.name == package and req.marker is None:
            return req.specifier
    raise RuntimeError(f"the nnunetv2-llm package metadata declares no {package} requirement; reinstall nnunetv2-llm.")


# What nnUNetv2_train imports before it trains, in import order: a package that installs but fails at import (a
# CUDA torchvision next to a CPU torch) stops every training, so doctor imports them too.
TRAINING_IMPORTS = (("torch", "torch"), ("torchvision", "torchvision"),
                    ("dynamic_network_architectures", "dynamic-network-architectures"),
                    ("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnunetv2"))


def torch_install_line() -> str:
    """The pip line that installs torch and torchvision as one pair from the index this torch came from (its
    local version, e.g. +cpu or +cu130, names the index; none: the default index)."""
    from .environment import TORCH_WHEEL_INDEX
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "pip install torch torchvision"
    base, _, local = version.partition("+")
    index = f" --index-url {TORCH_WHEEL_INDEX}/{local}" if local else ""
    return f"pip install --force-reinstall torch=={base} torchvision{index}"


def check_training_imports() -> list[Check]:
    """One row per module training imports; a failure names the package and how to reinstall it."""
    checks = []
    for module, package in TRAINING_IMPORTS:
        label = f"import {module.split('.')[0]}"
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                importlib.import_module(module)
        except Exception as e:  # any failure at import stops nnUNetv2_train the same way
            first = (str(e).strip().splitlines() or [""])[0]
            if any(c.status == FAIL for c in checks):
                fix = "fix the failing import above first"
            elif package in ("torch", "torchvision"):
                fix = (f"torch and torchvision must be one pair from the same index (both CPU builds on a CPU "
                       f"machine): {torch_install_line()}")
            else:
                fix = f"pip install --force-reinstall '{package}{declared(package)}'"
            checks.append(Check(label, FAIL, f"{package} fails at import: {type(e).__name__}: {first}", fix))
            continue
        version = importlib.metadata.version(package)
        checks.append(Check(label, OK, f"{package} {version}"))
    return checks


def check_nnunet_version() -> Check:
    specifier = declared("nnunetv2")
    try:
        version = importlib.metadata.version("nnunetv2")
    except importlib.metadata.PackageNotFoundError:
        return Check("nnunetv2", FAIL, "not installed", f"pip install 'nnunetv2{specifier}'")
    if not specifier.contains(version, prereleases=True):
        return Check("nnunetv2", FAIL, f"version {version}, supported {specifier}", f"pip install 'nnunetv2{specifier}'")
    return Check("nnunetv2", OK, f"version {version} (supported {specifier})")


def check_folder(variable: str) -> Check:
    value = os.environ.get(variable)
    if not value:
        return Check(variable, FAIL, "not set",
                     f"export {variable}=/path/to/{variable}  (see nnU-Net's documentation/setting_up_paths.md)")
    path = Path(value).expanduser()
    if not path.exists():
        return Check(variable, FAIL, f"{value} does not exist", f"mkdir -p {shlex.quote(str(path))}")
    if not path.is_dir():
        return Check(variable, FAIL, f"{value} is not a folder", f"export {variable}=<a folder>")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(variable, FAIL, f"{value} is not writable",
                     f"chmod u+w {shlex.quote(str(path))}  (or point {variable} at a writable folder)")
    return Check(variable, OK, value)


def ext_trainer_export_line() -> str:
    """The ``export`` line that puts our trainers folder first on nnUNet_extTrainer, keeping existing entries."""
    return "export nnUNet_extTrainer=" + shlex.quote(os.pathsep.join(ext_trainer_entries()))


def check_ext_trainer() -> Check:
    value = os.environ.get("nnUNet_extTrainer", "")
    if lists_our_trainers(value):
        return Check("nnUNet_extTrainer", OK, f"includes {trainers_folder()}")
    detail = "not set" if not value else f"{value} does not include {trainers_folder()}"
    return Check("nnUNet_extTrainer", FAIL, detail, ext_trainer_export_line())


def _lookup_names() -> list[str]:
    """The trainers nnU-Net's full lookup is run for. With our folder searched first, one name: the one module there
    re-exports every class, so nothing can come before it (built-in shadows are checked for all names). Else each
    class we write by hand and the plain-nnU-Net length variants (named like nnU-Net's own)."""
    from . import trainers
    names = [c.__name__ for c in trainers.BASE_TRAINERS] + [n for n in trainers.__all__ if n.startswith("nnUNetTrainer_")]
    return names[:1] if searched_first() else names


def _builtin_trainer_names() -> dict[str, str]:
    """Every name nnU-Net's own trainer modules define -> the first module defining it, in one walk (nnU-Net's
    lookup walks them once per name asked)."""
    import nnunetv2.training.nnUNetTrainer as builtin
    found = {}
    for info in pkgutil.walk_packages(builtin.__path__, builtin.__name__ + "."):
        if info.ispkg:
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as e:
            if e.name == info.name:  # listed on disk but not importable as itself: nnU-Net skips it too
                continue
            raise
        for name in vars(module):
            found.setdefault(name, info.name)
    return found


def check_trainer_lookup() -> Check:
    """Our trainers must come back, as our own classes, from the lookup nnUNetv2_train and the predictor use."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from . import trainers
    failures = []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        builtin = _builtin_trainer_names()
        failures += [f"{name} is shadowed by nnU-Net's {builtin[name]}.{name}" for name in trainers.__all__
                     if name in builtin]
        looked_up = _lookup_names()
        for name in looked_up:
            try:
                found = recursive_find_trainer_class_by_name(name)
            except (RuntimeError, AssertionError, ImportError):
                failures.append(f"{name} not found")
                continue
            if found is not getattr(trainers, name):
                failures.append(f"{name} resolves to {found.__module__}.{found.__qualname__}, not ours")
    total = len(trainers.__all__)
    if not failures:
        return Check("trainer lookup", OK, f"nnU-Net's lookup finds our classes ({len(looked_up)} looked up, our "
                                           f"folder {'searched first' if searched_first() else 'after others'}; none "
                                           f"of all {total} shadowed by nnU-Net's own)")
    shown = "; ".join(failures[:3]) + (f"; ... ({len(failures) - 3} more)" if len(failures) > 3 else "")
    return Check("trainer lookup", FAIL, shown,
                 ext_trainer_export_line() + "  (our folder first, so its names win over others')")


def check_model(name: str) -> Check:
    """Cached (in the package or the huggingface_hub cache), or else whether the hub can be reached from here (one
    quick probe for all models; nothing is downloaded): cached / reachable / unreachable, with advice that fits."""
    from ..core.weights.hub import cached_layer_files
    from ..core.weights.reach import gated_advice, hub_access, offline, unreachable_advice
    from ..core.models import MODELS
    from ..core.weights import LLMWeightsError, local_source_path, source_kind
    model = MODELS[name]
    label = f"model {name}"
    if source_kind(model.source) != "hub":
        try:
            return Check(label, OK, f"local: {local_source_path(model.source)}")
        except LLMWeightsError as e:
            return Check(label, WARN, f"unavailable: {e}")
    files = cached_layer_files(model.source, model.layer)
    if files:
        return Check(label, OK, f"cached: huggingface_hub cache ({', '.join(Path(f).name for f in files)})")
    access = hub_access()
    if not access.reachable:
        why = ("HF_HUB_OFFLINE=1, so the hub is not asked" if offline()
               else f"the hub ({access.endpoint}) is unreachable: {access.reason}")
        fix = unreachable_advice(model.source)
        return Check(label, WARN, f"not cached ({model.source} layer {model.layer}) and {why}",
                     ("unset HF_HUB_OFFLINE to download it, or: " if offline() else "") + fix)
    gated = gated_advice(model.source)
    if gated:
        from huggingface_hub import get_token
        if get_token() is None:
            return Check(label, WARN, f"reachable: {model.source} on {access.endpoint}, but it is gated and no "
                                      f"HF_TOKEN is set", f"{gated}: accept the licence, then export HF_TOKEN=<token>")
        return Check(label, OK, f"reachable: {model.source} on {access.endpoint} (gated; HF_TOKEN set, licence "
                                f"acceptance checked on first use); reads only layer {model.layer} (byte ranges, "
                                f"then cached)")
    return Check(label, OK, f"reachable: {model.source} on {access.endpoint}; reads only layer {model.layer} on first "
                            f"use (byte ranges, then cached)")


def check_gguf() -> Check:
    """gguf reads the default model (SmolLM2 ships as a .gguf), so without it the demo and the default trainer fail."""
    try:
        importlib.import_module("gguf")
    except Exception as e:  # missing or broken: either way no .gguf loads
        return Check("GGUF support", FAIL, f"gguf cannot be imported ({type(e).__name__}: {e}): the default model "
                                           f"smollm2-135m, nnUNetTrainerSmolLM2, the demo and .gguf sources cannot load",
                     f"pip install 'gguf{declared('gguf')}'")
    return Check("GGUF support", OK, f"gguf {importlib.metadata.version('gguf')}")


def check_families() -> Check:
    """The model families the block is proven for, with what is tested (the table ``plan --help`` prints)."""
    from ..core.families import FAMILIES, families_text
    return Check("model families", OK, f"{len(FAMILIES)} proven layer for layer:\n" + families_text(""))


def check_device() -> Check:
    import torch
    if torch.cuda.is_available():
        return Check("device", OK, f"CUDA: {torch.cuda.get_device_name(0)} (torch {torch.__version__})")
    return Check("device", WARN, f"no CUDA GPU (torch {torch.__version__}): train with -device cpu and the CPU "
                                 f"settings below (without them nnU-Net's training is several times slower)",
                 "\n    ".join(cpu_advice()))


def run_checks() -> list[Check]:
    from ..core.models import MODELS
    imports = check_training_imports()
    imported = all(c.status == OK for c in imports)
    ext_trainer = check_ext_trainer()
    if imported:
        lookup = check_trainer_lookup()
        if ext_trainer.status == FAIL and lookup.status == FAIL:
            lookup.fix = "fix nnUNet_extTrainer (above)"
    else:
        lookup = Check("trainer lookup", FAIL, "not checked: what training imports fails (above)",
                       "fix the failing import above")
    checks = [check_nnunet_version(), *imports, *[check_folder(v) for v in NNUNET_FOLDERS], ext_trainer, lookup]
    if imports[0].status == OK:  # the model and device rows need torch
        checks += [check_model(name) for name in MODELS] + [check_families()]
    checks.append(check_gguf())
    return checks + ([check_device()] if imported else [])
