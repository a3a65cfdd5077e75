"""The planner budgets exactly the rollout engines ``build`` creates (issue 15 item 3), and
refuses a recipe whose engine does not fit or cannot be laid out. No GPU, no model."""

from __future__ import annotations

import argparse
import json

import pytest

from nemo_rence.build import engine_placement
from nemo_rence.config import compose
from nemo_rence.plan import cli
from nemo_rence.plan.memory import total_params
from nemo_rence.plan.recipes import RECIPES


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("recipe", [r.name for r in RECIPES])
def test_the_planner_budgets_the_engines_build_creates(recipe, capsys):
    nodes, per_node, cpu = cli.gpus_of_recipe(recipe)
    world = nodes * per_node
    cfg = compose([f"+recipes={recipe}"])
    built = [r for r in range(world) if engine_placement(cfg, r, world)[1]]
    layout = engine_placement(cfg, 0, world)[0]
    assert cli.run(_args(recipe, "--json")) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["engines"]["hosts"] == built
    assert planned["engines"]["tp"] == planned["engine_tp"] == layout.engine_tp
    assert planned["engines"]["per_node"] == sum(1 for r in built if r < per_node)
    own = next(
        lp
        for lp in planned["layouts"]
        if (lp["tp"], lp["pp"]) == (cfg.policy.tensor_parallel, cfg.policy.pipeline_parallel)
    )
    # the per-GPU engine weights are the whole model over the engine's TP (GiB in the JSON)
    arch = cli.arch_of_config(cfg)
    w = cli.precision_of_config(cfg, cpu).engine_param_bytes
    expect = total_params(arch) * w / layout.engine_tp / 2**30
    assert own["chosen"]["engine_weights"] == pytest.approx(expect)


def test_a_70b_engine_on_one_gpu_is_refused(capsys):
    """140 GB of bf16 weights cannot sit on one 80 GB GPU beside the policy."""
    assert cli.run(_args("rence-llama3.1-70b-8n8g-tp8pp2", "rollout.tensor_parallel=1")) == 1
    assert "recipe layout tp8pp2: DOES NOT FIT" in capsys.readouterr().out


def test_an_engine_spanning_nodes_makes_every_layout_invalid(capsys):
    assert cli.run(_args("rence-qwen3-8b-2n8g-tp2", "rollout.tensor_parallel=16", "--json")) == 1
    data = json.loads(capsys.readouterr().out)
    assert all("engine tp=16 spans nodes" in lp["verdict"] for lp in data["layouts"])
