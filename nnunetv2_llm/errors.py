"""The one base class of the errors this package reports to users."""


class UserError(Exception):
    """Bad input or an environment that is not ready: the message names the value, what is accepted and the fix.

    ``nnunetv2-llm`` prints these as one line and exits with code 2; anything else is a bug and keeps
    its traceback.
    """
