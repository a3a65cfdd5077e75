"""The recipes of ``conf/recipes/``, generated from one table so that each carries the planner's
current verdict as a comment (``python -m nemo_rence.plan.recipes --write`` regenerates them;
``tests/unit/plan/test_recipes.py`` fails when a file and this table disagree).

A recipe is a Hydra config in the ``recipes`` group, used as ``+recipes=<name>``: it switches the
model, rollout and scale groups (and the algorithm group when it reproduces another paper) and
sets the layout. Its name says the algorithm, the model and the hardware:
``<algorithm>-<model>-<nodes>n<gpus per node>g[-tp<T>][pp<P>]`` (``<n>c``: CPU processes).

``rence-*`` recipes run ReNCE at the ReNCE paper's sizes (``scale=paper``). ``conspo-*`` recipes
reproduce the ConSPO paper's settings (``papers/conspo-paper.md`` Sec. 5.1, Table 7, App. B.2):
its five models on its hardware (8 H100 for the 1.5B / 3B / 4B models, 4 nodes x 8 H100 for
7B / 8B), ``algorithm=conspo`` (B=256 prompts, K=8, lr 2e-6, tau 10, margin 0.01, warmup 30%),
prompts up to 1024 tokens, responses up to 8192 (R1-Distill) or 4096 tokens (Qwen3-4B-Base,
Llama-3.2-3B-Instruct), the paper's prompt template, rollout temperature 1.0 and 4 epochs (2 for
Qwen3-4B-Base) of DeepScaleR-Preview (40,315 problems: 630 / 315 iterations of 256 prompts).
Compare a method on the same setting by swapping the group: ``+recipes=conspo-... algorithm=rence``.

Data and benchmarks (``docs/reproduce-table1.md``): ``rence-*`` GPU recipes train on
``data=mixture`` (DAPO-Math-17k + MATH, ReNCE Sec. 4.1) and evaluate on its six Table-1
benchmarks (avg@4, temperature 0.7); ``conspo-*`` on ``data=deepscaler`` and ConSPO's benchmarks
(temperature 0.6, avg@32, every 100 steps); every file under ``$NEMO_RENCE_DATA_ROOT``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from nemo_rence.config import compose

__all__ = ["RECIPES", "Recipe", "main", "render_recipe"]

RECIPE_DIR = Path(__file__).resolve().parents[2] / "conf" / "recipes"


@dataclass(frozen=True)
class Recipe:
    """One recipe: the model, the hardware and the layout the planner validated."""

    name: str
    title: str
    model: str
    """HF directory name under ``$NEMO_RENCE_CKPT_ROOT`` (default /checkpoints), or 'tiny'."""
    tp: int
    pp: int = 1
    gpu_mem_gib: float = 80.0
    sequence_parallel: bool = False
    """``policy.sequence_parallel``: activations split over the TP ranks along the sequence."""
    algorithm: str = "rence"
    """The ``algorithm`` group (``conf/algorithm/``); ``rence`` is the default, left implicit."""
    max_prompt_tokens: int | None = None
    """``data.max_prompt_tokens``; None: the scale group's (paper: 1536)."""
    max_new_tokens: int | None = None
    """``rollout.max_new_tokens``; None: the scale group's (paper: 6656)."""
    template: str | None = None
    """``data.template``; None: the default (the ReNCE paper's)."""
    iterations: int | None = None
    """``run.iterations``; None: the ReNCE paper's 50 (GPU recipes), the default (CPU)."""
    paper: str = "the ReNCE paper"
    """Whose settings the recipe follows (header comment)."""
    data: str | None = "mixture"
    """The ``data`` group (``conf/data/``): 'mixture' is the ReNCE paper's DAPO-Math-17k + MATH
    (Sec. 4.1), 'deepscaler' the ConSPO paper's (Sec. 5.1); None: the default (arithmetic)."""
    benchmarks: tuple[str, ...] = ()
    """``eval.benchmarks``: the paper's table for this model (empty: ReNCE's six)."""
    engine_tp: int | None = None
    """``rollout.tensor_parallel`` of the GPU recipes' TensorRT-LLM engines; None: the policy's
    ``tp * pp`` capped at one node (8): a 70B model's 140 GB of bf16 weights must be split."""

    @property
    def rollout_tp(self) -> int:
        return self.engine_tp or min(self.tp * self.pp, 8)


DATA_ROOT = "${oc.env:NEMO_RENCE_DATA_ROOT,/data}"
"""Where the recipes read datasets and benchmarks from (docs/reproduce-table1.md)."""

BENCHMARK_FILES = {
    "math500": "math500.jsonl",  # HuggingFaceH4/MATH-500 test.jsonl
    "aime24": "aime24.parquet",  # HuggingFaceH4/aime_2024
    "aime25": "aime25.jsonl",  # math-ai/aime25 test.jsonl
    "aime26": "aime26.parquet",  # MathArena/aime_2026
    "hmmt25": "hmmt25.parquet",  # MathArena/hmmt_feb_2025
    "amc": "amc.parquet",  # AI-MO/aimo-validation-amc
    "minerva": "minerva.jsonl",  # math-ai/minervamath
    "olympiadbench": "olympiadbench.parquet",  # Hothan/OlympiadBench OE_TO_maths_en_COMP
}
"""Benchmark -> file name under ``$NEMO_RENCE_DATA_ROOT/benchmarks/``."""

RENCE_ITERATIONS = 50
"""ReNCE Sec. 4.1: 50 iterations (GRPO 200, DAPO and semi-online DPO 80: set run.iterations)."""

RENCE_BENCHMARKS = ("olympiadbench", "minerva", "aime25", "aime24", "math500", "amc")
"""ReNCE Table 1, in its column order."""
CONSPO_BENCHMARKS = ("aime24", "aime25", "aime26", "hmmt25", "math500", "amc", "olympiadbench")
"""ConSPO Tables 1-3 and 5, in their column order."""
CONSPO_LLAMA_BENCHMARKS = ("aime24", "math500", "amc", "olympiadbench")
"""ConSPO Table 4 (Llama-3.2-3B-Instruct)."""


def eval_lines(r: Recipe) -> list[str]:
    """The recipe's ``eval`` section: its paper's benchmarks and sampling (ReNCE Sec. 4.1:
    avg@4 at temperature 0.7; ConSPO Sec. 5.1 / Table 8: every 100 steps, temperature 0.6,
    top-p 0.95, avg@32 on AIME / HMMT / AMC, the training response length)."""
    if r.data is None:
        return []
    names = r.benchmarks or RENCE_BENCHMARKS
    conspo = r.paper == "the ConSPO paper"
    return [
        "eval:",
        "  benchmarks:",
        *(f"    {n}: {DATA_ROOT}/benchmarks/{BENCHMARK_FILES[n]}" for n in names),
        # ReNCE gives no interval (50 iterations, the best checkpoint by the benchmarks' average)
        f"  every: {100 if conspo else 5}",
        f"  k: {32 if conspo else 4}",
        f"  temperature: {0.6 if conspo else 0.7}",
        *(["  top_p: 0.95"] if conspo else []),
        f"  max_new_tokens: {r.max_new_tokens or 6656}",
    ]


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "rence-tiny-1n2c-tp2",
        "a tiny random Llama on 2 CPU processes (CI, SLURM tests)",
        "tiny",
        tp=2,
        gpu_mem_gib=8.0,
        data=None,
    ),
    Recipe(
        "rence-r1-distill-qwen-1.5b-1n8g",
        "DeepSeek-R1-Distill-Qwen-1.5B on 1 node x 8 GPUs",
        "DeepSeek-R1-Distill-Qwen-1.5B",
        tp=1,
    ),
    Recipe(
        "rence-qwen3-4b-1n8g",
        "Qwen3-4B (the ReNCE paper's model) on 1 node x 8 GPUs",
        "Qwen3-4B",
        tp=1,
    ),
    Recipe("rence-qwen3-8b-2n8g-tp2", "Qwen3-8B on 2 nodes x 8 GPUs, TP=2", "Qwen3-8B", tp=2),
    Recipe(
        "rence-llama3.1-8b-2n8g-tp2", "Llama-3.1-8B on 2 nodes x 8 GPUs, TP=2", "Llama-3.1-8B", tp=2
    ),
    Recipe("rence-qwen3-14b-2n8g-tp4", "Qwen3-14B on 2 nodes x 8 GPUs, TP=4", "Qwen3-14B", tp=4),
    Recipe(
        "rence-qwen3-32b-4n8g-tp8pp2",
        "Qwen3-32B on 4 nodes x 8 GPUs, TP=8 PP=2",
        "Qwen3-32B",
        tp=8,
        pp=2,
    ),
    Recipe(
        "rence-llama3.1-70b-8n8g-tp8pp2",
        "Llama-3.1-70B on 8 nodes x 8 GPUs, TP=8 PP=2, sequence parallel",
        "Llama-3.1-70B",
        tp=8,
        pp=2,
        sequence_parallel=True,
    ),
    *(
        Recipe(
            name,
            title,
            model,
            tp=tp,
            algorithm="conspo",
            max_prompt_tokens=1024,
            max_new_tokens=response,
            template="conspo",
            iterations=iterations,
            paper="the ConSPO paper",
            data="deepscaler",
            # Tables 1-3: seven benchmarks; Table 4 (Llama-3.2-3B-Instruct): four
            benchmarks=CONSPO_LLAMA_BENCHMARKS if "llama3.2" in name else CONSPO_BENCHMARKS,
        )
        for name, title, model, tp, response, iterations in (
            (
                "conspo-r1-distill-qwen-1.5b-1n8g",
                "DeepSeek-R1-Distill-Qwen-1.5B on 1 node x 8 GPUs",
                "DeepSeek-R1-Distill-Qwen-1.5B",
                1,
                8192,
                630,
            ),
            (
                "conspo-r1-distill-qwen-7b-4n8g-tp2",
                "DeepSeek-R1-Distill-Qwen-7B on 4 nodes x 8 GPUs, TP=2",
                "DeepSeek-R1-Distill-Qwen-7B",
                2,
                8192,
                630,
            ),
            (
                "conspo-r1-distill-llama-8b-4n8g-tp2",
                "DeepSeek-R1-Distill-Llama-8B on 4 nodes x 8 GPUs, TP=2",
                "DeepSeek-R1-Distill-Llama-8B",
                2,
                8192,
                630,
            ),
            (
                "conspo-qwen3-4b-base-1n8g",
                "Qwen3-4B-Base on 1 node x 8 GPUs",
                "Qwen3-4B-Base",
                1,
                4096,
                315,
            ),
            (
                "conspo-llama3.2-3b-instruct-1n8g",
                "Llama-3.2-3B-Instruct on 1 node x 8 GPUs",
                "Llama-3.2-3B-Instruct",
                1,
                4096,
                630,
            ),
        )
    ),
)


def _body(r: Recipe) -> str:
    if r.model == "tiny":
        groups = ["  - override /model: tiny", "  - override /scale: cpu"]
        # a random model solves nothing: without the filter it trains on every group; the paper's
        # prompt is ~500 byte-level tokens
        model = [
            "model:",
            "  tiny_layers: 2",
            "  tiny_hidden: 64",
            "filter:",
            "  enabled: false",
            "data:",
            "  max_prompt_tokens: 1024",
        ]
        policy = ["  precision: fp32", "  recompute: false"]
    else:
        groups = [
            *([f"  - override /algorithm: {r.algorithm}"] if r.algorithm != "rence" else []),
            *([f"  - override /data: {r.data}"] if r.data else []),
            "  - override /model: hf",
            "  - override /rollout: trtllm",
            "  - override /scale: paper",
        ]
        model = ["model:", f"  hf_dir: ${{oc.env:NEMO_RENCE_CKPT_ROOT,/checkpoints}}/{r.model}"]
        data = [
            f"  {k}: {v}"
            for k, v in (
                ("max_prompt_tokens", r.max_prompt_tokens),
                ("template", r.template),
                # the papers train on the whole set; their validation is the benchmarks
                ("heldout_fraction", 0.0 if r.data else None),
            )
            if v is not None
        ]
        model += ["data:", *data] if data else []
        rollout = [f"  tensor_parallel: {r.rollout_tp}"] if r.rollout_tp > 1 else []
        if r.max_new_tokens is not None:
            rollout.append(f"  max_new_tokens: {r.max_new_tokens}")
        model += ["rollout:", *rollout] if rollout else []
        # the paper's length (ReNCE: 50 iterations) and no wall-clock budget (train.yaml's
        # 14 minutes are the CPU default's)
        model += [
            "run:",
            f"  iterations: {r.iterations or RENCE_ITERATIONS}",
            "  time_budget_min: 0",
        ]
        model += eval_lines(r)
        policy = ["  precision: bf16", "  recompute: true"]
    if r.sequence_parallel:
        policy.append("  sequence_parallel: true")
    return (
        "\n".join(
            [
                "defaults:",
                *groups,
                *model,
                "policy:",
                f"  tensor_parallel: {r.tp}",
                f"  pipeline_parallel: {r.pp}",
                *policy,
            ]
        )
        + "\n"
    )


def render_recipe(r: Recipe) -> str:
    """The YAML of a recipe: header, the planner's table for its hardware, the config."""
    from nemo_rence.plan.cli import (
        describe_engines,
        engines_of_config,
        gpus_of_recipe,
        plan_config,
        recipe_mode,
        render,
    )
    from nemo_rence.plan.memory import GIB

    nodes, per_node, cpu = gpus_of_recipe(r.name)
    body = _body(r)
    tmp = RECIPE_DIR / f".{r.name}.render.yaml"
    RECIPE_DIR.mkdir(parents=True, exist_ok=True)
    tmp.write_text("# @package _global_\n" + body)
    try:
        cfg = compose([f"+recipes={tmp.stem}"])
    finally:
        tmp.unlink()
    p = plan_config(
        cfg,
        gpus=nodes * per_node,
        gpu_mem_gib=r.gpu_mem_gib,
        gpus_per_node=per_node,
        cpu=cpu,
        reserve_gib=0.0 if cpu else 6.0,
    )
    engines = engines_of_config(cfg, nodes * per_node)
    lp = p.find(r.tp, r.pp)
    mode = recipe_mode(cfg, lp) if lp is not None and not lp.problems else None
    verdict = (
        f"recipe layout tp{r.tp}pp{r.pp}: {mode.peak / GIB:.1f} GiB peak per "
        f"{'process' if cpu else 'GPU'} of {r.gpu_mem_gib:.0f} GiB"
        if mode is not None
        else f"recipe layout tp{r.tp}pp{r.pp}: not a valid layout"
    )
    devices = f"{nodes} node(s) x {per_node} {'CPU processes' if cpu else 'GPUs'}"
    algo = {"rence": "ReNCE", "conspo": "ConSPO"}.get(r.algorithm, r.algorithm)
    head = [
        "# @package _global_",
        f"# {algo} on {r.title}" + ("." if cpu else f", with {r.paper}'s settings."),
        f"# Use: nemo-rence train +recipes={r.name} [overrides]",
        f"#  or: slurm/submit.sh --nodes {nodes} --gpus-per-node {0 if cpu else per_node} "
        f"--run-dir RUN_DIR [--container IMAGE.sqsh] -- +recipes={r.name}",
    ]
    if r.paper == "the ConSPO paper":
        head.append(
            "# Data: the paper trains on DeepScaleR-Preview (data=deepscaler: "
            "$NEMO_RENCE_DATA_ROOT/deepscaler.json); it evaluates on "
            f"{', '.join(r.benchmarks)} at temperature 0.6, top-p 0.95 (docs/reproduce-table1.md)."
        )
    elif r.data:
        head.append(
            "# Data: DAPO-Math-17k + MATH (data=mixture: $NEMO_RENCE_DATA_ROOT/"
            "dapo-math-17k.parquet, math-train.parquet), evaluated on the paper's six benchmarks "
            "at temperature 0.7, avg@4 (docs/reproduce-table1.md)."
        )
    if r.sequence_parallel:
        head.append(
            "# Sequence parallelism (policy.sequence_parallel) splits the stored activations "
            f"over the {r.tp} TP ranks: without it one micro-batch's activations do not fit."
        )
    head += [
        f"# Planner (generated by python -m nemo_rence.plan.recipes --write; {devices}, "
        f"{'sequence parallel, ' if r.sequence_parallel else ''}worst case: every rollout at "
        "max prompt + max response):",
        *(f"#   {line}".rstrip() for line in render(p, highlight=(r.tp, r.pp)).splitlines()),
        *([f"#   {describe_engines(engines, per_node)}"] if engines is not None else []),
        f"# {verdict}",
    ]
    return "\n".join(head) + "\n" + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write or check conf/recipes/*.yaml")
    ap.add_argument("--write", action="store_true", help="rewrite the files")
    args = ap.parse_args(argv)
    stale = []
    for r in RECIPES:
        text = render_recipe(r)
        path = RECIPE_DIR / f"{r.name}.yaml"
        if args.write:
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            stale.append(path.name)
    if stale:
        print("stale recipes (run python -m nemo_rence.plan.recipes --write): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
