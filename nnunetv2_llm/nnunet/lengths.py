"""The training lengths every trainer of this package comes in: ``nnUNetTrainerLLaMA_5epochs`` and so on."""

# suffix -> (epochs, iterations per epoch; None keeps nnU-Net's 250). nnU-Net's own epoch-only names, and short
# runs for smoke tests and CPU benchmarks.
LENGTHS = {"_1epoch": (1, None), "_5epochs": (5, None), "_10epochs": (10, None), "_20epochs": (20, None),
           "_50epochs": (50, None), "_100epochs": (100, None),
           "_2epochs_5its": (2, 5), "_10epochs_20its": (10, 20), "_20epochs_25its": (20, 25)}

# nnU-Net's own length (nnUNetTrainer.__init__): epochs, training iterations per epoch.
NNUNET_LENGTH = (1000, 250)


def run_length(trainer: str) -> tuple[int, int]:
    """The epochs and iterations per epoch a trainer trains, from its name's length suffix (ours and nnU-Net's short
    trainers share them); any other trainer is taken to train nnU-Net's full length."""
    for suffix, (epochs, iterations) in LENGTHS.items():
        if trainer.endswith(suffix):
            return epochs, iterations or NNUNET_LENGTH[1]
    return NNUNET_LENGTH
