"""Challenge submissions: build a folder that becomes an offline container (build), the entry point that runs inside
it (runtime: the only module the container imports), and the offline check that proves it without Docker (check).

build (``export_submission``) uses exportable (whether the chosen folds can be exported), versions (the package
versions the container pins), templates (its Dockerfile, predict.py and README) and hashes (what export.json pins
by sha256, which check verifies).
"""
