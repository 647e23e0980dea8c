"""Every way to get a spec: one function per kind of input, and no spec is decided anywhere else.

=====================================================  =========================================================
you have                                               call
=====================================================  =========================================================
a named model (and option values)                      ``model_spec(name, **options)``
a built-in model and variant (a built-in trainer's)    ``variant_spec(model, variant)``
a command line's ``--llm``, ``--layer``, option flags  ``source_spec(llm, layer, **options)``
a planning request: model or variant, layers, options  ``request_specs(llm, variant, layers, options)``
plans and a configuration name (None: plain plans)     ``spec_in_plans(plans, configuration, where)``
an LLM trainer class, its plans and configuration      ``spec_for_trainer(trainer_class, plans, configuration)``
a checkpoint nnU-Net saved (None: no LLM block)        ``spec_of_checkpoint(checkpoint)``
=====================================================  =========================================================

Writing a spec into plans is :mod:`.plans_entry`'s job; the block writes its own record into every checkpoint
(``LLMBlock.get_extra_state``).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass

from .layer_indices import parse_block_starts
from .models import DEFAULT_MODEL, MODELS, unknown_model
from .plans_entry import PLANS_KEY
from .spec import LLMSpec, LLMSpecError, check_layers
from .spec_differences import refuse_spec_mismatch
from .variants import load_variant


def model_spec(name: str, **options) -> LLMSpec:
    """The spec of a named model, with its config embedded (no download); ``options`` override the defaults."""
    if name not in MODELS:
        raise unknown_model(name)
    model = MODELS[name]
    options.setdefault("layer", model.block_start(options.get("depth", 1)))
    return LLMSpec(source=model.source, config=json.loads(json.dumps(model.config)), **options)


def variant_spec(model: str, variant: str) -> LLMSpec:
    """A built-in trainer's spec: the model's layer (or the variant's), wired as the variant says."""
    v = load_variant(variant)
    depth = v.options.get("depth", 1)
    layer = MODELS[model].block_start(depth) if v.layer is None else v.layer
    if isinstance(layer, str):
        (layer,) = parse_block_starts(layer, MODELS[model].num_layers, depth)
    return model_spec(model, layer=layer, **v.options)


def source_spec(llm: str, layer: int | None = None, *, any_layer: bool = False, **options) -> LLMSpec:
    """A spec from a command line's ``--llm`` (a named model, hub id, folder or file), ``--layer`` and option flags;
    any other source than a named model needs its layer. With ``any_layer`` (counting a block's parameters and
    FLOPs: ``info``) it needs none: it gets the first layer an extracted file holds, else layer 0 (a model's decoder
    layers share one shape)."""
    if any_layer and layer is None and llm not in MODELS:
        from .weights import extracted_layers, source_kind
        layer = extracted_layers(llm)[0] if source_kind(llm) == "extracted" else 0
    if layer is not None:
        options["layer"] = layer
    if llm in MODELS:
        return model_spec(llm, **options)
    if "layer" not in options:
        from .weights import source_kind
        source_kind(llm)  # neither a file, a folder nor a hub id (a misspelt model, e.g. lama-3.2-1b): named first
        raise LLMSpecError(f"--llm {llm!r} is not a named model, so --layer is required "
                           f"(named models: {', '.join(sorted(MODELS))}).")
    from .weights import resolve_spec
    return resolve_spec(LLMSpec(source=llm, **options))


@dataclass
class RequestedSpecs:
    """The specs of a planning request, one per layer, and the model they came from (as asked)."""

    llm: str
    specs: list[LLMSpec]
    num_layers: int | None


def request_specs(llm: str | None, variant: str | None, layers, options: dict) -> RequestedSpecs:
    """Variant options, overridden by ``options``, into one spec per layer. ``layers``: a list of indices, a text
    (``14``, ``0-15``, ``last``, ``all``) or None (the variant's, else the named model's, else the one layer an
    extracted file holds)."""
    chosen = load_variant(variant) if variant else None
    llm = llm or (chosen.llm if chosen else None) or DEFAULT_MODEL
    options = {**(chosen.options if chosen else {}), **options}
    source, config = _model(llm, options.get("revision"))
    n_layers = config.get("num_hidden_layers")
    from .weights import extracted_layers, source_kind
    held = extracted_layers(source) if source_kind(source) == "extracted" else None
    if held is not None and len(held) > 1:
        options.setdefault("depth", len(held))  # a file of several layers was extracted for a block of them
    depth = options.get("depth", 1)
    asked = layers if layers is not None else (chosen.layer if chosen else None)
    layers = asked if isinstance(asked, list) or asked is None else parse_block_starts(asked, n_layers, depth)
    if held is not None:
        layers = _layers_held(llm, held, layers, depth)
    elif layers is None and llm in MODELS:
        layers = [MODELS[llm].block_start(depth)]
    elif layers is None:
        raise LLMSpecError(f"--llm {llm!r} is not a named model ({', '.join(sorted(MODELS))}), so --layer is "
                           f"required" + (f": 0..{n_layers - 1}, or last / all." if n_layers else "."))
    check_layers(layers, n_layers, llm, " Pass --layer within that range.")
    specs = [LLMSpec(source=source, layer=i, config=copy.deepcopy(config), **options) for i in layers]
    if held is not None and specs[0].loads_pretrained:
        from .weights import load_extracted
        for i in sorted({j for s in specs for j in range(s.layer, s.layer + s.depth)}):
            load_extracted(source, i)  # its sha256: a damaged file is refused now, not by nnUNetv2_train
    if specs[0].lora_rank or options.get("lora_targets") is not None:  # a typo is caught with rank 0 too
        from .lora import check_lora_targets
        check_lora_targets(specs[0])
    return RequestedSpecs(llm, specs, n_layers)


def _layers_held(llm: str, held: list[int], layers: list[int] | None, depth: int) -> list[int]:
    """The layers asked of a file from ``extract``: only blocks it holds whole (default: its first)."""
    fitting = [i for i in held if all(j in held for j in range(i, i + depth))]
    layers = layers or fitting[:1]
    if not fitting or any(i not in fitting for i in layers):
        what = f"only layer {held[0]}" if len(held) == 1 else f"layers {held[0]}..{held[-1]}"
        asked_for = f"--layer {','.join(map(str, layers))}" + (f" with --depth {depth}" if depth > 1 else "")
        raise LLMSpecError(f"--llm {llm} holds {what} (a file from `nnunetv2-llm extract`), not {asked_for}. "
                           f"Drop --layer, or extract what you want (`nnunetv2-llm extract --layer N"
                           f"{' --depth D' if depth > 1 else ''}`).")
    return layers


def _model(llm: str, revision: str | None) -> tuple[str, dict]:
    """Source and model config of ``--llm``; named models carry their config (no download)."""
    if llm in MODELS:
        return MODELS[llm].source, copy.deepcopy(MODELS[llm].config)
    from .weights import canonical_source, read_config
    return canonical_source(llm), read_config(llm, revision)


def spec_in_plans(plans: dict, configuration: str, where: str) -> LLMSpec | None:
    """The spec stored in ``plans`` for ``configuration``, as written (None: plain nnU-Net); a bad entry is an error
    that says ``where`` it is. An inheriting configuration's spec is found by :func:`spec_for_trainer`, which takes
    the configuration as nnU-Net resolves it."""
    return _spec_in_configuration((plans.get("configurations") or {}).get(configuration), where)


def spec_for_trainer(trainer_class: type, plans: dict, configuration: dict, required: bool = True) -> LLMSpec | None:
    """The spec an LLM trainer class trains with these plans: its built-in ``model`` and ``variant`` (class
    attributes; plans that carry another spec are refused rather than silently ignored), else the plans' own.
    ``configuration`` is the configuration's entry as nnU-Net resolves it (``ConfigurationManager.configuration``):
    plain dicts and class attributes, so this stays free of nnU-Net. Plans without a spec are refused, or give None
    when not ``required`` (a sweep lists such jobs; the job itself then refuses them)."""
    name = plans.get("plans_name")
    dataset = plans.get("dataset_name")
    where = (f"plans {name!r} of {dataset} (nnUNet_preprocessed/{dataset}/{name}.json for training, the results "
             f"folder's plans.json for prediction)")
    if hasattr(trainer_class, "llm_spec"):
        raise LLMSpecError(
            f"{trainer_class.__name__} defines llm_spec, which nnunetv2-llm 0.4 no longer calls (it would train "
            f"another spec than yours without a word). Set the class attributes model (a named model) and variant "
            f"(a variant name or a variant file of your own) instead, or write the spec into plans with "
            f"`nnunetv2-llm plan` and train nnUNetTrainerLLM with -p.")
    planned = _spec_in_configuration(configuration, where)
    if getattr(trainer_class, "variant", ""):
        spec = variant_spec(trainer_class.model, trainer_class.variant)
        if planned is not None:
            refuse_spec_mismatch(
                spec, planned,
                f"{trainer_class.__name__} trains its built-in {trainer_class.model} layer, but plans {name!r} carry "
                f"another LLM spec ({{differences}}). Train these plans with -tr nnUNetTrainerLLM -p {name}, or drop "
                f"-p to train the built-in spec.", "built-in", "plans")
        return spec
    if planned is None and required:
        raise LLMSpecError(
            f"{where} carry no LLM spec (configurations[...]['{PLANS_KEY}']). Write LLM plans with "
            "`nnunetv2-llm plan -d DATASET --llm MODEL` and pass them with -p, or use a built-in trainer such as "
            "nnUNetTrainerSmolLM2 or nnUNetTrainerLLaMA (`nnunetv2-llm trainers` lists them).")
    return planned


def spec_of_checkpoint(checkpoint: dict, plans_too: bool = False) -> LLMSpec | None:
    """The spec a checkpoint's LLM block recorded (its ``llm._extra_state``; None: no LLM block, or a block of 0.1
    that recorded none). With ``plans_too`` a checkpoint without that record gives the spec of the plans in its
    ``init_args`` (what ``-pretrained_weights`` compares a file of any version with)."""
    from .block import EXTRA_STATE, LLMBlock
    record = checkpoint["network_weights"].get(f"llm.{EXTRA_STATE}")
    if record is not None:
        return LLMBlock.recorded_spec(record)
    if not plans_too:
        return None
    init = checkpoint.get("init_args") or {}
    return spec_in_plans(init.get("plans") or {}, init.get("configuration"), "the checkpoint's init_args")


def _spec_in_configuration(configuration: dict | None, where: str) -> LLMSpec | None:
    """The spec stored in one configuration of nnU-Net plans (None: plain nnU-Net); a bad entry is an error that
    says ``where`` it is."""
    entry = (configuration or {}).get(PLANS_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise LLMSpecError(f"the '{PLANS_KEY}' entry of {where} is {entry!r}, not a JSON object; rewrite it with "
                           f"`nnunetv2-llm plan`.")
    try:
        return LLMSpec.from_dict(entry)
    except LLMSpecError as e:
        raise LLMSpecError(f"the '{PLANS_KEY}' entry of {where}: {e}") from None
