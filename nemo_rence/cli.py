"""The ``nemo-rence`` command line: entry points only.

Each sub-command lives in the module that owns its stage; this file only maps names to
``module:function`` and imports lazily, so ``nemo-rence --help`` is instant and never imports
megatron or torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from nemo_rence import __version__

# name -> (module:function that takes the parsed args and returns an exit code,
#          module:function that adds the sub-command's arguments to its parser, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": (
        "nemo_rence.train:run",
        "nemo_rence.train:add_arguments",
        "train a policy (ReNCE by default) with Hydra overrides, e.g. algorithm=grpo",
    ),
    "losses": (
        "nemo_rence.algorithm.losses.cli:run",
        "nemo_rence.algorithm.losses.cli:add_arguments",
        "list the registered losses with their paper and equation",
    ),
    "convert": (
        "nemo_rence.checkpoint.cli:run",
        "nemo_rence.checkpoint.cli:add_arguments",
        "convert checkpoints: hf-to-megatron, megatron-to-hf, gguf-to-hf, nemo-to-hf, hf-to-nemo",
    ),
    "plan": (
        "nemo_rence.plan.cli:run",
        "nemo_rence.plan.cli:add_arguments",
        "per-GPU memory of every TP/PP/DP layout of a recipe or model; recommends one",
    ),
    "grade": (
        "nemo_rence.rewards.cli:run",
        "nemo_rence.rewards.cli:add_arguments",
        "grade a jsonl of responses with the math reward (1 / 0.1 / 0)",
    ),
    "study": (
        "nemo_rence.study.cli:run",
        "nemo_rence.study.cli:add_arguments",
        "compare arms (overrides) over seeds at one equal budget: runs, report, intervals",
    ),
    "eval": (
        "nemo_rence.evaluation.cli:run",
        "nemo_rence.evaluation.cli:add_arguments",
        "pass@1 (avg@k) of a checkpoint on benchmark files, as a Table-1 mean (std) table",
    ),
}


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-rence",
        description="ReNCE (noise-contrastive RL for LLM reasoning) and its peers: train, "
        "evaluate, convert checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"nemo-rence {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, add_args, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_add_args=add_args)
    return parser


#: Warnings megatron-core prints at every start where optional CUDA extensions (Apex, Transformer
#: Engine) are absent, as always on a machine without an NVIDIA GPU, and one about a deprecated
#: default of its own; there they say nothing about the run. Kept where a GPU is present (a
#: missing Transformer Engine matters there); ``-W`` / ``PYTHONWARNINGS`` shows everything.
KNOWN_NOISE = (
    r"Apex is not installed",
    r"Transformer Engine and Apex are not installed",
    r"Transformer Engine is not installed",
    r"full scope is deprecated",
)


#: Deprecation warnings torch raises inside megatron-core's checkpoint loading, at every resume,
#: about calls the user cannot change (megatron's ``checkpoint.load_state_dict``, ShardedTensor):
#: hidden everywhere unless the user chose warning filters.
LIBRARY_DEPRECATIONS = (
    r"`load_state_dict` is deprecated and will be removed",
    r"Please use DTensor instead and we are deprecating ShardedTensor",
)


def quiet_known_warnings() -> None:
    """Silence :data:`LIBRARY_DEPRECATIONS`, and :data:`KNOWN_NOISE` on a machine without an
    NVIDIA GPU, unless the user chose warning filters themselves."""
    if sys.warnoptions:
        return
    for message in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    if os.path.exists("/dev/nvidiactl"):
        return
    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_known_warnings()
    parser = build_parser()
    # Two-phase parse: the sub-command's own arguments are registered only when it is chosen,
    # so that importing one stage never imports another's heavy dependencies.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    if known.command is None:
        parser.print_help()
        return 0
    run, add_args, _ = COMMANDS[known.command]
    sub_parser = argparse.ArgumentParser(
        prog=f"nemo-rence {known.command}", description=COMMANDS[known.command][2]
    )
    _resolve(add_args)(sub_parser)
    try:  # overrides and flags in any order: `train model=tiny --no-progress run.iterations=1`
        args = sub_parser.parse_intermixed_args(argv[1:])
    except TypeError:  # a parser with sub-commands (convert): intermixing is not supported
        args = sub_parser.parse_args(argv[1:])
    return int(_resolve(run)(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
