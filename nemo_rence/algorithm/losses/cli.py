"""``nemo-rence losses``: the table of registered losses, their paper and equation."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from nemo_rence.algorithm import losses

_COLUMNS = (("loss", "name"), ("paper", "paper"), ("equation", "equation"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print a JSON list (name, paper, equation, defaults)"
    )


def rows() -> list[dict[str, Any]]:
    """One dict per registered loss: name, paper, equation, config class and its defaults."""
    out = []
    for name in losses.available():
        spec = losses.get(name)
        out.append(
            {
                "name": name,
                "paper": spec.paper,
                "equation": spec.equation,
                "config": spec.config_cls.__name__,
                "defaults": dataclasses.asdict(spec.config_cls()),
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    widths = [max(len(title), *(len(r[key]) for r in table)) for title, key in _COLUMNS]
    print("  ".join(t.ljust(w) for (t, _), w in zip(_COLUMNS, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in table:
        cells = (r[key].ljust(w) for (_, key), w in zip(_COLUMNS, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0
