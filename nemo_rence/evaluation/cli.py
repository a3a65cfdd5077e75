"""``nemo-rence eval``: pass@1 (avg@k) of a checkpoint on benchmark files, as the paper's Table 1.

    nemo-rence eval --checkpoint runs/x --select best \\
        --benchmarks data/MATH-500.jsonl aime24=data/aime_2024.parquet --out evals/x-best
    nemo-rence eval --checkpoint models/Qwen3-4B-Base --benchmarks math500=m.jsonl --k 4 \\
        --temperature 0.7 --engine vllm --out evals/base --compare evals/x-best/results.json

Defaults follow the ReNCE paper (Sec. 4.1): k = 4 samples per problem at temperature 0.7. For a
run checkpoint the prompt template, chat template, prompt/response length limits and engine
default to the run's ``config.json``; for an HF directory to the paper's template, the tokenizer's
chat template when it has one, 1536 / 6656 tokens and the ``hf`` engine.

``--out`` receives ``results.json`` (settings, the resolved checkpoint, per benchmark avg@k, the
Table-1 std, pass@k, problems, skipped rows by reason and the [problems, k] correctness matrix),
``results.md`` (the table: rows = evaluated models, columns = benchmarks + Avg, cells
``mean (std)`` in %) and ``samples.jsonl`` (every response, graded). Bad arguments exit with
code 2 and a message naming the flag, before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nemo_rence.evaluation.inputs import (
    ENGINES,
    BenchmarkFile,
    EvalInputError,
    EvalSettings,
    load_benchmark_file,
    parse_benchmark_arg,
)
from nemo_rence.evaluation.model_source import SELECT, ModelSource, resolve_checkpoint

__all__ = ["add_arguments", "run"]

PAPER_MAX_PROMPT_TOKENS = 1536
PAPER_MAX_NEW_TOKENS = 6656


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--checkpoint",
        required=True,
        help="run dir, run checkpoint (iter-NNNNNN), pointer (checkpoints/latest|best) or HF dir",
    )
    a(
        "--benchmarks",
        nargs="+",
        required=True,
        metavar="[NAME=]FILE",
        help="benchmark files (.jsonl/.json/.parquet); NAME (math500, aime24, ...) picks the "
        "schema, default: from the file name",
    )
    a("--out", required=True, help="output directory (results.json, results.md, samples.jsonl)")
    a(
        "--select",
        choices=SELECT,
        default=None,
        help="for a run dir: the latest checkpoint (default) or the best by held-out accuracy",
    )
    a("--k", type=int, default=4, help="samples per problem; pass@1 = avg@k (paper: 4)")
    a("--temperature", type=float, default=0.7, help="sampling temperature (paper: 0.7)")
    a("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]")
    a("--max-new-tokens", type=int, default=None, help="response limit (default: run's / 6656)")
    a(
        "--max-prompt-tokens",
        type=int,
        default=None,
        help="longer prompts are skipped and counted (default: run's / 1536)",
    )
    a("--engine", choices=ENGINES, default=None, help="generation engine (default: run's / hf)")
    a(
        "--template",
        default=None,
        help="prompt template: rence, conspo, plain or text with {problem} (default: run's / rence)",
    )
    a(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use the tokenizer's chat template (default: run's / when the tokenizer has one)",
    )
    a("--seed", type=int, default=0, help="sampling seed")
    a("--batch-size", type=int, default=64, help="prompts per generate call")
    a("--label", default=None, help="row name in results.md (default: run name + checkpoint)")
    a("--compare", nargs="*", default=[], metavar="RESULTS_JSON",
      help="earlier results.json files to add as rows of the table")  # fmt: skip


def _fail(message: str) -> int:
    print(f"nemo-rence eval: {message}", file=sys.stderr)
    return 2


def _read_compare(paths: list[str], names: list[str]) -> list[dict[str, Any]]:
    docs = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
            missing = [n for n in names if (doc["benchmarks"].get(n) or {}).get("avg_at_k") is None]
            label = doc["label"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise EvalInputError(f"--compare {p}: not a readable results.json ({err})") from err
        if missing:
            raise EvalInputError(f"--compare {p} ({label}) has no score for {missing}")
        docs.append(doc)
    return docs


def run(args: argparse.Namespace) -> int:
    """Validate everything, then load the model, sample, grade and write the outputs."""
    try:
        settings = EvalSettings(
            k=args.k,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            max_prompt_tokens=args.max_prompt_tokens,
            engine=args.engine,
            template=args.template,
            chat=args.chat,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        benches = [parse_benchmark_arg(text) for text in args.benchmarks]
        names = [b.name for b in benches]
        if len(set(names)) != len(names):
            raise EvalInputError(f"--benchmarks: names must be unique, got {names}")
        loaded = [load_benchmark_file(b) for b in benches]
        others = _read_compare(args.compare, names)
        source = resolve_checkpoint(args.checkpoint, args.select)
    except EvalInputError as err:
        return _fail(str(err))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _evaluate(args, settings, benches, loaded, others, source, out)
    except EvalInputError as err:
        return _fail(str(err))


def _resolved_settings(settings: EvalSettings, source: ModelSource) -> dict[str, Any]:
    """Every setting with its default filled in: the run's config, else the paper's values."""
    run = source.config
    return {
        **dataclasses.asdict(settings),
        "engine": settings.engine or (run.rollout.engine if run else "hf"),
        "max_new_tokens": settings.max_new_tokens
        or (run.rollout.max_new_tokens if run else PAPER_MAX_NEW_TOKENS),
        "max_prompt_tokens": settings.max_prompt_tokens
        or (run.data.max_prompt_tokens if run else PAPER_MAX_PROMPT_TOKENS),
        "template": settings.template or (run.data.template if run else "rence"),
        "chat": settings.chat,  # None: decided once the tokenizer is read
        "grader_mode": "paper",
    }


def _build_engine(
    resolved: dict[str, Any], source: ModelSource, hf_dir: Path, tokenizer: Any, eos: Any
) -> Any:
    """The engine the trainer would build (``build.build_engine``) on ``hf_dir``."""
    from nemo_rence.build import build_engine
    from nemo_rence.config import TrainConfig

    cfg = source.config or TrainConfig()
    cfg = dataclasses.replace(
        cfg,
        rollout=dataclasses.replace(
            cfg.rollout, engine=resolved["engine"], max_new_tokens=resolved["max_new_tokens"]
        ),
        data=dataclasses.replace(cfg.data, max_prompt_tokens=resolved["max_prompt_tokens"]),
        run=dataclasses.replace(cfg.run, seed=resolved["seed"]),
    )
    return build_engine(cfg, hf_dir, tokenizer, eos)


def _evaluate(
    args: argparse.Namespace,
    settings: EvalSettings,
    benches: list[BenchmarkFile],
    loaded: list[Any],
    others: list[dict[str, Any]],
    source: ModelSource,
    out: Path,
) -> int:
    from transformers import AutoTokenizer

    from nemo_rence.build import resolve_eos_ids
    from nemo_rence.data.template import PromptConfig, encode_prompt
    from nemo_rence.evaluation.model_source import materialize_hf_dir
    from nemo_rence.evaluation.runner import (
        evaluate_benchmark,
        render_markdown,
        results_json,
        write_outputs,
    )
    from nemo_rence.rewards.reward_fn import MathReward, RewardConfig

    start = time.perf_counter()
    resolved = _resolved_settings(settings, source)
    with tempfile.TemporaryDirectory(dir=out, prefix=".hf-") as work:
        hf_dir = materialize_hf_dir(source, Path(work))
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if resolved["chat"] is None:
            resolved["chat"] = source.config.data.chat_template if source.config else has_chat
        if resolved["chat"] and not has_chat:
            raise EvalInputError(
                f"--chat: the tokenizer of {hf_dir} has no chat template; use --no-chat"
            )
        prompt_cfg = PromptConfig(
            template=resolved["template"],
            chat=resolved["chat"],
            max_prompt_tokens=resolved["max_prompt_tokens"],
        )
        eos_ids = resolve_eos_ids(hf_dir, tokenizer)
        engine = _build_engine(resolved, source, hf_dir, tokenizer, eos_ids)
        reward = MathReward(RewardConfig(workers=1))
        rng = random.Random(settings.seed)
        results = []
        try:
            for bench, data in zip(benches, loaded, strict=True):
                t0 = time.perf_counter()
                result = evaluate_benchmark(
                    bench,
                    data,
                    engine=engine,
                    encode=lambda rec: encode_prompt(rec, prompt_cfg, tokenizer),
                    decode=lambda ids: str(tokenizer.decode(list(ids), skip_special_tokens=True)),
                    reward=reward,
                    settings=settings,
                    max_prompt_tokens=resolved["max_prompt_tokens"],
                    max_new_tokens=resolved["max_new_tokens"],
                    stop_token_ids=eos_ids,
                    rng=rng,
                )
                results.append(result)
                done = f"avg@{settings.k} {100 * result.correct.mean():.1f}%" if result.ids else "-"
                print(
                    f"{bench.name}: {done} on {len(result.ids)} problems "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        finally:
            reward.close()
    doc = results_json(args.label or source.label, source.to_json(), resolved, results)
    doc["seconds"] = time.perf_counter() - start
    markdown = render_markdown(doc, others)
    write_outputs(out, doc, results, markdown)
    print(markdown)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'samples.jsonl'}")
    return 0
