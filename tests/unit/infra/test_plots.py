"""``write_plots``: line charts of the logged metrics and the two histograms, from metrics.jsonl."""

from __future__ import annotations

import json

from nemo_rence.infra.plots import write_plots


def test_plots_include_the_rho_and_sequence_log_ratio_histograms(tmp_path):
    rows = [
        {"iteration": 1, "reward/mean": 0.2, "filter/rho_hist/0.250": 2.0, "mismatch/kl": 0.01,
         "mismatch/seq_log_ratio_hist/3": 7.0, "mismatch/seq_log_ratio_hist/4": 1.0},
        {"iteration": 1, "eval/avg": 0.3, "eval/is_periodic": 1.0},
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = {p.name for p in write_plots(tmp_path)}
    assert {"rho_histogram.png", "seq_log_ratio_histogram.png", "mismatch.png"} <= names
    assert {"reward.png", "benchmarks.png"} <= names
    assert "kl.png" not in names  # nothing logged for it
