"""``nemo-rence grade`` (nemo_rence.rewards.cli) on a small jsonl."""

from __future__ import annotations

import argparse
import json

from nemo_rence.rewards import cli


def test_grade_prints_summary_and_writes_results(tmp_path, capsys):
    src = tmp_path / "rollouts.jsonl"
    rows = [
        {"completion": r"so \boxed{4}", "gold": "4"},
        {"completion": r"\boxed{5}", "gold": "4"},
        {"completion": "four", "gold": "4"},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "results.jsonl"
    args = parser.parse_args(
        [
            str(src),
            "--response-field",
            "completion",
            "--answer-field",
            "gold",
            "--workers",
            "1",
            "--output",
            str(out),
        ]
    )
    assert cli.run(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["items"] == 3 and summary["skipped_rows"] == 1
    assert abs(summary["mean_reward"] - (1.0 + 0.1 + 0.0) / 3) < 1e-9
    assert abs(summary["accuracy"] - 1 / 3) < 1e-9
    per_item = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] for r in per_item] == [1.0, 0.1, 0.0]


def test_missing_input_file_exits_with_2(tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args([str(tmp_path / "nope.jsonl")])) == 2
