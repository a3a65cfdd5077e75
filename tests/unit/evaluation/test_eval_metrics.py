"""avg@k, unbiased pass@k, mean (std) and the Table-1 formatter against hand computations."""

from __future__ import annotations

import pytest

from nemo_rence.evaluation.metrics import (
    BenchmarkScore,
    average_row,
    avg_at_k,
    benchmark_score,
    format_table,
    pass_at_k,
    pass_at_k_single,
    per_prompt_std,
    repeat_mean_std,
)

# 3 problems x 4 samples
CORRECT = [
    [1, 1, 0, 1],  # 3/4
    [0, 0, 0, 0],  # 0/4
    [1, 0, 0, 0],  # 1/4
]


def test_avg_at_k_is_the_mean_over_problems_and_samples():
    assert avg_at_k(CORRECT) == pytest.approx(4 / 12)
    assert avg_at_k([[True, False]]) == 0.5


def test_unbiased_pass_at_k_single_problem_by_hand():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k_single(4, 1, 2) == pytest.approx(0.5)
    # n=5, c=2, k=3: 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k_single(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k_single(4, 0, 3) == 0.0
    assert pass_at_k_single(4, 2, 3) == 1.0  # n - c < k: some correct sample is always drawn
    assert pass_at_k_single(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n


def test_pass_at_k_averages_over_problems():
    # k=2: problem 1: 1 - C(1,2)/C(4,2) = 1; problem 2: 0; problem 3: 1 - C(3,2)/C(4,2) = 0.5
    assert pass_at_k(CORRECT, 2) == pytest.approx((1 + 0 + 0.5) / 3)
    assert pass_at_k(CORRECT, 1) == pytest.approx(avg_at_k(CORRECT))
    # k=4 equals "any correct"
    assert pass_at_k(CORRECT, 4) == pytest.approx(2 / 3)


def test_per_prompt_std_is_verl_std_at_k():
    # population std of [1,1,0,1] = sqrt(3/16); of [0,0,0,0] = 0; of [1,0,0,0] = sqrt(3/16)
    s = (3 / 16) ** 0.5
    assert per_prompt_std(CORRECT) == pytest.approx((s + 0 + s) / 3)


def test_repeat_mean_std_is_the_std_of_per_repeat_accuracy():
    # per-repeat accuracies: [2/3, 1/3, 0, 1/3] -> mean 1/3, population var = (1/9+0+1/9+0)/4
    mean, std = repeat_mean_std(CORRECT)
    assert mean == pytest.approx(1 / 3)
    assert std == pytest.approx((2 / 36) ** 0.5)
    _, sample_std = repeat_mean_std(CORRECT, ddof=1)
    assert sample_std == pytest.approx((2 / 27) ** 0.5)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        avg_at_k([1, 0, 1])
    with pytest.raises(ValueError, match="0/1"):
        avg_at_k([[0.5, 1]])
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(CORRECT, 5)
    with pytest.raises(ValueError):
        pass_at_k_single(3, 4, 1)


def test_paper_avg_column_is_mean_of_means_and_mean_of_stds():
    # ReNCE Table 1, "No training" row: Olympiad .. AMC as mean (std) in %.
    row = {
        "olympiadbench": (44.7, 7.0),
        "minerva": (41.7, 5.3),
        "aime25": (19.2, 6.0),
        "aime24": (32.5, 13.4),
        "math500": (84.5, 5.5),
        "amc": (55.7, 10.1),
    }
    scores = {b: BenchmarkScore(m / 100, s / 100, 4, 30) for b, (m, s) in row.items()}
    mean, std = average_row(scores)
    assert round(100 * mean, 1) == 46.4 and round(100 * std, 1) == 7.9  # as printed in the paper


def test_table_format_has_mean_std_cells_avg_column_and_best_marks():
    a = {
        "aime24": benchmark_score([[1, 1, 1, 1], [0, 0, 0, 0]]),
        "amc": benchmark_score([[1, 0]] * 2),
    }
    b = {
        "aime24": benchmark_score([[1, 0, 1, 0], [0, 0, 0, 0]]),
        "amc": benchmark_score([[1, 1]] * 2),
    }
    table = format_table(
        {"ReNCE": a, "GRPO": b}, ["aime24", "amc"], {"aime24": "AIME24", "amc": "AMC"}
    )
    lines = table.splitlines()
    assert lines[0] == "| Method | AIME24 | AMC | Avg |"
    # ReNCE: AIME24 mean 50.0, per-prompt std 0; AMC 50.0 (50.0); Avg 50.0 (25.0)
    assert lines[2] == "| ReNCE | <b>50.0</b> (0.0) | <u>50.0</u> (50.0) | <u>50.0</u> (25.0) |"
    # GRPO: AIME24 25.0 (std (50 + 0)/2 = 25.0); AMC 100.0 (0.0); Avg 62.5 (12.5)
    assert lines[3] == "| GRPO | <u>25.0</u> (25.0) | <b>100.0</b> (0.0) | <b>62.5</b> (12.5) |"


def test_table_without_marks_and_missing_benchmark_error():
    s = {"amc": benchmark_score([[1, 0]])}
    assert (
        format_table({"M": s}, ["amc"], mark_best=False).splitlines()[2]
        == "| M | 50.0 (50.0) | 50.0 (50.0) |"
    )
    with pytest.raises(ValueError, match="aime24"):
        format_table({"M": s}, ["amc", "aime24"])
