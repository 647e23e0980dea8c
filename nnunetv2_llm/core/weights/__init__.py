"""Reading one decoder layer's weights (and the model config) without loading the whole LLM.

Sources, in the order they are recognised (:mod:`.sources`), each read by one reader (:mod:`.dispatch`):
  ``package:<distribution>``    a GGUF/safetensors file shipped inside an installed Python package
  ``/path/file.gguf``           a GGUF file (:mod:`.gguf_file`: dequantized; llama.cpp's q/k row order undone)
  ``/path/layer.safetensors``   a layer file written by ``nnunetv2-llm extract`` (:mod:`.layer_file`)
  ``/path/folder``              a Hugging Face checkpoint folder (:mod:`.checkpoint`: config.json + safetensors)
  ``org/name``                  a Hugging Face hub repo (:mod:`.hub`): of a single ``model.safetensors`` only its
                                header and the layer's byte ranges are read (then cached as a layer file); of a
                                sharded one config.json, the index and the shard(s) holding the layer
The final norm is read by the same readers as a layer; :mod:`.pins` checks a spec's sha256, :mod:`.extract` writes
``extract``'s file.
"""
from .checkpoint import INDEX_NAME, SINGLE_NAME, HubUnreachableError, layer_shards
from .dispatch import load_final_norm, load_layer, load_layers, per_layer, read_config, reader, resolve_spec
from .extract import check_extract_output, extract_layer
from .hub import LAYER_CACHE, NORM_CACHE, hub_layer_cache
from .layer_file import (EXTRACT_FORMAT, extracted_layers, load_extracted, read_extracted_metadata, write_extracted,
                         written_by_extract)
from .pins import check_pin, load_pinned, pinned_hashes
from .sources import canonical_source, local_source_path, source_kind
from .tensors import FinalNorm, LayerWeights, LLMWeightsError, final_norm_key, no_such_layer, tensors_sha256

__all__ = ["EXTRACT_FORMAT", "INDEX_NAME", "LAYER_CACHE", "NORM_CACHE", "SINGLE_NAME", "FinalNorm",
           "HubUnreachableError", "LLMWeightsError", "LayerWeights", "canonical_source", "check_extract_output",
           "check_pin", "extract_layer", "extracted_layers", "final_norm_key", "hub_layer_cache", "layer_shards",
           "load_extracted", "load_final_norm", "load_layer", "load_layers", "load_pinned", "local_source_path",
           "no_such_layer", "per_layer", "pinned_hashes", "read_config", "read_extracted_metadata", "reader",
           "resolve_spec", "source_kind", "tensors_sha256", "write_extracted", "written_by_extract"]
