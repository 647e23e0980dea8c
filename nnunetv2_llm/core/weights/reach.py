"""Can this machine reach the hub? Asked once per process, in seconds, before anything is fetched from it.

Without this, an unreachable hub costs about a minute of huggingface_hub's retries per file, and the error names
a token and a licence even for a model that is not gated. Only a model absent from the local caches asks.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class HubAccess:
    """Whether the hub answers, and why not: ``offline`` (HF_HUB_OFFLINE, never asked) or the connection error."""

    reachable: bool
    endpoint: str
    reason: str = ""


def offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    from huggingface_hub import constants
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


@functools.cache
def _probe(url: str) -> HubAccess:
    """One HTTP request, no retries: any answer (even an error status) means the hub is reachable."""
    from huggingface_hub import get_session
    try:
        get_session().head(url, timeout=PROBE_TIMEOUT_S, follow_redirects=False)
    except Exception as e:  # connection refused, DNS, timeout, proxy: all mean "cannot fetch from here"
        text = str(e).strip().splitlines()
        return HubAccess(False, url, f"{type(e).__name__}: {text[0] if text else 'no answer'}")
    return HubAccess(True, url)


def hub_access() -> HubAccess:
    """Whether the hub can be asked now (HF_HUB_OFFLINE: never asked; else one probe per endpoint and process)."""
    if offline():
        return HubAccess(False, endpoint(), "offline mode is on (HF_HUB_OFFLINE=1), so the hub is not asked")
    return _probe(endpoint())


def named_model(repo_id: str) -> str | None:
    from ..models import MODELS
    return next((name for name, m in MODELS.items() if m.source == repo_id), None)


def gated_advice(repo_id: str) -> str:
    """What a gated model needs where the hub is reachable; empty for a model that is not gated."""
    from ..models import MODELS
    name = named_model(repo_id)
    if name is None or not MODELS[name].gated:
        return ""
    return (f"{repo_id} is gated: the account must have accepted its licence at https://huggingface.co/{repo_id} "
            f"and HF_TOKEN must hold a token of that account")


def unreachable_advice(repo_id: str) -> str:
    """The ways to a model that is not cached here when the hub cannot be reached, fitting the model."""
    name = named_model(repo_id) or repo_id
    gated = gated_advice(repo_id)
    return (f"Where the hub is reachable{' (' + gated + ')' if gated else ''}, run `nnunetv2-llm extract --llm {name} "
            f"-o layer.safetensors` and copy the file here; then `nnunetv2-llm plan -d DATASET --llm "
            f"layer.safetensors -o NAME` and train with `nnUNetv2_train DATASET CONFIG FOLD -tr nnUNetTrainerLLM -p "
            f"NAME` (nnunetv2-llm's own commands take --llm layer.safetensors directly). Or copy that machine's hub "
            f"cache (HF_HOME). The named model smollm2-135m needs no hub.")


def unreachable_message(repo_id: str, what: str, access: HubAccess) -> str:
    return (f"hub model {repo_id!r}: {what} is not in the local cache and the hub ({access.endpoint}) cannot be "
            f"reached: {access.reason}. {unreachable_advice(repo_id)}")
