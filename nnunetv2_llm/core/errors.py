"""The one base class of the errors this package reports to users, and the "did you mean" of their messages."""
from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input or an environment that is not ready: the message names the value, what is accepted and the fix.

    ``nnunetv2-llm`` prints these as one line and exits with code 2; anything else is a bug and keeps
    its traceback.
    """


def did_you_mean(value: str, choices) -> str:
    """`` Did you mean X?`` for the closest of ``choices`` to a mistyped ``value`` (empty when none is close)."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3, cutoff=0.6)
    if not close:
        return ""
    return f" Did you mean {' or '.join(repr(c) for c in close)}?"
