"""The ``nnunetv2-llm`` commands: argument parsing and printing only; the work is done by library functions that
take names, specs and paths. Building the parser imports nothing heavy (no torch), so ``--help`` is quick."""
