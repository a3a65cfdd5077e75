"""``nemo-rence plan`` and the recipes of conf/recipes/ (each composes, validates, fits)."""

from __future__ import annotations

import argparse
import json

import pytest

from nemo_rence.config import compose
from nemo_rence.plan import cli
from nemo_rence.plan.memory import GIB
from nemo_rence.plan.recipes import RECIPE_DIR, RECIPES, render_recipe


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_plan_a_model_prints_the_recommended_layout(capsys) -> None:
    assert cli.run(_args("Qwen3-8B", "--gpus", "16", "--gpu-mem", "80")) == 0
    out = capsys.readouterr().out
    assert "recommended: policy.tensor_parallel=2 policy.pipeline_parallel=1 (dp=8)" in out


def test_plan_exits_1_when_nothing_fits(capsys) -> None:
    assert cli.run(_args("Llama-3.1-70B", "--gpus", "8", "--gpu-mem", "40")) == 1
    assert "recommended: none" in capsys.readouterr().out


def test_plan_json_of_a_recipe(capsys) -> None:
    assert cli.run(_args("rence-qwen3-8b-2n8g-tp2", "--json")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpus"] == 16 and data["recommended"] == {"tp": 2, "pp": 1, "dp": 8}


def test_plan_overrides_change_the_workload(capsys) -> None:
    cli.run(_args("Qwen3-8B", "rollout.max_new_tokens=1024", "--gpus", "16", "--json"))
    short = json.loads(capsys.readouterr().out)
    cli.run(_args("Qwen3-8B", "--gpus", "16", "--json"))
    long = json.loads(capsys.readouterr().out)

    def peak(d):
        return next(lp for lp in d["layouts"] if (lp["tp"], lp["pp"]) == (2, 1))["chosen"]["peak"]

    assert peak(short) < peak(long)


def test_recipe_names_carry_the_hardware() -> None:
    assert cli.gpus_of_recipe("rence-llama3.1-70b-8n8g-tp8pp2") == (8, 8, False)
    assert cli.gpus_of_recipe("conf/recipes/rence-r1-distill-qwen-1.5b-1n8g.yaml") == (1, 8, False)
    assert cli.gpus_of_recipe("rence-tiny-1n2c-tp2") == (1, 2, True)
    with pytest.raises(ValueError, match="<nodes>n"):
        cli.gpus_of_recipe("rence-qwen3-8b")


def test_every_recipe_file_is_in_the_table() -> None:
    files = {p.stem for p in RECIPE_DIR.glob("*.yaml")}
    assert files == {r.name for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_recipe_composes_validates_and_fits(recipe) -> None:
    cfg = compose([f"+recipes={recipe.name}"])  # raises ConfigError when invalid
    assert (cfg.policy.tensor_parallel, cfg.policy.pipeline_parallel) == (recipe.tp, recipe.pp)
    assert cfg.policy.sequence_parallel == recipe.sequence_parallel
    nodes, per_node, cpu = cli.gpus_of_recipe(recipe.name)
    p = cli.plan_config(
        cfg, gpus=nodes * per_node, gpu_mem_gib=recipe.gpu_mem_gib, gpus_per_node=per_node, cpu=cpu
    )
    lp = p.find(recipe.tp, recipe.pp)
    assert lp is not None and not lp.problems, lp and lp.problems
    mode = cli.recipe_mode(cfg, lp)
    assert mode is not None and mode.peak <= recipe.gpu_mem_gib * GIB, lp.verdict()


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_recipe_file_carries_the_planners_current_output(recipe) -> None:
    path = RECIPE_DIR / f"{recipe.name}.yaml"
    assert path.read_text() == render_recipe(recipe), (
        "stale: run python -m nemo_rence.plan.recipes --write"
    )


def test_llama70b_recipe_fits_only_with_sequence_parallelism() -> None:
    cfg = compose(["+recipes=rence-llama3.1-70b-8n8g-tp8pp2"])
    assert cfg.policy.sequence_parallel and cfg.policy.recompute
    peaks = {}
    for sp in (False, True):
        lp = cli.plan_config(cfg, gpus=64, gpu_mem_gib=80, sequence_parallel=sp).find(8, 2)
        assert lp is not None
        mode = cli.recipe_mode(cfg, lp)
        assert mode is not None
        peaks[sp] = mode.peak / GIB
    # The stored layer inputs of full recomputation (2 micro-batches in flight x 40 layers x
    # 8 rollouts x 8192 tokens x 8192 x 2 B = 80 GiB) are what SP divides by TP=8. The peak is
    # the rollout phase's with SP: its TP-8 engine holds 140 GB / 8 = 16.3 GiB of weights.
    assert peaks[False] > 120 and peaks[True] < 65, peaks


def test_conspo_recipes_carry_the_conspo_papers_settings() -> None:
    """ConSPO Sec. 5.1 / Table 7 / App. B.2: B=256, K=8, lr 2e-6, prompt 1024, response 8192
    (R1-Distill) or 4096 (Qwen3-4B-Base, Llama-3.2-3B-Instruct), temperature 1.0, tau 10."""
    conspo = {r.name: r for r in RECIPES if r.algorithm == "conspo"}
    assert {r.model for r in conspo.values()} == {
        "DeepSeek-R1-Distill-Qwen-1.5B",
        "DeepSeek-R1-Distill-Qwen-7B",
        "DeepSeek-R1-Distill-Llama-8B",
        "Qwen3-4B-Base",
        "Llama-3.2-3B-Instruct",
    }
    for name, r in conspo.items():
        cfg = compose([f"+recipes={name}"])
        assert cfg.loss.name == "conspo" and cfg.loss.params.tau == 10.0
        assert (cfg.filter.batch_size, cfg.rollout.group_size, cfg.optim.lr) == (256, 8, 2e-6)
        assert cfg.data.max_prompt_tokens == 1024 and cfg.rollout.temperature == 1.0
        assert cfg.data.template == "conspo"
        response = 8192 if "r1-distill" in name else 4096
        assert cfg.rollout.max_new_tokens == response, name
        assert cli.gpus_of_recipe(name)[0] == (4 if r.model[-2:] in ("7B", "8B") else 1), name


def test_a_recipe_swaps_its_algorithm_from_the_command_line() -> None:
    cfg = compose(["+recipes=conspo-r1-distill-qwen-1.5b-1n8g", "algorithm=rence"])
    assert cfg.loss.name == "rence"
    assert cfg.rollout.max_new_tokens == 8192  # the recipe's setting stays


def test_sequence_parallel_needs_tensor_parallelism() -> None:
    from nemo_rence.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"policy\.sequence_parallel needs policy\.tensor_parallel"
    ):
        compose(["policy.sequence_parallel=true"])
    assert compose(["policy.sequence_parallel=true", "policy.tensor_parallel=2"]).policy
