"""Run configuration: Hydra composition of conf/ and validation before any compute."""

from __future__ import annotations

import pytest

from nemo_rence.algorithm import losses
from nemo_rence.config import CONF_DIR, ConfigError, build, compose


def test_default_composition_is_rence_with_the_paper_thresholds_at_cpu_scale():
    cfg = compose([])
    assert cfg.loss.name == "rence"
    assert (cfg.loss.params.beta, cfg.loss.params.alpha, cfg.loss.params.margin) == (
        0.1,
        0.5,
        "reward_scaled",
    )
    assert (cfg.kl.controller, cfg.kl.init, cfg.kl.target, cfg.kl.horizon) == (
        "adaptive",
        0.001,
        0.01,
        25600,
    )
    assert (cfg.filter.t_hard, cfg.filter.t_easy, cfg.filter.t_master) == (0.0, 0.5, 0.8)
    # conf/scale/cpu.yaml
    assert cfg.optim.n_update == 2 and cfg.rollout.group_size == 8 and cfg.filter.batch_size == 4
    assert cfg.rollout.temperature == 0.7 and cfg.rollout.reuse_logprobs
    assert cfg.filter.unsolved == "drop"  # the paper's filter
    assert (cfg.optim.lr_schedule, cfg.optim.min_lr_ratio) == ("cosine", 0.1)
    assert cfg.rollout.prompts_per_draw == 16
    assert cfg.run.time_budget_min == 14 and cfg.run.malloc_mmap_threshold_mb == 0
    assert cfg.model.source == "smollm2"


def test_paper_scale_restores_the_papers_batch_and_lengths():
    cfg = compose(["scale=paper"])
    assert cfg.filter.batch_size == 512 and cfg.optim.mini_batch_size == 32
    assert cfg.optim.lr == 1e-6 and cfg.rollout.max_new_tokens == 6656
    assert cfg.optim.n_update == 16 and cfg.filter.unsolved == "drop"
    assert cfg.data.max_prompt_tokens == 1536
    assert cfg.rollout.temperature == 1.0 and not cfg.rollout.reuse_logprobs
    assert cfg.run.malloc_mmap_threshold_mb == 0
    assert cfg.optim.lr_schedule == "constant" and cfg.rollout.prompts_per_draw is None


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml")))
def test_every_algorithm_preset_composes_and_validates(preset):
    cfg = compose([f"algorithm={preset}", "scale=paper"])
    assert cfg.loss.name in losses.available()


def test_swapping_one_group_swaps_the_method():
    grpo = compose(["algorithm=grpo", "scale=paper"])
    assert grpo.loss.name == "grpo" and not grpo.filter.enabled and grpo.optim.n_update == 4
    no_kl = compose(["algorithm=rence_no_kl"])
    assert no_kl.loss.params.use_kl is False


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lrr=1"], r"unknown key\(s\) \['lrr'\] in config\.optim; allowed: \['betas'"),
        (["filter.t_easy=2"], r"filter\.t_easy must be in \[0, 1\]"),
        (["algorithm=nope"], "Available options in 'algorithm'"),
        (["loss.beta=x"], "loss.beta must be a float"),
        (["loss.margin=big"], r"margin must be one of \['reward_scaled', 'constant', 'none'\]"),
        (["+loss.bogus=1"], r"unknown key\(s\) \['bogus'\] in loss"),
        (["rollout.engine=sglang"], r"rollout\.engine must be one of \['hf', 'vllm', 'trtllm'\]"),
        (["model=hf"], r"model\.hf_dir is required when model\.source='hf'"),
        (["run.iterations=0"], r"run\.iterations must be > 0"),
        (
            ["optim.lr_schedule=step"],
            r"optim\.lr_schedule must be one of \['constant', 'linear', 'cosine'\]",
        ),
        (["optim.min_lr_ratio=2"], r"optim\.min_lr_ratio must be in \[0, 1\]"),
        (
            ["policy.layout=packed"],
            r"policy\.layout must be one of \['auto', 'shared_prefix', 'rollout'\]",
        ),
        (
            ["optim.mini_batch_size=64"],
            r"optim\.mini_batch_size \(64\) must be <= filter\.batch_size",
        ),
    ],
)
def test_bad_config_fails_before_any_compute_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(overrides)


def test_any_schema_field_can_be_overridden_even_if_no_preset_sets_it():
    cfg = compose(["filter.unsolved=keep_if_contrast", "run.threads=2", "+optim.grad_clip=0.5"])
    assert cfg.filter.unsolved == "keep_if_contrast" and cfg.run.threads == 2
    assert cfg.optim.grad_clip == 0.5


def test_build_rejects_unknown_top_level_sections():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['trainer'\] in config"):
        build({"trainer": {}})
