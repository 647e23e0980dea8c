"""``nnUNetv2_train -pretrained_weights`` for LLM nets, chained in front of whatever loader was installed before.

nnUNetv2_train calls the loader it imported and offers no hook, so an LLM trainer, when constructed, puts ours in
front of it (once; nnU-Net's own, or another plugin's, keeps serving every net that is not an LLM net). Importing
this package patches nothing.
"""
from __future__ import annotations

import torch

from ..core.block import EXTRA_STATE
from ..core.files import check_checkpoint_file, load_checkpoint
from ..core.network import LLMUNet, unwrap
from ..core.resolve import spec_of_checkpoint
from ..core.spec import LLMSpecError
from ..core.spec_differences import describe_differences, spec_differences

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


def _input_channels_differ(key: str, theirs: tuple, ours: tuple) -> bool:
    """The first convolution of the encoder differs only in its input channels: another dataset's modalities."""
    return (key.startswith("encoder.stages.0.") and key.endswith("weight") and len(theirs) == len(ours) > 2
            and theirs[1] != ours[1] and theirs[:1] + theirs[2:] == ours[:1] + ours[2:])


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
    file_spec = spec_of_checkpoint(checkpoint, plans_too=True)
    differences = None if file_spec is None else spec_differences(mod.llm.spec, file_spec)
    take_llm = file_spec is not None and not differences
    own = mod.state_dict()
    for key, value in own.items():
        if ".seg_layers." in key or key.startswith("llm."):
            continue
        if key in pretrained and _input_channels_differ(key, tuple(pretrained[key].shape), tuple(value.shape)):
            raise LLMSpecError(
                f"{fname} was trained on {pretrained[key].shape[1]} input channel(s); this dataset has "
                f"{value.shape[1]} (key {key!r}). -pretrained_weights needs the same input channels: pretrain on a "
                f"dataset with {value.shape[1]} channel(s), or train without -pretrained_weights.")
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
    # The trainer's log (nnU-Net's print_to_log_file, which prints too) when the trainer gave the net one.
    getattr(mod, "report", print)(f"Loaded {len(loaded)} tensors from {fname}; {why}.")
    if verbose:
        for key in sorted(loaded):
            print(f"  {key}: {tuple(loaded[key].shape)}")
