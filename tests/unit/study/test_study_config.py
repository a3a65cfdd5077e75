"""The study file: presets load at every scale, bad values name the field."""

from __future__ import annotations

import pytest

from nemo_rence.config import CONF_DIR
from nemo_rence.errors import ConfigError
from nemo_rence.study.config import StudyConfig, load_study, preset_names

MINIMAL = {
    "name": "s",
    "arms": [{"name": "a", "overrides": ["algorithm=rence"]}, {"name": "b"}],
    "seeds": [0, 1],
    "budget": {"kind": "rollouts", "amount": 64},
}


@pytest.mark.parametrize(
    ("preset", "scale"),
    [
        ("cpu_quick", ""),
        ("rence_vs_baselines", "cpu"),
        ("rence_vs_baselines", "paper"),
        ("rence_ablations", "cpu"),
        ("rence_ablations", "paper"),
        ("rence_diagnosis", ""),
    ],
)
def test_every_preset_loads_and_its_arms_name_existing_algorithm_presets(preset, scale):
    study = load_study(preset, scale)
    assert study.budget.amount > 0 and len(study.seeds) >= 3
    for arm in study.arms:
        for override in arm.overrides:
            group, _, option = override.partition("=")
            if group == "algorithm":
                assert (CONF_DIR / "algorithm" / f"{option}.yaml").is_file(), override


def test_presets_are_listed():
    assert {"cpu_quick", "rence_vs_baselines", "rence_ablations"} <= set(preset_names())


def test_the_baselines_preset_gives_grpo_fewer_larger_updates_and_has_table_1():
    from nemo_rence.config import compose

    for scale, steps in (("cpu", (1, 4, 4)), ("paper", (4, 128, 512))):
        study = load_study("rence_vs_baselines", scale)
        assert [a.name for a in study.arms] == [
            "rence",
            "grpo",
            "dapo",
            "semi_online_dpo",
            "conspo",
        ]
        grpo = dict((a.name, a.overrides) for a in study.arms)["grpo"]
        overrides = [*grpo, "scale=paper"] if scale == "paper" else list(grpo)
        cfg = compose(overrides)  # one pass over the batch in fewer steps than the others' 2 / 16
        assert (cfg.optim.n_update, cfg.optim.mini_batch_size, cfg.filter.batch_size) == steps
        assert list(study.tables) == ["Table 1"]


def test_steps_that_leave_groups_of_the_batch_untrained_are_refused():
    import pytest

    from nemo_rence.config import ConfigError, compose

    with pytest.raises(ConfigError, match=r"optim\.n_update x optim\.mini_batch_size"):
        compose(["algorithm=grpo", "scale=paper", "optim.mini_batch_size=32"])


def test_a_scale_appends_its_overrides_and_replaces_the_rest():
    data = {
        **MINIMAL,
        "overrides": ["run.eval_every=1"],
        "scales": {"big": {"overrides": ["model=hf"], "budget": {"kind": "tokens", "amount": 9}}},
    }
    study = StudyConfig.from_mapping(data, "big")
    assert study.overrides == ("run.eval_every=1", "model=hf")
    assert (study.budget.kind, study.budget.amount, study.scale) == ("tokens", 9, "big")


def test_a_resolved_study_round_trips():
    study = StudyConfig.from_mapping({**MINIMAL, "tables": {"T": ["a", "b"]}})
    assert StudyConfig.from_mapping(study.to_dict()) == study


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"budget": {"kind": "prompts", "amount": 1}}, "study.budget.kind"),
        ({"budget": {"kind": "rollouts", "amount": 0}}, "study.budget.amount"),
        ({"executor": "kubernetes"}, "study.executor"),
        ({"seeds": [0, 0]}, "study.seeds"),
        ({"arms": [{"name": "a"}, {"name": "a"}]}, "study.arms"),
        ({"arms": [{"name": "a/b"}]}, "study.arms"),
        ({"tables": {"T": ["a", "zzz"]}}, "study.tables"),
        ({"overrides": ["run.seed=3"]}, "study overrides"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_bad_study_values_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        StudyConfig.from_mapping({**MINIMAL, **change})


def test_unknown_scale_and_unknown_preset_list_what_exists():
    with pytest.raises(ConfigError, match=r"cpu"):
        load_study("rence_vs_baselines", "huge")
    with pytest.raises(ConfigError, match=r"cpu_quick"):
        load_study("no_such_study")


def test_cli_refuses_an_unknown_study_with_exit_2(capsys):
    from nemo_rence.cli import main

    assert main(["study", "no_such_study"]) == 2
    assert "presets" in capsys.readouterr().err


def test_cli_dry_run_prints_one_train_command_per_run_and_trains_nothing(capsys, tmp_path):
    from nemo_rence.cli import main

    assert main(["study", "cpu_quick", "--dry-run", "--out-dir", str(tmp_path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if " train " in x]
    assert len(lines) == 9 and all("run.budget_amount=1280" in x for x in lines)
    assert not (tmp_path / "rence").exists()


def test_without_a_scale_the_first_listed_is_used():
    assert load_study("rence_vs_baselines").scale == "cpu"
    assert "run.time_budget_min=0" in load_study("rence_ablations").overrides
