"""Specs from each kind of input: a named model, a model with a variant (the built-in trainers), a command line's
``--llm``/``--layer`` and flags, and a planning request (several layers). Plans and checkpoints hold a spec as a
dict: :func:`~nnunetv2_llm.core.spec.spec_in_plans` and :meth:`~nnunetv2_llm.core.block.LLMBlock.recorded_spec`
read it back.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass


from .models import DEFAULT_MODEL, MODELS, unknown_model
from .spec import LLMSpec, LLMSpecError, check_layers, parse_block_starts
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


def source_spec(llm: str, layer: int | None = None, **options) -> LLMSpec:
    """A spec from a command line's ``--llm`` (a named model, hub id, folder or file), ``--layer`` and option flags;
    any other source than a named model needs its layer."""
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


def structure_spec(llm: str, layer: int | None = None, **options) -> LLMSpec:
    """As :func:`source_spec`, for counting a block's parameters and FLOPs (``info``): without ``--layer`` a source
    other than a named model gets the first layer an extracted file holds, else layer 0 (a model's decoder layers
    share one shape)."""
    if layer is None and llm not in MODELS:
        from .weights import extracted_layers, source_kind
        layer = extracted_layers(llm)[0] if source_kind(llm) == "extracted" else 0
    return source_spec(llm, layer, **options)


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
