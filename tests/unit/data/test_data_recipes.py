"""The recipes train on their paper's data and carry its benchmarks (ReNCE Sec. 4.1, ConSPO
Sec. 5.1 / App. B), with every file under one environment variable."""

from __future__ import annotations

import pytest

from nemo_rence.config import compose
from nemo_rence.data.benchmarks import BENCHMARKS
from nemo_rence.data.loaders import SUFFIXES
from nemo_rence.plan.recipes import (
    BENCHMARK_FILES,
    CONSPO_BENCHMARKS,
    RECIPES,
    RENCE_BENCHMARKS,
    eval_lines,
)

PAPER_RECIPES = [r for r in RECIPES if r.model != "tiny"]


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda r: r.name)
def test_paper_recipes_train_on_their_papers_data(recipe, monkeypatch):
    monkeypatch.setenv("NEMO_RENCE_DATA_ROOT", "/papers-data")
    d = compose([f"+recipes={recipe.name}"]).data
    assert d.heldout_fraction == 0.0  # the whole training set, as the papers
    if recipe.algorithm == "rence":  # DAPO-Math-17k combined with MATH
        assert d.task == "mixture"
        assert [(s.schema, s.weight) for s in d.sources] == [("dapo", 1.0), ("math", 1.0)]
        assert [s.path for s in d.sources] == [
            "/papers-data/dapo-math-17k.parquet",
            "/papers-data/math-train.parquet",
        ]
    else:  # DeepScaleR-Preview
        assert (d.task, d.path) == ("deepscaler", "/papers-data/deepscaler.json")


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda r: r.name)
def test_paper_recipes_run_the_papers_length_without_the_cpu_time_budget(recipe):
    run = compose([f"+recipes={recipe.name}"]).run
    assert run.time_budget_min == 0  # train.yaml's 14 minutes would stop a cluster run
    if recipe.algorithm == "rence":
        assert run.iterations == 50  # ReNCE Sec. 4.1
    else:  # 4 epochs of 40,315 problems at 256 per iteration (2 for Qwen3-4B-Base)
        assert run.iterations == (315 if "base" in recipe.name else 630)


def test_tiny_recipe_keeps_the_synthetic_task():
    assert compose(["+recipes=rence-tiny-1n2c-tp2"]).data.task == "arithmetic"


def _eval(recipe) -> dict[str, str]:
    lines = eval_lines(recipe)
    assert lines[:2] == ["eval:", "  benchmarks:"]
    out = {}
    for line in lines[2:]:
        key, value = line.strip().split(": ", 1)
        out[key] = value
    return out


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda r: r.name)
def test_eval_sections_carry_the_papers_benchmarks_and_sampling(recipe):
    section = _eval(recipe)
    names = [n for n in section if n in BENCHMARKS]
    assert all(
        n in BENCHMARKS or n in ("every", "k", "temperature", "top_p", "max_new_tokens")
        for n in section
    )
    for n in names:
        assert section[n] == "${oc.env:NEMO_RENCE_DATA_ROOT,/data}/benchmarks/" + BENCHMARK_FILES[n]
        assert section[n].endswith(SUFFIXES)
    if recipe.algorithm == "rence":  # Table 1: six benchmarks, avg@4 at T=0.7, 6656 tokens
        assert names == list(RENCE_BENCHMARKS)
        assert (section["k"], section["temperature"], section["max_new_tokens"]) == (
            "4",
            "0.7",
            "6656",
        )
    else:  # Table 8: T=0.6, avg@32, every 100 steps, the training response length
        expected = ["aime24", "math500", "amc", "olympiadbench"] if "llama3.2" in recipe.name \
            else list(CONSPO_BENCHMARKS)  # fmt: skip
        assert names == expected
        assert (section["k"], section["temperature"], section["every"]) == ("32", "0.6", "100")
        assert section["top_p"] == "0.95"
        assert section["max_new_tokens"] == str(recipe.max_new_tokens)


def test_tiny_recipe_has_no_benchmarks():
    assert eval_lines(next(r for r in RECIPES if r.model == "tiny")) == []
