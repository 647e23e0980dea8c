"""Which trained fold the feature analysis reads: finding one fold's checkpoint of a trained variant (with the fix
when it is missing) and loading its network the way ``nnUNetv2_predict`` does."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError, did_you_mean
from ..core.files import check_checkpoint_file
from ..nnunet.datasets import require_folder
from ..nnunet.results import TrainedResults, trained_names, trained_results


class AnalysisError(UserError, ValueError):
    """Trained results, a fold or a split cannot be analysed; the message says what exists and how to fix it."""


@dataclass
class AnalysedFold:
    """One trained fold of a variant, and the checkpoint to analyse."""

    variant: TrainedResults
    fold: int | str
    checkpoint: str

    @property
    def label(self) -> str:
        return self.variant.label

    @property
    def fold_folder(self) -> Path:
        return self.variant.fold_folder(self.fold)


def find_analysed_fold(name: str, trainer: str, plans: str, configuration: str, fold,
                       checkpoint: str) -> AnalysedFold:
    """The fold's checkpoint of the variant ``trainer``/``plans``; refused, with what exists, when missing."""
    require_folder("nnUNet_results")
    variant = trained_results(name, trainer, plans, configuration)
    analysed = AnalysedFold(variant, fold, checkpoint)
    if not variant.folder.is_dir():
        found = trained_names(variant.folder.parent, configuration, plans)
        raise AnalysisError(f"-tr {trainer} -p {plans}: no trained results in {variant.folder}. Trained results of -c "
                            f"{configuration} that finished an epoch: {', '.join(found) or 'none'}."
                            f"{did_you_mean(trainer, found)}")
    if not variant.checkpoint(fold, checkpoint).is_file():
        folder = variant.folder
        found = sorted(str(p.relative_to(folder.parent)) for p in folder.parent.glob(f"*__{configuration}/fold_*/"
                                                                                      f"{checkpoint}"))
        raise AnalysisError(
            f"no {checkpoint} in {analysed.fold_folder}: train it first ({variant.train_command(fold)}) or pick a "
            f"trained fold (found: {found or 'none'}).")
    return analysed


def load_network(analysed: AnalysedFold, device):
    """The trained net as nnU-Net's predictor builds it (plans.json + checkpoint), in eval mode."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from ..nnunet.environment import ensure_trainer_lookup
    from ..core.network import unwrap
    ensure_trainer_lookup()
    check_checkpoint_file(analysed.fold_folder / analysed.checkpoint)
    with contextlib.redirect_stdout(io.StringIO()):  # the predictor narrates the trainer lookup
        predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=device,
                                    verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(analysed.variant.folder), use_folds=(analysed.fold,),
                                                       checkpoint_name=analysed.checkpoint)
    network = unwrap(predictor.network).to(device).eval()
    return network, predictor.configuration_manager
