"""The loss registry, typed configs, the YAML presets and the ``nemo-rence losses`` command."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from nemo_rence import cli
from nemo_rence.algorithm import kl, losses
from nemo_rence.algorithm.filter import FilterConfig
from nemo_rence.algorithm.losses.conspo import ConspoConfig
from nemo_rence.algorithm.losses.rence import RenceConfig

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
PRESET_DIR = CONF_DIR / "algorithm"
PRESETS = sorted(PRESET_DIR.glob("*.yaml"))


def _composed(config_name: str) -> dict:
    """A preset as Hydra composes it (its defaults list applied), e.g. ``algorithm/rence_no_kl``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = OmegaConf.to_container(compose(config_name=config_name), resolve=True)
    assert isinstance(cfg, dict)
    return cfg


EXPECTED_LOSSES = {
    "rence",
    "semi_online_dpo",
    "conspo",
    "grpo",
    "dapo",
    "dr_grpo",
    "gspo",
    "cispo",
    "gmpo",
    "sapo",
    "disco",
}


def test_every_required_loss_is_registered():
    assert set(losses.available()) == EXPECTED_LOSSES


def test_unknown_loss_name_error_lists_every_supported_name():
    with pytest.raises(losses.UnknownLossError) as info:
        losses.get("ppo")
    message = str(info.value)
    assert "'ppo'" in message
    for name in EXPECTED_LOSSES:
        assert name in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", sorted(EXPECTED_LOSSES))
def test_every_loss_documents_formula_equation_and_shapes(name):
    spec = losses.get(name)
    assert re.search(r"eqs?\. ?\(?\d", spec.doc + spec.equation), name
    assert "Args:" in spec.doc and "[N, T]" in spec.doc
    assert spec.paper and spec.equation
    doc = spec.config_cls.__doc__ or ""
    for f in dataclasses.fields(spec.config_cls):
        assert f"{f.name}:" in doc, f"{spec.config_cls.__name__}.{f.name} is not documented"


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        losses.register("rence", config=RenceConfig, paper="x", equation="y")(lambda b, c: None)


@pytest.mark.parametrize(
    ("build", "field", "allowed"),
    [
        (lambda: RenceConfig(margin="linear"), "margin", "'reward_scaled', 'constant', 'none'"),
        (lambda: RenceConfig(objective="infonce"), "objective", "'mnce', 'softmax'"),
        (lambda: RenceConfig(beta=0.0), "beta", "> 0"),
        (lambda: RenceConfig(kl_estimator="k9"), "kl_estimator", "'k1', 'k2', 'k3'"),
        (lambda: ConspoConfig(warmup=0.0), "warmup", "(0, 1]"),
        (lambda: ConspoConfig(margin_schedule="linear"), "margin_schedule", "'cosine'"),
        (lambda: losses.get("dapo").build_config({"eps_low": 1.5}), "eps_low", "[0, 1)"),
        (
            lambda: losses.get("disco").build_config({"score": "prob"}),
            "score",
            "'log_l', 'l_ratio'",
        ),
    ],
)
def test_bad_config_values_fail_naming_the_field_and_allowed_values(build, field, allowed):
    with pytest.raises(ValueError) as info:
        build()
    assert field in str(info.value) and allowed in str(info.value)


def test_unknown_config_key_fails_listing_the_allowed_fields():
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['betta'\].*'alpha'"):
        losses.get("rence").build_config({"betta": 0.1})


def test_loss_batch_rejects_mismatched_shapes_and_float_group_ids():
    lp = torch.zeros(3, 4)
    ok = dict(
        logprobs=lp,
        old_logprobs=lp,
        mask=lp > -1,
        rewards=torch.zeros(3),
        group_ids=torch.zeros(3, dtype=torch.long),
    )
    losses.LossBatch(**ok)
    with pytest.raises(ValueError, match="old_logprobs"):
        losses.LossBatch(**{**ok, "old_logprobs": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="group_ids must be an integer"):
        losses.LossBatch(**{**ok, "group_ids": torch.zeros(3)})
    with pytest.raises(ValueError, match="progress"):
        losses.LossBatch(**ok, progress=1.5)


# ---- presets --------------------------------------------------------------------------------------

REQUIRED_PRESETS = {
    "rence",
    "rence_no_kl",
    "rence_no_margin",
    "rence_constant_margin",
    "rence_iterative",
    "rence_t_easy_099",
    "rence_softmax",
    "rence_random_pair",
    "rence_all_pairs",
} | EXPECTED_LOSSES


def test_a_preset_exists_for_every_loss_and_every_paper_ablation():
    assert {p.stem for p in PRESETS} >= REQUIRED_PRESETS


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_builds_typed_loss_config_filter_and_kl_controller(path):
    cfg = _composed(f"algorithm/{path.stem}")
    assert set(cfg) <= {"loss", "kl", "filter", "rollout", "optim", "reference", "reward"}
    loss_fields = dict(cfg["loss"])
    spec = losses.get(loss_fields.pop("name"))
    built = spec.build_config(loss_fields)
    assert dataclasses.asdict(built) == {**dataclasses.asdict(spec.config_cls()), **loss_fields}
    FilterConfig(**cfg["filter"])
    assert cfg["rollout"] == {"group_size": 8}
    optim = cfg["optim"]
    assert set(optim) == {
        "mini_batch_size",
        "n_update",
        "lr",
        "betas",
        "weight_decay",
        "grad_clip",
        "lr_schedule",
    }
    assert optim["lr"] > 0 and optim["n_update"] >= 1
    if "kl" in cfg:
        fields = dict(cfg["kl"])
        name = fields.pop("controller")
        if name == "fixed":  # an ablation keeps rence's adaptive-only fields; fixed takes init
            fields = {"init": fields["init"]}
        kl.build_controller(name, **fields)


def test_rence_presets_carry_the_paper_values():
    def load(name):
        return _composed(f"algorithm/{name}")

    main = load("rence")
    assert main["loss"] == {
        "name": "rence",
        "beta": 0.1,
        "alpha": 0.5,
        "margin": "reward_scaled",
        "objective": "mnce",
        "use_kl": True,
        "kl_estimator": "k3",
    }
    assert main["kl"] == {"controller": "adaptive", "init": 0.001, "target": 0.01, "horizon": 25600}
    assert main["filter"] == {
        "batch_size": 512,
        "enabled": True,
        "t_hard": 0.0,
        "t_easy": 0.5,
        "t_master": 0.8,
    }
    assert (main["optim"]["mini_batch_size"], main["optim"]["n_update"], main["optim"]["lr"]) == (
        32,
        16,
        1e-6,
    )
    assert load("grpo")["optim"]["n_update"] == 4
    iterative = load("rence_iterative")
    assert iterative["optim"]["n_update"] == 128 and iterative["loss"]["use_kl"] is False
    assert load("rence_t_easy_099")["filter"]["t_easy"] == 0.99
    for name, objective in (
        ("rence_softmax", "softmax"),
        ("rence_random_pair", "random_pair"),
        ("rence_all_pairs", "all_pairs"),
    ):
        variant = load(name)["loss"]
        assert variant["objective"] == objective and variant["margin"] == "none"
    assert load("rence_constant_margin")["loss"]["margin"] == "constant"
    assert load("rence_no_margin")["loss"]["margin"] == "none"
    assert load("rence_no_kl")["loss"]["use_kl"] is False
    assert load("rence_no_kl")["kl"]["controller"] == "fixed"


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_a_preset_states_only_what_it_changes_from_its_parents(path):
    # A preset with a defaults list (rence_no_margin: [rence, _self_]) must not restate a value
    # its parents already give: one line per change, nothing copied.
    own = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(own, dict)
    parents = [p for p in own.pop("defaults", []) if p != "_self_"]
    inherited: dict = {}
    for parent in parents:
        name = parent[1:] if parent.startswith("/") else f"algorithm/{parent}"
        inherited.update(_leaves(_composed(name)))
    restated = {k: v for k, v in _leaves(own).items() if k in inherited and inherited[k] == v}
    assert not restated, f"{path.name} restates its parents' values: {restated}"


def test_every_ablation_of_rence_starts_from_rence():
    for path in PRESET_DIR.glob("rence_*.yaml"):
        assert OmegaConf.load(path)["defaults"] == ["rence", "_self_"], path.name


# ---- CLI ------------------------------------------------------------------------------------------


def test_losses_command_prints_table_with_paper_and_equation(capsys):
    assert cli.main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED_LOSSES:
        assert re.search(rf"^{name}\s", out, re.M)
    assert "eqs. (1), (2), (5)" in out


def test_losses_command_json_lists_names_and_defaults(capsys):
    assert cli.main(["losses", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == EXPECTED_LOSSES
    rence = next(r for r in rows if r["name"] == "rence")
    assert rence["defaults"]["beta"] == 0.1 and rence["config"] == "RenceConfig"
