"""nnunetv2-llm: a frozen pretrained LLM decoder layer at the bottleneck of nnU-Net's U-Nets (LLM4Seg)."""
from .environment import trainers_folder
from .spec import PRESETS, LLMSpec, LLMSpecError, preset_spec
from .weights import LLMWeightsError, LayerWeights, extract_layer, load_extracted, load_layer, read_config

__version__ = "0.1.0"
__all__ = ["PRESETS", "LLMSpec", "LLMSpecError", "LLMWeightsError", "LayerWeights", "extract_layer",
           "load_extracted", "load_layer", "preset_spec", "read_config", "resolve_spec", "trainers_folder"]


def resolve_spec(spec: LLMSpec) -> LLMSpec:
    """The spec with its model config filled in (from the preset, a local file or the hub)."""
    from .weights import canonical_source
    spec = spec.replace(source=canonical_source(spec.source))
    if spec.config is not None:
        return spec
    return spec.replace(config=read_config(spec.source, spec.revision))
