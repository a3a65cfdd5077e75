"""Megatron's optimizer path exempts norms and biases from weight decay, as CpuAdamW does.

megatron-core 0.16.1 cannot build its optimizer without CUDA, so ``get_megatron_optimizer`` is
replaced by a recorder that builds the parameter groups with megatron-core's own
``_get_param_groups`` (``megatron/core/optimizer/__init__.py``) from the ``config_overrides`` we
hand it, and gives every group ``weight_decay = config.weight_decay`` as torch's Adam does with
its default: what the groups' decay is without our adapter, the bug this guards against.
"""

from __future__ import annotations

import pytest
import torch

from nemo_rence.policy.megatron.optimizer import (
    OptimizerSettings,
    build_megatron_optimizer,
    no_weight_decay,
)


@pytest.fixture(scope="module")
def gpt_model():
    from nemo_rence.policy.megatron.model import ArchSpec, build_gpt_model
    from nemo_rence.policy.megatron.parallel import init_parallel, teardown
    from tests.helpers import tiny_llama

    init_parallel(1, 1)
    config = tiny_llama(0, vocab=64, hidden=32, heads=4, kv_heads=2, layers=2).config.to_dict()
    config["model_type"] = "qwen2"  # q/k/v biases: 1-D parameters named *.bias
    arch = ArchSpec.from_hf_config(config)
    yield build_gpt_model(arch, pre_process=True, post_process=True, spec="local")
    teardown()


class _RecordingOptimizer:
    def __init__(self, param_groups):
        self.param_groups = param_groups

    def load_state_dict(self, state):
        for group in self.param_groups:  # a state saved before the fix: decay everywhere
            group["weight_decay"] = state["weight_decay"]


def test_norms_and_biases_get_no_weight_decay_on_the_megatron_path(gpt_model, monkeypatch):
    import megatron.core.optimizer as mcore_opt

    seen = {}

    def fake_get_megatron_optimizer(config, model_chunks, config_overrides=None, **kwargs):
        seen["config_overrides"] = config_overrides
        groups = mcore_opt._get_param_groups(model_chunks, config, config_overrides)
        for group in groups:
            group["weight_decay"] = config.weight_decay  # torch Adam's default fill
        return _RecordingOptimizer(groups)

    monkeypatch.setattr(mcore_opt, "get_megatron_optimizer", fake_get_megatron_optimizer)
    opt = build_megatron_optimizer(
        gpt_model, OptimizerSettings(weight_decay=0.1), params_dtype=torch.float32
    )
    assert seen["config_overrides"] is not None  # ours, not megatron's implicit default
    names = {id(p): n for n, p in gpt_model.named_parameters()}
    decay_of = {
        names[id(p)]: group["weight_decay"]
        for group in opt.optimizer.param_groups
        for p in group["params"]
    }
    assert set(decay_of) == set(names.values())
    expected = {n: 0.0 if no_weight_decay(n, p) else 0.1 for n, p in gpt_model.named_parameters()}
    assert decay_of == expected
    # the model has both kinds, and the exempt ones are exactly its norms and biases
    exempt = sorted(n for n, wd in decay_of.items() if wd == 0.0)
    assert exempt and all("norm" in n or n.endswith(".bias") for n in exempt)
    assert any(n.endswith(".bias") for n in exempt) and any("layernorm" in n for n in exempt)
    assert any(wd == 0.1 for wd in decay_of.values())

    opt.load_checkpoint_state({"weight_decay": 0.1})
    assert {
        names[id(p)]: g["weight_decay"] for g in opt.optimizer.param_groups for p in g["params"]
    } == expected


def test_set_lr_keeps_the_per_group_lr_multiplier():
    from nemo_rence.policy.megatron.optimizer import _MegatronOptimizerAdapter

    groups = [{"params": [], "lr_mult": 1.0, "wd_mult": 1.0}, {"params": [], "lr_mult": 0.5}]
    adapter = _MegatronOptimizerAdapter(_RecordingOptimizer(groups), weight_decay=0.01)
    adapter.set_lr(2e-6)
    assert [g["lr"] for g in groups] == [2e-6, 1e-6]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.01]
