"""Command-line options shared by several commands: the LLM spec flags, and argparse types for layers and ranges."""
from __future__ import annotations

import argparse

from ..core.models import MODELS
from ..nnunet.results import DEFAULT_PLANS  # noqa: F401 (the commands' -p default, from its one home)
from ..core import spec
from ..core.spec import LORA_TARGETS, LLMSpecError
from ..core.spec import declared_options, option_default, option_field, option_names
from ..core.spec_options import Option, field_kinds
from ..nnunet.environment import DEVICES  # noqa: F401 (the commands' --device choices, from their one home)


class Repeatable(argparse.Action):
    """``nargs="+"`` that a repeated flag adds to (``--held-out a=X --held-out b=Y`` keeps both, as argparse's own
    ``extend`` does) while the first use replaces the default (``extend`` would add to it). Every list option of
    every command takes it, so no repeated flag silently drops what was given before."""

    def __init__(self, option_strings, dest, nargs="+", **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest, None)
        before = [] if given is None or given is self.default else list(given)
        setattr(namespace, self.dest, [*before, *values])


def layers_type(text: str) -> str:
    """``14``, ``0-15``, ``0,3,7-9``, ``last`` or ``all``: checked for form here, against the model when planned."""
    from ..core.layer_indices import parse_layers
    if str(text).strip() in ("last", "all"):
        return str(text).strip()
    try:
        parse_layers(text)
    except LLMSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def targets_type(text: str) -> list[str]:
    """``q_proj,v_proj``: the linears of the decoder layer LoRA adapts."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--lora-targets {text!r}: name linears of the decoder layer, e.g. "
                                         f"{','.join(LORA_TARGETS)}.")
    return names


def spec_options(args) -> dict:
    """The spec options set by flags (see :func:`add_spec_arguments`); flags not given are left out."""
    return {k: getattr(args, k) for k in option_names() if getattr(args, k, None) is not None}


_GROUPS = {"wiring": "wiring of the block (default: the authors' code, or the variant's)",
           "adaptation": "adaptations (what peers use after a frozen layer shows no gain)"}


def _add_option(target, name: str, declared: Option) -> None:
    """One spec option's flag, all from its declaration in :class:`~nnunetv2_llm.core.spec.LLMSpec`."""
    kinds = field_kinds(option_field(name))
    default = option_default(name)
    shown = {False: "off", True: "on"}.get(default, default) if isinstance(default, bool) else default
    help_text = declared.help + ("" if default is None else f" (default {spec._text(shown)})")
    kw = {"help": help_text, "metavar": declared.metavar}
    if bool in kinds:
        kw = {"help": help_text, "action": argparse.BooleanOptionalAction}
    elif declared.choices:
        kw = {"help": help_text, "choices": declared.choices}
    elif list in kinds:
        kw["type"] = targets_type
    elif float in kinds:
        kw["type"] = float
    elif int in kinds:
        kw["type"] = int
    target.add_argument(Option.flag(name), **{k: v for k, v in kw.items() if v is not None})


def add_spec_arguments(p: argparse.ArgumentParser, llm_default: str | None, layer_parser=int,
                       layer_help: str = "0-based decoder layer index (default: the named model's paper layer)",
                       wiring: bool = True, llm_use: str = "") -> None:
    """``--llm``, ``--layer``, the options that choose the tensors and (``wiring``) the flags of how the block uses
    them: every spec option's flag, as :class:`~nnunetv2_llm.core.spec.LLMSpec` declares it, so a new option reaches
    every command that takes a spec. ``llm_use`` opens --llm's help with what the command does with it."""
    default = f" (default {llm_default})" if llm_default else ""
    p.add_argument("--llm", default=llm_default, metavar="MODEL|SOURCE",
                   help=f"{llm_use}a named model ({', '.join(sorted(MODELS))}), a hub id (org/name), a checkpoint "
                        f"folder, a .gguf file or a file from `nnunetv2-llm extract`{default}")
    p.add_argument("--layer", type=layer_parser, help=layer_help)
    groups = {"tensors": p}
    if wiring:
        groups.update({name: p.add_argument_group(title) for name, title in _GROUPS.items()})
    for name, declared in declared_options().items():
        if declared.group in groups:
            _add_option(groups[declared.group], name, declared)
