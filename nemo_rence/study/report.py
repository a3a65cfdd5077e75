"""The study's report: every arm at the same budget, with 95% bootstrap intervals.

For each run (``<arm>/seed<k>``), from its ``metrics.jsonl`` and ``config.json``:

* **spend**: cumulative cost after each iteration, ``S_i = sum_{j<=i} c_j`` with ``c_j`` the
  iteration's cost in the study's budget kind (:func:`nemo_rence.budget.iteration_cost`, the
  count the trainer's stop policy uses);
* **value at equal budget**: the held-out metric of the *last evaluation at or before the
  budget*, i.e. at the largest iteration ``i`` with ``S_i <= amount`` that was evaluated (the
  evaluation before training has ``S_0 = 0``);
* **filter economics**: ``sum_i filter/rollouts / (iterations * filter.batch_size)``, rollouts
  generated per prompt trained on; **time**: the training stages' minutes (``time/*``).

Per arm: the mean over seeds and a 95% percentile bootstrap interval. When every run of the arm
wrote per-problem samples of that evaluation (``samples/eval-iterNNNNNN-TAG.jsonl``, a
``correct`` flag per held-out problem), the bootstrap is two-level (seeds with replacement, then
problems with replacement within each drawn seed); otherwise over seeds only. A difference
``arm - first arm`` is bootstrapped *paired*: the same seed draws (and the same problem draws when
both arms have samples on the same problems) for both arms; it "excludes zero" when the interval
does. Every draw comes from ``numpy.random.default_rng([bootstrap_seed, ...])``: the same runs
always give the same report.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemo_rence.budget import iteration_cost
from nemo_rence.study.config import StudyConfig
from nemo_rence.study.runs import RunSpec, is_done, plan_runs

__all__ = [
    "SAMPLE_FIELDS",
    "ArmSummary",
    "RunSummary",
    "bootstrap_mean",
    "build_report",
    "summarize_run",
]


@dataclass
class RunSummary:
    """What one run spent and scored."""

    arm: str
    seed: int
    done: bool
    iterations: int = 0
    spent: float = 0.0
    """Cost of every logged iteration (the budget kind)."""
    curve: list[tuple[float, float]] = field(default_factory=list)
    """(spend at the evaluation, metric) of each evaluation, in order."""
    at_budget: float | None = None
    at_budget_iteration: int | None = None
    at_budget_spent: float | None = None
    problems: dict[str, float] | None = None
    """Per held-out problem id: correct (1/0) at the equal-budget evaluation, when written."""
    rollouts: float = 0.0
    accepted_prompts: float = 0.0
    train_minutes: float = 0.0
    optimizer_steps: float = 0.0
    best: float | None = None
    """The highest metric of the evaluations at or before the budget (the ``best`` checkpoint's
    when it is the metric the run selects on)."""
    also: dict[str, float] = field(default_factory=dict)
    """``study.also`` metrics at the equal-budget evaluation."""


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize_run(study: StudyConfig, spec: RunSpec) -> RunSummary:
    """Read one run directory (module doc for every number)."""
    out = RunSummary(spec.arm, spec.seed, is_done(study, spec))
    config_file = spec.directory / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    n_update = int(config.get("optim", {}).get("n_update", 1))
    batch_size = int(config.get("filter", {}).get("batch_size", 1))
    rows = _rows(spec.directory / "metrics.jsonl")
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    for row in rows:  # the last row of an iteration counts (a resumed run may repeat one)
        it = int(row.get("iteration", 0))
        if "filter/rollouts" in row and it >= 1:
            train[it] = row
        if row.get(study.metric) is not None:
            evals[it] = row
    spend = {0: 0.0}
    total = 0.0
    for it in sorted(train):
        total += iteration_cost(study.budget.kind, train[it], n_update)[0]
        spend[it] = total
        out.rollouts += float(train[it]["filter/rollouts"])
        out.train_minutes += (
            sum(float(v or 0.0) for k, v in train[it].items() if k.startswith("time/")) / 60.0
        )
    out.iterations, out.spent = len(train), total
    out.optimizer_steps = float(len(train) * n_update)
    out.accepted_prompts = float(len(train) * batch_size)
    limit = study.budget.amount * (1 + 1e-9)
    for it in sorted(evals):
        if it not in spend:
            continue
        value = float(evals[it][study.metric])
        out.curve.append((spend[it], value))
        if spend[it] <= limit:
            out.at_budget, out.at_budget_iteration, out.at_budget_spent = value, it, spend[it]
            out.best = value if out.best is None else max(out.best, value)
    if out.at_budget_iteration is not None:
        row = evals[out.at_budget_iteration]
        out.also = {m: float(row[m]) for m in study.also if row.get(m) is not None}
    sample_field = SAMPLE_FIELDS.get(study.metric)
    if out.at_budget_iteration is not None and sample_field is not None:
        row = evals[out.at_budget_iteration]
        tag = next((k[len("eval/is_") :] for k in row if k.startswith("eval/is_")), "")
        out.problems = _problems(spec.directory, out.at_budget_iteration, tag, sample_field)
    return out


#: metric -> the field of a ``samples/`` row whose mean over problems is that metric
SAMPLE_FIELDS = {"eval/accuracy": "correct", "eval/reward": "reward"}


def _problems(run_dir: Path, iteration: int, tag: str, key: str) -> dict[str, float] | None:
    path = run_dir / "samples" / f"eval-iter{iteration:06d}-{tag}.jsonl"
    rows = _rows(path)
    if not rows or any(key not in r or "id" not in r for r in rows):
        return None
    return {str(r["id"]): float(r[key]) for r in rows}


def _interval(draws: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap means: seeds with replacement (1-d values), or seeds then problems within each
    drawn seed (2-d ``[seed, problem]`` values). Returns ``samples`` means."""
    v = np.asarray(values, dtype=float)
    n_seeds = v.shape[0]
    seeds = rng.integers(0, n_seeds, size=(samples, n_seeds))
    if v.ndim == 1:
        return v[seeds].mean(axis=1)
    problems = rng.integers(0, v.shape[1], size=(samples, n_seeds, v.shape[1]))
    return v[seeds[..., None], problems].mean(axis=(1, 2))


def _paired_diff(
    a: np.ndarray, b: np.ndarray, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap of ``mean(b) - mean(a)`` with the same seed (and problem) draws for both."""
    n_seeds = a.shape[0]
    seeds = rng.integers(0, n_seeds, size=(samples, n_seeds))
    if a.ndim == 1:
        return b[seeds].mean(axis=1) - a[seeds].mean(axis=1)
    problems = rng.integers(0, a.shape[1], size=(samples, n_seeds, a.shape[1]))
    idx = (seeds[..., None], problems)
    return b[idx].mean(axis=(1, 2)) - a[idx].mean(axis=(1, 2))


@dataclass
class ArmSummary:
    """One arm at the budget: mean and 95% interval over its seeds (and problems)."""

    arm: str
    label: str
    seeds: list[int]
    values: list[float]
    mean: float
    std: float
    ci: tuple[float, float]
    over: str
    """'seeds' or 'seeds x problems': what the bootstrap resampled."""
    spent_mean: float
    rollouts_per_accepted_prompt: float
    train_minutes_mean: float
    done: int
    runs: int
    diff: dict[str, Any] | None = None
    """vs the first arm: mean, ci, excludes_zero, paired seeds."""
    best_mean: float = math.nan
    """Mean over seeds of each run's best evaluation at or before the budget."""
    iterations_mean: float = math.nan
    optimizer_steps_mean: float = math.nan
    also_means: dict[str, float] = field(default_factory=dict)
    """Mean over seeds of each ``study.also`` metric at the equal-budget evaluation."""


def _matrix(runs: Sequence[RunSummary]) -> tuple[np.ndarray, list[str] | None]:
    """Per-seed values, or [seed, problem] correctness when every run has the same problems."""
    problems = [r.problems for r in runs]
    if problems and all(p is not None for p in problems):
        ids = sorted(problems[0] or {})
        if ids and all(sorted(p or {}) == ids for p in problems):
            return np.array([[(p or {})[i] for i in ids] for p in problems]), ids
    return np.array([r.at_budget for r in runs], dtype=float), None


def build_report(study: StudyConfig, study_dir: Path) -> dict[str, Any]:
    """Summarize every run and arm of the study (the content of ``study.json``)."""
    specs = plan_runs(study, study_dir)
    runs = [summarize_run(study, s) for s in specs]
    by_arm = {a.name: [r for r in runs if r.arm == a.name] for a in study.arms}
    arms: list[ArmSummary] = []
    matrices: dict[str, tuple[list[int], np.ndarray, list[str] | None]] = {}
    for k, arm in enumerate(study.arms):
        # finished runs only: an unfinished run's last evaluation is not at the budget
        scored = [r for r in by_arm[arm.name] if r.done and r.at_budget is not None]
        if not scored:
            continue
        rng = np.random.default_rng([study.bootstrap_seed, k, 0])
        matrix, ids = _matrix(scored)
        values = [float(r.at_budget) for r in scored if r.at_budget is not None]
        draws = bootstrap_mean(matrix, study.bootstrap_samples, rng)
        rollouts = sum(r.rollouts for r in by_arm[arm.name])
        accepted = sum(r.accepted_prompts for r in by_arm[arm.name])
        arms.append(
            ArmSummary(
                arm=arm.name,
                label=arm.label or arm.name,
                seeds=[r.seed for r in scored],
                values=values,
                mean=float(np.mean(values)),
                std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                ci=_interval(draws),
                over="seeds x problems" if ids is not None else "seeds",
                spent_mean=float(np.mean([r.spent for r in scored])),
                rollouts_per_accepted_prompt=rollouts / accepted if accepted else math.nan,
                train_minutes_mean=float(np.mean([r.train_minutes for r in scored])),
                done=sum(r.done for r in by_arm[arm.name]),
                runs=len(by_arm[arm.name]),
                best_mean=float(np.mean([r.best for r in scored if r.best is not None])),
                iterations_mean=float(np.mean([r.iterations for r in scored])),
                optimizer_steps_mean=float(np.mean([r.optimizer_steps for r in scored])),
                also_means={
                    m: float(np.mean([r.also[m] for r in scored if m in r.also]))
                    for m in study.also
                    if any(m in r.also for r in scored)
                },
            )
        )
        matrices[arm.name] = ([r.seed for r in scored], matrix, ids)
    index = {a.name: i for i, a in enumerate(study.arms)}
    if arms:
        base = arms[0]
        for arm_summary in arms[1:]:
            pair = (index[base.arm], index[arm_summary.arm])
            arm_summary.diff = _difference(
                study, matrices[base.arm], matrices[arm_summary.arm], pair
            )
    tables = {}
    for title, rows in study.tables.items():
        present = [r for r in rows if r in matrices]
        if not present:
            continue
        ref = present[0]
        tables[title] = [
            {
                "arm": r,
                "label": next(a.label for a in arms if a.arm == r),
                "mean": next(a.mean for a in arms if a.arm == r),
                "std": next(a.std for a in arms if a.arm == r),
                "diff": None
                if r == ref
                else _difference(study, matrices[ref], matrices[r], (index[ref], index[r])),
            }
            for r in present
        ]
    return {
        "study": study.to_dict(),
        "tables": tables,
        "budget": {"kind": study.budget.kind, "amount": study.budget.amount},
        "metric": study.metric,
        "arms": [asdict(a) for a in arms],
        "runs": [asdict(r) for r in runs],
    }


def _difference(
    study: StudyConfig,
    base: tuple[list[int], np.ndarray, list[str] | None],
    other: tuple[list[int], np.ndarray, list[str] | None],
    pair: tuple[int, int],
) -> dict[str, Any]:
    """``other - base`` over the seeds both have (paired); problems paired when shared.

    ``pair``: the two arms' places in the study; the bootstrap's draws depend on the two arms
    alone, in either order, so one comparison has one interval wherever the report shows it
    (and ``a - b``'s is ``b - a``'s mirrored)."""
    seeds = sorted(s for s in base[0] if s in other[0])
    rng = np.random.default_rng([study.bootstrap_seed, *sorted(pair), 1])
    if not seeds:
        return {"mean": math.nan, "ci": (math.nan, math.nan), "excludes_zero": False, "seeds": []}
    a = base[1][[base[0].index(s) for s in seeds]]
    b = other[1][[other[0].index(s) for s in seeds]]
    if a.ndim != b.ndim or (a.ndim == 2 and base[2] != other[2]):
        a = a.mean(axis=1) if a.ndim == 2 else a  # problems not shared: pair seeds only
        b = b.mean(axis=1) if b.ndim == 2 else b
    draws = _paired_diff(a, b, study.bootstrap_samples, rng)
    lo, hi = _interval(draws)
    mean = float(
        np.mean(b.mean(axis=1) if b.ndim == 2 else b)
        - np.mean(a.mean(axis=1) if a.ndim == 2 else a)
    )
    return {
        "mean": mean,
        "ci": (lo, hi),
        "excludes_zero": bool(lo > 0 or hi < 0),
        "seeds": seeds,
        "over": "seeds x problems" if a.ndim == 2 else "seeds",
    }


def curve_band(
    curves: Sequence[Sequence[tuple[float, float]]],
    grid: Sequence[float] | np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% seed-bootstrap band of step curves (the last evaluation at or before x)."""
    values = np.full((len(curves), len(grid)), np.nan)
    for i, curve in enumerate(curves):
        for j, x in enumerate(grid):
            seen = [v for s, v in curve if s <= x * (1 + 1e-9)]
            if seen:
                values[i, j] = seen[-1]
    mean = np.nanmean(values, axis=0)
    seeds = rng.integers(0, len(curves), size=(500, len(curves)))
    boot = np.nanmean(values[seeds], axis=1)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
    return mean, lo, hi


#: metrics that are shares, shown in % (the others as they are)
PERCENT_METRICS = ("eval/accuracy", "eval/boxed", "eval/reward")


def unit(metric: str) -> tuple[float, str]:
    """(scale, suffix) of a metric in the report: 100 and '%' for a share, else 1 and ''."""
    return (100.0, "%") if metric in PERCENT_METRICS else (1.0, "")


def write_report(study: StudyConfig, study_dir: Path) -> dict[str, Any]:
    """Write ``study.json``, ``study.md`` and ``plots/*.png`` into the study directory."""
    study_dir = Path(study_dir)
    report = build_report(study, study_dir)
    (study_dir / "study.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    plots = write_plots(study, study_dir, report)
    (study_dir / "study.md").write_text(render_markdown(study, report, plots))
    return report


def render_markdown(study: StudyConfig, report: Mapping[str, Any], plots: Sequence[Path]) -> str:
    b = study.budget
    metric = study.metric
    u, suffix = unit(metric)

    def _pct(x: float) -> str:
        return f"{u * x:.1f}" if u != 1 else f"{x:.4g}"

    def _delta(d: Mapping[str, Any] | None) -> str:
        """A paired difference and its interval, in the metric's unit (points for a share)."""
        if d is None:
            return "-"
        mark = " **excludes 0**" if d["excludes_zero"] else ""
        lo, hi = d["ci"]
        if u != 1:
            return f"{u * d['mean']:+.1f} [{u * lo:+.1f}, {u * hi:+.1f}]{mark}"
        return f"{d['mean']:+.4g} [{lo:+.4g}, {hi:+.4g}]{mark}"

    lines = [
        f"# Study `{study.name}`{f' ({study.scale} scale)' if study.scale else ''}",
        "",
        study.description.strip(),
        "",
        f"Budget: **{b.amount:g} {b.kind}** per run (`run.budget_kind={b.kind}`, "
        f"`run.budget_amount={b.amount:g}`). Metric: `{metric}` at the last evaluation at or "
        f"before the budget{', in %' if suffix else ''}; mean over seeds, 95% bootstrap interval "
        f"({study.bootstrap_samples} draws, seed {study.bootstrap_seed}).",
        "",
        "| arm | runs done | seeds | value per seed | mean | std | 95% interval (over) "
        f"| {b.kind} spent (mean) | vs {report['arms'][0]['label'] if report['arms'] else '-'} "
        "(95% interval) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in report["arms"]:
        per_seed = ", ".join(_pct(v) for v in a["values"])
        lines.append(
            f"| {a['label']} | {a['done']}/{a['runs']} | {len(a['seeds'])} | {per_seed} | "
            f"{_pct(a['mean'])} | {_pct(a['std'])} | [{_pct(a['ci'][0])}, {_pct(a['ci'][1])}] "
            f"({a['over']}) | {a['spent_mean']:.5g} | {_delta(a['diff'])} |"
        )
    lines += [
        "",
        "## Cost",
        "",
        "| arm | rollouts per accepted prompt | iterations (mean) | optimizer steps (mean) "
        "| training minutes per run (mean) |",
        "|---|---|---|---|---|",
    ]
    for a in report["arms"]:
        lines.append(
            f"| {a['label']} | {a['rollouts_per_accepted_prompt']:.2f} | "
            f"{a['iterations_mean']:.1f} | {a['optimizer_steps_mean']:.1f} | "
            f"{a['train_minutes_mean']:.1f} |"
        )
    also = list(study.also)
    lines += [
        "",
        "## At the budget, besides the metric",
        "",
        f"Means over seeds: the best `{metric}` of the evaluations at or before the budget, and "
        "the other metrics at the equal-budget evaluation.",
        "",
        "| arm | best (mean) | " + " | ".join(f"`{m}`" for m in also) + (" |" if also else "|"),
        "|---|---|" + "---|" * len(also),
    ]
    for a in report["arms"]:
        cells = [f"{a['also_means'][m]:.4g}" if m in a["also_means"] else "-" for m in also]
        lines.append(
            f"| {a['label']} | {_pct(a['best_mean'])} |" + "".join(f" {c} |" for c in cells)
        )
    for title, rows in report.get("tables", {}).items():
        heading = f"The paper's {title}" if title.startswith("Table") else title
        lines += ["", f"## {heading}", ""]
        lines += [f"| Method | {metric} mean (std) | Δ vs {rows[0]['label']} (95% interval) |"]
        lines += ["|---|---|---|"]
        for row in rows:
            delta = _delta(row["diff"])
            lines.append(f"| {row['label']} | {_pct(row['mean'])} ({_pct(row['std'])}) | {delta} |")
    lines += [
        "",
        "## Runs",
        "",
        "| run | done | iterations | spent | evaluated at (iteration, spent) |",
    ]
    lines += ["|---|---|---|---|---|"]
    for r in report["runs"]:
        at = (
            f"{r['at_budget_iteration']}, {r['at_budget_spent']:g}"
            if r["at_budget_iteration"] is not None
            else "-"
        )
        lines.append(
            f"| {r['arm']}/seed{r['seed']} | {'yes' if r['done'] else 'no'} | {r['iterations']} "
            f"| {r['spent']:g} | {at} |"
        )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def write_plots(study: StudyConfig, study_dir: Path, report: Mapping[str, Any]) -> list[Path]:
    """Learning curves against the budget with bands, the equal-budget bars, filter economics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = report["arms"]
    if not arms:
        return []
    out_dir = Path(study_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    grid = np.linspace(0.0, study.budget.amount, 41)
    u, suffix = unit(study.metric)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for k, a in enumerate(arms):
        curves = [r["curve"] for r in report["runs"] if r["arm"] == a["arm"] and r["curve"]]
        if not curves:
            continue
        rng = np.random.default_rng([study.bootstrap_seed, k, 2])
        mean, lo, hi = curve_band(curves, grid, rng)
        ax.step(grid, u * mean, where="post", label=a["label"])
        ax.fill_between(grid, u * lo, u * hi, step="post", alpha=0.2)
    ax.set(
        title=f"{study.metric} vs budget (95% band over seeds)",
        xlabel=study.budget.kind,
        ylabel=suffix or study.metric,
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out_dir / "learning_curves.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    labels = [a["label"] for a in arms]
    for name, title, values, errs in (
        (
            "at_budget",
            f"{study.metric} at {study.budget.amount:g} {study.budget.kind} (95% interval)",
            [u * a["mean"] for a in arms],
            [
                [u * (a["mean"] - a["ci"][0]) for a in arms],
                [u * (a["ci"][1] - a["mean"]) for a in arms],
            ],
        ),
        (
            "filter_economics",
            "rollouts generated per accepted prompt",
            [a["rollouts_per_accepted_prompt"] for a in arms],
            None,
        ),
        ("time", "training minutes per run (mean)", [a["train_minutes_mean"] for a in arms], None),
    ):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar(labels, values, yerr=errs, capsize=4)
        ax.set(title=title)
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
        fig.tight_layout()
        written.append(out_dir / f"{name}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


__all__ += ["curve_band", "render_markdown", "write_plots", "write_report"]
