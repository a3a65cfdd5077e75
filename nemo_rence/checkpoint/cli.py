"""``nemo-rence convert ...``: checkpoint conversion from the command line.

Subcommands (each prints a summary: tensors moved, bytes, output path, seconds)::

    convert hf-to-megatron --hf-dir HF --out CKPT      HF safetensors dir -> megatron dist ckpt
    convert megatron-to-hf --ckpt CKPT --out HF        megatron dist ckpt (any TP/PP) -> HF dir
    convert gguf-to-hf [--gguf FILE] --out HF          GGUF (default: shipped SmolLM2) -> HF dir
    convert nemo-to-hf --nemo SRC --out HF             .nemo / NeMo 2 dir -> HF dir
    convert hf-to-nemo --hf-dir HF --out OUT           HF -> NeMo 2 dir, or .nemo if OUT ends so

A megatron dist checkpoint of this package is a NeMo-2-style directory (``checkpoint.dist``), so
``hf-to-megatron`` / ``megatron-to-hf`` and the NeMo 2 paths share one format. Wire with::

    sub = subparsers.add_parser("convert"); add_arguments(sub); sub.set_defaults(func=run)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

_COMMANDS = ("hf-to-megatron", "megatron-to-hf", "gguf-to-hf", "nemo-to-hf", "hf-to-nemo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``convert`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="convert_command", metavar="{" + ",".join(_COMMANDS) + "}")
    sub.required = True

    p = sub.add_parser("hf-to-megatron", help="HF safetensors dir -> megatron dist checkpoint")
    p.add_argument("--hf-dir", required=True, help="HF model dir (config.json + *.safetensors)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument(
        "--make-vocab-size-divisible-by", type=int, default=128,
        help="pad the vocabulary to a multiple of this (TP sizes must divide it)",
    )  # fmt: skip

    p = sub.add_parser("megatron-to-hf", help="megatron dist checkpoint -> HF safetensors dir")
    p.add_argument("--ckpt", required=True, help="checkpoint dir (context/ + weights/)")
    p.add_argument("--out", required=True, help="output HF directory")

    p = sub.add_parser("gguf-to-hf", help="GGUF file -> HF dir (fp32, dequantised)")
    p.add_argument("--gguf", default=None, help="GGUF file (default: the shipped SmolLM2-135M)")
    p.add_argument("--out", required=True, help="output HF directory")

    p = sub.add_parser("nemo-to-hf", help=".nemo archive or NeMo 2 dir -> HF dir")
    p.add_argument("--nemo", required=True, help=".nemo file, unpacked .nemo dir or NeMo 2 dir")
    p.add_argument("--out", required=True, help="output HF directory")
    p.add_argument(
        "--hf-config", default=None,
        help="HF config.json describing the model (default: read from the NeMo config)",
    )  # fmt: skip

    p = sub.add_parser("hf-to-nemo", help="HF dir -> NeMo 2 dir (or .nemo archive)")
    p.add_argument("--hf-dir", required=True, help="HF model dir")
    p.add_argument("--out", required=True, help="output: a directory, or FILE.nemo")
    p.add_argument("--layout", choices=("auto", "nemo1", "nemo2"), default="auto")
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=128)


def _print_summary(command: str, summary: dict[str, Any], seconds: float) -> None:
    mib = summary["bytes"] / 2**20
    print(
        f"convert {command}: {summary['tensors']} tensors, {mib:.1f} MiB -> {summary['path']} "
        f"({seconds:.1f} s)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen conversion; return the exit code (0 ok, 1 on a checkpoint error)."""
    from nemo_rence.checkpoint import gguf, nemo
    from nemo_rence.checkpoint.mapping import CheckpointError

    start = time.perf_counter()
    command = args.convert_command
    try:
        if command in ("hf-to-megatron", "hf-to-nemo"):
            layout = "nemo2" if command == "hf-to-megatron" else args.layout
            summary = nemo.export_nemo(
                args.hf_dir, args.out, layout=layout,
                make_vocab_size_divisible_by=args.make_vocab_size_divisible_by, progress=True,
            )  # fmt: skip
        elif command == "megatron-to-hf":
            summary = nemo.import_nemo(args.ckpt, args.out, progress=True)
        elif command == "nemo-to-hf":
            hf_config = json.loads(Path(args.hf_config).read_text()) if args.hf_config else None
            summary = nemo.import_nemo(args.nemo, args.out, hf_config=hf_config, progress=True)
        elif command == "gguf-to-hf":
            src = Path(args.gguf) if args.gguf else gguf.default_gguf_path()
            summary = gguf.gguf_to_hf(src, args.out, progress=True)
        else:  # argparse restricts the choices
            raise ValueError(f"unknown convert command {command!r}; choose from {_COMMANDS}")
    except (CheckpointError, FileNotFoundError) as e:
        print(f"convert {command} failed: {e}")
        return 1
    _print_summary(command, summary, time.perf_counter() - start)
    return 0
