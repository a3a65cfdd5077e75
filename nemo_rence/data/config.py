"""The ``data`` section of a run: where prompts come from and how they become model input.

Owned by the data component; :mod:`nemo_rence.config` imports and re-exports :class:`DataConfig`.
The presets in ``conf/data/`` choose a task:

==============  ==============================================================================
``data.task``   prompts
==============  ==============================================================================
arithmetic      synthetic, generated in code (the embedded default; fixed hash split)
dapo            ``data.path``: BytedTsinghua-SIA/DAPO-Math-17k (parquet / jsonl)
math            ``data.path``: hendrycks MATH (problem, solution[, answer])
deepscaler      ``data.path``: agentica-org/DeepScaleR-Preview-Dataset (json)
jsonl           ``data.path``: any .jsonl / .json / .parquet, fields named by ``data.*_field``
mixture         ``data.sources``: several files, each ``{path, schema, weight}``
==============  ==============================================================================

Files are local; the presets read them from ``$NEMO_RENCE_DATA_ROOT`` (default ``/data``).
:meth:`DataConfig.check_files` names the field and the missing file before any model is built.
The held-out prompts are never drawn from the training prompts (:mod:`nemo_rence.data.datasets`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["DATA_ROOT_ENV", "SCHEMAS", "TASKS", "DataConfig", "SourceConfig"]

DATA_ROOT_ENV = "NEMO_RENCE_DATA_ROOT"
"""Environment variable the ``conf/data`` presets and the recipes read dataset paths from."""

SCHEMAS = ("dapo", "math", "deepscaler", "generic")
"""Public file schemas a source may have (:data:`nemo_rence.data.loaders.SCHEMAS`)."""

TASKS = ("arithmetic", "dapo", "math", "deepscaler", "jsonl", "mixture")
"""Values of ``data.task``."""

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")

DEFAULT_HELDOUT_FRACTION = 0.05
"""Hash-split share of a file task's problems held out when neither ``data.heldout_path`` nor
``data.heldout_fraction`` is set."""


def _error(message: str) -> Exception:
    from nemo_rence.errors import ConfigError

    return ConfigError(message)


def _check_suffix(name: str, path: str) -> None:
    if Path(path).suffix.lower() not in FILE_SUFFIXES:
        raise _error(f"{name} must be a {' / '.join(FILE_SUFFIXES)} file, got {path!r}")


@dataclass
class SourceConfig:
    """One file of a ``data.task=mixture`` (an item of ``data.sources``)."""

    path: str
    """The .jsonl / .json / .parquet file."""
    schema: str = "generic"
    """Its public schema: 'dapo', 'math', 'deepscaler' or 'generic' (fields ``data.*_field``)."""
    weight: float = 1.0
    """Expected copies of each of its problems per epoch of the training list (after
    deduplication and the held-out split): 1 keeps the file as is, 2 repeats every problem,
    0.5 keeps a hash-chosen half. The source's share of the prompts drawn is therefore
    ``weight * kept / sum(weight_j * kept_j)``."""
    name: str | None = None
    """Name of the source in records, ids and the load report (default: the schema name,
    ``math-2`` style when two sources share a schema)."""


def _sources(value: Any) -> tuple[SourceConfig, ...]:
    if isinstance(value, Mapping | str) or not isinstance(value, Sequence):
        raise _error(f"data.sources must be a list of {{path, schema, weight}}, got {value!r}")
    allowed = [f.name for f in fields(SourceConfig)]
    out = []
    for i, item in enumerate(value):
        where = f"data.sources[{i}]"
        if isinstance(item, SourceConfig):
            item = {k: getattr(item, k) for k in allowed}
        if not isinstance(item, Mapping):
            raise _error(f"{where} must be a mapping with keys {allowed}, got {item!r}")
        unknown = sorted(set(item) - set(allowed))
        if unknown:
            raise _error(f"unknown key(s) {unknown} in {where}; allowed: {allowed}")
        if not isinstance(item.get("path"), str) or not item["path"]:
            raise _error(f"{where}.path is required (a .jsonl / .json / .parquet file)")
        _check_suffix(f"{where}.path", item["path"])
        schema = item.get("schema", "generic")
        if schema not in SCHEMAS:
            raise _error(f"{where}.schema must be one of {list(SCHEMAS)}, got {schema!r}")
        weight = item.get("weight", 1.0)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise _error(f"{where}.weight must be a finite number >= 0, got {weight!r}")
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise _error(f"{where}.name must be a non-empty string, got {name!r}")
        out.append(SourceConfig(item["path"], schema, float(weight), name))
    return tuple(out)


@dataclass
class DataConfig:
    """Where prompts come from and how they are turned into model input."""

    task: str = "arithmetic"
    """'arithmetic' (synthetic, verifiable, generated in code), 'dapo', 'math', 'deepscaler'
    (``path`` in that public schema), 'jsonl' (``path``, fields named by ``*_field``) or
    'mixture' (``sources``)."""
    path: str | None = None
    """Dataset file of the single-file tasks (.jsonl / .json / .parquet)."""
    sources: tuple[SourceConfig, ...] = ()
    """Files of ``task=mixture``: ``[{path, schema, weight, name}, ...]`` (:class:`SourceConfig`)."""
    heldout_path: str | None = None
    """File tasks: a separate held-out file; training problems equal to one of its problems
    (normalised text) are dropped from training and counted ('in_heldout')."""
    heldout_schema: str | None = None
    """Schema of ``heldout_path``: 'dapo', 'math', 'deepscaler' or 'generic'; default: the
    task's ('generic' for a mixture)."""
    heldout_fraction: float | None = None
    """File tasks without ``heldout_path``: share of problems held out by a hash of their
    normalised text (deterministic, disjoint from training, the same for every seed); 0: no
    held-out set. Default: 0.05 without ``heldout_path``, 0 with it."""
    problem_field: str = "problem"
    """Generic schema (task 'jsonl', mixture sources with schema 'generic'): problem field."""
    answer_field: str = "answer"
    """Generic schema: answer field."""
    id_field: str = "id"
    """Generic schema: id field (row number when absent)."""
    solution_field: str = "solution"
    """Generic schema: field whose last ``\\boxed{}`` is the answer when the answer is missing."""
    dedup: bool = True
    """File tasks: keep the first row of each problem (normalised text) across all sources and
    count the others ('duplicate', 'duplicate_other_answer'); DAPO-Math-17k repeats each
    problem ~100 times."""
    max_row_bytes: int = 1 << 20
    """File tasks: a .jsonl line longer than this is skipped while reading, without parsing it
    ('too_long'); .json rows are checked after parsing the file."""
    train_size: int = 2000
    """Arithmetic: number of training problems."""
    heldout_size: int = 200
    """Held-out problems kept (arithmetic: generated; files: the first of the held-out split)."""
    digits: int = 1
    """Arithmetic: digits per operand (1: 0-9, 2: 10-99 ...)."""
    steps: int = 1
    """Arithmetic: operations per problem (1: a op b)."""
    operations: tuple[str, ...] = ("+", "-", "*")
    """Arithmetic: operators to draw from."""
    template: str = "rence"
    """Prompt template: 'rence' (the paper's, Sec. 4.1), 'conspo', 'plain' or a text with {problem}."""
    chat_template: bool = True
    """Wrap the paper's prompt template in the tokenizer's chat template."""
    max_prompt_tokens: int = 1536
    """Prompts longer than this are dropped and counted (paper: 1536)."""
    seed: int = 0
    """Seed of the problem generator and of the prompt sampler."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise _error(f"data.task must be one of {list(TASKS)}, got {self.task!r}")
        for name in ("train_size", "heldout_size", "digits", "steps", "max_prompt_tokens"):
            if getattr(self, name) <= 0:
                raise _error(f"data.{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_row_bytes <= 0:
            raise _error(f"data.max_row_bytes must be > 0, got {self.max_row_bytes!r}")
        self.sources = _sources(self.sources)
        if self.task == "mixture":
            if not self.sources:
                raise _error(
                    "data.sources is required when data.task='mixture': a list of "
                    "{path, schema, weight} (conf/data/mixture.yaml)"
                )
            if not any(s.weight > 0 for s in self.sources):
                raise _error("data.sources: at least one source needs a weight > 0")
            names = [s for s in self.source_names() if s]
            if len(set(names)) != len(names):
                raise _error(f"data.sources: names must be distinct, got {names}")
        elif self.sources:
            raise _error(f"data.sources applies to data.task='mixture' only, not {self.task!r}")
        if self.task in ("dapo", "math", "deepscaler", "jsonl"):
            if not self.path:
                raise _error(
                    f"data.path is required when data.task={self.task!r} "
                    f"(a .jsonl / .json / .parquet file in the {self.schema()} schema)"
                )
            _check_suffix("data.path", self.path)
        if self.heldout_schema is not None and self.heldout_schema not in SCHEMAS:
            raise _error(
                f"data.heldout_schema must be one of {list(SCHEMAS)}, got {self.heldout_schema!r}"
            )
        if self.heldout_path is not None:
            _check_suffix("data.heldout_path", self.heldout_path)
            if self.heldout_fraction:
                raise _error(
                    "set data.heldout_path or data.heldout_fraction, not both (the held-out "
                    f"set is the file), got heldout_fraction={self.heldout_fraction!r}"
                )
        if self.heldout_fraction is not None and not 0.0 <= self.heldout_fraction < 1.0:
            raise _error(f"data.heldout_fraction must be in [0, 1), got {self.heldout_fraction!r}")

    @property
    def from_files(self) -> bool:
        """Prompts are read from files (every task but 'arithmetic')."""
        return self.task != "arithmetic"

    def schema(self) -> str:
        """The file schema of a single-file task ('generic' for 'jsonl' and 'mixture')."""
        return self.task if self.task in ("dapo", "math", "deepscaler") else "generic"

    def source_names(self) -> list[str]:
        """Name of each source: its ``name``, else its schema (``math-2`` for a second one)."""
        specs = (
            [(s.name, s.schema) for s in self.sources]
            if self.task == "mixture"
            else [(None, self.schema())]
        )
        seen: dict[str, int] = {}
        out = []
        for name, schema in specs:
            if name:
                out.append(name)
                continue
            seen[schema] = seen.get(schema, 0) + 1
            out.append(schema if seen[schema] == 1 else f"{schema}-{seen[schema]}")
        return out

    def effective_heldout_fraction(self) -> float:
        """``heldout_fraction``, or its default (0.05; 0 when ``heldout_path`` is set)."""
        if self.heldout_fraction is not None:
            return self.heldout_fraction
        return 0.0 if self.heldout_path else DEFAULT_HELDOUT_FRACTION

    def files(self) -> list[tuple[str, str]]:
        """``(field, path)`` of every file this config reads (none for 'arithmetic')."""
        out: list[tuple[str, str]] = []
        if self.task == "mixture":
            out += [(f"data.sources[{i}].path", s.path) for i, s in enumerate(self.sources)]
        elif self.path:
            out.append(("data.path", self.path))
        if self.heldout_path:
            out.append(("data.heldout_path", self.heldout_path))
        return out

    def check_files(self) -> None:
        """Raise :class:`~nemo_rence.config.ConfigError` naming the field and the file when a
        dataset file is missing (call before any model is built)."""
        for name, path in self.files():
            if not Path(path).is_file():
                root = os.environ.get(DATA_ROOT_ENV)
                where = (
                    f"{DATA_ROOT_ENV}={root}"
                    if root
                    else f"{DATA_ROOT_ENV} is not set (presets: /data)"
                )
                raise _error(
                    f"{name}: dataset file not found: {path} ({where}); place the file there "
                    f"or set {name}=/path/to/file (docs/reproduce-table1.md lists the files)"
                )
