"""Point ``nnUNet_extTrainer`` at this folder (``nnunetv2-llm doctor`` prints the line).

nnU-Net imports each module here under a top-level name and unloads it after the lookup, so the
modules only re-export the classes that live in ``nnunetv2_llm.nnunet.trainers``.
"""
