"""What ``nemo-rence eval`` runs on: benchmark files and sampling settings, validated up front.

Everything here is checked before any model is loaded; a bad value raises
:class:`EvalInputError`, whose message names the command-line flag and the allowed values (the
command exits with code 2).

Benchmark files are given as ``FILE`` or ``NAME=FILE`` (.jsonl, .json or .parquet). The name
chooses the row schema: a registered benchmark (``nemo_rence.data.benchmarks.BENCHMARKS``:
math500, aime24, ...) is read with its own parser and titled as in the papers' tables; any other
name is read with the common aliases (problem/question, answer/final_answer/..., or the last
``\\boxed{}`` of a solution) and titled by the name. Without ``NAME=``, the name is the file's
stem when it matches a registered benchmark once lower-cased without separators
(``MATH-500.jsonl`` -> math500, ``minerva_math.parquet`` -> minerva), else the stem itself::

    parse_benchmark_arg("aime24=data/aime_2024.parquet")   # name aime24, title AIME24
    parse_benchmark_arg("data/MATH-500.jsonl")             # name math500, title MATH-500
    parse_benchmark_arg("data/my_set.jsonl")               # name my_set, generic schema
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from nemo_rence.data.benchmarks import BENCHMARKS, common_row
from nemo_rence.data.loaders import SUFFIXES, load_rows
from nemo_rence.data.records import LoadResult

__all__ = [
    "ENGINES",
    "BenchmarkFile",
    "EvalInputError",
    "EvalSettings",
    "load_benchmark_file",
    "parse_benchmark_arg",
]

ENGINES = ("hf", "vllm", "trtllm")
"""Generation engines ``--engine`` accepts (``nemo_rence.rollout``)."""

_NAMED = re.compile(r"^([A-Za-z0-9_.+-]+)=(.+)$")


class EvalInputError(ValueError):
    """A bad ``nemo-rence eval`` argument; the message names the flag and what is allowed."""


@dataclass(frozen=True)
class BenchmarkFile:
    """One ``--benchmarks`` entry.

    Attributes:
        name: the benchmark's key in results.json.
        path: the local file.
        schema: the registered benchmark whose row parser reads it, or "generic".
        title: the column title in results.md.
    """

    name: str
    path: Path
    schema: str
    title: str


def _registered(stem: str) -> str | None:
    """The registered benchmark a file stem names (longest registered prefix), if any."""
    key = re.sub(r"[^a-z0-9]", "", stem.lower())
    matches = [name for name in BENCHMARKS if key.startswith(name)]
    return max(matches, key=len) if matches else None


def parse_benchmark_arg(text: str) -> BenchmarkFile:
    """``FILE`` or ``NAME=FILE`` -> a :class:`BenchmarkFile` (file checked, not read)."""
    named = _NAMED.match(text)
    path = Path(named.group(2) if named else text)
    if path.suffix.lower() not in SUFFIXES:
        raise EvalInputError(
            f"--benchmarks {text!r}: unknown benchmark file format {path.suffix or '(none)'!r}; "
            f"allowed: {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise EvalInputError(f"--benchmarks {text!r}: no such file: {path}")
    if named:
        name = named.group(1)
        schema = name if name in BENCHMARKS else "generic"
    else:
        registered = _registered(path.stem)
        name = registered or path.stem
        schema = registered or "generic"
    title = BENCHMARKS[schema].title if schema in BENCHMARKS else name
    return BenchmarkFile(name=name, path=path, schema=schema, title=title)


def load_benchmark_file(bench: BenchmarkFile) -> LoadResult:
    """Read a benchmark's records; bad rows are counted in the report, never fatal.

    Raises:
        EvalInputError: the file cannot be read as a dataset, or no row is usable.
    """
    parser = BENCHMARKS[bench.schema].parser if bench.schema in BENCHMARKS else common_row
    try:
        loaded = load_rows(bench.path, parser, bench.name, dedup=False)
    except (OSError, ValueError) as err:  # json / parquet decoding errors are ValueErrors
        raise EvalInputError(f"--benchmarks {bench.name}: cannot read {bench.path}: {err}") from err
    if not loaded.records:
        raise EvalInputError(
            f"--benchmarks {bench.name}: no usable row ({loaded.report.summary()}); rows need a "
            "problem (problem/question) and an answer (answer/final_answer or a boxed solution)"
        )
    return loaded


@dataclass(frozen=True)
class EvalSettings:
    """Sampling and prompt settings of an evaluation (defaults: the ReNCE paper's, Sec. 4.1).

    Attributes:
        k: samples per problem; pass@1 is reported as avg@k (paper: 4).
        temperature: sampling temperature (paper: 0.7); 0 is greedy decoding.
        top_p: nucleus mass in (0, 1].
        max_new_tokens: response length limit (None: the run's rollout.max_new_tokens, else the
            paper's 6656).
        max_prompt_tokens: longer prompts are skipped and counted (None: the run's
            data.max_prompt_tokens, else 1536).
        engine: one of :data:`ENGINES` (None: the run's rollout.engine, else "hf").
        template: prompt template name or text with {problem} (None: the run's, else "rence").
        chat: wrap the prompt in the tokenizer's chat template (None: the run's setting, else
            whether the tokenizer has a chat template).
        seed: seed of the sampling generators.
        batch_size: prompts per generate call.
    """

    k: int = 4
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int | None = None
    max_prompt_tokens: int | None = None
    engine: str | None = None
    template: str | None = None
    chat: bool | None = None
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        def at_least_one(flag: str, value: int | None) -> None:
            if value is not None and (not isinstance(value, int) or value < 1):
                raise EvalInputError(f"{flag} must be an integer >= 1, got {value!r}")

        at_least_one("--k", self.k)
        at_least_one("--max-new-tokens", self.max_new_tokens)
        at_least_one("--max-prompt-tokens", self.max_prompt_tokens)
        at_least_one("--batch-size", self.batch_size)
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise EvalInputError(
                f"--temperature must be a finite number >= 0 (0: greedy; paper: 0.7), "
                f"got {self.temperature!r}"
            )
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise EvalInputError(f"--top-p must be in (0, 1], got {self.top_p!r}")
        if self.engine is not None and self.engine not in ENGINES:
            raise EvalInputError(f"--engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.template is not None:
            from nemo_rence.data.template import PromptConfig

            try:
                PromptConfig(template=self.template, chat=False)
            except ValueError as err:
                raise EvalInputError(f"--template: {err}") from err
