"""``nemo-rence plan``: per-GPU memory of every TP/PP/DP layout of a recipe or a model.

Examples::

    nemo-rence plan rence-qwen3-8b-2n8g-tp2              # a recipe: GPUs from its name
    nemo-rence plan Qwen3-8B --gpus 16 --gpu-mem 80      # a model at the paper's sizes
    nemo-rence plan /ckpt/my-model rollout.max_new_tokens=2048 --gpus 8   # + config overrides

A recipe is ``conf/recipes/<name>.yaml`` (or a path to one); its name carries the hardware as
``<nodes>n<gpus per node>g``. A model is a known name (``nemo_rence.plan.models``), a HF directory
or a ``config.json``; its sizes come from ``conf/train.yaml`` with ``scale=paper`` plus the
overrides. Exit status: 0 when the recommended (or the recipe's own) layout fits, 1 otherwise.

The rollout engines are budgeted as the trainer builds them
(:func:`nemo_rence.rollout.layout.engine_layout`): TP 1 for the in-process hf engine (its host
GPU holds all of its weights), ``rollout.tensor_parallel`` for vLLM / TensorRT-LLM; an engine TP
that does not divide the GPUs, spans nodes or splits the attention heads makes every layout
invalid, and an engine whose weights and KV cache do not fit beside the policy makes it OOM.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Any

from nemo_rence.config import CONF_DIR, ConfigError, TrainConfig, compose
from nemo_rence.plan.memory import (
    CPU_FP32,
    GIB,
    GPU_BF16,
    LayoutPlan,
    MemoryEstimate,
    Plan,
    Precision,
    Workload,
    plan,
)
from nemo_rence.plan.models import arch_for, tiny_hf_config
from nemo_rence.rollout.layout import EngineLayout, engine_layout_of_config, engine_tp_of

__all__ = [
    "RECIPE_DIR",
    "add_arguments",
    "arch_of_config",
    "gpus_of_recipe",
    "plan_config",
    "recipe_overrides",
    "render",
    "run",
    "workload_of_config",
]

RECIPE_DIR = CONF_DIR / "recipes"
_HW = re.compile(r"-(\d+)n(\d+)([gc])(?:-|$)")


def _stem(target: str) -> str:
    """``conf/recipes/x-1.5b.yaml`` -> ``x-1.5b`` (not Path.stem: names hold dots)."""
    name = target.rsplit("/", 1)[-1]
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def gpus_of_recipe(name: str) -> tuple[int, int, bool]:
    """(nodes, devices per node, CPU?) from a recipe name: ``rence-qwen3-8b-2n8g-tp2`` is 2 nodes
    x 8 GPUs; ``rence-tiny-1n2c-tp2`` is 1 node x 2 CPU processes."""
    m = _HW.search(_stem(name))
    if not m:
        raise ValueError(
            f"recipe name {name!r} does not carry '<nodes>n<devices>g' (GPUs, e.g. 2n8g) or "
            "'<nodes>n<processes>c' (CPU, e.g. 1n2c)"
        )
    return int(m.group(1)), int(m.group(2)), m.group(3) == "c"


def recipe_overrides(target: str) -> list[str] | None:
    """The Hydra overrides that compose recipe ``target`` (a name or a path into conf/recipes)."""
    stem = _stem(target)
    if (RECIPE_DIR / f"{stem}.yaml").is_file():
        return [f"+recipes={stem}"]
    return None


def arch_of_config(cfg: TrainConfig) -> Any:
    """The :class:`ArchSpec` of a composed run config's model."""
    if cfg.model.source == "tiny":
        return arch_for_dict(tiny_hf_config(cfg.model.tiny_layers, cfg.model.tiny_hidden))
    if cfg.model.source == "smollm2":
        return arch_for("SmolLM2-135M-Instruct")
    assert cfg.model.hf_dir is not None  # validated by ModelConfig
    return arch_for(cfg.model.hf_dir)


def arch_for_dict(d: dict[str, Any]) -> Any:
    from nemo_rence.arch import ArchSpec

    return ArchSpec.from_hf_config(d)


def workload_of_config(cfg: TrainConfig, rollout_groups: int = 1) -> Workload:
    """Worst-case shapes of a run: every rollout at max prompt + max response tokens."""
    k = cfg.rollout.group_size
    return Workload(
        seq_len=cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens,
        micro_batch_rows=cfg.policy.micro_batch_groups * k,
        micro_batches_per_step=max(1, cfg.optim.mini_batch_size // cfg.policy.micro_batch_groups),
        group_size=k,
        rollout_groups=rollout_groups,
        mini_batch_groups=cfg.optim.mini_batch_size,
    )


def precision_of_config(cfg: TrainConfig, cpu: bool) -> Precision:
    """bf16 mixed precision on GPU unless the config asks for fp32; the CPU path is fp32."""
    if cpu or cfg.policy.precision == "fp32":
        return CPU_FP32 if cpu else Precision(param_bytes=4, master_bytes=0, activation_bytes=4)
    return GPU_BF16


def plan_config(
    cfg: TrainConfig,
    *,
    gpus: int,
    gpu_mem_gib: float,
    gpus_per_node: int = 8,
    reserve_gib: float = 6.0,
    rollout_groups: int = 1,
    cpu: bool = False,
    sequence_parallel: bool | None = None,
) -> Plan:
    """:func:`nemo_rence.plan.memory.plan` for a composed run config.

    ``policy.recompute: true`` is planned as megatron's ``full`` recomputation; the recipe's own
    layout is looked up with ``plan.find(tp, pp)``. ``sequence_parallel`` None: the config's
    ``policy.sequence_parallel`` (it only applies to layouts with TP > 1).
    """
    if sequence_parallel is None:
        sequence_parallel = cfg.policy.sequence_parallel
    return plan(
        arch_of_config(cfg),
        workload_of_config(cfg, rollout_groups),
        gpus=gpus,
        gpu_mem_gib=gpu_mem_gib,
        gpus_per_node=gpus_per_node,
        prec=precision_of_config(cfg, cpu),
        reserve_gib=reserve_gib,
        distributed_optimizer=(False,) if cpu else (True, False),
        sequence_parallel=sequence_parallel,
        engine_tp=engine_tp_of(cfg.rollout.engine, cfg.rollout.tensor_parallel),
    )


def engines_of_config(cfg: TrainConfig, gpus: int) -> EngineLayout | None:
    """The engines the trainer builds for the config's own layout on ``gpus`` ranks (None when
    its policy layout does not divide them)."""
    try:
        return engine_layout_of_config(cfg, gpus)
    except ConfigError:
        return None


def describe_engines(layout: EngineLayout, per_node: int) -> str:
    return (
        f"rollout engines: {layout.replicas} in all, {layout.engines_per_node(per_node)} per node, "
        f"TP={layout.engine_tp} each (hosts: ranks {', '.join(map(str, layout.hosts[:8]))}"
        f"{', ...' if layout.replicas > 8 else ''})"
    )


def recipe_mode(cfg: TrainConfig, lp: LayoutPlan) -> MemoryEstimate | None:
    """The estimate of the mode a recipe runs in (distributed optimizer on GPU; its recompute)."""
    rc = "full" if cfg.policy.recompute else "none"
    return lp.mode(True, rc) or lp.mode(False, rc)  # type: ignore[arg-type]


def _g(x: float) -> str:
    return f"{x / GIB:7.1f}"


def render(p: Plan, highlight: tuple[int, int] | None = None) -> str:
    """A fixed-width table of every layout (GiB per GPU) with the verdict and the recommendation."""
    a, w = p.arch, p.work
    lines = [
        f"model: {a.model_type} L={a.num_layers} h={a.hidden_size} heads={a.num_attention_heads}/"
        f"{a.num_query_groups} ffn={a.ffn_hidden_size} vocab={a.vocab_size}; "
        f"{p.gpus} GPUs x {p.gpu_bytes / GIB:.0f} GiB",
        f"workload: micro-batch {w.micro_batch_rows} rollouts x {w.seq_len} tokens, "
        f"{w.micro_batches_per_step} micro-batches/step at DP=1, KV for {w.rollout_groups} "
        f"group(s) of K={w.group_size}"
        + (f"; engine TP={p.engine_tp}" if p.engine_tp is not None else ""),
        "GiB per GPU; static = weights + grads + optimizer (distributed optimizer / plain); "
        "act = stored activations without / selective / full recompute",
        f"{'layout':>14} {'params':>8} {'weights':>7} {'grads':>7} {'opt.dist':>8} {'opt':>7} "
        f"{'act':>7} {'act.sel':>7} {'act.full':>8} {'engine':>7} {'kv':>7} {'peak':>7}  verdict",
    ]
    for lp in p.layouts:
        tag = f"tp{lp.tp}pp{lp.pp}dp{lp.dp}"
        if highlight == (lp.tp, lp.pp):
            tag = "*" + tag
        if not lp.modes:
            lines.append(f"{tag:>14} {'':>100}  {lp.verdict()}")
            continue
        dist_none = lp.mode(True, "none") or lp.modes[0]
        plain_none = lp.mode(False, "none") or dist_none
        sel = lp.mode(dist_none.distributed_optimizer, "selective") or dist_none
        full = lp.mode(dist_none.distributed_optimizer, "full") or dist_none
        best = lp.chosen or min(lp.modes, key=lambda m: m.peak)
        lines.append(
            f"{tag:>14} {best.params / 1e9:7.2f}B {_g(best.weights)} {_g(best.grads)} "
            f"{_g(dist_none.optimizer):>8} {_g(plain_none.optimizer)} {_g(dist_none.activations)} "
            f"{_g(sel.activations)} {_g(full.activations):>8} {_g(best.engine_weights)} "
            f"{_g(best.kv_cache)} {_g(best.peak)}  {lp.verdict()}"
        )
    rec = p.recommended
    if rec is None:
        lines.append("recommended: none - no layout fits; add GPUs or shorten sequences")
    else:
        assert rec.chosen is not None
        fit = rec.chosen.rollout_groups_that_fit(p.gpu_bytes, w.rollout_groups)
        lines.append(
            f"recommended: policy.tensor_parallel={rec.tp} policy.pipeline_parallel={rec.pp} "
            f"(dp={rec.dp}) recompute={rec.chosen.recompute} "
            f"distributed_optimizer={rec.chosen.distributed_optimizer}: "
            f"{rec.chosen.peak / GIB:.1f} GiB peak; the engine's KV cache has room for {fit} "
            f"group(s) of {w.group_size} x {w.seq_len} tokens"
        )
    return "\n".join(lines)


def _as_json(p: Plan) -> dict[str, Any]:
    def est(m: MemoryEstimate | None) -> dict[str, Any] | None:
        if m is None:
            return None
        return {
            "distributed_optimizer": m.distributed_optimizer,
            "recompute": m.recompute,
            "params": m.params,
            **{
                k: getattr(m, k) / GIB
                for k in (
                    "weights",
                    "grads",
                    "optimizer",
                    "activations",
                    "head",
                    "step_workspace",
                    "engine_weights",
                    "kv_cache",
                    "reserve",
                    "train_peak",
                    "rollout_peak",
                    "peak",
                )
            },
        }

    rec = p.recommended
    return {
        "gpus": p.gpus,
        "engine_tp": p.engine_tp,
        "gpu_mem_gib": p.gpu_bytes / GIB,
        "recommended": None if rec is None else {"tp": rec.tp, "pp": rec.pp, "dp": rec.dp},
        "layouts": [
            {
                "tp": lp.tp,
                "pp": lp.pp,
                "dp": lp.dp,
                "feasible": lp.feasible,
                "verdict": lp.verdict(),
                "chosen": est(lp.chosen),
                "modes": [est(m) for m in lp.modes],
            }
            for lp in p.layouts
        ],
    }


def _at_least(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum`` (argparse then exits 2 naming the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _number(strict: bool) -> Any:
    """An argparse type: a finite number > 0 (``strict``) or >= 0."""

    def parse(text: str) -> float:
        bound = "> 0" if strict else ">= 0"
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text!r}") from None
        if not math.isfinite(value) or (value <= 0 if strict else value < 0):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``nemo-rence plan``."""
    parser.add_argument(
        "target",
        help="recipe name (conf/recipes/<name>.yaml), model name, HF directory or config.json",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. rollout.group_size=16")
    parser.add_argument(
        "--gpus", type=_at_least(1), default=None, help="GPUs, >= 1 (default: the recipe's)"
    )
    parser.add_argument(
        "--gpu-mem", type=_number(strict=True), default=80.0, help="GiB per GPU (default 80)"
    )
    parser.add_argument(
        "--gpus-per-node", type=_at_least(1), default=None, help="default: recipe's or 8"
    )
    parser.add_argument(
        "--reserve", type=_number(strict=False), default=6.0, help="GiB kept free (default 6)"
    )
    parser.add_argument(
        "--rollout-groups",
        type=_at_least(1),
        default=1,
        help="groups whose KV cache must fit at once",
    )
    parser.add_argument("--cpu", action="store_true", help="plan the fp32 CPU path")
    parser.add_argument(
        "--sequence-parallel", action="store_true", help="plan with megatron sequence parallelism"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the plan; 0 when the recipe's (or the recommended) layout fits, 1 otherwise, 2 for
    a bad config override."""
    try:
        return _run(args)
    except ConfigError as err:
        print(f"nemo-rence plan: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    rec_over = recipe_overrides(args.target)
    per_node = args.gpus_per_node
    if rec_over is not None:
        cfg = compose([*rec_over, *args.overrides])
        nodes, per_node_recipe, cpu_recipe = gpus_of_recipe(args.target)
        per_node = per_node or per_node_recipe
        gpus = args.gpus if args.gpus is not None else nodes * per_node_recipe
        args.cpu = args.cpu or cpu_recipe
        own: tuple[int, int] | None = (cfg.policy.tensor_parallel, cfg.policy.pipeline_parallel)
    else:
        cfg = compose(["scale=paper", "model=hf", f"model.hf_dir={args.target}", *args.overrides])
        gpus = args.gpus if args.gpus is not None else 8
        own = None
    p = plan_config(
        cfg,
        gpus=gpus,
        gpu_mem_gib=args.gpu_mem,
        gpus_per_node=per_node or 8,
        reserve_gib=args.reserve,
        rollout_groups=args.rollout_groups,
        cpu=args.cpu,
        sequence_parallel=args.sequence_parallel or None,
    )
    ok = p.recommended is not None
    if own is not None:
        lp = p.find(*own)
        mode = recipe_mode(cfg, lp) if lp is not None else None
        ok = lp is not None and not lp.problems and mode is not None and mode.peak <= p.gpu_bytes
    engines = engines_of_config(cfg, gpus) if own is not None else None
    if args.json:
        out = _as_json(p)
        if engines is not None:
            out["engines"] = {
                "replicas": engines.replicas,
                "per_node": engines.engines_per_node(per_node or 8),
                "tp": engines.engine_tp,
                "hosts": list(engines.hosts),
            }
        print(json.dumps(out, indent=1))
    else:
        print(render(p, highlight=own))
        if engines is not None:
            print(describe_engines(engines, per_node or 8))
        if own is not None:
            print(f"recipe layout tp{own[0]}pp{own[1]}: {'fits' if ok else 'DOES NOT FIT'}")
    return 0 if ok else 1
