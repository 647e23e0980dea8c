"""``nnunetv2-llm extract``: which ``-o`` file may be written, and writing the layer(s) there."""
from __future__ import annotations

import os
from pathlib import Path

from ..spec import LLMSpec
from .dispatch import load_final_norm, load_layers, read_config
from .layer_file import load_extracted, write_extracted, written_by_extract
from .tensors import LLMWeightsError


def check_extract_output(output: str, overwrite: bool, echo=print) -> Path:
    """The file ``extract`` may write: a new .safetensors file, or (with --overwrite) a layer file extract wrote,
    intact or damaged. Anything else is never replaced."""
    out = Path(output).expanduser().resolve()
    if out.is_dir():
        raise LLMWeightsError(f"-o {output} is a folder; name the file to write, e.g. -o {out / 'layer.safetensors'}.")
    if out.suffix != ".safetensors":
        raise LLMWeightsError(f"-o {output}: the layer file must end in .safetensors (that is how --llm recognises "
                              f"it), e.g. -o {out.with_suffix('.safetensors')}.")
    if not out.exists():
        return out
    if not overwrite:
        raise LLMWeightsError(f"-o {output} exists; pass --overwrite to replace it, or choose another name.")
    ours = written_by_extract(out)
    if not ours:
        what = "its header is unreadable" if ours is None else "another writer's safetensors file (a model's weights?)"
        raise LLMWeightsError(f"-o {output} exists and is not a layer file written by `nnunetv2-llm extract` ({what}); "
                              f"refusing to replace it even with --overwrite. Choose another name, or delete it "
                              f"yourself if it is a damaged layer file.")
    try:
        load_extracted(out)
    except LLMWeightsError:
        echo(f"-o {output} is a damaged layer file of `nnunetv2-llm extract` (its tensors do not read back or do "
             f"not match their sha256); --overwrite replaces it.")
    return out


def extract_layer(spec: LLMSpec, out_path: str | os.PathLike, echo=print) -> Path:
    """Write the spec's layer(s) (``depth``) plus its config, and the final norm when ``spec.final_norm``, into a
    standalone safetensors file (atomically)."""
    spec = spec if spec.config is not None else spec.replace(config=read_config(spec.source, spec.revision))
    norm = load_final_norm(spec, echo=echo) if spec.final_norm else None
    return write_extracted(load_layers(spec, echo=echo), out_path, norm)
