"""Whether a trained model can be exported: every chosen fold finished training and nnU-Net's final validation and
holds what nnU-Net's exporter copies, and every checkpoint loads and holds the LLM block the plans describe.
"""
from __future__ import annotations

from ..core.files import load_checkpoint
from ..nnunet.results import TrainedResults
from .runtime import ExportError


def check_checkpoints(variant: TrainedResults, folds: list) -> str:
    """Load every exported fold's checkpoint (a damaged one is refused, naming it); an LLM model must pin its tensors
    (sha256) and every fold must have trained with the plans' spec. Returns the line the submission's README states
    about the model's LLM layer."""
    from ..core.resolve import spec_of_checkpoint
    from ..core.spec_differences import refuse_spec_mismatch
    plans_file = variant.folder / "plans.json"
    spec = variant.llm_spec()
    if spec is not None and spec.loads_pretrained and spec.sha256 is None:
        raise ExportError(
            f"{plans_file} records no sha256 for the LLM layer (layer {spec.layer} of {spec.source}), so nobody can "
            f"tell which tensors this model was trained with. Restore the record from the checkpoint with "
            f"`{variant.train_command(folds[0], ' --val')}` (version 0.1 checkpoints carry none: retrain "
            f"the folds), then export again.")
    for fold in folds:
        path = variant.checkpoint(fold)
        checkpoint = load_checkpoint(path)
        state = checkpoint.get("network_weights") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict) or checkpoint.get("trainer_name") != variant.trainer:
            raise ExportError(f"{path} is not an nnU-Net checkpoint of {variant.trainer} (no network weights or "
                              f"another trainer's); retrain fold {fold} (`{variant.train_command(fold)}`).")
        if spec is None:
            continue
        trained = spec_of_checkpoint(checkpoint)
        if trained is None:
            raise ExportError(f"{path} carries no LLM block: it was not trained with the plans in {plans_file}. "
                              f"Retrain fold {fold} (`{variant.train_command(fold)}`).")
        refuse_spec_mismatch(spec, trained,
                             f"fold {fold} trained another LLM block than {plans_file} describes ({{differences}}); "
                             f"retrain the fold or restore the plans it trained with.", "plans", "checkpoint",
                             error=ExportError)
    if spec is None:
        return "Plain nnU-Net model (no LLM block)."
    return (f"LLM layer {spec.layer} of {spec.source}, pinned by sha256 {spec.sha256}; every exported fold's "
            f"checkpoint was checked against it.")


def check_exportable_folds(variant: TrainedResults, folds: list) -> None:
    """What nnU-Net's exporter reads of each fold must exist; say which command writes what is missing."""
    for fold in folds:
        fold_dir = variant.fold_folder(fold)
        variant.require_done(fold)  # a final checkpoint and nnU-Net's final validation, which the exporter copies
        if not (fold_dir / "progress.png").is_file():
            raise ExportError(f"fold {fold} of {variant.folder.name} lacks progress.png, which nnU-Net's exporter "
                              f"copies and only training writes; copy it back from where the fold trained, or "
                              f"retrain the fold.")
