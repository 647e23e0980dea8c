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


def report_user_errors_alone() -> None:
    """In nnU-Net's own processes (nnUNetv2_train, nnUNetv2_predict), where our trainer refuses bad input, a
    :class:`UserError` reaches the user as its message alone (exit status 1, as for any uncaught exception), not
    behind a traceback through nnU-Net's code. nnU-Net has no hook of its own for this, so ``sys.excepthook`` is
    chained: every other exception goes to the hook that was there before, unchanged. Installing it twice is a no-op."""
    import sys
    previous = sys.excepthook
    if getattr(previous, "reports_user_errors", False):
        return

    def hook(kind, value, traceback):
        if isinstance(value, UserError):
            print(f"error: {value}", file=sys.stderr)
        else:
            previous(kind, value, traceback)

    hook.reports_user_errors = True
    sys.excepthook = hook
