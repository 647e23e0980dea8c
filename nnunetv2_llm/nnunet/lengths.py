"""The training lengths every trainer of this package comes in: ``nnUNetTrainerLLaMA_5epochs`` and so on."""

# suffix -> (epochs, iterations per epoch; None keeps nnU-Net's 250). nnU-Net's own epoch-only names, and short
# runs for smoke tests and CPU benchmarks.
LENGTHS = {"_1epoch": (1, None), "_5epochs": (5, None), "_10epochs": (10, None), "_20epochs": (20, None),
           "_50epochs": (50, None), "_100epochs": (100, None),
           "_2epochs_5its": (2, 5), "_10epochs_20its": (10, 20), "_20epochs_25its": (20, 25)}
