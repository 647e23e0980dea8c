"""nnU-Net's naming of an input image: ``CASE_XXXX`` plus the file ending, ``XXXX`` the channel."""
from __future__ import annotations

import re

CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
