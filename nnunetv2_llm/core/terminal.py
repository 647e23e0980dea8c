"""How this package writes to a terminal: one rich console, as wide as the terminal or a fixed width when piped."""
from __future__ import annotations

import sys


def console(width: int = 120):
    """A rich console: the terminal's width when interactive, ``width`` columns when piped or logged."""
    from rich.console import Console
    return Console(highlight=False) if sys.stdout.isatty() else Console(highlight=False, width=width)
