"""PNG plots of a run's ``metrics.jsonl``: one small chart per stage of the data flow.

``write_plots(run_dir)`` writes ``<run_dir>/plots/*.png`` (matplotlib, Agg backend, no display)
and returns their paths. Charts whose metrics are absent are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CHARTS", "write_plots"]

#: file name -> (title, metric keys drawn against the iteration)
CHARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reward": ("reward", ("reward/mean", "reward/correct_rate")),
    "accept_rate": ("prompt filter", ("filter/accept_rate", "filter/reject_hard_rate")),
    "kl": ("KL(pi_old || pi_theta) and its coefficient", ("kl/k3", "kl/coef")),
    "loss": ("loss", ("loss/total",)),
    "response_length": ("response tokens (mean)", ("rollout/response_tokens_mean",)),
    "refit_gap": ("engine vs policy logprob gap", ("refit/logprob_gap", "refit/logprob_gap_max")),
    "eval": ("held-out (greedy)", ("eval/accuracy", "eval/boxed")),
    "benchmarks": ("benchmarks: mean avg@k", ("eval/avg",)),
    "mismatch": (
        "engine-trainer mismatch",
        ("mismatch/kl", "mismatch/truncated_seqs", "mismatch/masked_seqs"),
    ),
}


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        if row.get(key) is not None:
            xs.append(int(row["iteration"]))
            ys.append(float(row[key]))
    return xs, ys


def write_plots(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = _rows(run_dir)
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, keys) in CHARTS.items():
        series = {k: _series(rows, k) for k in keys}
        if not any(xs for xs, _ in series.values()):
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for key, (xs, ys) in series.items():
            if xs:
                ax.plot(xs, ys, marker="o", label=key)
        ax.set(title=title, xlabel="iteration")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    rho = _histogram(rows, "filter/rho_hist/", float)
    if rho:
        labels = [f"{r:.2f}" for r in sorted(rho)]
        title = "rho(x) of every rolled-out group (all iterations)"
        written.append(_bar(out_dir / "rho_histogram.png", labels, [rho[r] for r in sorted(rho)],
                            title, "rho", "groups"))  # fmt: skip
    seq = _histogram(rows, "mismatch/seq_log_ratio_hist/", int)
    if seq:
        from nemo_rence.algorithm.correction import SEQ_LOG_RATIO_BINS

        edges = ["-inf", *(f"{e:g}" for e in SEQ_LOG_RATIO_BINS), "inf"]
        labels = [f"[{edges[i]},{edges[i + 1]})" for i in sorted(seq)]
        title = "sequence log(pi_old / pi_engine) of every rollout (all iterations)"
        written.append(_bar(out_dir / "seq_log_ratio_histogram.png", labels,
                            [seq[i] for i in sorted(seq)], title, "log-ratio", "rollouts"))  # fmt: skip
    return written


def _histogram(rows: Sequence[dict], prefix: str, key_type: type) -> dict:
    """Bin -> count summed over every row's ``<prefix><bin>`` metrics."""
    hist: dict = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix) and value is not None:
                b = key_type(key.rsplit("/", 1)[1])
                hist[b] = hist.get(b, 0.0) + float(value)
    return hist


def _bar(path: Path, labels: list[str], values: list[float], title: str, x: str, y: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(labels, values)
    ax.set(title=title, xlabel=x, ylabel=y)
    ax.tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
