"""The study report on hand-written run directories: the equal-budget point, the bootstrap
intervals against exact distributions, paired differences, the files written."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from nemo_rence.study.config import StudyConfig
from nemo_rence.study.report import (
    bootstrap_mean,
    build_report,
    curve_band,
    summarize_run,
    write_report,
)
from nemo_rence.study.runs import plan_runs

STUDY = {
    "name": "s",
    "arms": [{"name": "a"}, {"name": "b"}],
    "seeds": [0, 1],
    "budget": {"kind": "rollouts", "amount": 40},
}


def _write_run(
    directory: Path,
    per_iteration: list[float],
    accuracy: list[float],
    correct: list[int] | None = None,
    amount: float = 40,
) -> None:
    """A run: evaluation before (iteration 0) and after every iteration; `accuracy[i]` at i."""
    directory.mkdir(parents=True)
    config = {"run": {"budget_kind": "rollouts", "budget_amount": amount}}
    config |= {"optim": {"n_update": 2}, "filter": {"batch_size": 4}}
    (directory / "config.json").write_text(json.dumps(config))
    rows = [{"iteration": 0, "eval/accuracy": accuracy[0], "eval/is_before": 1.0}]
    for i, rollouts in enumerate(per_iteration, start=1):
        rows.append({"iteration": i, "filter/rollouts": rollouts, "time/rollout": 30.0})
        tag = "after" if i == len(per_iteration) else "periodic"
        rows.append({"iteration": i, "eval/accuracy": accuracy[i], f"eval/is_{tag}": 1.0})
        if correct is not None:
            samples = directory / "samples" / f"eval-iter{i:06d}-{tag}.jsonl"
            samples.parent.mkdir(exist_ok=True)
            samples.write_text(
                "".join(
                    json.dumps({"id": f"p{k}", "correct": bool(c)}) + "\n"
                    for k, c in enumerate(correct)
                )
            )
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_value_at_budget_is_the_last_evaluation_at_or_before_it(tmp_path):
    study = StudyConfig.from_mapping(STUDY)
    spec = plan_runs(study, tmp_path)[0]
    # spend after each iteration: 16, 32, 48 -> the budget 40 is passed during iteration 3
    _write_run(spec.directory, [16, 16, 16], [0.0, 0.1, 0.3, 0.9], amount=40)
    run = summarize_run(study, spec)
    assert (run.at_budget, run.at_budget_iteration, run.at_budget_spent) == (0.3, 2, 32.0)
    assert run.curve == [(0.0, 0.0), (16.0, 0.1), (32.0, 0.3), (48.0, 0.9)]
    assert run.spent == 48.0 and run.iterations == 3 and run.done
    assert run.rollouts / run.accepted_prompts == 48 / (3 * 4)
    assert run.train_minutes == pytest.approx(1.5)


def test_seed_bootstrap_of_two_values_spans_exactly_the_two():
    rng = np.random.default_rng(0)
    draws = bootstrap_mean([0.2, 0.6], 4000, rng)
    # the exact distribution: 0.2, 0.4, 0.6 with probabilities 1/4, 1/2, 1/4
    for value, p in ((0.2, 0.25), (0.4, 0.5), (0.6, 0.25)):
        assert np.mean(np.isclose(draws, value)) == pytest.approx(p, abs=0.03)
    assert np.percentile(draws, [2.5, 97.5]) == pytest.approx([0.2, 0.6])


def test_two_level_bootstrap_matches_the_enumerated_distribution():
    values = np.array([[1.0, 0.0], [1.0, 1.0]])  # 2 seeds x 2 problems
    # enumerate: seeds (s1, s2) each uniform; then 2 problems per drawn seed, uniform
    exact: dict[float, float] = {}
    for s in itertools.product(range(2), repeat=2):
        for p in itertools.product(range(2), repeat=4):
            mean = (
                values[s[0], p[0]] + values[s[0], p[1]] + values[s[1], p[2]] + values[s[1], p[3]]
            ) / 4
            exact[mean] = exact.get(mean, 0.0) + 1 / 64
    draws = bootstrap_mean(values, 20000, np.random.default_rng(1))
    for mean, p in exact.items():
        assert np.mean(np.isclose(draws, mean)) == pytest.approx(p, abs=0.01)
    assert draws.mean() == pytest.approx(values.mean(), abs=0.01)


def _study_with_runs(tmp_path: Path, correct: bool) -> StudyConfig:
    study = StudyConfig.from_mapping({**STUDY, "tables": {"Table X": ["a", "b"]}})
    acc = {("a", 0): 0.25, ("a", 1): 0.5, ("b", 0): 0.5, ("b", 1): 1.0}
    problems = {
        ("a", 0): [1, 0, 0, 0],
        ("a", 1): [1, 1, 0, 0],
        ("b", 0): [1, 1, 0, 0],
        ("b", 1): [1, 1, 1, 1],
    }
    for spec in plan_runs(study, tmp_path):
        key = (spec.arm, spec.seed)
        _write_run(
            spec.directory, [20, 20], [0.0, acc[key], acc[key]], problems[key] if correct else None
        )
    return study


def test_report_numbers_from_seeds_when_no_samples(tmp_path):
    study = _study_with_runs(tmp_path, correct=False)
    report = build_report(study, tmp_path)
    a, b = report["arms"]
    assert a["values"] == [0.25, 0.5] and a["mean"] == 0.375 and a["over"] == "seeds"
    assert a["std"] == pytest.approx(np.std([0.25, 0.5], ddof=1))
    assert a["ci"] == pytest.approx((0.25, 0.5))
    # paired over seeds: differences 0.25 and 0.5 -> interval [0.25, 0.5], excludes zero
    assert b["diff"]["mean"] == pytest.approx(0.375)
    assert b["diff"]["ci"] == pytest.approx((0.25, 0.5))
    assert b["diff"]["excludes_zero"] is True
    assert report["tables"]["Table X"][1]["diff"]["mean"] == pytest.approx(0.375)


def test_report_resamples_problems_when_every_run_wrote_them(tmp_path):
    study = _study_with_runs(tmp_path, correct=True)
    report = build_report(study, tmp_path)
    a, b = report["arms"]
    assert a["over"] == "seeds x problems" and b["diff"]["over"] == "seeds x problems"
    lo, hi = a["ci"]
    assert lo < 0.25 and hi > 0.5  # problem noise widens the interval beyond the seeds'
    assert b["ci"][1] == pytest.approx(1.0)


def test_one_comparison_has_one_interval_wherever_the_report_shows_it(tmp_path):
    study = StudyConfig.from_mapping(
        {**STUDY, "seeds": [0, 1, 2], "tables": {"T1": ["a", "b"], "T2": ["a", "b"]}}
    )
    rng = np.random.default_rng(0)
    for spec in plan_runs(study, tmp_path):  # 25 problems: an interval the draws move
        correct = [int(c) for c in rng.random(25) < (0.3 if spec.arm == "a" else 0.6)]
        _write_run(spec.directory, [20, 20], [0.0, 0.5, sum(correct) / 25], correct)
    report = build_report(study, tmp_path)
    column = report["arms"][1]["diff"]
    assert report["tables"]["T1"][1]["diff"] == column == report["tables"]["T2"][1]["diff"]
    reversed_ = build_report(
        StudyConfig.from_mapping({**study.to_dict(), "tables": {"T": ["b", "a"]}}), tmp_path
    )["tables"]["T"][1]["diff"]
    assert reversed_["mean"] == pytest.approx(-column["mean"])
    assert reversed_["ci"] == pytest.approx((-column["ci"][1], -column["ci"][0]))


def test_report_is_deterministic_and_written(tmp_path):
    study = _study_with_runs(tmp_path, correct=True)
    first = write_report(study, tmp_path)
    second = json.loads((tmp_path / "study.json").read_text())
    assert json.loads(json.dumps(first, default=float)) == second
    assert build_report(study, tmp_path)["arms"][0]["ci"] == first["arms"][0]["ci"]
    md = (tmp_path / "study.md").read_text()
    assert "| a | 2/2 | 2 | 25.0, 50.0 | 37.5 |" in md
    assert "## The paper's Table X" in md and "| b | 75.0 (35.4) | +37.5 [" in md
    assert "# Study `s`\n\nBudget: **40 rollouts**" in md
    for name in ("learning_curves", "at_budget", "filter_economics", "time"):
        assert (tmp_path / "plots" / f"{name}.png").is_file()


def test_curve_band_is_the_step_mean_over_seeds():
    curves = [[(0.0, 0.0), (10.0, 1.0)], [(0.0, 0.0), (20.0, 0.5)]]
    mean, lo, hi = curve_band(curves, [0.0, 10.0, 20.0], np.random.default_rng(0))
    assert mean == pytest.approx([0.0, 0.5, 0.75])
    assert lo == pytest.approx([0.0, 0.0, 0.5]) and hi == pytest.approx([0.0, 1.0, 1.0])


def test_best_steps_and_the_other_metrics_are_read_at_the_same_evaluation(tmp_path):
    study = StudyConfig.from_mapping({**STUDY, "also": ["eval/boxed"]})
    spec = plan_runs(study, tmp_path)[0]
    _write_run(spec.directory, [16, 16, 16], [0.0, 0.5, 0.25, 0.75])
    rows = [json.loads(x) for x in (spec.directory / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # eval/boxed = 10 x the iteration on each evaluation row
        if "eval/accuracy" in row:
            row["eval/boxed"] = 10.0 * row["iteration"]
    (spec.directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = summarize_run(study, spec)
    # 16 + 16 = 32 <= 40 < 48: the budget's evaluation is iteration 2's (0.25); best 0.5
    assert (run.at_budget, run.best, run.also) == (0.25, 0.5, {"eval/boxed": 20.0})
    assert (run.iterations, run.optimizer_steps) == (3, 6.0)
    other = plan_runs(study, tmp_path)[1]
    _write_run(other.directory, [16, 16], [0.0, 0.0, 1.0])
    arm = build_report(study, tmp_path)["arms"][0]
    assert arm["best_mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert arm["also_means"] == {"eval/boxed": 20.0}  # the mean over the runs that logged it
    assert arm["optimizer_steps_mean"] == pytest.approx((6 + 4) / 2)
    text = write_report(study, tmp_path) and (tmp_path / "study.md").read_text()
    assert "| `eval/boxed` |" in text and "| 75.0 | 20 |" in text
