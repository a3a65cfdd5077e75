"""Regenerate ``tests/golden/tiny_smoke.json`` from a fresh smoke run (see ``smoke.py``)::

    python -m tests.golden.update          # from the repository root; ~1 min on 2 CPU cores

Only after a deliberate change of the math or of the smoke run: commit the new file with the
change and say in the commit message why the metrics moved.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.golden.smoke import GOLDEN, compare, golden_rows, run_smoke


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="golden-") as work:
        rows = golden_rows(run_smoke(Path(work)))
    if GOLDEN.is_file():
        changes = compare(rows, json.loads(GOLDEN.read_text()))
        print("\n".join(changes) if changes else "no change beyond the tolerances")
    GOLDEN.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
