"""``nnUNetv2_train -pretrained_weights`` for LLM nets, chained in front of whatever loader was installed before.

nnUNetv2_train calls the loader it imported and offers no hook, so an LLM trainer, when constructed, puts ours in
front of it (once; nnU-Net's own, or another plugin's, keeps serving every net that is not an LLM net). Importing
this package patches nothing.
"""
from __future__ import annotations

import torch

from ..core.block import EXTRA_STATE, LLMBlock
from ..core.files import check_checkpoint_file, load_checkpoint
from ..core.network import LLMUNet, unwrap
from ..core.spec import LLMSpec, LLMSpecError, describe_differences, spec_differences, spec_in_plans

_previous_loader = None


def install() -> None:
    """Chain :func:`load_pretrained_weights` in front of nnUNetv2_train's current loader; idempotent."""
    global _previous_loader
    import nnunetv2.run.run_training as run_training
    current = run_training.load_pretrained_weights
    if current is load_pretrained_weights:
        return
    _previous_loader = current
    run_training.load_pretrained_weights = load_pretrained_weights


def checkpoint_spec(checkpoint: dict) -> LLMSpec | None:
    """The LLM spec a checkpoint was trained with: its block's extra state, else the plans in its init_args."""
    state = checkpoint["network_weights"].get(f"llm.{EXTRA_STATE}")
    if state is not None:
        return LLMBlock.recorded_spec(state)
    init = checkpoint.get("init_args") or {}
    return spec_in_plans(init.get("plans") or {}, init.get("configuration"), "the checkpoint's init_args")


def load_pretrained_weights(network: torch.nn.Module, fname: str, verbose: bool = False) -> None:
    """``-pretrained_weights`` for LLM nets; other nets go to the loader that was installed before this one.

    Every key but the segmentation heads is checked and loaded as nnU-Net does. The block's ``llm.*``
    tensors come from the file only when the file was trained with the same LLM block (same computation
    fields of the spec); otherwise, e.g. from a plain nnU-Net run, the net keeps the layer ``initialize()``
    loaded, and says so.
    """
    check_checkpoint_file(fname)
    mod = unwrap(network)
    if not isinstance(mod, LLMUNet):
        if _previous_loader is None:
            from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as nnunet_loader
            return nnunet_loader(network, fname, verbose)
        return _previous_loader(network, fname, verbose)
    checkpoint = load_checkpoint(fname)
    pretrained = checkpoint["network_weights"]
    file_spec = checkpoint_spec(checkpoint)
    differences = None if file_spec is None else spec_differences(mod.llm.spec, file_spec)
    take_llm = file_spec is not None and not differences
    own = mod.state_dict()
    for key, value in own.items():
        if ".seg_layers." in key or key.startswith("llm."):
            continue
        if key not in pretrained or pretrained[key].shape != value.shape:
            raise LLMSpecError(
                f"{fname} does not fit this network: key {key!r} is "
                f"{'missing' if key not in pretrained else f'of shape {tuple(pretrained[key].shape)}'}, the "
                f"network has {tuple(value.shape)}. Pretrain with the same plans and configuration.")
    loaded = {k: v for k, v in pretrained.items() if k in own and ".seg_layers." not in k
              and (take_llm or not k.startswith("llm.")) and not k.endswith(EXTRA_STATE)}
    own.update(loaded)
    mod.load_state_dict(own)
    if take_llm:
        why = "the file's LLM block was trained with the same spec"
    elif file_spec is None:
        why = "the file has no LLM block (a plain nnU-Net run): kept the net's own freshly loaded block"
    else:
        why = (f"the file's LLM block differs ({describe_differences(differences, 'this net', 'the file')}): kept "
               f"the net's own freshly loaded block")
    print(f"Loaded {len(loaded)} tensors from {fname}; {why}.")
    if verbose:
        for key in sorted(loaded):
            print(f"  {key}: {tuple(loaded[key].shape)}")
