"""Sweeps: a grid of stock ``nnUNetv2_train`` jobs, run on this machine or as a SLURM array (submitit), resumable.

grid (what to train: validated, LLM plans written, weights fetched once) -> jobs (one fold's training: resumed,
locked, its state recorded) -> backends (local executor or SLURM); estimate (what the sweep will cost, measured
before it starts).
"""
