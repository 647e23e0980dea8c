"""Where the spec lives in nnU-Net plans, ``configurations[c][PLANS_KEY]``, and how it is written there. Reading it
back is :func:`~nnunetv2_llm.core.resolve.spec_in_plans` (and, for a trainer, ``spec_for_trainer``)."""
from __future__ import annotations

from .spec import LLMSpec

# Where the spec lives in nnU-Net plans: configurations[c][PLANS_KEY] (written here, read in core/resolve.py only).
PLANS_KEY = "llm"


def configurations_with_spec(plans: dict) -> list[str]:
    """The configurations of ``plans`` that carry an LLM spec (none: plain nnU-Net plans)."""
    return [name for name, conf in (plans.get("configurations") or {}).items()
            if isinstance(conf, dict) and PLANS_KEY in conf]


def put_spec_in_configuration(configuration: dict, spec: LLMSpec) -> None:
    configuration[PLANS_KEY] = spec.to_dict()


def put_spec_in_plans(plans: dict, configuration: str, spec: LLMSpec) -> None:
    """Write ``spec`` into ``plans`` for ``configuration``."""
    put_spec_in_configuration(plans["configurations"][configuration], spec)
