"""Our ReNCE training iteration vs TRL's ``GRPOTrainer`` step, side by side on CPU, one JSON.

Same model (SmolLM2-135M-Instruct, the HF directory converted from the shipped GGUF), fp32, the
same prompts (the arithmetic task, digits=1, the paper's template in the chat template: exactly
the prompts our trainer draws, in order), the same reward (``nemo_rence.rewards.math``), K
rollouts of P prompts with at most N new tokens each, the same torch thread count. Each side runs
in its own child process (so the peak RSS is its own):

- ours: ``bench/_ours_worker.py``, ``Trainer.train_iteration`` of the real loop (``config.compose`` + ``build_components``)
  with ``filter.enabled=false``, the filter's documented GRPO mode ("keeps every group, no eq. (3),
  no mastery"), so one iteration generates exactly P x K rollouts like TRL; the loss is ReNCE.
  Stage split from the trainer's ``time/*`` metrics, rollout split into generate / grade.
- TRL: ``bench/_trl_grpo_worker.py`` under ``--trl-python`` (an interpreter with trl installed;
  TRL is not a project dependency), once per ``--trl-config MICRO:GC``: MICRO completions per
  forward (``per_device_train_batch_size``, gradient accumulation making one optimizer step
  see P x K completions) and gradient checkpointing on/off/default. The defaults are the two
  ends: ``group:on`` (TRL's leanest: one group of K per forward, checkpointing) and ``all:off``
  (all P x K completions in one forward, no checkpointing: at 8 x 8 the configuration behind
  the issue's ~15.5 GiB and ~120 CPU-seconds per step), reported as ``8:on`` and ``64:off``. Skipped, with the reason in the JSON, when that
  interpreter or trl is missing.

Both sides sample at ``--temperature`` (default 1.0, TRL's default). Each side runs
``--warmup`` iterations (reported, not in the median) and ``--steps`` measured ones. Peak RSS =
the high-water mark (``VmHWM``) of the side's process + that of its live descendants (our
grader workers). Targets, against every TRL configuration: ``speedup = trl_step_s /
ours_iteration_s >= 1.5`` and ``rss_ratio = ours_rss / trl_rss <= 0.5``.

    nice -n 5 python bench/trl_compare.py                       # 8 prompts x 8 x 32 tokens
    python bench/trl_compare.py --sides ours --steps 1          # our side only
    python bench/trl_compare.py --trl-config 8:on               # one TRL configuration
    NEMO_RENCE_TRL_PYTHON=/path/to/venv/bin/python python bench/trl_compare.py

Prints one JSON object on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TRL_WORKER = Path(__file__).resolve().parent / "_trl_grpo_worker.py"
OURS_WORKER = Path(__file__).resolve().parent / "_ours_worker.py"
TRL_PYTHON_ENV = "NEMO_RENCE_TRL_PYTHON"
DEFAULT_TRL_PYTHON = "/work/trl-venv/bin/python"
TARGET_SPEEDUP = 1.5
TARGET_RSS_RATIO = 0.5
SIDES = ("ours", "trl")
DEFAULT_TRL = ("group:on", "all:off")
_GC = {"on": True, "off": False, "default": None}


# -- arguments --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8, help="prompts per iteration / step (P)")
    ap.add_argument("--k", type=int, default=8, help="rollouts per prompt (K)")
    ap.add_argument("--new-tokens", type=int, default=32, help="max new tokens per rollout (N)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up iterations per side")
    ap.add_argument("--steps", type=int, default=2, help="measured iterations per side")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads, both sides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--lr",
        type=float,
        default=1e-6,
        help="learning rate of both sides (default: the paper's 1e-6, so the policy barely moves "
        "during the benchmark and both sides keep generating the same response lengths)",
    )
    ap.add_argument("--sides", default="ours,trl", help="comma list of: ours, trl")
    ap.add_argument("--n-update", type=int, default=4, help="ours: optimizer steps per iteration")
    ap.add_argument(
        "--mini-batch", type=int, default=2, help="ours: prompts (groups) per optimizer step"
    )
    ap.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature of both sides"
    )
    ap.add_argument(
        "--trl-config",
        action="append",
        default=None,
        metavar="MICRO:GC",
        help="a TRL configuration, repeatable: MICRO = per_device_train_batch_size (completions "
        "per forward: a number, 'group' = K or 'all' = P x K; gradient accumulation makes one "
        "optimizer step see P x K), GC = gradient "
        f"checkpointing on|off|default (on in TRL 1.x). Default: {' and '.join(DEFAULT_TRL)}",
    )
    ap.add_argument(
        "--trl-python",
        default=os.environ.get(TRL_PYTHON_ENV, DEFAULT_TRL_PYTHON),
        help=f"interpreter with trl installed (env {TRL_PYTHON_ENV}; default {DEFAULT_TRL_PYTHON})",
    )
    ap.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra config override for our side (key=value), repeatable",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per side")
    return ap


def validate_args(args: argparse.Namespace) -> list[str]:
    """Problems with the arguments, each saying what to change (empty: fine)."""
    errors = []
    for name in ("prompts", "new_tokens", "steps", "threads", "n_update", "mini_batch"):
        if getattr(args, name) < 1:
            errors.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.k < 2:
        errors.append(f"--k must be >= 2 (a group needs a contrast), got {args.k}")
    if args.lr <= 0:
        errors.append(f"--lr must be > 0, got {args.lr}")
    if args.warmup < 0:
        errors.append(f"--warmup must be >= 0, got {args.warmup}")
    sides = parse_sides(args.sides)
    bad = [s for s in sides if s not in SIDES]
    if bad or not sides:
        errors.append(f"--sides must be a comma list of {list(SIDES)}, got {args.sides!r}")
    if args.mini_batch > args.prompts:
        errors.append(f"--mini-batch ({args.mini_batch}) must be <= --prompts ({args.prompts})")
    if args.temperature <= 0:
        errors.append(f"--temperature must be > 0, got {args.temperature}")
    rollouts = args.prompts * args.k
    for text in args.trl_config or DEFAULT_TRL:
        try:
            micro, _ = parse_trl_config(text, args.k, rollouts)
        except ValueError as err:
            errors.append(f"--trl-config {err}")
            continue
        if rollouts % micro:
            errors.append(
                f"--trl-config {text}: MICRO ({micro}) must divide prompts x k ({rollouts}) so "
                "that one TRL optimizer step sees exactly P x K completions"
            )
    return errors


def parse_trl_config(text: str, k: int, rollouts: int) -> tuple[int, bool | None]:
    """``'MICRO:GC'`` -> (micro-batch, gradient checkpointing: True / False / None = TRL's).

    MICRO is a number, ``group`` (= k, one prompt's completions) or ``all`` (= P x K)."""
    micro, sep, gc = text.partition(":")
    micro = {"group": str(k), "all": str(rollouts)}.get(micro, micro)
    if not sep or not micro.isdigit() or int(micro) < 1 or gc not in _GC:
        raise ValueError(
            f"{text!r}: expected MICRO:GC with MICRO >= 1, 'group' or 'all' and GC one of "
            f"{sorted(_GC)}, e.g. 8:on"
        )
    return int(micro), _GC[gc]


def trl_label(micro: int, gc: bool | None) -> str:
    """The report's name of a TRL configuration, e.g. ``'8:on'``."""
    return f"{micro}:{ {True: 'on', False: 'off', None: 'default'}[gc] }"


def parse_sides(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def ours_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides of our side (on top of conf/train.yaml: ReNCE, SmolLM2, scale=cpu)."""
    return [
        "model.source=smollm2",
        "rollout.engine=hf",
        "data.task=arithmetic",
        "data.digits=1",
        "policy.precision=fp32",
        f"rollout.group_size={args.k}",
        f"rollout.max_new_tokens={args.new_tokens}",
        f"filter.batch_size={args.prompts}",
        f"rollout.prompts_per_draw={args.prompts}",  # one draw = the P prompts TRL gets
        "filter.enabled=false",  # every group kept: exactly P x K rollouts per iteration
        f"optim.n_update={args.n_update}",
        f"optim.mini_batch_size={args.mini_batch}",
        f"run.threads={args.threads}",
        f"run.iterations={args.warmup + args.steps}",
        f"run.seed={args.seed}",
        f"optim.lr={args.lr}",
        f"rollout.temperature={args.temperature}",
        *args.override,
    ]


# -- environment checks -----------------------------------------------------------------------
def check_trl(trl_python: str, timeout: float = 120) -> tuple[bool, str]:
    """Whether ``trl_python`` runs and imports trl; the reason when not."""
    path = Path(trl_python)
    if not path.exists():
        return False, (
            f"TRL side skipped: interpreter {trl_python} not found. Create it (python3.11 -m venv "
            f"/work/trl-venv; pip install torch==2.13.0; pip install -c <torch pin> 'trl==1.16.*') "
            f"or point --trl-python / ${TRL_PYTHON_ENV} at one"
        )
    try:
        proc = subprocess.run(
            [str(path), "-c", "import trl; print(trl.__version__)"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"TRL side skipped: {trl_python} did not run: {err}"
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return False, f"TRL side skipped: trl is not importable by {trl_python}: {tail[0]}"
    return True, proc.stdout.strip()


def child_env(threads: int) -> dict[str, str]:
    """The same threading and offline settings for both children."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OMP_WAIT_POLICY="PASSIVE",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    return env


# -- the shared workload ----------------------------------------------------------------------
def plan_prompts(overrides: Sequence[str], iterations: int) -> dict[str, Any]:
    """The prompts our trainer will draw, in order, rendered and tokenized as it does.

    Mirrors ``build._datasets`` + ``build_components`` (arithmetic train split, length filter,
    ``PromptSampler(seed=data.seed)``, ``rollout.prompts_per_draw or filter.batch_size`` per
    draw); the child checks the prompts it actually drew against this list.
    """
    from transformers import AutoTokenizer

    from nemo_rence.config import compose
    from nemo_rence.data.sampler import PromptSampler
    from nemo_rence.data.synthetic import ArithmeticConfig, generate_arithmetic
    from nemo_rence.data.template import PromptConfig, build_prompt, encode_prompt, filter_by_length
    from nemo_rence.model_sources import resolve_model_dir

    cfg = compose(list(overrides))
    d = cfg.data
    hf_dir = resolve_model_dir(cfg.model, Path(tempfile.gettempdir()), cfg.run.seed)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    prompt_cfg = PromptConfig(
        template=d.template, chat=d.chat_template, max_prompt_tokens=d.max_prompt_tokens
    )
    arith = ArithmeticConfig(digits=d.digits, steps=d.steps, operations=d.operations, seed=d.seed)
    train, _ = filter_by_length(
        generate_arithmetic(d.train_size, arith, split="train"), prompt_cfg, tokenizer
    )
    sampler = PromptSampler(len(train), seed=d.seed)
    draw = cfg.rollout.prompts_per_draw or cfg.filter.batch_size
    records = [train[i] for _ in range(iterations) for i in sampler.take(draw)]
    return {
        "hf_dir": str(hf_dir),
        "prompts": [
            {
                "id": r.id,
                "answer": r.answer,
                "answer_form": r.metadata.get("answer_form", "any"),
                "text": build_prompt(r, prompt_cfg, tokenizer),
                "ids": encode_prompt(r, prompt_cfg, tokenizer),
            }
            for r in records
        ],
    }


# -- driver -----------------------------------------------------------------------------------
def run_child(cmd: list[str], result: Path, env: dict[str, str], log: Path, timeout: float) -> Any:
    """Run one side; its JSON result, or ``{"error": ...}`` with the log's tail."""
    with log.open("w") as out:
        try:
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {timeout:.0f} s"
    if rc == 0 and result.is_file():
        return json.loads(result.read_text())
    tail = log.read_text(errors="replace").strip().splitlines()[-15:]
    return {"error": f"exit {rc}", "log": str(log), "log_tail": tail}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _ok(side: dict[str, Any] | None) -> bool:
    return side is not None and "iteration_s" in side


def compare_sides(ours: dict[str, Any] | None, trl: dict[str, Any] | None) -> dict[str, Any]:
    """Speedup and RSS ratio of ours against one TRL configuration, with pass flags.

    A side that was skipped or failed gives ``None`` ratios and ``None`` pass flags (never a
    silent pass).
    """
    speedup = speedup_cpu = rss_ratio = equal = None
    if _ok(ours) and _ok(trl):
        assert ours is not None and trl is not None
        speedup = trl["iteration_s"] / ours["iteration_s"]
        if ours.get("iteration_cpu_s") and trl.get("iteration_cpu_s"):
            speedup_cpu = trl["iteration_cpu_s"] / ours["iteration_cpu_s"]
        rss_ratio = ours["peak_rss_gib"] / trl["peak_rss_gib"]
        equal = all(n == trl["rollouts_per_step"] for n in ours["rollouts_per_step"])
    return {
        "speedup": speedup,
        "speedup_target": TARGET_SPEEDUP,
        "speedup_pass": None if speedup is None else speedup >= TARGET_SPEEDUP,
        "speedup_cpu_time": speedup_cpu,
        "rss_ratio": rss_ratio,
        "rss_ratio_target": TARGET_RSS_RATIO,
        "rss_ratio_pass": None if rss_ratio is None else rss_ratio <= TARGET_RSS_RATIO,
        "equal_rollouts_per_step": equal,
    }


def assemble(
    config: dict[str, Any], ours: dict[str, Any] | None, trl: dict[str, dict[str, Any] | None]
) -> dict[str, Any]:
    """The report: our side, each TRL configuration (by its ``MICRO:GC`` label), and per TRL
    configuration the speedup and RSS ratio against the targets (:func:`compare_sides`)."""
    versions = {"ours": ours.get("versions")} if ours and "versions" in ours else {}
    versions.update({f"trl {k}": v["versions"] for k, v in trl.items() if v and "versions" in v})
    return _rounded(
        {
            "bench": "trl_compare",
            "versions": versions,
            "config": config,
            "ours": ours,
            "trl": trl,
            "ratios": {label: compare_sides(ours, side) for label, side in trl.items()},
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = validate_args(args)
    if errors:
        for e in errors:
            print(f"trl_compare: {e}", file=sys.stderr)
        return 2
    sides = parse_sides(args.sides)
    trl_configs = {
        trl_label(*cfg): cfg
        for cfg in (
            parse_trl_config(t, args.k, args.prompts * args.k)
            for t in args.trl_config or DEFAULT_TRL
        )
    }
    overrides = ours_overrides(args)
    iterations = args.warmup + args.steps
    plan = plan_prompts(overrides, iterations)
    env = child_env(args.threads)
    config = {
        "model": "SmolLM2-135M-Instruct (HF dir converted from the shipped GGUF), fp32, CPU",
        "hf_dir": plan["hf_dir"],
        "task": "arithmetic digits=1, ReNCE template in the chat template, math reward 1/0.1/0",
        "prompts_per_step": args.prompts,
        "k": args.k,
        "max_new_tokens": args.new_tokens,
        "warmup": args.warmup,
        "measured_steps": args.steps,
        "torch_threads": args.threads,
        "lr": args.lr,
        "temperature": args.temperature,
        "trl_configs": list(trl_configs),
        "trl_python": args.trl_python,
        "nice": os.nice(0),
        "cpu_count": os.cpu_count(),
        "loadavg_1min_at_start": os.getloadavg()[0],
    }
    not_run = {"skipped": "not requested (--sides)"}
    ours: dict[str, Any] | None = dict(not_run)
    trl: dict[str, dict[str, Any] | None] = {label: dict(not_run) for label in trl_configs}
    with tempfile.TemporaryDirectory(prefix="trl_compare-") as tmp_dir:
        tmp = Path(tmp_dir)
        spec = {
            **plan,
            "overrides": overrides,
            "repo_root": str(REPO_ROOT),
            "prompts_per_step": args.prompts,
            "k": args.k,
            "new_tokens": args.new_tokens,
            "warmup": args.warmup,
            "steps": args.steps,
            "threads": args.threads,
            "seed": args.seed,
            "temperature": args.temperature,
            "lr": args.lr,
            "weight_decay": 0.01,  # ours: optim.weight_decay, optim.grad_clip defaults
            "grad_clip": 1.0,
        }
        if "ours" in sides:
            (tmp / "ours").mkdir()
            (tmp / "ours.json").write_text(json.dumps({**spec, "work_dir": str(tmp / "ours")}))
            print("trl_compare: running our side ...", file=sys.stderr, flush=True)
            ours = run_child(
                [
                    sys.executable,
                    str(OURS_WORKER),
                    str(tmp / "ours.json"),
                    str(tmp / "ours.out.json"),
                ],
                tmp / "ours.out.json",
                env,
                Path(tempfile.gettempdir()) / "trl_compare_ours.log",
                args.timeout,
            )
        if "trl" in sides:
            available, detail = check_trl(args.trl_python)
            if not available:
                print(f"trl_compare: {detail}", file=sys.stderr, flush=True)
                trl = {label: {"skipped": detail} for label in trl_configs}
            for i, (label, (micro, gc)) in enumerate(trl_configs.items() if available else []):
                work = tmp / f"trl{i}"
                work.mkdir()
                trl_spec = {**spec, "work_dir": str(work), "micro_batch": micro}
                trl_spec["gradient_checkpointing"] = gc
                (tmp / f"trl{i}.json").write_text(json.dumps(trl_spec))
                print(f"trl_compare: running TRL {detail} {label} ...", file=sys.stderr, flush=True)
                trl[label] = run_child(
                    [args.trl_python, str(TRL_WORKER), str(tmp / f"trl{i}.json"), str(work / "r")],
                    work / "r",
                    env,
                    Path(tempfile.gettempdir()) / f"trl_compare_trl{i}.log",
                    args.timeout,
                )
    config["loadavg_1min_at_end"] = os.getloadavg()[0]
    print(json.dumps(assemble(config, ours, trl), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
