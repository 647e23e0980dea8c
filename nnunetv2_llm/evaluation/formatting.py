"""Numbers as the report's tables print them."""
from __future__ import annotations

import math


def fmt(x, digits=3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
