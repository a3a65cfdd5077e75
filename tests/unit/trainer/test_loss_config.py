"""The ``loss`` section is the registry's typed config, flat in YAML and config.json."""

from __future__ import annotations

import dataclasses

import pytest

from nemo_rence.algorithm import losses
from nemo_rence.config import ConfigError, LossConfig, build, compose


def test_the_loss_section_is_typed_and_round_trips_through_its_flat_form():
    cfg = compose(["algorithm=rence_no_margin"])
    assert isinstance(cfg.loss, LossConfig) and cfg.loss.name == "rence"
    assert isinstance(cfg.loss.params, losses.get("rence").config_cls)
    plain = cfg.to_dict()
    assert plain["loss"] == {"name": "rence", **dataclasses.asdict(cfg.loss.params)}
    assert build(plain) == cfg


def test_an_unknown_loss_field_names_the_field_and_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['gamma'\] in loss"):
        compose(["+loss.gamma=1"])
    with pytest.raises(ConfigError, match=r"loss\.name: unknown loss 'nce'"):
        compose(["loss.name=nce"])
