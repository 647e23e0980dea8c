"""The calibration tests' generative model is benchmarks/calibration.py's (one home; a script folder, not a package,
so it is loaded by path): folds that share training cases, run noise, case effects and case x procedure
interaction."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"
_spec = importlib.util.spec_from_file_location("calibration_benchmark", _PATH)
calibration = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = calibration  # dataclasses resolve their module by name
_spec.loader.exec_module(calibration)
