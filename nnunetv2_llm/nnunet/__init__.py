"""Everything that meets nnU-Net: its environment, trained results, plans, trainers and generated datasets.

environment (where nnU-Net finds our trainers) -> results (a trained run: its folder, folds and checkpoints)
-> networks (the configured U-Net from plans) -> planning (LLM plans from nnU-Net plans) -> trainers
(the nnUNetTrainer subclasses) and pretrained (``-pretrained_weights`` for LLM nets).
"""
