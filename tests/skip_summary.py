"""One closing line for `make test`: how many tests skipped here and why (the reasons pytest's
short summary prints above its own closing line), so a skip that CI would not make (shellcheck,
which .ci/run installs) is the last thing read. Prints nothing when nothing skipped.

    python tests/skip_summary.py JUNIT.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def skip_line(junit_xml: Path) -> str:
    """``make test: 2 skipped here: REASON (2)`` from a pytest --junitxml file; "" if none."""
    if not junit_xml.is_file():
        return ""
    reasons = Counter(
        (skipped.get("message") or "no reason given").strip()
        for skipped in ET.parse(junit_xml).iter("skipped")
        if skipped.get("type") != "pytest.xfail"
    )
    if not reasons:
        return ""
    said = "; ".join(f"{why} ({n})" for why, n in reasons.most_common())
    return f"make test: {sum(reasons.values())} skipped here: {said}"


if __name__ == "__main__":
    line = skip_line(Path(sys.argv[1]))
    if line:
        print(line)
