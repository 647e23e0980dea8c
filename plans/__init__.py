"""Variants: JSON files of LLM spec options, ``nnunetv2-llm plan --variant NAME`` (NAME is the file stem).

A variant is model-independent (the model comes from ``--llm``); the built-in trainers are derived from these
files (``"trainer"``: the suffix of ``nnUNetTrainer<Model><suffix>``). See ``nnunetv2_llm.core.variants``.
"""
