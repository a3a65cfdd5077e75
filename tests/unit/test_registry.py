"""Backends are chosen by name from registries whose error names the field and the choices."""

from __future__ import annotations

import pytest

from nemo_rence.config import ConfigError, compose
from nemo_rence.model_sources import MODEL_SOURCES
from nemo_rence.registry import Registry, UnknownNameError


def test_an_unknown_name_lists_the_registered_ones():
    reg: Registry[int] = Registry("thing.kind")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("a") == 1 and reg.names() == ["a", "b"] and "b" in reg
    with pytest.raises(UnknownNameError, match=r"thing\.kind must be one of \['a', 'b'\], got 'c'"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(3)


def test_model_source_is_validated_against_the_registry_before_any_model_is_built():
    assert MODEL_SOURCES.names() == ["hf", "smollm2", "tiny"]
    with pytest.raises(
        ConfigError, match=r"model\.source must be one of \['hf', 'smollm2', 'tiny'\]"
    ):
        compose(["model.source=gguf"])


def test_the_reward_section_sets_the_grader_and_conspo_uses_the_binary_reward():
    assert compose([]).reward.mode == "paper"
    assert compose(["algorithm=conspo"]).reward.mode == "binary"
    cfg = compose(["reward.workers=2", "reward.timeout_s=3"])
    assert (cfg.reward.grader().num_workers, cfg.reward.grader().timeout_s) == (2, 3.0)
    with pytest.raises(ConfigError, match=r"reward\.mode must be one of \['paper', 'binary'\]"):
        compose(["reward.mode=ternary"])
