"""The training and held-out prompts of a run, from a :class:`~nemo_rence.data.config.DataConfig`.

:func:`load_datasets` is the one entry point (``build.py`` calls it)::

    train, heldout, report = load_datasets(cfg.data)
    print(report.summary())          # what was read, kept and skipped, by source and reason
    logger.log(report.metrics())     # data/train_prompts, data/skipped/duplicate, ...

For file tasks, in this order:

1. read every source (``data.path`` or ``data.sources``) in its public schema; unusable rows
   (malformed, invalid UTF-8, over-long, no problem, no answer) are skipped and counted;
2. deduplicate by normalised problem text (:func:`normalize_problem`) across all sources, the
   first occurrence kept ('duplicate'; 'duplicate_other_answer' when the answers differ);
3. split off the held-out set, never overlapping the training prompts: the problems of
   ``data.heldout_path`` (training rows with the same normalised text are dropped,
   'in_heldout'), or the problems whose normalised-text hash falls in ``data.heldout_fraction``
   (:func:`heldout_by_hash`: the same split for every seed and every source order);
4. apply the sources' weights (copies per epoch of the training list).

An empty result raises :class:`EmptyDatasetError` with the skip counts. Arithmetic keeps its
generator and its own hash split (:mod:`nemo_rence.data.synthetic`), unchanged.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from nemo_rence.data.config import DataConfig
from nemo_rence.data.loaders import FieldMap, load_prompts
from nemo_rence.data.records import LoadReport, PromptRecord
from nemo_rence.data.synthetic import split_of

__all__ = [
    "DatasetReport",
    "EmptyDatasetError",
    "heldout_by_hash",
    "load_datasets",
    "normalize_problem",
]


class EmptyDatasetError(ValueError):
    """No usable training row was found; the message carries the skip counts per source."""


def normalize_problem(text: str) -> str:
    """The deduplication and split key of a problem: NFKC, case-folded, whitespace collapsed.

    ``"Find  $x$.\\n"`` and ``"find $x$."`` have the same key.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def heldout_by_hash(key: str, fraction: float) -> bool:
    """Whether the problem with normalised text ``key`` is held out (``fraction`` of all keys).

    A stable hash of the text alone (blake2b, as the arithmetic split), so the split does not
    depend on the seed, the file order or which other problems are present.
    """
    return fraction > 0 and split_of(key, fraction) == "heldout"


def _weight_keeps(key: str, fraction: float) -> bool:
    """Hash-chosen share ``fraction`` of the problems (the fractional part of a weight)."""
    h = int.from_bytes(hashlib.blake2b(f"weight:{key}".encode(), digest_size=8).digest(), "big")
    return (h % 1_000_000) < fraction * 1_000_000


@dataclass
class DatasetReport:
    """What :func:`load_datasets` read, kept and skipped (printed at start, logged as metrics).

    Attributes:
        task: ``data.task``.
        sources: one :class:`LoadReport` per file read (held-out file last), its skip counts
            including the cross-source ones ('duplicate', 'duplicate_other_answer',
            'in_heldout').
        weights: source name -> weight (mixtures).
        train: training records per source after deduplication and split, before weights.
        train_prompts: length of the training list (with the weights' copies).
        heldout_prompts: held-out records.
        heldout: how the held-out set was made: 'file', 'hash 0.05', 'none' or 'synthetic'.
    """

    task: str
    sources: list[LoadReport] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    train: Counter[str] = field(default_factory=Counter)
    train_prompts: int = 0
    heldout_prompts: int = 0
    heldout: str = "none"

    @property
    def rows(self) -> int:
        """Rows read from all files."""
        return sum(r.rows for r in self.sources)

    @property
    def skipped(self) -> Counter[str]:
        """Skip reason -> count, over all files."""
        total: Counter[str] = Counter()
        for r in self.sources:
            total.update(r.skipped)
        return total

    def summary(self) -> str:
        """A few lines: one per file, then the totals."""
        lines = [f"data: {r.summary()}" for r in self.sources]
        if self.weights and any(w != 1.0 for w in self.weights.values()):
            lines.append(
                "data: weights "
                + ", ".join(
                    f"{n}={w:g} ({self.train[n]} problems)" for n, w in self.weights.items()
                )
            )
        lines.append(
            f"data: {self.train_prompts} training prompts, {self.heldout_prompts} held-out "
            f"({self.heldout})"
        )
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the metrics log: ``data/rows``, ``data/train_prompts``,
        ``data/heldout_prompts``, ``data/skipped/<reason>``, ``data/<source>/kept``."""
        out = {
            "data/rows": float(self.rows),
            "data/train_prompts": float(self.train_prompts),
            "data/heldout_prompts": float(self.heldout_prompts),
        }
        out.update({f"data/skipped/{k}": float(v) for k, v in sorted(self.skipped.items())})
        out.update({f"data/{r.source}/kept": float(r.kept) for r in self.sources})
        return out


def load_datasets(cfg: DataConfig) -> tuple[list[PromptRecord], list[PromptRecord], DatasetReport]:
    """The training prompts, the held-out prompts (never among them) and the report.

    Raises:
        ConfigError: a file named by the config is missing (the field and the path).
        EmptyDatasetError: no usable training row was found (with the skip counts).
    """
    if cfg.task == "arithmetic":
        return _arithmetic(cfg)
    cfg.check_files()
    names = cfg.source_names()
    if cfg.task == "mixture":
        specs = [(s.path, s.schema, s.weight) for s in cfg.sources]
    else:
        assert cfg.path is not None
        specs = [(cfg.path, cfg.schema(), 1.0)]
    fields = FieldMap(cfg.problem_field, cfg.answer_field, cfg.id_field, cfg.solution_field)
    report = DatasetReport(task=cfg.task)
    if cfg.task == "mixture":
        report.weights = {n: w for n, (_, _, w) in zip(names, specs, strict=True)}

    def read(path: str, schema: str, name: str) -> list[PromptRecord]:
        loaded = load_prompts(
            path,
            schema,
            fields=fields if schema == "generic" else None,
            source=name,
            dedup=False,  # by normalised text below, across all sources
            max_row_bytes=cfg.max_row_bytes,
            log=False,  # logged once complete, by the caller (summary())
        )
        report.sources.append(loaded.report)
        return loaded.records

    per_source = [
        read(path, schema, name) for (path, schema, _), name in zip(specs, names, strict=True)
    ]
    heldout: list[PromptRecord] = []
    heldout_keys: set[str] = set()
    if cfg.heldout_path:
        schema = cfg.heldout_schema or cfg.schema()
        heldout = read(cfg.heldout_path, schema, "heldout")
        heldout = _dedup(heldout, report.sources[-1], set(), {})
        heldout_keys = {normalize_problem(r.problem) for r in heldout}
        report.heldout = "file"

    fraction = cfg.effective_heldout_fraction()
    seen: set[str] = set()
    answers: dict[str, str] = {}
    train_by_source: list[list[PromptRecord]] = []
    for records, rep in zip(per_source, report.sources, strict=False):
        kept = _dedup(records, rep, seen, answers) if cfg.dedup else records
        train: list[PromptRecord] = []
        for rec in kept:
            key = normalize_problem(rec.problem)
            if key in heldout_keys:
                rep.skip("in_heldout", f"id {rec.id}")
            elif not cfg.heldout_path and heldout_by_hash(key, fraction):
                heldout.append(rec)
            else:
                train.append(rec)
        train_by_source.append(train)
    if not cfg.heldout_path:
        report.heldout = f"hash {fraction:g}" if fraction > 0 else "none"

    if len(specs) > 1:  # ids unique across sources: the filter's mastered set is keyed by id
        train_by_source = [[_qualified(r) for r in recs] for recs in train_by_source]
        heldout = [_qualified(r) if r.source != "heldout" else r for r in heldout]
    out: list[PromptRecord] = []
    for name, recs, (_, _, weight) in zip(names, train_by_source, specs, strict=True):
        report.train[name] = len(recs)
        out += _weighted(recs, weight)
    heldout = heldout[: cfg.heldout_size]
    report.train_prompts, report.heldout_prompts = len(out), len(heldout)
    if not out:
        raise EmptyDatasetError(_empty_message(cfg, report))
    return out, heldout, report


def _arithmetic(cfg: DataConfig) -> tuple[list[PromptRecord], list[PromptRecord], DatasetReport]:
    from nemo_rence.data.synthetic import ArithmeticConfig, generate_arithmetic

    arith = ArithmeticConfig(
        digits=cfg.digits, steps=cfg.steps, operations=tuple(cfg.operations), seed=cfg.seed
    )
    train = generate_arithmetic(cfg.train_size, arith, split="train")
    heldout = generate_arithmetic(cfg.heldout_size, arith, split="heldout")
    source = LoadReport(source="synthetic", rows=len(train) + len(heldout))
    report = DatasetReport(
        task="arithmetic",
        sources=[source],
        train=Counter({"synthetic": len(train)}),
        train_prompts=len(train),
        heldout_prompts=len(heldout),
        heldout="synthetic",
    )
    return train, heldout, report


def _dedup(
    records: list[PromptRecord], rep: LoadReport, seen: set[str], answers: dict[str, str]
) -> list[PromptRecord]:
    """Keep the first record of each normalised problem (``seen`` shared across sources)."""
    out = []
    for rec in records:
        key = normalize_problem(rec.problem)
        if key in seen:
            same = answers.get(key) == " ".join(rec.answer.split())
            rep.skip("duplicate" if same else "duplicate_other_answer", f"id {rec.id}")
            continue
        seen.add(key)
        answers[key] = " ".join(rec.answer.split())
        out.append(rec)
    return out


def _qualified(rec: PromptRecord) -> PromptRecord:
    return PromptRecord(f"{rec.source}/{rec.id}", rec.problem, rec.answer, rec.source, rec.metadata)


def _weighted(records: list[PromptRecord], weight: float) -> list[PromptRecord]:
    """``floor(weight)`` copies of every record plus a hash-chosen ``weight % 1`` share."""
    whole, frac = math.floor(weight), weight - math.floor(weight)
    out = [r for r in records for _ in range(whole)]
    if frac > 0:
        out += [r for r in records if _weight_keeps(normalize_problem(r.problem), frac)]
    return out


def _empty_message(cfg: DataConfig, report: DatasetReport) -> str:
    files = ", ".join(f"{name}={path}" for name, path in cfg.files())
    skipped = report.skipped
    counts = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none"
    per_file = "; ".join(r.summary() for r in report.sources)
    if report.rows and not any(report.train.values()) and sum(r.kept for r in report.sources):
        why = "every usable row is in the held-out set"
    else:
        why = "no usable row was found"
    return (
        f"data.task={cfg.task!r}: {why} ({files}): {report.rows} row(s) read, skipped: "
        f"{counts} [{per_file}]"
    )
